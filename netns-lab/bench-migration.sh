#!/usr/bin/env bash
# Live-migration benchmark: N migrations of one VM, back and forth between sites a and b, each
# under 1 ms UDP probes from a VM at the VM's current (source) site and from one at the third
# site, on a fresh three-site lab per WAN delay. Per series (WAN delay x announce kind) it
# prints the median and max outage per probe source, i.e. the longest run of lost probes minus
# the pause the lab imposed on the VM's link, and the destination router's processing time
# (first announcement frame to last effect, the `took_us` of its "migration applied" log line).
# Targets (issue 3): outage <= one one-way WAN delay + 5 ms; processing <= 2 ms.
#
# With --nat the VM (b1 by default) moves back and forth between sites b and c, both behind
# their own NAT (lab.sh up --nat b,c), so every packet between them crosses the relay a: the
# target is then the relayed path's one-way delay (two WAN hops) + 5 ms, and the third site's
# probes come from a1.
#
# With --qemu it measures a real hypervisor instead: the lab's QEMU guest g1 (TCG) is
# live-migrated over QMP, and the outage is the loss beyond the guest's own off time (source
# STOP -> destination RESUME, from the QMP events); see bench-migration-qemu.sh.
#
# usage: netns-lab/bench-migration.sh [--count 20] [--wan-delays "0 20"] [--announce rarp]
#            [--all-announce] [--vm a1] [--pause-ms 100] [--probe-s 3] [--max-moves 100000]
#            [--keep-raw DIR] [--nat]
#        netns-lab/bench-migration.sh --qemu [--variants "virtio paused e1000"] [--count 10]
#            [--wan-delays "0 20"] [--probe-s 4] [--max-moves 100000] [--keep-raw DIR]
#
#   --qemu             the QEMU series: 10 live migrations each (a -> b, b -> a, …) per WAN
#                      delay and variant; probes from the source site's second VM and c1
#   --variants LIST    with --qemu: virtio (destination running), paused (destination
#                      started with -S, resumed with cont, as libvirt does), e1000 (no guest
#                      announcement, QEMU's RARPs only), and each with -hint (a planned-
#                      migration hint from the libvirt hook first); default all six
#   --count N          migrations per series (default 20; 10 with --qemu)
#   --wan-delays LIST  one-way WAN delays in ms, one lab each (default "0 20")
#   --announce K       rarp (default), garp or none
#   --all-announce     run rarp and garp series on each lab
#   --vm V             the VM that moves (default a1, alternating between sites a and b; with
#                      --nat b1, alternating between sites b and c)
#   --nat              sites b and c behind NAT, the VM moving between them through relay a
#   --pause-ms MS      the link pause the lab imposes per migration (default 100)
#   --probe-s S        probe duration per migration (default 3; 4 with --qemu)
#   --max-moves N      move damping: the routers' [migration] max_moves (default 100000). The
#                      router default (5 moves in 180 s, then the address is frozen for 180 s)
#                      refuses the 6th move of the same VM, so the benchmark raises it in the
#                      lab's generated router configs and restarts the routers; 0 keeps the
#                      lab's configs untouched
#   --keep-raw DIR     also keep the per-migration table (TSV), probe JSON and router logs in DIR
#
# Needs root and the release binaries (netns-lab/lab.sh build). Every lab it brings up has a
# prefix unique to the run and is brought down on exit, also on failure or Ctrl-C.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$LAB_DIR/lab.sh
COUNT=20
WAN_DELAYS="0 20"
ANNOUNCES="rarp"
VM=a1
PAUSE_MS=100
PROBE_S=3
KEEP_RAW=""
MAX_MOVES=100000
QEMU=0
QEMU_VARIANTS="virtio paused e1000 virtio-hint paused-hint e1000-hint"
NAT=0
VM_SET=0
COUNT_SET=0
PROBE_SET=0
ARGS=("$@")

