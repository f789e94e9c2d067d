#!/usr/bin/env bash
# Where the data plane's time goes: a two-site lab with routers, one iperf3 TCP stream (or
# --streams N) from a1 to b1, and `perf record` (call graphs from DWARF) on both router
# processes, all threads, kernel included, while it runs. Prints each router's CPU use during
# the recording, the iperf3 result, and the top entries by self time per router; leaves
# perf.data files (and, with inferno installed, flame graphs) in --out.
#
# usage: netns-lab/profile-throughput.sh [--out DIR] [--seconds 8] [--streams 1] [--top 25]
#
# Root only. Installs linux-perf with apt when `perf` is missing. Run it under the benchmark
# lock on a shared machine (flock /work/coord/bench.lock ...): a profile taken while others
# compile still shows the shares, but not the absolute rate. This kernel's perf may have no
# hardware counters (`perf stat -e instructions true`); the default cpu-clock event works.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$LAB_DIR/lab.sh
OUT=$PWD/profile-out
SECONDS_TO_RECORD=8
STREAMS=1
TOP=25

die() {
    echo "profile-throughput: error: $*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
        --out) OUT=${2:?}; shift 2 ;;
        --seconds) SECONDS_TO_RECORD=${2:?}; shift 2 ;;
        --streams) STREAMS=${2:?}; shift 2 ;;
        --top) TOP=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ $SECONDS_TO_RECORD =~ ^[1-9][0-9]*$ && $STREAMS =~ ^[1-9][0-9]*$ && $TOP =~ ^[1-9][0-9]*$ ]] ||
    die "--seconds, --streams and --top take positive whole numbers"
[[ $(id -u) == 0 ]] || die "needs root (network namespaces, perf on other processes)"
for tool in perf:linux-perf iperf3:iperf3; do
    command -v "${tool%%:*}" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool#*:}" >&2 ||
        die "could not install ${tool#*:}"
done
mkdir -p "$OUT"

PREFIX=svp$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
export SKYVINE_LAB_CURRENT=/tmp/skyvine-lab-current-$PREFIX
CLIENT=""
cleanup() {
    [[ -n $CLIENT ]] && kill "$CLIENT" 2>/dev/null
    "$LAB" down --prefix "$PREFIX" >/dev/null 2>&1 || true
    rm -f "$SKYVINE_LAB_CURRENT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$LAB" up --prefix "$PREFIX" --sites 2 >/dev/null
declare -A PID T0 T1
for s in a b; do read -r PID[$s] _ <"/tmp/skyvine-lab-$PREFIX/pids/router-$s"; done
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

ip netns exec "$PREFIX-b1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
sleep 0.3
ip netns exec "$PREFIX-a1" iperf3 -c 10.77.2.1 -p 5201 -t $((SECONDS_TO_RECORD + 4)) -P "$STREAMS" \
    -f m >"$OUT/iperf3.txt" 2>&1 &
CLIENT=$!
sleep 2
for s in a b; do T0[$s]=$(ticks "${PID[$s]}"); done
SYSCALLS=(read write sendmsg recvmmsg epoll_wait)
events=$(printf 'syscalls:sys_enter_%s,' "${SYSCALLS[@]}")
STATS=()
for s in a b; do
    # Tracepoints may be missing (no tracefs): the profile still runs, without these counts.
    perf stat -x , -e "${events%,}" -p "${PID[$s]}" -o "$OUT/syscalls-$s.csv" \
        -- sleep "$SECONDS_TO_RECORD" >/dev/null 2>"$OUT/perf-stat-$s.log" &
    STATS+=($!)
done
perf record -F 499 --call-graph dwarf,16384 -p "${PID[a]},${PID[b]}" -o "$OUT/perf.data" \
    -- sleep "$SECONDS_TO_RECORD" >/dev/null 2>"$OUT/perf-record.log"
for pid in "${STATS[@]}"; do wait "$pid" || true; done
for s in a b; do T1[$s]=$(ticks "${PID[$s]}"); done
wait "$CLIENT" || die "iperf3 failed: $(tail -n 3 "$OUT/iperf3.txt")"
CLIENT=""

hz=$(getconf CLK_TCK)
echo "profile-throughput: a1 -> b1, $STREAMS stream(s), $(awk '/receiver/ {print $(NF-2), $(NF-1)}' "$OUT/iperf3.txt" | tail -n 1)" \
    "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
for s in a b; do
    awk -v t=$((T1[$s] - T0[$s])) -v hz="$hz" -v d="$SECONDS_TO_RECORD" -v s="$s" \
        'BEGIN {printf "router %s: %.0f%% of one core while recorded\n", s, 100 * t / hz / d}'
done
for s in a b; do
    if [[ -s $OUT/syscalls-$s.csv ]]; then
        awk -F, -v d="$SECONDS_TO_RECORD" -v s="$s" '$3 ~ /sys_enter_/ {
            sub(/.*sys_enter_/, "", $3); line = line sprintf(" %s %.0f/s", $3, $1 / d) }
            END { if (line != "") print "router " s " system calls:" line }' "$OUT/syscalls-$s.csv"
    fi
done
for s in a b; do
    echo "== router $s (pid ${PID[$s]}): top $TOP by self time"
    # Shares of this router's own samples; `head` closing the pipe early is expected.
    perf report -i "$OUT/perf.data" --pid "${PID[$s]}" --percentage relative --no-children \
        --sort sym -g none --stdio 2>/dev/null | grep '%' | head -n "$TOP" || true
    echo "== router $s: top $TOP by children (self + callees; columns: children, self)"
    perf report -i "$OUT/perf.data" --pid "${PID[$s]}" --percentage relative --children \
        --sort sym -g none --stdio 2>/dev/null | grep '%' | head -n "$TOP" || true
    if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
        perf script -i "$OUT/perf.data" --pid "${PID[$s]}" 2>/dev/null | inferno-collapse-perf \
            | inferno-flamegraph >"$OUT/router-$s.svg"
    fi
done
echo "profile-throughput: perf data and flame graphs in $OUT"
