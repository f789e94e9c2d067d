"""What the two live-migration benchmark reports share (netns-lab/bench-migration.sh and its
QEMU series, bench-migration-qemu.sh): the warning for migrations whose probes were still
lost when probing ended, and the outage lines per probe source. Imported by their summary
scripts (PYTHONPATH=netns-lab), never run on its own."""

import statistics

# The probe sources of every migration: the columns of their longest loss runs, and their names.
SOURCES = (("src_site_loss_ms", "source site"), ("third_site_loss_ms", "third site "))


def stuck_warning(rs):
    """Says how many of the series' migrations `rs` had probes still lost when probing ended."""
    stuck = sum(1 for r in rs if r["recovered"] != "yes")
    if stuck:
        print(f"  !! {stuck} migration(s) where probes were still lost when probing ended: "
              f"the outage below is cut off by the probe's end, not a recovery")


def outage_lines(rs, imposed_col, target):
    """Per probe source: median and max outage (its longest loss run minus the off time the
    migration imposed, column `imposed_col`, floor 0) over the series `rs`, against `target` ms."""
    for col, name in SOURCES:
        out = [max(float(r[col]) - float(r[imposed_col]), 0.0) for r in rs]
        med, mx = statistics.median(out), max(out)
        print(f"  outage from {name}: median {med:8.2f} ms  max {mx:8.2f} ms   "
              f"target <= {target:.0f} ms: median/target {med / target:5.2f}, max/target {mx / target:5.2f}")
