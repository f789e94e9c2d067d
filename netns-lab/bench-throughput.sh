#!/usr/bin/env bash
# Single-stream TCP throughput and round-trip time from VM a1 to VM b1 on one fresh two-site
# lab, through (a) plain kernel forwarding between the router namespaces, (b) userspace
# WireGuard (wireguard-go with TUN offloads, Debian trixie's package) between the same router
# namespaces, (c) skyvine. Prints the medians and the ratios skyvine/kernel and
# skyvine/wireguard-go.
#
# usage: netns-lab/bench-throughput.sh [--reps 3] [--seconds 10] [--pings 200] [--skip-skyvine]
#        netns-lab/bench-throughput.sh --relay [--reps 3] [--seconds 10] [--pings 200]
#
# --relay measures the relay instead: a single TCP stream b1 -> c1 through skyvine, first on a
# three-site lab where b and c connect directly, then on one where both sit behind NAT
# (lab.sh up --nat b,c) and every packet crosses router a inside the end-to-end b<->c QUIC
# connection. Prints both, the relayed/direct ratio, the round-trip times, and router a's CPU
# time (user + system, from /proc) per GB it relayed; a1 -> b1 (direct, through b's NAT) on the
# NAT lab is printed for reference.
#
# Installs iperf3, iputils-ping and wireguard-tools with apt when missing. wireguard-go is
# fetched with apt from the trixie suite of the machine's own Debian mirror, using a private
# apt directory (the system's sources stay untouched), and unpacked with dpkg-deb -x into
# netns-lab/.tools/; Debian 12's package is the fallback. The output says which one ran.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$LAB_DIR/lab.sh
TOOLS=$LAB_DIR/.tools
REPS=3
SECONDS_PER_RUN=10
PINGS=200
SKIP_SKYVINE=0
RELAY=0

die() {
    echo "bench-throughput: error: $*" >&2
    exit 1
}
log() { echo "bench-throughput: $*" >&2; }

while (($#)); do
    case "$1" in
        --reps) REPS=${2:?}; shift 2 ;;
        --seconds) SECONDS_PER_RUN=${2:?}; shift 2 ;;
        --pings) PINGS=${2:?}; shift 2 ;;
        --skip-skyvine) SKIP_SKYVINE=1; shift ;;
        --relay) RELAY=1; shift ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ $REPS =~ ^[1-9][0-9]*$ && $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ && $PINGS =~ ^[1-9][0-9]*$ ]] ||
    die "--reps, --seconds and --pings take positive whole numbers"
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"

APT_UPDATED=0
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "$1 missing: installing Debian package $2"
    if [[ $APT_UPDATED == 0 ]]; then apt-get update -qq >&2; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 ||
        die "could not install $2"
}

# fetch_wireguard_go SUITE: downloads SUITE's wireguard-go .deb through a private apt
# directory pointed at the machine's own Debian mirror; prints the unpacked binary's path.
fetch_wireguard_go() {
    local suite=$1 dir=$TOOLS/wireguard-go-$1 apt=$TOOLS/apt-$1 mirror deb opts
    if [[ -x $dir/usr/bin/wireguard-go ]]; then
        echo "$dir/usr/bin/wireguard-go"
        return 0
    fi
    mirror=$(debian_mirror) || return 1
    rm -rf "$apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$apt/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        >"$apt/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq >"$apt/update.log" 2>&1 || { log "apt update for $suite failed"; return 1; }
    (cd "$apt/debs" && apt-get "${opts[@]}" download wireguard-go >"$apt/download.log" 2>&1) ||
        { log "apt download wireguard-go from $suite failed"; return 1; }
    deb=$(find "$apt/debs" -name 'wireguard-go_*.deb' | head -n 1)
    [[ -n $deb ]] || return 1
    rm -rf "$dir"
    dpkg-deb -x "$deb" "$dir"
    basename "$deb" >"$dir/PACKAGE"
    rm -rf "$apt"
    [[ -x $dir/usr/bin/wireguard-go ]] && echo "$dir/usr/bin/wireguard-go"
}

# The Debian mirror this machine's apt already uses (for the bookworm suite).
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/{u=$2} /^Suites:/ && / bookworm( |$)/{print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=$(awk '$1=="deb" && $3=="bookworm"{print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [[ -n $uri ]] || { log "no Debian mirror found in the apt sources"; return 1; }
    echo "$uri"
}

median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print v[(NR+1)/2]} else {print (v[NR/2]+v[NR/2+1])/2}}'; }

PIDS=()
PREFIX=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $PREFIX ]]; then "$LAB" down --prefix "$PREFIX" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() {
    local name=$1
    shift
    ip netns exec "$PREFIX-$name" "$@"
}