die() {
    echo "bench-migration: error: $*" >&2
    exit 1
}
log() { echo "bench-migration: $*" >&2; }

while (($#)); do
    case "$1" in
        --count) COUNT=${2:?--count needs a number}; COUNT_SET=1; shift 2 ;;
        --qemu) QEMU=1; shift ;;
        --variants) QEMU_VARIANTS=${2:?--variants needs a list}; shift 2 ;;
        --wan-delays) WAN_DELAYS=${2:?--wan-delays needs a list}; shift 2 ;;
        --announce) ANNOUNCES=${2:?--announce needs rarp, garp or none}; shift 2 ;;
        --all-announce) ANNOUNCES="rarp garp"; shift ;;
        --vm) VM=${2:?--vm needs a VM}; VM_SET=1; shift 2 ;;
        --nat) NAT=1; shift ;;
        --pause-ms) PAUSE_MS=${2:?--pause-ms needs a value}; shift 2 ;;
        --probe-s) PROBE_S=${2:?--probe-s needs a value}; PROBE_SET=1; shift 2 ;;
        --max-moves) MAX_MOVES=${2:?--max-moves needs a number}; shift 2 ;;
        --keep-raw) KEEP_RAW=${2:?--keep-raw needs a directory}; shift 2 ;;
        -h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
if ((QEMU)); then
    ((COUNT_SET)) || COUNT=10
    ((PROBE_SET)) || PROBE_S=4
fi
[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "--count takes a positive whole number"
[[ $PAUSE_MS =~ ^[0-9]+$ ]] || die "--pause-ms takes whole milliseconds"
[[ $PROBE_S =~ ^[1-9][0-9]*$ ]] || die "--probe-s takes whole seconds"
[[ $MAX_MOVES =~ ^[0-9]+$ ]] || die "--max-moves takes a whole number"
# The two sites the VM moves between, and how many WAN hops a packet between them crosses.
SITE_X=a SITE_Y=b HOPS=1
if ((NAT)); then
    ((QEMU == 0)) || die "--nat and --qemu do not go together"
    SITE_X=b SITE_Y=c HOPS=2
    ((VM_SET)) || VM=b1
fi
[[ $VM =~ ^[$SITE_X$SITE_Y][12]$ ]] ||
    die "--vm must be a VM of site $SITE_X or $SITE_Y (${SITE_X}1 ${SITE_X}2 ${SITE_Y}1 ${SITE_Y}2)"
for d in $WAN_DELAYS; do [[ $d =~ ^[0-9]+$ ]] || die "--wan-delays takes whole milliseconds, got '$d'"; done
for k in $ANNOUNCES; do [[ $k =~ ^(rarp|garp|none)$ ]] || die "--announce must be rarp, garp or none"; done
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
command -v python3 >/dev/null || die "python3 is needed for the statistics"
SKYVINE=${SKYVINE_BIN:-$LAB_DIR/../target/release/skyvine}
if ((QEMU)); then
    # shellcheck source=bench-migration-qemu.sh
    source "$LAB_DIR/bench-migration-qemu.sh"
    for v in $QEMU_VARIANTS; do qemu_variant "$v"; done
    [[ -x $SKYVINE ]] || die "router binary $SKYVINE not found: run 'netns-lab/lab.sh build'"
fi

PREFIX="bm$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')" # + the delay: at most 10 characters
WORK=$(mktemp -d /tmp/bench-migration.XXXXXX)
RESULTS=$WORK/results.tsv
LAB_UP=""

cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n $LAB_UP ]]; then
        # A series that failed half-way: keep what explains it (router logs, guest logs).
        if [[ -n $KEEP_RAW ]]; then
            local s
            for s in a b c; do
                cp "/tmp/skyvine-lab-$LAB_UP/$s/router.log" "$WORK/router-$LAB_UP-$s.log" 2>/dev/null || true
            done
            cp -r "/tmp/skyvine-lab-$LAB_UP/guest" "$WORK/guest-$LAB_UP" 2>/dev/null || true
        fi
        "$LAB" down --prefix "$LAB_UP" >/dev/null 2>&1 || log "could not bring lab $LAB_UP down"
    fi
    if [[ -n $KEEP_RAW ]]; then
        mkdir -p "$KEEP_RAW" && cp -r "$WORK"/. "$KEEP_RAW"/ && log "raw data kept in $KEEP_RAW"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf 'delay_ms\tannounce\tn\tfrom\tto\tpause_ms\tsrc_site_loss_ms\tthird_site_loss_ms\ttook_us\tstatus\trecovered\n' >"$RESULTS"

