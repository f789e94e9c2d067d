#!/usr/bin/env bash
# Flood benchmark (issue 5): TCP throughput a1 -> b1 through the skyvine overlay without and
# with a 100k frames/s ARP/RARP flood on site b's LAN (from b2) and on site a's LAN (from a2),
# in one run on one lab. Prints the medians, their ratio (target >= 0.8), router b's peak
# memory during the flood and the flood's achieved frame rate.
#
#   netns-lab/bench-flood.sh [--reps 3] [--seconds 10] [--rate 100000] [--mode random-macs]
#                            [--flooders "b a"]   (sites whose LAN VM 2 floods; "c" = control)
#
# Root only. Needs iperf3 (installed with apt when missing) and the release binaries
# (netns-lab/lab.sh build).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/.." && pwd)
LAB=$LAB_DIR/lab.sh
TOOLS=${SKYVINE_LABTOOLS_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release}
export SKYVINE_LAB_CURRENT=${SKYVINE_LAB_CURRENT:-/tmp/skyvine-bench-flood-current}

REPS=3
SECONDS_PER_RUN=10
RATE=100000
MODE=random-macs
# Sites whose LAN gets a flooder (VM 2 of the site). "b" is the issue's case: one VM floods the
# LAN of the router that receives the measured transfer. "c" is a control: the same flood on a
# LAN that the measured path does not touch, to see what the flood costs the machine itself.
FLOODERS="b a"
while (($#)); do
    case "$1" in
        --reps) REPS=${2:?}; shift 2 ;;
        --seconds) SECONDS_PER_RUN=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --mode) MODE=${2:?}; shift 2 ;;
        --flooders) FLOODERS=${2:?--flooders takes sites, e.g. "b" or "b a"}; shift 2 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "bench-flood.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "bench-flood.sh: needs root (network namespaces)" >&2; exit 1; }
[[ -x $TOOLS/skyvine-flood ]] || { echo "bench-flood.sh: $TOOLS/skyvine-flood missing: netns-lab/lab.sh build" >&2; exit 1; }
if ! command -v iperf3 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi

PREFIX=bf$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
STATE=/tmp/skyvine-lab-$PREFIX
WORK=$(mktemp -d)
IPERF_PID=""
cleanup() {
    if [[ -n $IPERF_PID ]]; then kill "$IPERF_PID" 2>/dev/null || true; fi
    "$LAB" down --prefix "$PREFIX" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local n=$1; shift; ip netns exec "$PREFIX-$n" "$@"; }

echo "bench-flood: lab $PREFIX, $REPS x ${SECONDS_PER_RUN} s iperf3 a1 -> b1, flood $MODE at $RATE frames/s" >&2
"$LAB" up --prefix "$PREFIX" >/dev/null
read -r ROUTER_B _ <"$STATE/pids/router-b"
read -r ROUTER_A _ <"$STATE/pids/router-a"
TICKS=$(getconf CLK_TCK)

# cpu_ticks PID: user + system clock ticks the process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# iperf_once: one iperf3 run a1 -> b1; prints Mbit/s (the receiver's figure).
iperf_once() {
    in_ns b1 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    IPERF_PID=$!
    local tries=0
    until in_ns b1 ss -Hltn 'sport = :5201' | grep -q .; do
        tries=$((tries + 1)); ((tries < 100)) || { echo "iperf3 server did not start" >&2; exit 1; }
        sleep 0.05
    done
    in_ns a1 iperf3 -c 10.77.2.1 -t "$SECONDS_PER_RUN" -J >"$WORK/iperf.json"
    wait "$IPERF_PID" || true
    IPERF_PID=""
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' "$WORK/iperf.json"
}

median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

# RSS sampler for router b: VmRSS every 50 ms into $WORK/rss until killed.
sample_rss() {
    while :; do
        awk '/^VmRSS:/ {print $2}' "/proc/$ROUTER_B/status" 2>/dev/null || true
        sleep 0.05
    done >"$WORK/rss"
}