# measure LABEL [SRC DST DST_IP]: iperf3 SRC -> DST (default a1 -> b1) REPS times and PINGS
# pings; prints "LABEL MBPS RTT_MS BYTES" (BYTES: all the runs' payload bytes received).
measure() {
    local label=$1 src=${2:-a1} dst=${3:-b1} dst_ip=${4:-10.77.2.1} rep server tputs=() out rtt
    local bytes=0
    for ((rep = 1; rep <= REPS; rep++)); do
        in_ns "$dst" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
        server=$!
        local deadline=$((SECONDS + 5))
        until in_ns "$dst" ss -ltn 2>/dev/null | grep -q ':5201 '; do
            ((SECONDS < deadline)) || die "iperf3 server did not start"
            sleep 0.05
        done
        out=$(in_ns "$src" iperf3 -c "$dst_ip" -p 5201 -t "$SECONDS_PER_RUN" -f m 2>&1) ||
            { echo "$out" >&2; die "$label: iperf3 failed"; }
        wait "$server" 2>/dev/null || true
        tputs+=("$(awk '/receiver/ {print $(NF-2)}' <<<"$out" | tail -n 1)")
        # The receiver's transferred amount, e.g. "3.81 GBytes".
        bytes=$(awk -v total="$bytes" '/receiver/ {n = $(NF-4); u = $(NF-3)}
            END { m = (u ~ /^G/) ? 2^30 : (u ~ /^M/) ? 2^20 : (u ~ /^K/) ? 2^10 : 1; printf "%.0f", total + n * m }' <<<"$out")
        log "$label run $rep: ${tputs[-1]} Mbit/s"
    done
    rtt=$(in_ns "$src" ping -n -c "$PINGS" -i 0.01 "$dst_ip" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | median)
    log "$label: rtt median ${rtt} ms over $PINGS pings"
    echo "$label $(printf '%s\n' "${tputs[@]}" | median) $rtt $bytes"
}

# cpu_ticks PID: user + system clock ticks the process used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# relay_bench: b1 -> c1 direct, then through relay a with b and c behind NAT.
relay_bench() {
    local direct relayed reference pid before after hz
    PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    "$LAB" up --prefix "$PREFIX" >/dev/null
    direct=$(measure direct b1 c1 10.77.3.1)
    "$LAB" down --prefix "$PREFIX" >/dev/null
    PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    "$LAB" up --prefix "$PREFIX" --nat b,c >/dev/null
    read -r pid _ <"/tmp/skyvine-lab-$PREFIX/pids/router-a"
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks "$pid")
    relayed=$(measure relayed b1 c1 10.77.3.1)
    after=$(cpu_ticks "$pid")
    reference=$(measure nat-direct a1 b1 10.77.2.1)
    "$LAB" down --prefix "$PREFIX" >/dev/null
    PREFIX=""

    local d_mbps d_rtt r_mbps r_rtt r_bytes n_mbps n_rtt
    read -r _ d_mbps d_rtt _ <<<"$direct"
    read -r _ r_mbps r_rtt r_bytes <<<"$relayed"
    read -r _ n_mbps n_rtt _ <<<"$reference"
    echo "bench-throughput --relay: single TCP stream (iperf3 -t $SECONDS_PER_RUN, median of $REPS), RTT median of $PINGS pings at 10 ms"
    printf '%-34s %14s %10s\n' path throughput_mbps rtt_ms
    printf '%-34s %14.1f %10.3f\n' "b1 -> c1 direct (no NAT)" "$d_mbps" "$d_rtt"
    printf '%-34s %14.1f %10.3f\n' "b1 -> c1 via relay a (b, c NATed)" "$r_mbps" "$r_rtt"
    printf '%-34s %14.1f %10.3f\n' "a1 -> b1 direct through b's NAT" "$n_mbps" "$n_rtt"
    awk -v r="$r_mbps" -v d="$d_mbps" -v rr="$r_rtt" -v dr="$d_rtt" 'BEGIN {
        printf "ratio relayed/direct         throughput %.3f  rtt %.3f\n", r / d, rr / dr }'
    # Every relayed byte crossed router a once in each direction of its QUIC connections (in
    # from b, out to c); the ACKs of the reverse direction are a few percent on top.
    awk -v t="$((after - before))" -v hz="$hz" -v b="$r_bytes" 'BEGIN {
        s = t / hz
        printf "relay router a: %.2f CPU s (user+system) for %.2f GB of TCP payload relayed: %.2f CPU s per GB\n", s, b / 1e9, s / (b / 1e9) }'
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

if ((RELAY)); then
    need iperf3 iperf3
    need ping iputils-ping
    need ss iproute2
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    relay_bench
    exit 0
fi

need iperf3 iperf3
need ping iputils-ping
need wg wireguard-tools
need ss iproute2

WG_GO=""
WG_FROM=""
if WG_GO=$(fetch_wireguard_go trixie); then
    WG_FROM="Debian trixie $(cat "$(dirname "$(dirname "$(dirname "$WG_GO")")")/PACKAGE")"
elif WG_GO=$(fetch_wireguard_go bookworm); then
    WG_FROM="Debian 12 (bookworm) $(cat "$(dirname "$(dirname "$(dirname "$WG_GO")")")/PACKAGE") -- FALLBACK, no TUN offloads"
