# shellcheck shell=bash
# The QEMU series of netns-lab/bench-migration.sh (sourced by it for --qemu; uses its LAB,
# WORK, COUNT, PROBE_S, WAN_DELAYS, MAX_MOVES, LAB_UP, PREFIX, SKYVINE, die, log,
# wait_prober, loss_runs and relax_damping; its report imports migration_report.py).
#
# The lab's QEMU guest g1 (home site a, 10.77.1.10) is live-migrated over QMP COUNT times per
# series, alternating a -> b and b -> a, under 1 ms probes from the source site's second VM
# (a2 or b2) and from c1 (third site). Per migration: the guest's off time (source STOP to
# destination RESUME, QMP events), the longest loss run per probe source, outage = loss run -
# off time (floor 0), and the destination router's migration record: when it detected the
# move relative to the guest's RESUME (from its "migration detected" log line), and its
# confirmed and applied steps (offsets from detection).
#
# Variants (--variants): virtio (default NIC, destination running), paused (destination
# started with -S, resumed with `cont` once the migration completed, as libvirt does: QEMU's
# RARPs leave in one burst), e1000 (no guest announcement, only QEMU's RARPs), and each of
# them with a planned-migration hint (virtio-hint, paused-hint, e1000-hint): before the move
# the real libvirt hook (deploy/libvirt-hook-qemu) runs as libvirt would on the destination
# host (`g1 migrate begin -`, domain XML on stdin), against the destination's router, which
# forwards the hint to the guest's current router; the move starts once every router has the
# window open.

QEMU_GUEST=g1
QEMU_GUEST_IP=10.77.1.10

# qemu_variant V: sets QV_NIC and QV_MIGRATE (lab.sh migrate options) for variant V.
qemu_variant() {
    QV_MIGRATE=()
    case $1 in
        virtio | virtio-hint) QV_NIC=virtio ;;
        paused | paused-hint) QV_NIC=virtio; QV_MIGRATE=(--paused-destination) ;;
        e1000 | e1000-hint) QV_NIC=e1000 ;;
        *) die "unknown QEMU variant '$1' (virtio, paused, e1000, and each with -hint)" ;;
    esac
}

# qemu_before_move V P FROM TO: what variant V does right before the move: for a -hint
# variant, the libvirt hook on the destination host, then a wait until every router has the
# window open.
qemu_before_move() {
    local variant=$1 p=$2 to=$4 mac s deadline
    case $variant in
        virtio | paused | e1000) return 0 ;;
        *-hint) ;;
        *) die "unknown QEMU variant '$variant'" ;;
    esac
    # As netns-lab/guest.sh numbers it: 52:54:00:77:0<home site number>:<9 + guest number>.
    local home
    home=$(cat "/tmp/skyvine-lab-$p/guest/$QEMU_GUEST/home") || die "no home for $QEMU_GUEST"
    mac="52:54:00:77:0$(($(printf '%d' "'$home") - 96)):$((9 + ${QEMU_GUEST:1:1}))"
    printf '<domain type="qemu"><name>%s</name><devices><interface type="bridge"><mac address="%s"/></interface></devices></domain>\n' \
        "$QEMU_GUEST" "$mac" |
        SKYVINE_HOOK_CONF=/dev/null SKYVINE_HOOK_SITE=$to SKYVINE_HOOK_COMMAND=$SKYVINE \
            SKYVINE_HOOK_SOCKET=/tmp/skyvine-lab-$p/$to/skyvine.sock \
            "$LAB_DIR/../deploy/libvirt-hook-qemu" "$QEMU_GUEST" migrate begin - 2>>"$WORK/hook.log"
    deadline=$((SECONDS + 5))
    for s in a b c; do
        until "$SKYVINE" migrations --json --socket "/tmp/skyvine-lab-$p/$s/skyvine.sock" |
            python3 -c 'import json,sys; sys.exit(0 if any(w["to"] == sys.argv[1] for w in json.load(sys.stdin).get("prepared", [])) else 1)' "$to"; do
            ((SECONDS < deadline)) || { cat "$WORK/hook.log" >&2; die "router $s has no prepared window for $QEMU_GUEST -> $to"; }
            sleep 0.05
        done
    done
}

# The newest migration id in SITE's record (0 when none).
qemu_last_migration_id() {
    local p=$1 site=$2
    "$SKYVINE" migrations --json --socket "/tmp/skyvine-lab-$p/$site/skyvine.sock" |
        python3 -c 'import json,sys; print(max([m["id"] for m in json.load(sys.stdin)["migrations"]] or [0]))'
}

