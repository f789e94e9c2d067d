#!/usr/bin/env bash
# TCP throughput, round-trip time and router CPU cost from VM a1 to VM b1 on one fresh two-site
# lab, through (a) plain kernel forwarding between the router namespaces, (b) userspace
# WireGuard (wireguard-go with TUN offloads, Debian trixie's package) between the same router
# namespaces, (c) skyvine; then (d) the quinn datagram ceiling: the routers' own QUIC transport
# (router/examples/datagram_ceiling.rs) sending datagrams as fast as quinn allows from r-a to
# r-b, with nothing else in the way.
#
# For each path: one TCP stream and four (iperf3 -P 4), median of --reps runs each; RTT (median
# of --pings pings, idle path) and added RTT (minus kernel forwarding's); the CPU seconds both
# routers' processes spent (utime+stime of every thread, /proc/PID/stat) per GB carried. Then
# the ratios skyvine/wireguard-go, skyvine/kernel and skyvine/ceiling. Then (e) the round-trip
# floors between the router namespaces, --pings round trips at 10 ms each: an ICMP ping (answered
# by the kernel), a bare blocking UDP echo (router/examples/wakeup_floor.rs) and a quinn
# datagram echo (datagram_ceiling echo/ping). The bare echo adds to the ICMP ping one process
# woken, one receive and one send: the least a router crossing costs on this machine (a round
# trip through the overlay crosses a router four times: each router, each way). The benchmark
# prints that floor next to each tunnel's added RTT / 4, and the quinn echo's extra time over
# the ICMP ping (one quinn turnaround at the echo plus quinn's send and receive at the pinger)
# as a reference for the transport. Nothing is asserted.
#
# usage: netns-lab/bench-throughput.sh [--reps 3] [--seconds 10] [--pings 200] [--skip-skyvine]
#            [--no-build] [--variant 'ENV=VALUE ...']...
#
#   --variant 'SKYVINE_WORKER_THREADS=2'  measures skyvine once more (same lab, right after the
#                default run) with the routers restarted under these environment settings; one
#                extra row per --variant, for A/B comparisons inside one run.
#   --no-build   use the release binaries as they are (default: cargo build --release of the
#                router and the ceiling program first, a no-op when they are up to date).
#
# The machine's load average is printed before and after: on a shared machine, figures from a
# run with other work going on are only comparable within that run.
#
#        netns-lab/bench-throughput.sh --relay [--reps 3] [--seconds 10] [--pings 200] [--no-build]
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
REPO_ROOT=$(cd "$LAB_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
LAB=$LAB_DIR/lab.sh
TOOLS=$LAB_DIR/.tools
CEILING=$TARGET_DIR/release/examples/datagram_ceiling
CEILING_PORT=7401
FLOOR=$TARGET_DIR/release/examples/wakeup_floor
FLOOR_PORT=7402
DATAGRAM_SIZE=1380
REPS=3
SECONDS_PER_RUN=10
PINGS=200
SKIP_SKYVINE=0
BUILD=1
VARIANTS=()
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
        --no-build) BUILD=0; shift ;;
        --variant) VARIANTS+=("${2:?--variant needs ENV=VALUE settings}"); shift 2 ;;
        --relay) RELAY=1; shift ;;
        -h | --help) sed -n '2,44p' "$0"; exit 0 ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ $REPS =~ ^[1-9][0-9]*$ && $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ && $PINGS =~ ^[1-9][0-9]*$ ]] ||
    die "--reps, --seconds and --pings take positive whole numbers"
for variant in "${VARIANTS[@]}"; do
    for setting in $variant; do
        [[ $setting =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*$ ]] ||
            die "--variant '$variant': '$setting' is not ENV=VALUE"
    done
done
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
    if [[ -n ${CURRENT_FILE:-} ]]; then rm -f "$CURRENT_FILE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() {
    local name=$1
    shift
    ip netns exec "$PREFIX-$name" "$@"
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID...: utime+stime of every thread of the given processes, summed (clock ticks).
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        # Fields 14 and 15 counted after the ")" that closes the command name.
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ||
            die "process $pid is gone"
        total=$((total + t))
    done
    echo "$total"
}