# site_of P VM: the site the lab says VM is attached to.
site_of() { cat "/tmp/skyvine-lab-$1/vm/$2"; }

# source_vm P VM SITE: a VM other than VM attached to SITE.
source_vm() {
    local p=$1 vm=$2 site=$3 v
    for v in a1 a2 b1 b2 c1 c2; do
        [[ $v != "$vm" && -f /tmp/skyvine-lab-$p/vm/$v && $(site_of "$p" "$v") == "$site" ]] &&
            { echo "$v"; return 0; }
    done
    return 1
}

# third_vm P VM FROM TO: a VM at the site that is neither FROM nor TO.
third_vm() {
    local p=$1 vm=$2 from=$3 to=$4 v s
    for v in c1 c2 a1 a2 b1 b2; do
        s=$(site_of "$p" "$v")
        [[ $v != "$vm" && $s != "$from" && $s != "$to" ]] && { echo "$v"; return 0; }
    done
    return 1
}

# wait_prober P SRC...: until the echo responder listens and every sender has started.
wait_prober() {
    local p=$1 deadline=$((SECONDS + 10)) dir src ok
    shift
    while ((SECONDS < deadline)); do
        for dir in /tmp/skyvine-lab-"$p"/probe.*; do
            [[ -d $dir ]] || continue
            grep -qs listening "$dir/echo.log" || continue
            ok=1
            for src in "$@"; do [[ -e $dir/$src.out ]] || ok=0; done
            ((ok)) && return 0
        done
        sleep 0.02
    done
    return 1
}

# start_probes P VM SRC THIRD OUT N: 1 ms probes of VM from SRC and THIRD in the background
# (PID in PROBE_PID, JSON into OUT) once both senders run, then half a second of undisturbed
# probes before the move; dies if the prober does not start (for migration N).
start_probes() {
    local p=$1 vm=$2 src=$3 third=$4 out=$5 n=$6
    "$LAB" probe --prefix "$p" --to "$vm" --from "$src,$third" --duration-s "$PROBE_S" --json \
        >"$out" 2>"$WORK/probe.err" &
    PROBE_PID=$!
    if ! wait_prober "$p" "$src" "$third"; then
        wait "$PROBE_PID" || true
        cat "$WORK/probe.err" >&2
        die "the prober did not start (migration $n)"
    fi
    sleep 0.5
}