rss_before=$(awk '/^VmRSS:/ {print $2}' "/proc/$ROUTER_B/status")
: >"$WORK/plain"
: >"$WORK/flooded"
: >"$WORK/floods"
for rep in $(seq 1 "$REPS"); do
    a0=$(cpu_ticks "$ROUTER_A"); b0=$(cpu_ticks "$ROUTER_B")
    iperf_once >>"$WORK/plain"
    echo "$(( $(cpu_ticks "$ROUTER_A") - a0 )) $(( $(cpu_ticks "$ROUTER_B") - b0 ))" >>"$WORK/cpu-plain"
    # The flood outlasts the iperf3 run by a second at each end.
    flood_s=$((SECONDS_PER_RUN + 2))
    flooders=()
    n=0
    for site in $FLOODERS; do
        in_ns "${site}2" "$TOOLS/skyvine-flood" --iface eth0 --rate "$RATE" --duration-s "$flood_s" --mode "$MODE" \
            --ip 10.77.3.1 --ip-range 10.77.3.0/24 --seed "$((rep + 100 * n))" >>"$WORK/floods" &
        flooders+=($!)
        n=$((n + 1))
    done
    sample_rss &
    sampler=$!
    sleep 1
    a0=$(cpu_ticks "$ROUTER_A"); b0=$(cpu_ticks "$ROUTER_B")
    iperf_once >>"$WORK/flooded"
    echo "$(( $(cpu_ticks "$ROUTER_A") - a0 )) $(( $(cpu_ticks "$ROUTER_B") - b0 ))" >>"$WORK/cpu-flooded"
    wait "${flooders[@]}"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    cat "$WORK/rss" >>"$WORK/rss-all"
    echo "bench-flood: rep $rep: plain $(tail -n1 "$WORK/plain") Mbit/s, flooded $(tail -n1 "$WORK/flooded") Mbit/s" >&2
done

plain=$(median <"$WORK/plain")
flooded=$(median <"$WORK/flooded")
rss_peak=$(sort -n "$WORK/rss-all" | tail -n1)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$ROUTER_B/status")
rss_after=$(awk '/^VmRSS:/ {print $2}' "/proc/$ROUTER_B/status")
rates=$(grep -o 'rate_fps=[0-9]*' "$WORK/floods" | cut -d= -f2 | median)
status=$(ip netns exec "$PREFIX-r-b" "${SKYVINE_BIN:-$TOOLS/skyvine}" status --json --socket "$STATE/b/skyvine.sock")
frames=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["lan_counters"]["frames"])' "$status")

echo "throughput a1->b1 (median of $REPS x ${SECONDS_PER_RUN} s): no flood $plain Mbit/s, flood $flooded Mbit/s"
echo "ratio flood/no flood: $(awk -v a="$flooded" -v b="$plain" 'BEGIN {printf "%.3f", a/b}') (target >= 0.8)"
echo "flood: $MODE from VM 2 of site(s) [$FLOODERS] onto their LAN, target $RATE frames/s each; achieved median $rates frames/s per flooder"
echo "router b memory: RSS $rss_before KiB before, peak sampled $rss_peak KiB during the floods, VmHWM $hwm KiB, $rss_after KiB after; LAN frames seen by router b: $frames"
cpu_pct() { awk -v t="$TICKS" -v s="$SECONDS_PER_RUN" '{a+=$1; b+=$2; n++} END {printf "router a %.0f%%, router b %.0f%%", 100*a/t/s/n, 100*b/t/s/n}' "$1"; }
echo "router CPU during the iperf3 runs (one core = 100%): no flood $(cpu_pct "$WORK/cpu-plain"); flood $(cpu_pct "$WORK/cpu-flooded")"
echo "per run: plain [$(xargs <"$WORK/plain")] flooded [$(xargs <"$WORK/flooded")]"
echo "reproduce (as root): netns-lab/lab.sh build && netns-lab/bench-flood.sh --reps $REPS --seconds $SECONDS_PER_RUN --rate $RATE --mode $MODE --flooders \"$FLOODERS\""