# qemu_record P SITE AFTER_ID LINE0 RESUME_US: "detected_ms confirmed_ms applied_ms outcome"
# of the destination router's record of the move: the first destination record for the guest
# after id AFTER_ID in `skyvine migrations --json` (waits up to 5 s for it to finish), with its
# confirmed and applied offsets from detection. detected_ms is when the router detected the
# move relative to the guest's RESUME: the timestamp of its first "migration detected" log
# line for the guest after line LINE0 (both clocks are the host's wall clock), NA without one.
qemu_record() {
    local p=$1 site=$2 after=$3 line0=$4 resume_us=$5
    python3 - "$SKYVINE" "/tmp/skyvine-lab-$p/$site" "$QEMU_GUEST_IP" "$after" "$line0" "$resume_us" <<'PY'
import datetime, json, subprocess, sys, time
skyvine, state, ip = sys.argv[1], sys.argv[2], sys.argv[3]
after, line0, resume_us = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
deadline = time.time() + 5.0
row = None
while time.time() < deadline:
    out = subprocess.run([skyvine, "migrations", "--json", "--socket", f"{state}/skyvine.sock"],
                         check=True, capture_output=True, text=True).stdout
    rows = [m for m in json.loads(out)["migrations"]
            if m["id"] > after and m.get("ip") == ip and m["role"] == "destination"]
    row = rows[0] if rows else None
    if row and row["outcome"] != "in_progress":
        break
    time.sleep(0.05)
detected = "NA"
with open(f"{state}/router.log", errors="replace") as log:
    for line in list(log)[line0:]:
        if "migration detected" in line and f"ip=Some({ip})" in line:
            stamp = line.split()[0].replace("Z", "+00:00")
            try:
                at = datetime.datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                break
            detected = f"{at * 1000.0 - resume_us / 1000.0:.3f}"
            break
if row is None:
    print(f"{detected} NA NA none")
    sys.exit(0)
fmt = lambda v: "NA" if v is None else f"{v:.3f}"
print(f'{detected} {fmt(row.get("confirmed_ms"))} {fmt(row.get("applied_ms"))} {row["outcome"]}')
PY
}

# qemu_one_migration P DELAY VARIANT N: one live migration of the guest under probes; appends
# a row to QRESULTS.
qemu_one_migration() {
    local p=$1 delay=$2 variant=$3 n=$4 from to src third out probe_pid mig last_id line0
    from=$(cat "/tmp/skyvine-lab-$p/guest/$QEMU_GUEST/site")
    if [[ $from == a ]]; then to=b; else to=a; fi
    src=${from}2
    third=c1
    qemu_variant "$variant"
    last_id=$(qemu_last_migration_id "$p" "$to") || die "cannot read router $to's migrations"
    out=$WORK/qemu-probe-$delay-$variant-$n.json
    # The hint first (it may take a while on a busy machine), so that the probes span the
    # move itself and not the wait for every router's window.
    qemu_before_move "$variant" "$p" "$from" "$to"
    start_probes "$p" "$QEMU_GUEST" "$src" "$third" "$out" "$n"
    probe_pid=$PROBE_PID
    line0=$(wc -l <"/tmp/skyvine-lab-$p/$to/router.log")
    if ! mig=$("$LAB" migrate "$QEMU_GUEST" "$to" --prefix "$p" "${QV_MIGRATE[@]}"); then
        wait "$probe_pid" || true
        die "live migration $n of $QEMU_GUEST $from -> $to failed"
    fi
    if ! wait "$probe_pid"; then
        cat "$WORK/probe.err" >&2
        die "the prober failed (migration $n)"
    fi
    local off downtime resume_us record losses
    off=$(sed -n 's/.* off_ms=\([0-9.]*\).*/\1/p' <<<"$mig")
    downtime=$(sed -n 's/.* qemu_downtime_ms=\([0-9NA]*\).*/\1/p' <<<"$mig")
    resume_us=$(sed -n 's/.* resume_us=\([0-9]*\).*/\1/p' <<<"$mig")
    [[ -n $off && -n $resume_us ]] || die "no off_ms/resume_us in the migrate output: $mig"
    record=$(qemu_record "$p" "$to" "$last_id" "$line0" "$resume_us") || die "cannot read router $to's record"
    losses=$(loss_runs "$out" "$src" "$third") || die "could not read the probe report $out"
    local src_loss third_loss recovered detected confirmed applied outcome
    IFS=$'\t' read -r src_loss third_loss recovered <<<"$losses"
    read -r detected confirmed applied outcome <<<"$record"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$delay" "$variant" "$n" \
        "$from" "$to" "$off" "$downtime" "$src_loss" "$third_loss" "$detected" "$confirmed" \
        "$applied" "$outcome" "$recovered" "$src" >>"$QRESULTS"
    [[ $recovered == yes ]] || log "migration $n: probes to $QEMU_GUEST were still lost when probing ended"
    log "$(printf 'delay %s ms %s #%s %s->%s: off %s ms, loss run %s (%s) %s (%s) ms, router %s: detected at RESUME + %s ms, confirmed +%s, applied +%s' \
        "$delay" "$variant" "$n" "$from" "$to" "$off" "$src_loss" "$src" "$third_loss" "$third" \
        "$to" "$detected" "$confirmed" "$applied")"
}

