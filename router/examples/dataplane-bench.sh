#!/usr/bin/env bash
# Two-site data-plane benchmark (root): vmA -- routerA ==WAN veth== routerB -- vmB.
# Measures single-stream TCP (iperf3, vmA -> vmB) through plain kernel forwarding and through
# two `dataplane_pair` processes (TUN <-> QUIC). Prints Gbit/s per run and the ratio.
#
#   cargo build --release -p skyvine-router --example dataplane_pair
#   router/examples/dataplane-bench.sh [--seconds 10] [--runs 3] [-- extra dataplane_pair args]
set -euo pipefail

SECONDS_PER_RUN=10
RUNS=3
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${DATAPLANE_PAIR:-$ROOT/target/release/examples/dataplane_pair}
[[ -x $BIN ]] || { echo "build first: cargo build --release -p skyvine-router --example dataplane_pair" >&2; exit 1; }

P=svdp$RANDOM
VA=${P}va RA=${P}ra RB=${P}rb VB=${P}vb
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in $VA $RA $RB $VB; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for ns in $VA $RA $RB $VB; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
link() { # ns1 if1 addr1 ns2 if2 addr2
    ip link add "$P${2}x" type veth peer name "$P${5}y"
    ip link set "$P${2}x" netns "$1"; ip link set "$P${5}y" netns "$4"
    ip -n "$1" link set "$P${2}x" name "$2"; ip -n "$4" link set "$P${5}y" name "$5"
    ip -n "$1" addr add "$3" dev "$2"; ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
}
link "$VA" eth0 10.77.1.1/24 "$RA" lan0 10.77.1.254/24
link "$RA" wan0 100.64.0.1/24 "$RB" wan0 100.64.0.2/24
link "$VB" eth0 10.77.2.1/24 "$RB" lan0 10.77.2.254/24
ip -n "$VA" route add default via 10.77.1.254
ip -n "$VB" route add default via 10.77.2.254
for ns in $RA $RB; do
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done

iperf() { # prints Gbit/s of one run
    ip netns exec "$VB" iperf3 -s -1 >/dev/null 2>&1 &
    local server=$! out
    for _ in $(seq 50); do ip netns exec "$VB" ss -ltn | grep -q ':5201 ' && break; sleep 0.1; done
    out=$(ip netns exec "$VA" iperf3 -c 10.77.2.1 -t "$SECONDS_PER_RUN" -J) || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    python3 -c 'import json,sys; e=json.loads(sys.argv[1])["end"]; print("%.2f" % (e["sum_received"]["bits_per_second"]/1e9)); print("  retransmits %d" % e["sum_sent"]["retransmits"], file=sys.stderr)' "$out"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# (a) plain kernel forwarding
ip -n "$RA" route add 10.77.2.0/24 via 100.64.0.2
ip -n "$RB" route add 10.77.1.0/24 via 100.64.0.1
ip netns exec "$VA" ping -c 2 -W 1 10.77.2.1 >/dev/null
KERNEL=$(for _ in $(seq "$RUNS"); do iperf; done | tee /dev/stderr | median)
ip -n "$RA" route del 10.77.2.0/24
ip -n "$RB" route del 10.77.1.0/24

# (b) skyvine data plane
mkdir -p "$WORK/pki"
ip netns exec "$RB" "$BIN" --site b --peer-site a --local 10.77.2.0/24 --remote 10.77.1.0/24 \
    --bind 100.64.0.2:7400 --pki-dir "$WORK/pki" --tun sv0 "${EXTRA[@]}" 2>"$WORK/b.log" &
PIDS+=($!)
ip netns exec "$RA" "$BIN" --site a --peer-site b --local 10.77.1.0/24 --remote 10.77.2.0/24 \
    --bind 100.64.0.1:7400 --connect 100.64.0.2:7400 --pki-dir "$WORK/pki" --tun sv0 "${EXTRA[@]}" 2>"$WORK/a.log" &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q connected "$WORK/a.log" && grep -q connected "$WORK/b.log" && break
    sleep 0.1
done
grep -q connected "$WORK/a.log" || { cat "$WORK/a.log" "$WORK/b.log" >&2; exit 1; }
ip -n "$RA" route add 10.77.2.0/24 dev sv0
ip -n "$RB" route add 10.77.1.0/24 dev sv0
ip netns exec "$VA" ping -c 2 -W 1 10.77.2.1 >/dev/null
SKYVINE=$(for _ in $(seq "$RUNS"); do iperf; done | tee /dev/stderr | median)
for ns in $RA $RB; do ip -n "$ns" -s link show sv0 >&2; done
RTT=$(ip netns exec "$VA" ping -c 20 -i 0.05 10.77.2.1 | awk -F/ '/^rtt/ {print $5}')

CPU=$(for pid in "${PIDS[@]}"; do awk '{print $14+$15}' "/proc/$pid/stat"; done | paste -sd+ | bc)
for pid in "${PIDS[@]}"; do kill "$pid"; done
for pid in "${PIDS[@]}"; do wait "$pid" || true; done
PIDS=()
GB=$(grep -o '"rx_bytes":[0-9]*' "$WORK/b.log" | head -1 | cut -d: -f2)
ip netns exec "$VB" nstat -az TcpInCsumErrors TcpInErrs IpInHdrErrors IpInDiscards >&2 || true
grep -h -E "offload|max datagram|counters|quic:" "$WORK/a.log" "$WORK/b.log" >&2 || true

echo "kernel  ${KERNEL} Gbit/s"
echo "skyvine ${SKYVINE} Gbit/s (ping rtt avg ${RTT} ms)"
python3 -c "print('router CPU seconds per GB carried: %.2f' % ($CPU / 100 / ($GB / 1e9)))"
python3 -c "print('skyvine/kernel %.2f' % ($SKYVINE/$KERNEL))"