else
    die "could not fetch wireguard-go from trixie nor bookworm"
fi
log "wireguard-go: $WG_FROM"

PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
"$LAB" up --prefix "$PREFIX" --sites 2 --no-routers >/dev/null

# (a) plain kernel forwarding with static routes between the router namespaces.
RESULT_KERNEL=$(measure kernel)

# (b) wireguard-go between the same router namespaces, replacing the static routes.
for s in a b; do
    in_ns "r-$s" ip route del "10.77.$([[ $s == a ]] && echo 2 || echo 1).0/24"
done
declare -A KEY PUB
for s in a b; do
    KEY[$s]=$(wg genkey)
    PUB[$s]=$(wg pubkey <<<"${KEY[$s]}")
done
for s in a b; do
    peer=$([[ $s == a ]] && echo b || echo a)
    pn=$([[ $s == a ]] && echo 2 || echo 1)
    ifname=wg$PREFIX$s
    # The UAPI socket lives in /var/run/wireguard/IFNAME.sock, shared by all namespaces:
    # interface names carry the lab prefix.
    in_ns "r-$s" "$WG_GO" -f "$ifname" >"/tmp/skyvine-lab-$PREFIX/wireguard-go-$s.log" 2>&1 &
    PIDS+=($!)
    deadline=$((SECONDS + 5))
    until in_ns "r-$s" ip link show "$ifname" >/dev/null 2>&1 && [[ -S /var/run/wireguard/$ifname.sock ]]; do
        ((SECONDS < deadline)) || die "wireguard-go did not create $ifname"
        sleep 0.05
    done
    keyfile=$(mktemp)
    echo "${KEY[$s]}" >"$keyfile"
    in_ns "r-$s" wg set "$ifname" private-key "$keyfile" listen-port 51820 \
        peer "${PUB[$peer]}" endpoint "100.64.0.$pn:51820" allowed-ips "10.77.$pn.0/24"
    rm -f "$keyfile"
    in_ns "r-$s" ip link set "$ifname" mtu 1420 up
    in_ns "r-$s" ip route add "10.77.$pn.0/24" dev "$ifname"
done
in_ns a1 ping -c 1 -W 2 10.77.2.1 >/dev/null || die "no connectivity through wireguard-go"
RESULT_WG=$(measure wireguard-go)
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
PIDS=()

# (c) skyvine routers on the same lab.
RESULT_SKYVINE=""
SKYVINE_NOTE=""
if ((SKIP_SKYVINE)); then
    SKYVINE_NOTE="skipped (--skip-skyvine)"
elif ! "$LAB" start-routers --prefix "$PREFIX" >/dev/null 2>"/tmp/bench-throughput-$PREFIX.err"; then
    SKYVINE_NOTE="routers did not carry traffic: $(tail -n 3 "/tmp/bench-throughput-$PREFIX.err" | tr '\n' ' ')"
else
    RESULT_SKYVINE=$(measure skyvine)
fi
rm -f "/tmp/bench-throughput-$PREFIX.err"

read -r _ K_MBPS K_RTT <<<"$RESULT_KERNEL"
read -r _ W_MBPS W_RTT <<<"$RESULT_WG"
echo "bench-throughput: a1 -> b1, single TCP stream (iperf3 -t $SECONDS_PER_RUN, median of $REPS), RTT median of $PINGS pings at 10 ms"
echo "wireguard-go: $WG_FROM"
printf '%-14s %14s %12s %16s\n' path throughput_mbps rtt_ms added_rtt_ms
printf '%-14s %14.1f %12.3f %16s\n' kernel "$K_MBPS" "$K_RTT" "-"
printf '%-14s %14.1f %12.3f %16.3f\n' wireguard-go "$W_MBPS" "$W_RTT" "$(awk -v a="$W_RTT" -v b="$K_RTT" 'BEGIN{print a-b}')"
if [[ -n $RESULT_SKYVINE ]]; then
    read -r _ S_MBPS S_RTT <<<"$RESULT_SKYVINE"
    printf '%-14s %14.1f %12.3f %16.3f\n' skyvine "$S_MBPS" "$S_RTT" "$(awk -v a="$S_RTT" -v b="$K_RTT" 'BEGIN{print a-b}')"
    awk -v s="$S_MBPS" -v k="$K_MBPS" -v w="$W_MBPS" -v sr="$S_RTT" -v kr="$K_RTT" -v wr="$W_RTT" 'BEGIN {
        printf "ratio skyvine/kernel       throughput %.3f  rtt %.3f\n", s / k, sr / kr
        printf "ratio skyvine/wireguard-go throughput %.3f  rtt %.3f  added-rtt %.3f\n", s / w, sr / wr, (sr - kr) / (wr - kr)
    }'
else
    echo "skyvine        not measured: $SKYVINE_NOTE"
    awk -v w="$W_MBPS" -v k="$K_MBPS" 'BEGIN { printf "ratio wireguard-go/kernel throughput %.3f\n", w / k }'
    ((SKIP_SKYVINE)) || exit 1
fi