# qemu_series: one lab per (WAN delay, NIC); every variant of that NIC runs on it.
qemu_series() {
    QRESULTS=$WORK/qemu-results.tsv
    printf 'delay_ms\tvariant\tn\tfrom\tto\toff_ms\tqemu_downtime_ms\tsrc_site_loss_ms\tthird_site_loss_ms\tdetected_ms\tconfirmed_ms\tapplied_ms\toutcome\trecovered\tsrc_vm\n' >"$QRESULTS"
    local delay nic p variant n k=0 wanted
    for delay in $WAN_DELAYS; do
        for nic in virtio e1000; do
            wanted=()
            for variant in $QEMU_VARIANTS; do
                qemu_variant "$variant"
                [[ $QV_NIC == "$nic" ]] && wanted+=("$variant")
            done
            ((${#wanted[@]})) || continue
            k=$((k + 1))
            p="${PREFIX}q$k"
            ((${#p} <= 10)) || die "lab prefix $p too long"
            log "lab $p: three sites, one-way WAN delay $delay ms, QEMU guest $QEMU_GUEST ($nic) on site a"
            LAB_UP=$p
            "$LAB" up --prefix "$p" --wan-delay-ms "$delay" --qemu a --nic "$nic" >"$WORK/up-$p.txt" ||
                die "lab.sh up --qemu --nic $nic --wan-delay-ms $delay failed"
            if ((MAX_MOVES > 0)); then
                log "lab $p: move damping max_moves = $MAX_MOVES (router restart)"
                relax_damping "$p"
            fi
            for variant in "${wanted[@]}"; do
                for ((n = 1; n <= COUNT; n++)); do
                    qemu_one_migration "$p" "$delay" "$variant" "$n"
                done
            done
            for s in a b c; do cp "/tmp/skyvine-lab-$p/$s/router.log" "$WORK/router-$p-$s.log"; done
            cp "/tmp/skyvine-lab-$p/guest/$QEMU_GUEST/console.log" "$WORK/console-$p.log"
            "$LAB" down --prefix "$p" >/dev/null
            LAB_UP=""
        done
    done
    qemu_report "$QRESULTS"
}

qemu_report() {
    PYTHONPATH=$LAB_DIR python3 -B - "$1" <<'PY'
import csv, statistics, sys
from migration_report import outage_lines, stuck_warning
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
series = {}
for r in rows:
    series.setdefault((int(r["delay_ms"]), r["variant"]), []).append(r)
names = {"virtio": "virtio-net, destination running",
         "paused": "virtio-net, destination started paused (-S, cont)",
         "e1000": "e1000 (no guest announcement)"}
for base in list(names):
    names[base + "-hint"] = names[base] + ", with a planned-migration hint (libvirt hook)"

def figures(values):
    values = [v for v in values if v is not None]
    if not values:
        return "      NA"
    return f"median {statistics.median(values):8.2f} ms  max {max(values):8.2f} ms"

def num(v):
    return None if v in ("", "NA", None) else float(v)

print()
print("bench-migration --qemu: outage = longest run of lost 1 ms probes - the guest's off time")
print("                        (source STOP -> destination RESUME, QMP events; floor 0)")
for (delay, variant), rs in series.items():
    # Targets (issue 8): <= 5 ms at 0 ms WAN; at 20 ms one-way <= 25 ms, <= 5 ms with a hint.
    target = 5.0 if variant.endswith("-hint") else delay + 5.0
    print()
    print(f"== WAN one-way delay {delay} ms, {names.get(variant, variant)}: {len(rs)} live migrations")
    stuck_warning(rs)
    refused = [r for r in rs if r["outcome"] != "applied"]
    if refused:
        print(f"  !! {len(refused)} migration(s) whose destination record is not 'applied': "
              + ", ".join(f'#{r["n"]} {r["outcome"]}' for r in refused))
    print(f"  guest off time       : {figures([num(r['off_ms']) for r in rs])}"
          f"   (QEMU's own downtime {figures([num(r['qemu_downtime_ms']) for r in rs])})")
    outage_lines(rs, "off_ms", target)
    print(f"  destination router   : detection - RESUME         {figures([num(r['detected_ms']) for r in rs])}")
    print(f"                         confirmed (from detection) {figures([num(r['confirmed_ms']) for r in rs])}")
    print(f"                         applied (from detection)   {figures([num(r['applied_ms']) for r in rs])}")
PY
}