# took_us P SITE VM_IP LINE0: took_us of the newest destination "migration applied" line for
# VM_IP after line LINE0 of SITE's router log; waits up to 5 s for it to appear.
took_us() {
    local p=$1 site=$2 ip=$3 line0=$4 deadline=$((SECONDS + 5)) value
    local logf=/tmp/skyvine-lab-$p/$site/router.log
    while :; do
        value=$(tail -n "+$((line0 + 1))" "$logf" |
            grep 'migration applied' | grep -E 'role="?destination' | grep -F "$ip" |
            sed -n 's/.*took_us=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
        [[ -n $value ]] && { echo "$value"; return 0; }
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# loss_runs PROBE_JSON SRC THIRD: "SRC_LOSS_MS<tab>THIRD_LOSS_MS<tab>yes|no": each source's
# longest loss run, and whether both got echoes again before probing ended (a run that
# reaches the end of probing is an outage that did not end: "no").
loss_runs() {
    python3 - "$1" "$2" "$3" "$PROBE_S" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
by = {r["label"]: r["report"] for r in doc["results"]}
end_ms = float(sys.argv[4]) * 1000.0
runs = [by[sys.argv[2]], by[sys.argv[3]]]
recovered = all(float(r["loss_run_from_ms"]) + float(r["max_loss_run_ms"]) < end_ms - 5.0 for r in runs)
print(f'{float(runs[0]["max_loss_run_ms"]):.3f}\t{float(runs[1]["max_loss_run_ms"]):.3f}\t{"yes" if recovered else "no"}')
PY
}

# one_migration P DELAY KIND N: migrate VM once to the other of SITE_X/SITE_Y under probes;
# appends a row.
one_migration() {
    local p=$1 delay=$2 kind=$3 n=$4 from to src third ip line0 probe_pid mig took status=ok
    from=$(site_of "$p" "$VM")
    if [[ $from == "$SITE_X" ]]; then to=$SITE_Y; else to=$SITE_X; fi
    src=$(source_vm "$p" "$VM" "$from") || die "no other VM at site $from to probe from"
    third=$(third_vm "$p" "$VM" "$from" "$to") || die "no VM at a third site to probe from"
    ip="10.77.$(($(printf '%d' "'${VM:0:1}") - 96)).${VM:1:1}"
    local out=$WORK/probe-$delay-$kind-$n.json
    start_probes "$p" "$VM" "$src" "$third" "$out" "$n"
    probe_pid=$PROBE_PID
    line0=$(wc -l <"/tmp/skyvine-lab-$p/$to/router.log")
    if ! mig=$("$LAB" migrate "$VM" "$to" --prefix "$p" --announce "$kind" --pause-ms "$PAUSE_MS"); then
        wait "$probe_pid" || true
        die "migration $n of $VM $from -> $to failed"
    fi
    local pause
    pause=$(sed -n 's/.* pause_ms=\([0-9.]*\).*/\1/p' <<<"$mig")
    [[ -n $pause ]] || die "no pause_ms in the migrate output: $mig"
    if ! wait "$probe_pid"; then
        cat "$WORK/probe.err" >&2
        die "the prober failed (migration $n)"
    fi
    if ! took=$(took_us "$p" "$to" "$ip" "$line0"); then
        took=NA
        status=no-applied-line
        log "migration $n: no 'migration applied' line with role=destination for $ip in router $to's log"
    fi
    local losses
    losses=$(loss_runs "$out" "$src" "$third") || die "could not read the probe report $out"
    local src_loss third_loss recovered
    IFS=$'\t' read -r src_loss third_loss recovered <<<"$losses"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$delay" "$kind" "$n" "$from" "$to" "$pause" \
        "$src_loss" "$third_loss" "$took" "$status" "$recovered" >>"$RESULTS"
    [[ $recovered == yes ]] || log "migration $n: probes to $VM were still lost when probing ended"
    log "$(printf 'delay %s ms %s #%s %s->%s: pause %s ms, loss run %s (%s) %s (%s) ms, router %s us' \
        "$delay" "$kind" "$n" "$from" "$to" "$pause" "$src_loss" "$src" "$third_loss" "$third" "$took")"
}

# relax_damping P: raise [migration] max_moves in the lab's router configs, restart the routers.
relax_damping() {
    local p=$1 s conf
    for s in a b c; do
        conf=/tmp/skyvine-lab-$p/$s/router.toml
        [[ -f $conf ]] || die "no router config $conf"
        ! grep -q '^\[migration\]' "$conf" || die "$conf already has a [migration] section: use --max-moves 0"
        printf '\n# bench-migration.sh: one VM moves more than 5 times in 180 s\n[migration]\nmax_moves = %s\n' \
            "$MAX_MOVES" >>"$conf"
        "$LAB" restart-router "$s" --prefix "$p" >/dev/null
    done
    "$LAB" ping-all --prefix "$p" --wait-s 20 >"$WORK/ping-all-$p.txt" ||
        { cat "$WORK/ping-all-$p.txt" >&2; die "lab $p does not ping after the router restart"; }
}

if ((QEMU)); then
    qemu_series
    echo
    printf 'Reproduce (as root): netns-lab/bench-migration.sh'
    printf ' %q' "${ARGS[@]}"
    echo
    exit 0
fi

for delay in $WAN_DELAYS; do
    p="$PREFIX$delay"
    ((${#p} <= 10)) || die "WAN delay $delay ms too long for a lab prefix"
    nat_args=()
    ((NAT)) && nat_args=(--nat b,c)
    log "lab $p: three sites, one-way WAN delay $delay ms${nat_args[*]:+, }${nat_args[*]}"
    LAB_UP=$p
    "$LAB" up --prefix "$p" --wan-delay-ms "$delay" "${nat_args[@]}" >"$WORK/up-$delay.txt" ||
        die "lab.sh up --wan-delay-ms $delay ${nat_args[*]} failed"
    if ((MAX_MOVES > 0)); then
        log "lab $p: move damping max_moves = $MAX_MOVES (router restart)"
        relax_damping "$p"
    fi
    for kind in $ANNOUNCES; do
        for ((n = 1; n <= COUNT; n++)); do
            one_migration "$p" "$delay" "$kind" "$n"
        done
    done
    for s in a b c; do cp "/tmp/skyvine-lab-$p/$s/router.log" "$WORK/router-$delay-$s.log"; done
    "$LAB" down --prefix "$p" >/dev/null
    LAB_UP=""
done

PYTHONPATH=$LAB_DIR python3 -B - "$RESULTS" "$PAUSE_MS" "$HOPS" "$SITE_X" "$SITE_Y" <<'PY'
import csv, statistics, sys
from migration_report import outage_lines, stuck_warning
hops, pair = int(sys.argv[3]), f"{sys.argv[4]} <-> {sys.argv[5]}"
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
series = {}  # insertion order = the order the series ran
for r in rows:
    series.setdefault((int(r["delay_ms"]), r["announce"]), []).append(r)

def fmt(v, unit):
    return f"{v:8.2f} {unit}"

print()
print("bench-migration: outage = longest run of lost 1 ms probes - the lab's imposed pause (floor 0)")
print("                 processing = destination router's took_us (first announcement -> last effect)")
for (delay, kind), rs in series.items():
    pauses = [float(r["pause_ms"]) for r in rs]
    # The path between the two sites: one WAN hop, or two through the relay.
    target_outage = hops * delay + 5.0
    print()
    path = "direct" if hops == 1 else f"both behind NAT, through relay a: one-way {hops * delay} ms"
    print(f"== {pair} ({path}), WAN one-way delay {delay} ms, announce {kind}: {len(rs)} migrations "
          f"(imposed pause median {statistics.median(pauses):.2f} ms, max {max(pauses):.2f} ms)")
    stuck_warning(rs)
    outage_lines(rs, "pause_ms", target_outage)
    took = [int(r["took_us"]) / 1000.0 for r in rs if r["took_us"] != "NA"]
    missing = len(rs) - len(took)
    if took:
        med, mx = statistics.median(took), max(took)
        print(f"  router processing    : median {fmt(med, 'ms')}  max {fmt(mx, 'ms')}   "
              f"target <= 2 ms: median/target {med / 2.0:5.2f}, max/target {mx / 2.0:5.2f}"
              + (f"   ({missing} without a log line)" if missing else ""))
    else:
        print(f"  router processing    : no 'migration applied' destination line found ({missing} migrations)")
PY

echo
printf 'Reproduce (as root): netns-lab/bench-migration.sh'
((${#ARGS[@]} == 0)) || printf ' %q' "${ARGS[@]}"
echo