# iperf_run STREAMS [SRC DST DST_IP]: one iperf3 run SRC -> DST (default a1 -> b1); prints the
# receiver's Mbit/s (all streams).
iperf_run() {
    local streams=$1 src=${2:-a1} dst=${3:-b1} dst_ip=${4:-10.77.2.1} server out deadline
    in_ns "$dst" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    server=$!
    deadline=$((SECONDS + 5))
    until in_ns "$dst" ss -ltn 2>/dev/null | grep -q ':5201 '; do
        ((SECONDS < deadline)) || die "iperf3 server did not start"
        sleep 0.05
    done
    out=$(in_ns "$src" iperf3 -c "$dst_ip" -p 5201 -t "$SECONDS_PER_RUN" -P "$streams" -f m 2>&1) ||
        { echo "$out" >&2; return 1; }
    wait "$server" 2>/dev/null || true
    awk '/receiver/ {print $(NF-2)}' <<<"$out" | tail -n 1
}

# measure LABEL [PID...]: REPS runs with 1 and with 4 streams, then PINGS pings. The PIDs are
# the processes whose CPU time is charged to the path (none for kernel forwarding). Prints
# "LABEL MBPS_1 MBPS_4 RTT_MS CPU_S_PER_GB_1 CPU_S_PER_GB_4".
measure() {
    local label=$1 streams rep mbps ticks0 ticks1 ticks gb result=() rtt
    shift
    for streams in 1 4; do
        local tputs=() ticks=0 gb=0
        for ((rep = 1; rep <= REPS; rep++)); do
            (($#)) && ticks0=$(cpu_ticks "$@")
            mbps=$(iperf_run "$streams") || die "$label: iperf3 -P $streams failed"
            (($#)) && { ticks1=$(cpu_ticks "$@"); ticks=$((ticks + ticks1 - ticks0)); }
            gb=$(awk -v g="$gb" -v m="$mbps" -v s="$SECONDS_PER_RUN" 'BEGIN {print g + m * s / 8000}')
            tputs+=("$mbps")
            log "$label -P $streams run $rep: $mbps Mbit/s"
        done
        result+=("$(printf '%s\n' "${tputs[@]}" | median)")
        if (($#)); then
            result+=("$(awk -v t="$ticks" -v hz="$CLK_TCK" -v g="$gb" 'BEGIN {printf "%.2f", (t / hz) / g}')")
        else
            result+=("-")
        fi
    done
    rtt=$(in_ns a1 ping -n -c "$PINGS" -i 0.01 10.77.2.1 | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | median)
    log "$label: rtt median ${rtt} ms over $PINGS pings"
    echo "$label ${result[0]} ${result[2]} $rtt ${result[1]} ${result[3]}"
}

# measure_one LABEL SRC DST DST_IP: REPS single-stream runs SRC -> DST, then PINGS pings;
# prints "LABEL MBPS RTT_MS GB" (GB: all the runs' payload, from the receiver's rates).
measure_one() {
    local label=$1 src=$2 dst=$3 dst_ip=$4 rep mbps tputs=() gb=0 rtt
    for ((rep = 1; rep <= REPS; rep++)); do
        mbps=$(iperf_run 1 "$src" "$dst" "$dst_ip") || die "$label: iperf3 failed"
        gb=$(awk -v g="$gb" -v m="$mbps" -v s="$SECONDS_PER_RUN" 'BEGIN {print g + m * s / 8000}')
        tputs+=("$mbps")
        log "$label run $rep: $mbps Mbit/s"
    done
    rtt=$(in_ns "$src" ping -n -c "$PINGS" -i 0.01 "$dst_ip" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | median)
    log "$label: rtt median ${rtt} ms over $PINGS pings"
    echo "$label $(printf '%s\n' "${tputs[@]}" | median) $rtt $gb"
}

# relay_bench: b1 -> c1 direct, then through relay a with b and c behind NAT.
relay_bench() {
    local direct relayed reference pid before after
    PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    "$LAB" up --prefix "$PREFIX" >/dev/null
    direct=$(measure_one direct b1 c1 10.77.3.1)
    "$LAB" down --prefix "$PREFIX" >/dev/null
    PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    "$LAB" up --prefix "$PREFIX" --nat b,c >/dev/null
    read -r pid _ <"/tmp/skyvine-lab-$PREFIX/pids/router-a"
    before=$(cpu_ticks "$pid")
    relayed=$(measure_one relayed b1 c1 10.77.3.1)
    after=$(cpu_ticks "$pid")
    reference=$(measure_one nat-direct a1 b1 10.77.2.1)
    "$LAB" down --prefix "$PREFIX" >/dev/null
    PREFIX=""

    local d_mbps d_rtt r_mbps r_rtt r_gb n_mbps n_rtt
    read -r _ d_mbps d_rtt _ <<<"$direct"
    read -r _ r_mbps r_rtt r_gb <<<"$relayed"
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
    awk -v t="$((after - before))" -v hz="$CLK_TCK" -v g="$r_gb" 'BEGIN {
        s = t / hz
        printf "relay router a: %.2f CPU s (user+system) for %.2f GB of TCP payload relayed: %.2f CPU s per GB\n", s, g, s / g }'
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ceiling_run: one datagram_ceiling run r-a -> r-b; prints the receiver's payload Gbit/s.
ceiling_run() {
    local pki=/tmp/skyvine-lab-$PREFIX/pki out receiver
    in_ns r-b "$CEILING" recv --site b --bind "100.64.0.2:$CEILING_PORT" --pki-dir "$pki" \
        >"$WORK/ceiling.out" 2>"$WORK/ceiling.err" &
    receiver=$!
    sleep 0.2
    in_ns r-a "$CEILING" send --site a --peer-site b --bind "100.64.0.1:$CEILING_PORT" \
        --connect "100.64.0.2:$CEILING_PORT" --pki-dir "$pki" --seconds "$SECONDS_PER_RUN" \
        --size "$DATAGRAM_SIZE" >/dev/null 2>>"$WORK/ceiling.err" ||
        { cat "$WORK/ceiling.err" >&2; return 1; }
    wait "$receiver" || { cat "$WORK/ceiling.err" >&2; return 1; }
    out=$(cat "$WORK/ceiling.out")
    log "$out"
    sed -n 's/.*: \([0-9.]*\) Gbit\/s payload$/\1/p' <<<"$out"
}

# rtt_floors: median round trips r-a -> r-b, PINGS at 10 ms each: ICMP, bare UDP echo, quinn
# datagram echo. Prints "ICMP_US UDP_US QUINN_US".
rtt_floors() {
    local pki=/tmp/skyvine-lab-$PREFIX/pki echo icmp udp quinn
    icmp=$(in_ns r-a ping -n -c "$PINGS" -i 0.01 100.64.0.2 | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | median)
    in_ns r-b "$FLOOR" echo --bind "100.64.0.2:$FLOOR_PORT" --count "$PINGS" 2>>"$WORK/floor.err" &
    echo=$!
    sleep 0.2
    udp=$(in_ns r-a "$FLOOR" ping --bind 100.64.0.1:0 --connect "100.64.0.2:$FLOOR_PORT" \
        --count "$PINGS" 2>>"$WORK/floor.err") || { cat "$WORK/floor.err" >&2; return 1; }
    wait "$echo" || { cat "$WORK/floor.err" >&2; return 1; }
    log "$udp"
    in_ns r-b "$CEILING" echo --site b --bind "100.64.0.2:$CEILING_PORT" --pki-dir "$pki" \
        2>>"$WORK/floor.err" &
    echo=$!
    sleep 0.2
    quinn=$(in_ns r-a "$CEILING" ping --site a --peer-site b --bind "100.64.0.1:$CEILING_PORT" \
        --connect "100.64.0.2:$CEILING_PORT" --pki-dir "$pki" --count "$PINGS" 2>>"$WORK/floor.err") ||
        { cat "$WORK/floor.err" >&2; return 1; }
    wait "$echo" || { cat "$WORK/floor.err" >&2; return 1; }
    log "$quinn"
    echo "$(awk -v ms="$icmp" 'BEGIN {print ms * 1000}') $(sed -n 's/.*median \([0-9.]*\) us$/\1/p' <<<"$udp") $(sed -n 's/.*median \([0-9.]*\) us$/\1/p' <<<"$quinn")"
}

# router_pids: the PIDs of the lab's two routers.
router_pids() {
    local s pid _
    for s in a b; do
        read -r pid _ <"/tmp/skyvine-lab-$PREFIX/pids/router-$s"
        echo "$pid"
    done
}

need iperf3 iperf3
need ping iputils-ping
need ss iproute2

if ((BUILD)); then
    log "building the release router, the ceiling program and the wake-up floor program"
    (cd "$REPO_ROOT" && cargo build --release -q -p skyvine-router --bin skyvine \
        --example datagram_ceiling --example wakeup_floor) >&2 ||
        die "cargo build failed"
fi

if ((RELAY)); then
    # A private current-lab file: never repoint the one other labs on this machine use.
    CURRENT_FILE=/tmp/skyvine-lab-current-bench-$$
    export SKYVINE_LAB_CURRENT=$CURRENT_FILE
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    relay_bench
    exit 0
fi

need wg wireguard-tools
[[ -x $CEILING ]] || die "$CEILING missing: cargo build --release -p skyvine-router --example datagram_ceiling"
[[ -x $FLOOR ]] || die "$FLOOR missing: cargo build --release -p skyvine-router --example wakeup_floor"

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

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PREFIX=svb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
# A private current-lab file: never repoint the one other labs on this machine use.
export SKYVINE_LAB_CURRENT=${SKYVINE_LAB_CURRENT:-/tmp/skyvine-lab-current-$PREFIX}
[[ $SKYVINE_LAB_CURRENT == /tmp/skyvine-lab-current-$PREFIX ]] && CURRENT_FILE=$SKYVINE_LAB_CURRENT
"$LAB" up --prefix "$PREFIX" --sites 2 --no-routers >/dev/null
WORK=/tmp/skyvine-lab-$PREFIX/bench
mkdir -p "$WORK"

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
    # Not through in_ns: $! must be wireguard-go itself (ip netns exec execs it), whose CPU
    # time is measured, not a subshell's.
    ip netns exec "$PREFIX-r-$s" "$WG_GO" -f "$ifname" >"$WORK/wireguard-go-$s.log" 2>&1 &
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
RESULT_WG=$(measure wireguard-go "${PIDS[@]}")
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
PIDS=()

# (c) skyvine routers on the same lab (then each --variant), (d) the ceiling.
RESULTS_SKYVINE=()
RESULT_CEILING=""
RESULT_FLOORS=""
SKYVINE_NOTE=""
if ((SKIP_SKYVINE)); then
    SKYVINE_NOTE="skipped (--skip-skyvine)"
elif ! "$LAB" start-routers --prefix "$PREFIX" >/dev/null 2>"$WORK/start-routers.err"; then
    SKYVINE_NOTE="routers did not carry traffic: $(tail -n 3 "$WORK/start-routers.err" | tr '\n' ' ')"
else
    # shellcheck disable=SC2046 # router_pids prints one PID per line
    RESULTS_SKYVINE+=("$(measure skyvine $(router_pids))")
    n=0
    for variant in "${VARIANTS[@]}"; do
        n=$((n + 1))
        for s in a b; do
            # shellcheck disable=SC2086 # the variant is a list of ENV=VALUE words
            env $variant "$LAB" --prefix "$PREFIX" restart-router "$s" >/dev/null
        done
        "$LAB" --prefix "$PREFIX" ping-all --wait-s 20 >/dev/null ||
            die "variant '$variant': the routers did not carry traffic"
        # shellcheck disable=SC2046
        RESULTS_SKYVINE+=("$(measure "skyvine-v$n" $(router_pids))")
    done
    ceilings=()
    for ((rep = 1; rep <= REPS; rep++)); do
        ceilings+=("$(ceiling_run)") || die "the ceiling program failed"
    done
    RESULT_CEILING=$(printf '%s\n' "${ceilings[@]}" | median)
    RESULT_FLOORS=$(rtt_floors) || die "the round-trip floor programs failed"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

read -r _ K1 K4 K_RTT _ _ <<<"$RESULT_KERNEL"
read -r _ W1 W4 W_RTT W_CPU1 W_CPU4 <<<"$RESULT_WG"
echo "bench-throughput: a1 -> b1 on one two-site lab; iperf3 -t $SECONDS_PER_RUN, median of $REPS runs per" \
    "figure; RTT median of $PINGS pings at 10 ms on the idle path"
echo "wireguard-go: $WG_FROM"
echo "machine: $(nproc) cores; load average (1/5/15 min) before $LOAD_BEFORE, after $LOAD_AFTER"
n=0
for variant in "${VARIANTS[@]}"; do
    n=$((n + 1))
    echo "skyvine-v$n: skyvine with $variant"
done
printf '%-14s %12s %12s %9s %12s %14s %14s\n' path 1_stream_mbps 4_stream_mbps rtt_ms added_rtt_ms \
    cpu_s_per_gb_1 cpu_s_per_gb_4
row() { # LABEL M1 M4 RTT CPU1 CPU4
    printf '%-14s %12.1f %12.1f %9.3f %12s %14s %14s\n' "$1" "$2" "$3" "$4" \
        "$(awk -v a="$4" -v b="$K_RTT" -v l="$1" 'BEGIN {if (l == "kernel") print "-"; else printf "%.3f", a - b}')" "$5" "$6"
}
row kernel "$K1" "$K4" "$K_RTT" - -
row wireguard-go "$W1" "$W4" "$W_RTT" "$W_CPU1" "$W_CPU4"
for result in "${RESULTS_SKYVINE[@]}"; do
    # shellcheck disable=SC2086
    row $result
done
if [[ -z $RESULT_CEILING ]]; then
    echo "skyvine        not measured: $SKYVINE_NOTE"
    awk -v w="$W1" -v k="$K1" 'BEGIN { printf "ratio wireguard-go/kernel 1 stream %.3f\n", w / k }'
    ((SKIP_SKYVINE)) || exit 1
    exit 0
fi
echo "quinn datagram ceiling r-a -> r-b ($DATAGRAM_SIZE-byte datagrams, median of $REPS): $RESULT_CEILING Gbit/s payload"
for result in "${RESULTS_SKYVINE[@]}"; do
    read -r label S1 S4 S_RTT S_CPU1 S_CPU4 <<<"$result"
    awk -v l="$label" -v s1="$S1" -v s4="$S4" -v sr="$S_RTT" -v sc1="$S_CPU1" -v sc4="$S_CPU4" \
        -v k1="$K1" -v k4="$K4" -v kr="$K_RTT" -v w1="$W1" -v w4="$W4" -v wr="$W_RTT" \
        -v wc1="$W_CPU1" -v wc4="$W_CPU4" -v c="$RESULT_CEILING" 'BEGIN {
        printf "ratio %s/wireguard-go  1 stream %.3f  4 streams %.3f  added-rtt %.3f  cpu-per-GB %.3f (1) %.3f (4)\n",
            l, s1 / w1, s4 / w4, (sr - kr) / (wr - kr), sc1 / wc1, sc4 / wc4
        printf "ratio %s/kernel        1 stream %.3f  4 streams %.3f  rtt %.3f\n", l, s1 / k1, s4 / k4, sr / kr
        printf "ratio %s/ceiling       1 stream %.3f  4 streams %.3f\n", l, s1 / (c * 1000), s4 / (c * 1000)
    }'
done
read -r F_ICMP F_UDP F_QUINN <<<"$RESULT_FLOORS"
echo "round trips r-a -> r-b (median of $PINGS at 10 ms): ICMP ping $F_ICMP us, bare UDP echo $F_UDP us," \
    "quinn datagram echo $F_QUINN us"
# The pinger is woken once per round trip in all three; an echo adds one process woken, one
# receive and one send: what a router crossing costs at least. A round trip through the overlay
# crosses a router four times.
crossings="bare socket floor $(awk -v i="$F_ICMP" -v e="$F_UDP" 'BEGIN {printf "%.1f", e - i}') us,"
crossings+=" wireguard-go $(awk -v r="$W_RTT" -v k="$K_RTT" 'BEGIN {printf "%.1f", (r - k) * 1000 / 4}') us"
for result in "${RESULTS_SKYVINE[@]}"; do
    read -r label _ _ S_RTT _ _ <<<"$result"
    crossings+=", $label $(awk -v r="$S_RTT" -v k="$K_RTT" 'BEGIN {printf "%.1f", (r - k) * 1000 / 4}') us"
done
echo "per router crossing (woken, receive, send; a tunnel's added rtt / 4): $crossings"
awk -v i="$F_ICMP" -v e="$F_UDP" -v q="$F_QUINN" -v kr="$K_RTT" -v wr="$W_RTT" 'BEGIN {
    printf "added-rtt floor, 4 crossings at the bare socket'"'"'s cost: %.3f ms; half of wireguard-go'"'"'s added rtt: %.3f ms\n",
        4 * (e - i) / 1000, (wr - kr) / 2
    printf "quinn echo over the ICMP ping: %.1f us (one quinn turnaround at the echo, and quinn'"'"'s send and receive at the pinger)\n", q - i }'
for result in "${RESULTS_SKYVINE[@]}"; do
    read -r label _ _ S_RTT _ _ <<<"$result"
    awk -v l="$label" -v sr="$S_RTT" -v kr="$K_RTT" -v i="$F_ICMP" -v e="$F_UDP" 'BEGIN {
        printf "ratio %s/floor         added-rtt %.3f\n", l, (sr - kr) * 1000 / (4 * (e - i)) }'
done
