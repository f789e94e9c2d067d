#!/usr/bin/env bash
# Self test of the namespace lab and its tools (root). Without routers (plain kernel
# forwarding): up, ping-all, a migration with each announcement kind (the frames must reach the
# destination router's LAN, the VM must keep its addresses and ARP cache), probe, a checked
# transfer, the WAN delay relay, and down leaving no namespace behind. With --with-routers it
# also brings up a lab with skyvine routers, kills and restarts one, and pings again.
#
# usage: netns-lab/selftest.sh [--with-routers]
# Ends with "selftest: N passed, M failed"; exits non-zero if anything failed.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$LAB_DIR/lab.sh
TOOLS=${SKYVINE_LABTOOLS_DIR:-${CARGO_TARGET_DIR:-$LAB_DIR/../target}/release}
WITH_ROUTERS=0
[[ ${1:-} == --with-routers ]] && WITH_ROUTERS=1

PASSED=0
FAILED=0
PREFIXES=()

pass() { echo "ok   $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
# check NAME CMD...: runs CMD, counts the result.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/last.out" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/     /' "$WORK/last.out"; fi
}

WORK=$(mktemp -d)
cleanup() {
    local p
    for p in "${PREFIXES[@]}"; do "$LAB" down --prefix "$p" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

new_prefix() { echo "st$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')$1"; }

no_namespace_left() { ! ip netns list | awk '{print $1}' | grep -q "^$1-"; }

# migrate_and_watch P VM SITE KIND EXPECT: watches SITE's router LAN for the VM's
# announcement frames while migrating; EXPECT frames of KIND must arrive (0: none may).
migrate_and_watch() {
    local p=$1 vm=$2 site=$3 kind=$4 expect=$5 mac watch_kind watcher rc
    mac=$(printf '52:54:00:77:0%d:0%s' "$(($(printf '%d' "'${vm:0:1}") - 96))" "${vm:1:1}")
    case "$kind" in rarp) watch_kind=rarp-request ;; garp) watch_kind=garp-request ;; none) watch_kind=rarp-request,garp-request ;; esac
    ip netns exec "$p-r-$site" "$TOOLS/skyvine-announce" watch --iface lan0 --mac "$mac" \
        --kind "$watch_kind" --count "$((expect > 0 ? expect : 1))" --timeout-ms 3000 >"$WORK/watch.out" 2>&1 &
    watcher=$!
    # The watcher is listening once it printed its banner.
    local deadline=$((SECONDS + 5))
    until grep -qs watching "$WORK/watch.out"; do ((SECONDS < deadline)) || return 1; sleep 0.02; done
    "$LAB" --prefix "$p" migrate "$vm" "$site" --announce "$kind" --pause-ms 50 || return 1
    rc=0
    wait "$watcher" || rc=$?
    cat "$WORK/watch.out"
    if ((expect > 0)); then ((rc == 0)); else ((rc != 0)) && ! grep -q "kind=" "$WORK/watch.out"; fi
}

# Addresses and ARP cache entries (IP and MAC, not their NUD state, which ages on its own).
vm_state() { ip netns exec "$1-$2" sh -c "ip -br addr show eth0; ip neigh show dev eth0 | awk '/lladdr/ {print \$1, \$3}' | sort"; }

# ---------------------------------------------------------------------------------------------
P=$(new_prefix n)
PREFIXES+=("$P")
check "up --no-routers (3 sites) and every cross-site pair pings" "$LAB" up --prefix "$P" --no-routers
check "ping-all" "$LAB" --prefix "$P" ping-all
check "status names every namespace" bash -c "'$LAB' --prefix '$P' status | grep -q '$P-lan'"

before=$(vm_state "$P" a1)
check "migrate a1 a->b with QEMU's 5 RARPs reaching router b" migrate_and_watch "$P" a1 b rarp 5
check "a1 kept its address and ARP cache" test "$before" == "$(vm_state "$P" a1)"
check "where a1 = b" bash -c "[[ \$('$LAB' --prefix '$P' where a1) == b ]]"
check "migrate a1 b->c with a gratuitous ARP reaching router c" migrate_and_watch "$P" a1 c garp 1
check "migrate a1 c->a announcing nothing (no frame at router a)" migrate_and_watch "$P" a1 a none 0
check "ping-all after a1 came home" "$LAB" --prefix "$P" ping-all --wait-s 5
check "probe a1 from a2,c1 (1 s): nothing lost" bash -c \
    "'$LAB' --prefix '$P' probe --to a1 --from a2,c1 --duration-s 1 | tee /dev/stderr | grep -c ' lost=0 ' | grep -qx 2"
check "probe --json is one JSON document" bash -c \
    "'$LAB' --prefix '$P' probe --to b2 --from a1 --duration-s 0.2 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"results\"][0][\"report\"][\"sent\"] == 200'"

xfer() {
    ip netns exec "$P-a1" "$TOOLS/skyvine-xfer" server --listen 0.0.0.0:7800 >"$WORK/xs.out" 2>&1 &
    local server=$! deadline=$((SECONDS + 5))
    until grep -qs listening "$WORK/xs.out"; do ((SECONDS < deadline)) || return 1; sleep 0.02; done
    ip netns exec "$P-c2" "$TOOLS/skyvine-xfer" client --to 10.77.1.1:7800 --bytes 32M --seed 42 || return 1
    wait "$server" && cat "$WORK/xs.out"
}
check "skyvine-xfer c2 -> a1, 32 MiB, every byte checked" xfer

check "down" "$LAB" down --prefix "$P"
check "no namespace with prefix $P- remains" no_namespace_left "$P"

# ---------------------------------------------------------------------------------------------
P=$(new_prefix f)
PREFIXES+=("$P")
failing_up() {
    # A router binary that fails (certificate generation) half-way through `up`.
    ! SKYVINE_BIN=/bin/false "$LAB" up --prefix "$P" --sites 2
}
check "a failing up exits non-zero" failing_up
check "... and leaves no namespace with prefix $P- behind" no_namespace_left "$P"

# ---------------------------------------------------------------------------------------------
P=$(new_prefix d)
PREFIXES+=("$P")
check "up --sites 2 --wan-delay-ms 5 (delay relay)" "$LAB" up --prefix "$P" --sites 2 --no-routers --wan-delay-ms 5
relay_rtt() {
    local min
    min=$(ip netns exec "$P-r-a" ping -n -c 20 -i 0.05 100.64.0.2 | awk -F'[=/ ]+' '/^rtt/ {print $7}')
    echo "router a -> b rtt min ${min} ms through a 5 ms relay"
    # The relay holds every frame 5 ms each way: no reply can be faster than 10 ms.
    awk -v m="$min" 'BEGIN { exit !(m >= 10.0) }'
}
check "router RTT through the relay is at least 2 x 5 ms" relay_rtt
check "down (relay lab)" "$LAB" down --prefix "$P"
check "no namespace with prefix $P- remains" no_namespace_left "$P"

# ---------------------------------------------------------------------------------------------
if ((WITH_ROUTERS)); then
    P=$(new_prefix r)
    PREFIXES+=("$P")
    check "up with skyvine routers" "$LAB" up --prefix "$P"
    check "kill-router b" "$LAB" --prefix "$P" kill-router b
    check "restart-router b" "$LAB" --prefix "$P" restart-router b
    check "ping-all after restarting router b" "$LAB" --prefix "$P" ping-all --wait-s 20
    check "down (router lab)" "$LAB" down --prefix "$P"
    check "no namespace with prefix $P- remains" no_namespace_left "$P"
fi

echo "selftest: $PASSED passed, $FAILED failed"
((FAILED == 0))
