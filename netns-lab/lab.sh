#!/usr/bin/env bash
# skyvine network-namespace lab: sites, VMs, routers and a WAN built from network namespaces.
#
# Topology (prefix P, sites S in a b c with number N = 1 2 3, VMs V in 1 2):
#
#   namespace   P-SV      a VM: eth0 = 10.77.N.V/24 (/16 with --optimize), MAC 52:54:00:77:0N:0V,
#                         default route via 10.77.N.254 (none with --optimize)
#   namespace   P-lan     the hypervisors' switch fabric: one bridge per site, br-S, with ports
#                         vm-SV (the host end of each VM's link) and r-S (the router's LAN link).
#                         All site bridges live in this one namespace, so migrating a VM is
#                         `ip link set vm-SV nomaster` + `master br-T`: the VM's own interface
#                         never loses carrier, so it keeps its IP, MAC, ARP cache and sockets.
#   namespace   P-r-S     site S's router: lan0 = 10.77.N.254/24 (MAC 52:54:00:77:0N:fe),
#                         wan0 = 100.64.0.N/24 (MAC 52:54:00:64:00:0N), TUN skyvine0 (router)
#   namespace   P-wan     the WAN: bridge br0 with ports r-S, or, with --wan-delay-ms, no bridge
#                         and the skyvine-delay relay attached to the r-S ports.
#   namespace   P-nat-S   with `up --nat S,...`: site S's router sits behind its own NAT. The
#                         router's wan0 is 192.168.N.2/24 (default route via 192.168.N.1); the
#                         NAT namespace has in0 = 192.168.N.1/24 towards it and wan0 =
#                         100.64.0.N/24 on the WAN (port r-S there, as a public router's), and
#                         nftables masquerades the router's packets out of wan0 with no inbound
#                         mapping: new connections from the WAN are dropped. Such a router
#                         dials out and is never dialed; two NATed sites reach each other via
#                         site a (public, `relay = true`).
#   namespaces  P-r-S, P-r-S-2  with `up --ha S`: site S's two routers, with keepalived holding
#                         the virtual IPs 10.77.N.254 (lan0) and 100.64.0.N (wan0); see ha.sh.
#   QEMU guest  g1        with `up --qemu [S]`: a real Linux VM (TCG) whose tap tap-g1-I sits in
#                         P-lan on br-S; eth0 = 10.77.N.10/24, MAC 52:54:00:77:0N:10 (guest.sh).
#   namespace   P-SVn2    with `up --networks 2`: a second, isolated virtual network with the
#                         same addresses: VM SVn2 (10.77.N.V, MAC 52:54:00:78:0N:0V) on bridge
#                         br2-S, and the router's second LAN link lan1 (10.77.N.254, MAC
#                         52:54:00:78:0N:fe). The routers then carry network "blue" (id 1:
#                         lan0, TUN skyvine1, VRF svrf1) and "red" (id 2: lan1, skyvine2,
#                         svrf2); ping-all checks both, each within its own network.
#
# Interface names never carry the prefix (every link lives inside a lab namespace), so any
# prefix of 1-10 characters [a-z0-9] works. State (configs, certificates, logs, PIDs) lives in
# /tmp/skyvine-lab-P/; the current prefix is remembered in /tmp/skyvine-lab-current.
#
# Run `lab.sh help` for the commands. Progress goes to stderr, results to stdout; every
# failure exits non-zero with a message starting "lab.sh: error:".
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
SKYVINE_BIN=${SKYVINE_BIN:-$TARGET_DIR/release/skyvine}
LABTOOLS_DIR=${SKYVINE_LABTOOLS_DIR:-$TARGET_DIR/release}
CURRENT_FILE=${SKYVINE_LAB_CURRENT:-/tmp/skyvine-lab-current}
WAN_PORT=7400
PROBE_PORT=7700

PREFIX=""
STATE=""

die() {
    echo "lab.sh: error: $*" >&2
    exit 1
}

log() {
    echo "lab.sh: $*" >&2
}

usage() {
    cat <<'EOF'
usage: lab.sh COMMAND [OPTIONS]

  up [--prefix P] [--sites 2|3] [--wan-delay-ms N] [--no-routers] [--optimize] [--wait-s 20]
     [--qemu [SITE]] [--nic virtio|e1000] [--nat SITE,...] [--ha SITE] [--networks 1|2]
        build the lab, start the routers (or install static kernel routes with --no-routers)
        and wait until every cross-site VM pair pings. --nat b,c puts each listed site's router
        behind its own NAT (nftables masquerade, no inbound mapping): it dials out and is never
        dialed, and two NATed sites talk through site a, which stays public and relays. --qemu also builds (cached) and boots
        guest g1, a real QEMU VM (TCG) on SITE's bridge (default a) in SITE's LNDT, running
        the prober echo and the checked-transfer server; --nic picks its NIC (virtio). --ha a
        gives site a two routers, a (active first) and a-2 (standby), with keepalived in each
        holding the site's virtual IPs (gateway 10.77.1.254, WAN 100.64.0.1) by VRRP; see ha.sh.
        --networks 2 adds a second, isolated virtual network with the same addresses (VMs
        a1n2 ... on bridges br2-S, the routers' lan1): the routers carry networks blue (id 1)
        and red (id 2), each in its own VRF
  down [--prefix P] [--keep-logs]
        stop the lab's processes (recorded PIDs and anything left inside its namespaces) and
        delete its namespaces
  status                        namespaces, routers (alive?), TUN routes per router
  exec NAME CMD...              run CMD in a lab namespace (NAME: a1, r-b, wan, lan)
  logs SITE|S-2|wan|GUEST       print a router's log (S-2: a --ha site's second router; or the
                                WAN relay's, or a guest's console)
  ping-all [--wait-s N]         ping all cross-site VM pairs (and every guest from the VMs of
                                the other sites); matrix and OK count
  start-routers [--wait-s 20]   turn a --no-routers lab into a routed one (drop the static
                                routes, generate certificates and configs, start the routers)
  restart-router SITE           stop (SIGTERM) and start one router again
  nat-rebind SITE               give a NATed site's router a new address behind its NAT
                                (192.168.N.2 <-> .3): its NAT maps its packets to a new public
                                port, a NAT rebinding and an own-address change at once; the
                                peers see the same QUIC connection move (connection migration)
  kill-router SITE [-9]         stop one router (SIGTERM, or SIGKILL with -9); at a --ha site the
                                active one, by its PID: keepalived then fails the site over
  migrate VM SITE [--announce rarp|garp|none] [--pause-ms 100]
        move VM's link to SITE's LAN (VM keeps IP, MAC, ARP cache, sockets), then emit the
        hypervisor's announcement; prints the pause actually imposed
  migrate GUEST SITE [--qemu] [--paused-destination] [--downtime-limit-ms N]
        live-migrate a QEMU guest over QMP to a new QEMU waiting with -incoming on SITE's
        bridge (started with -S and resumed with `cont` with --paused-destination, as libvirt
        does; QEMU's downtime-limit, 300 ms by default, with --downtime-limit-ms); prints the
        guest's off time (source STOP to destination RESUME, from the QMP events)
  probe --to VM [--from a1,c1] [--duration-s 10] [--interval-ms 1] [--port 7700] [--json]
        1 ms UDP probes from each source VM to VM; per source the longest echo gap and loss
  where VM                      the site a VM (or guest) is attached to now
  build                         cargo build --release -p skyvine-router -p skyvine-labtools
  build-guest                   build (or find cached) the QEMU guest's kernel and initramfs;
                                prints their paths (cache: SKYVINE_GUEST_CACHE,
                                default /var/cache/skyvine-lab)

Every command but up/build acts on the current lab (the last `up`), or on --prefix P.
Environment: SKYVINE_BIN (router binary), SKYVINE_LABTOOLS_DIR (lab tools), RUST_LOG (routers),
SKYVINE_GUEST_CACHE (guest build cache), SKYVINE_GUEST_MEM_MB (guest RAM, 128),
SKYVINE_GUEST_BOOT_S (how long `up --qemu` waits for the guest to boot, 240).
EOF
}

# ---------------------------------------------------------------------------------------------
# Names and state

site_num() {
    case "$1" in
        a) echo 1 ;;
        b) echo 2 ;;
        c) echo 3 ;;
        *) die "unknown site '$1' (sites are a, b, c)" ;;
    esac
}

ns_name() { echo "$PREFIX-$1"; }

in_ns() {
    local name=$1
    shift
    ip netns exec "$PREFIX-$name" "$@"
}

vm_ip() { echo "10.77.$(site_num "${1:0:1}").${1:1:1}"; }
vm_mac() {
    if [[ $1 == *n2 ]]; then
        echo "52:54:00:78:0$(site_num "${1:0:1}"):0${1:1:1}"
    else
        echo "52:54:00:77:0$(site_num "${1:0:1}"):0${1:1:1}"
    fi
}
# The network of a VM: 2 for SVn2 (up --networks 2), 1 otherwise.
vm_network() { if [[ $1 == *n2 ]]; then echo 2; else echo 1; fi; }
# The bridge of site S in the network of VM V: br-S, or br2-S for a network-2 VM.
site_bridge() { if [[ $(vm_network "$2") == 2 ]]; then echo "br2-$1"; else echo "br-$1"; fi; }
# How many networks the lab has (up --networks).
lab_networks() { cat "$STATE/networks" 2>/dev/null || echo 1; }
# The name of the router's first TUN device: skyvine0 (one network) or skyvine1.
first_tun() { if (($(lab_networks) > 1)); then echo skyvine1; else echo skyvine0; fi; }

valid_vm() {
    if [[ $1 =~ ^[abc][12]n2$ ]]; then
        (($(lab_networks) > 1)) || die "VM '$1' is in network 2: the lab has one network (up --networks 2)"
    else
        [[ $1 =~ ^[abc][12]$ ]] || die "unknown VM '$1' (VMs are a1 a2 b1 b2 c1 c2, and a1n2 ... with --networks 2)"
    fi
    [[ " $(lab_sites) " == *" ${1:0:1} "* ]] || die "VM '$1' is not in this lab (sites: $(lab_sites))"
}

valid_site() {
    [[ " $(lab_sites) " == *" $1 "* ]] || die "site '$1' is not in this lab (sites: $(lab_sites))"
}

lab_sites() { cat "$STATE/sites"; }

lab_vms() {
    local s
    for s in $(lab_sites); do
        echo "${s}1 ${s}2"
        if (($(lab_networks) > 1)); then echo "${s}1n2 ${s}2n2"; fi
    done | xargs
}

# Sets PREFIX and STATE from --prefix or the current-lab file; the lab must exist.
load_lab() {
    local prefix=${1:-}
    if [[ -z $prefix ]]; then
        [[ -s $CURRENT_FILE ]] || die "no current lab (run 'lab.sh up' or pass --prefix)"
        prefix=$(cat "$CURRENT_FILE")
    fi
    PREFIX=$prefix
    STATE=/tmp/skyvine-lab-$PREFIX
    [[ -d $STATE ]] || die "no lab with prefix '$PREFIX' (state dir $STATE missing)"
}

# A namespace VM or a QEMU guest of this lab.
valid_target() {
    if valid_guest_name "$1"; then
        [[ -d $(guest_dir "$1") ]] || die "no guest '$1' in this lab (lab.sh up --qemu)"
    else
        valid_vm "$1"
    fi
}

target_ip() {
    if valid_guest_name "$1"; then guest_ip "$1"; else vm_ip "$1"; fi
}

target_site() {
    if valid_guest_name "$1"; then guest_site "$1"; else cat "$STATE/vm/$1"; fi
}

tool() {
    local path=$LABTOOLS_DIR/$1
    [[ -x $path ]] || die "$path not found: run 'netns-lab/lab.sh build' (or set SKYVINE_LABTOOLS_DIR)"
    echo "$path"
}

APT_UPDATED=0
# need CMD PACKAGE: installs the Debian package when the command is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "$1 missing: installing Debian package $2"
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -qq >&2 || die "apt-get update failed; install $2 by hand"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 ||
        die "could not install $2 (apt-get install $2)"
}

# shellcheck source=guest.sh
source "$LAB_DIR/guest.sh"
# shellcheck source=ha.sh
source "$LAB_DIR/ha.sh"

# ---------------------------------------------------------------------------------------------
# Processes: every background process is recorded as STATE/pids/NAME = "PID MARKER"; it is
# only signalled while /proc/PID/cmdline still contains MARKER (no recycled PIDs).

record_pid() { echo "$2 $3" >"$STATE/pids/$1"; }

# started NAME: the recorded process still runs (right after the fork it may not have exec'd
# its program yet, so no MARKER check here).
started() {
    local pid _
    [[ -f $STATE/pids/$1 ]] || return 1
    read -r pid _ <"$STATE/pids/$1"
    kill -0 "$pid" 2>/dev/null
}

pid_of() {
    local file=$STATE/pids/$1 pid marker
    [[ -f $file ]] || return 1
    read -r pid marker <"$file"
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
    echo "$pid"
}

# stop_recorded NAME [SIGNAL]: signal, wait up to 10 s, then SIGKILL; forgets the record.
stop_recorded() {
    local name=$1 signal=${2:-TERM} pid deadline
    if pid=$(pid_of "$name"); then
        kill "-$signal" "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIG$signal for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE/pids/$name"
}

# ---------------------------------------------------------------------------------------------
# up

UP_DONE=0
on_up_exit() {
    local rc=$?
    if [[ $UP_DONE != 1 ]]; then
        trap - EXIT
        log "up failed (exit $rc): removing the half-built lab $PREFIX (logs kept in $STATE)"
        do_down keep-logs || true
        exit "$rc"
    fi
}

cmd_up() {
    local sites=3 delay=0 routers=1 optimize=0 wait_s=20 qemu="" nic=virtio nat="" ha="" networks=1
    PREFIX=""
    while (($#)); do
        case "$1" in
            --prefix) PREFIX=${2:?--prefix needs a value}; shift 2 ;;
            --sites) sites=${2:?--sites needs 2 or 3}; shift 2 ;;
            --wan-delay-ms) delay=${2:?--wan-delay-ms needs a value}; shift 2 ;;
            --no-routers) routers=0; shift ;;
            --optimize) optimize=1; shift ;;
            --wait-s) wait_s=${2:?--wait-s needs a value}; shift 2 ;;
            --qemu)
                qemu=a
                shift
                if [[ ${1:-} =~ ^[abc]$ ]]; then qemu=$1; shift; fi
                ;;
            --nic) nic=${2:?--nic needs virtio or e1000}; shift 2 ;;
            --nat) nat=${2:?--nat needs sites, e.g. b,c}; shift 2 ;;
            --ha) ha=${2:?--ha needs a site, e.g. a}; shift 2 ;;
            --networks) networks=${2:?--networks needs 1 or 2}; shift 2 ;;
            *) die "up: unknown option '$1'" ;;
        esac
    done
    [[ $(id -u) == 0 ]] || die "the lab needs root (network namespaces)"
    [[ $sites == 2 || $sites == 3 ]] || die "--sites must be 2 or 3"
    [[ $delay =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--wan-delay-ms must be a number of milliseconds"
    [[ $wait_s =~ ^[0-9]+$ ]] || die "--wait-s must be whole seconds"
    [[ $nic =~ ^(virtio|e1000)$ ]] || die "--nic must be virtio or e1000"
    [[ $networks == 1 || $networks == 2 ]] || die "--networks must be 1 or 2"
    if ((networks > 1)); then
        ((routers)) || die "--networks 2 needs routers: static routes cannot keep two networks with the same addresses apart"
        [[ -z $ha && -z $qemu ]] || die "--networks 2 does not combine with --ha or --qemu"
    fi
    if [[ -n $qemu ]]; then
        [[ $qemu == a || $qemu == b || ($qemu == c && $sites == 3) ]] ||
            die "--qemu $qemu: no site $qemu in a $sites-site lab"
    fi
    local nat_sites="" t
    if [[ -n $nat ]]; then
        ((routers)) || die "--nat needs routers: kernel forwarding cannot cross a NAT (drop --no-routers)"
        for t in ${nat//,/ }; do
            [[ $t == b || ($t == c && $sites == 3) ]] ||
                die "--nat $nat: '$t' is not a site that can be NATed (b or c; site a stays public and relays)"
            [[ " $nat_sites " == *" $t "* ]] || nat_sites+=" $t"
        done
    fi
    if [[ -n $ha ]]; then
        ((routers)) || die "--ha needs routers (drop --no-routers)"
        [[ $ha =~ ^[abc]$ ]] && { [[ $ha != c ]] || ((sites == 3)); } ||
            die "--ha $ha: no site $ha in a $sites-site lab"
        [[ " $nat_sites " != *" $ha "* ]] || die "--ha $ha: site $ha cannot be both behind NAT and have two routers"
    fi
    [[ -n $PREFIX ]] || PREFIX=sv$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
    [[ $PREFIX =~ ^[a-z0-9]{1,10}$ ]] || die "prefix must be 1-10 characters of a-z, 0-9"
    if ip netns list | awk '{print $1}' | grep -q "^$PREFIX-"; then
        die "namespaces with prefix '$PREFIX-' already exist (lab.sh down --prefix $PREFIX)"
    fi
    if ((routers)); then
        [[ -x $SKYVINE_BIN ]] || die "router binary $SKYVINE_BIN not found: run 'netns-lab/lab.sh build' or set SKYVINE_BIN"
    fi
    need ping iputils-ping
    STATE=/tmp/skyvine-lab-$PREFIX
    rm -rf "$STATE"
    mkdir -p "$STATE/pids" "$STATE/vm"
    trap on_up_exit EXIT
    trap 'exit 130' INT TERM
    echo "$PREFIX" >"$CURRENT_FILE"
    local site_list=(a b c)
    echo "${site_list[@]:0:sites}" >"$STATE/sites"
    echo "$delay" >"$STATE/wan_delay_ms"
    echo "$optimize" >"$STATE/optimize"
    echo "$nat_sites" | xargs >"$STATE/nat"
    echo "$ha" >"$STATE/ha"
    echo "$networks" >"$STATE/networks"
    if ((routers)); then echo routers >"$STATE/mode"; else echo no-routers >"$STATE/mode"; fi
    local what
    what="sites $(lab_sites), wan delay ${delay} ms, $(cat "$STATE/mode")"
    ((optimize)) && what+=", routing optimization"
    [[ -n $qemu ]] && what+=", QEMU guest g1 ($nic) on site $qemu"
    [[ -n $nat_sites ]] && what+=", behind NAT:$nat_sites"
    [[ -n $ha ]] && what+=", two routers at site $ha (keepalived)"
    ((networks > 1)) && what+=", two isolated networks with the same addresses"
    log "building lab $PREFIX: $what"

    if [[ -n $qemu ]]; then
        # Before anything runs: a failed guest build leaves nothing to tear down.
        guest_build
        # The lab's own copy: a later build may replace the cached files while this lab still
        # starts migration destinations from them.
        mkdir -p "$STATE/guest"
        cp "$GUEST_KERNEL" "$STATE/guest/vmlinuz"
        cp "$GUEST_INITRD" "$STATE/guest/initramfs.cpio.gz"
        echo "$STATE/guest/vmlinuz $STATE/guest/initramfs.cpio.gz" >"$STATE/guest-image"
        guest_define g1 "$qemu" "$nic"
    fi
    [[ -n $nat_sites ]] && need nft nftables
    [[ -n $ha ]] && need keepalived keepalived
    build_fabric
    local s
    for s in $(lab_sites); do build_site "$s" "$optimize"; done
    for s in $nat_sites; do build_nat "$s"; done
    # TCG boots take long: the guest boots while the WAN and the routers come up.
    [[ -n $qemu ]] && guest_boot g1
    build_wan "$delay"
    if ((routers)); then
        make_pki_and_configs "$optimize"
        for s in $(lab_sites); do
            if is_ha "$s"; then ha_start "$s"; else start_router "$s"; fi
        done
    else
        static_routes "$optimize"
    fi
    [[ -n $qemu ]] && guest_wait_ready g1 "$(cat "$(guest_dir g1)/boot-offset")"
    log "waiting up to ${wait_s} s for every cross-site VM pair to ping"
    if ! ping_all "$wait_s" >"$STATE/ping-all.txt"; then
        cat "$STATE/ping-all.txt" >&2
        die "not every cross-site VM pair pings after ${wait_s} s"
    fi
    UP_DONE=1
    trap - EXIT INT TERM
    cat "$STATE/ping-all.txt"
    echo "lab $PREFIX up: state in $STATE"
}

new_ns() {
    local ns
    ns=$(ns_name "$1")
    ip netns add "$ns"
    in_ns "$1" ip link set lo up
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

build_fabric() {
    new_ns lan
    new_ns wan
    local s
    local br
    for s in $(lab_sites); do
        for br in "br-$s" $(if (($(lab_networks) > 1)); then echo "br2-$s"; fi); do
            in_ns lan ip link add "$br" type bridge stp_state 0 forward_delay 0
            in_ns lan ip link set "$br" up
        done
    done
}

# build_site S OPTIMIZE: router namespace(s) with lan0/wan0 and the site's two VMs.
build_site() {
    local s=$1 optimize=$2
    if is_ha "$s"; then ha_build_routers "$s"; else build_router "$s"; fi
    build_vms "$s" "$optimize"
}

# new_router_ns R N LAN_MAC_LAST LAN_HOST: router namespace r-R of site N, forwarding, with its
# LAN link lan0 (52:54:00:77:0N:LAN_MAC_LAST, 10.77.N.LAN_HOST/24) to port r-R of the LAN
# namespace (not yet up, nor on a bridge).
new_router_ns() {
    local r=$1 n=$2 mac_last=$3 lan_host=$4
    new_ns "r-$r"
    in_ns "r-$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.default.rp_filter=0
    ip link add lan0 netns "$(ns_name "r-$r")" address "52:54:00:77:0$n:$mac_last" type veth \
        peer "r-$r" netns "$(ns_name lan)"
    in_ns "r-$r" ip addr add "10.77.$n.$lan_host/24" dev lan0
}

# build_router S: site S's one router namespace, r-S.
build_router() {
    local s=$1 n
    n=$(site_num "$s")
    new_router_ns "$s" "$n" fe 254
    if is_nat "$s"; then
        # The WAN link is the NAT's (build_nat); the router's wan0 faces the NAT.
        new_ns "nat-$s"
        ip link add wan0 netns "$(ns_name "r-$s")" address "52:54:00:64:01:0$n" type veth \
            peer in0 netns "$(ns_name "nat-$s")"
        # An address change keeps the route: the new address is added, then the old removed.
        in_ns "r-$s" sysctl -qw net.ipv4.conf.wan0.promote_secondaries=1
        in_ns "r-$s" ip addr add "192.168.$n.2/24" dev wan0
    else
        ip link add wan0 netns "$(ns_name "r-$s")" address "52:54:00:64:00:0$n" type veth \
            peer "r-$s" netns "$(ns_name wan)"
        in_ns "r-$s" ip addr add "100.64.0.$n/24" dev wan0
    fi
    in_ns "r-$s" ip link set lan0 up
    if (($(lab_networks) > 1)); then
        # Network 2's LAN link: the same address as lan0's, in its own VRF once the router runs.
        ip link add lan1 netns "$(ns_name "r-$s")" address "52:54:00:78:0$n:fe" type veth \
            peer "r2-$s" netns "$(ns_name lan)"
        in_ns "r-$s" ip addr add "10.77.$n.254/24" dev lan1
        in_ns "r-$s" ip link set lan1 up
        in_ns lan ip link set "r2-$s" master "br2-$s" up
    fi
    in_ns "r-$s" ip link set wan0 up
    if is_nat "$s"; then in_ns "r-$s" ip route add default via "192.168.$n.1"; fi
    in_ns lan ip link set "r-$s" master "br-$s" up
}

# build_vms S OPTIMIZE: the site's two VMs on its bridge.
build_vms() {
    local s=$1 optimize=$2 n v vm
    n=$(site_num "$s")
    for vm in $(lab_vms); do
        [[ ${vm:0:1} == "$s" ]] || continue
        v=${vm:1:1}
        new_ns "$vm"
        ip link add eth0 netns "$(ns_name "$vm")" address "$(vm_mac "$vm")" type veth \
            peer "vm-$vm" netns "$(ns_name lan)"
        if ((optimize)); then
            in_ns "$vm" ip addr add "$(vm_ip "$vm")/16" dev eth0
        else
            in_ns "$vm" ip addr add "$(vm_ip "$vm")/24" dev eth0
        fi
        in_ns "$vm" ip link set eth0 up
        in_ns lan ip link set "vm-$vm" master "$(site_bridge "$s" "$vm")" up
        ((optimize)) || in_ns "$vm" ip route add default via "10.77.$n.254"
        echo "$s" >"$STATE/vm/$vm"
    done
}

# Whether site S has two routers (up --ha S).
is_ha() { [[ $(cat "$STATE/ha" 2>/dev/null) == "$1" ]]; }

# Whether site S's router is behind a NAT in this lab.
is_nat() { [[ " $(cat "$STATE/nat" 2>/dev/null) " == *" $1 "* ]]; }

# The namespace holding site S's WAN-facing wan0: its NAT's, or its router's.
wan_side() { if is_nat "$1"; then echo "nat-$1"; else echo "r-$1"; fi; }

# build_nat S: the NAT in front of site S's router (see the topology above). Real nftables:
# masquerade out of wan0, forward only what the inside started, no inbound mapping.
build_nat() {
    local s=$1 n
    n=$(site_num "$s")
    ip link add wan0 netns "$(ns_name "nat-$s")" address "52:54:00:64:00:0$n" type veth \
        peer "r-$s" netns "$(ns_name wan)"
    in_ns "nat-$s" ip addr add "192.168.$n.1/24" dev in0
    in_ns "nat-$s" ip addr add "100.64.0.$n/24" dev wan0
    in_ns "nat-$s" ip link set in0 up
    in_ns "nat-$s" ip link set wan0 up
    in_ns "nat-$s" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.default.rp_filter=0
    in_ns "nat-$s" nft -f - <<'NFT' || die "nftables NAT rules failed in nat-$s"
table ip skyvine_lab_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "in0" oifname "wan0" accept
        iifname "wan0" oifname "in0" ct state established,related accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state new drop
    }
}
NFT
}

# build_wan DELAY_MS: a bridge, or the delay relay on bare ports when DELAY_MS > 0.
build_wan() {
    local delay=$1 s ifaces=()
    if [[ $delay == 0 || $delay =~ ^0+(\.0+)?$ ]]; then
        in_ns wan ip link add br0 type bridge stp_state 0 forward_delay 0
        in_ns wan ip link set br0 up
        for s in $(wan_ports); do in_ns wan ip link set "$s" master br0 up; done
        return
    fi
    need ethtool ethtool
    local relay
    relay=$(tool skyvine-delay)
    for s in $(wan_ports); do
        # Packet sockets see frames as the kernel holds them: turn off checksum and
        # segmentation offloads so each relayed frame is complete and fits the MTU.
        # (Port r-X faces namespace r-X, or nat-S for a NATed site S.)
        local side=$s
        [[ $s =~ ^r-([abc])$ ]] && side=$(wan_side "${BASH_REMATCH[1]}")
        in_ns "$side" ethtool -K wan0 tx off tso off gso off gro off >/dev/null 2>&1 ||
            die "ethtool -K wan0 failed in $side"
        in_ns wan ethtool -K "$s" tx off tso off gso off gro off >/dev/null 2>&1 ||
            die "ethtool -K $s failed in wan"
        in_ns wan ip link set "$s" promisc on up
        ifaces+=(--iface "$s")
    done
    ip netns exec "$(ns_name wan)" "$relay" "${ifaces[@]}" --delay-ms "$delay" --stats-interval-s 60 \
        >"$STATE/wan-delay.log" 2>&1 </dev/null &
    record_pid delay $! skyvine-delay
    local deadline=$((SECONDS + 5))
    until grep -qs "relaying between" "$STATE/wan-delay.log"; do
        started delay || { cat "$STATE/wan-delay.log" >&2; die "skyvine-delay exited"; }
        ((SECONDS < deadline)) || die "skyvine-delay did not start within 5 s"
        sleep 0.05
    done
}

# The WAN namespace's ports: r-S per site, and r-S-2 for a site with two routers.
wan_ports() {
    local s
    for s in $(lab_sites); do
        echo "r-$s"
        if is_ha "$s"; then echo "r-$s-2"; fi
    done | xargs
}

# Plain kernel forwarding between the routers (no tunnel): the benchmark's baseline.
static_routes() {
    local optimize=$1 s t
    for s in $(lab_sites); do
        for t in $(lab_sites); do
            [[ $s == "$t" ]] && continue
            in_ns "r-$s" ip route add "10.77.$(site_num "$t").0/24" via "100.64.0.$(site_num "$t")" dev wan0
        done
        if ((optimize)); then
            # VMs ARP for every 10.77/16 address: the router answers for other sites at once.
            in_ns "r-$s" sysctl -qw net.ipv4.conf.lan0.proxy_arp=1 net.ipv4.neigh.lan0.proxy_delay=0
        fi
    done
}

# peer_lines S T: how site S's router reaches peer T: T's address when T is public; nothing
# when only T can dial (T behind NAT, S public); via the relay a when both are behind NAT.
peer_lines() {
    local s=$1 t=$2
    if ! is_nat "$t"; then
        echo "address = \"100.64.0.$(site_num "$t"):$WAN_PORT\""
    elif is_nat "$s"; then
        echo "via = \"a\""
    fi
}

make_pki_and_configs() {
    local optimize=$1 s
    mkdir -p "$STATE/pki"
    "$SKYVINE_BIN" cert ca --dir "$STATE/pki" >"$STATE/pki/cert.log" 2>&1 ||
        { cat "$STATE/pki/cert.log" >&2; die "skyvine cert ca failed"; }
    for s in $(lab_sites); do
        issue_cert "$s"
        if is_ha "$s"; then
            # Each router of the site has its own key and certificate for the site: issue
            # the second one and name its files after the router.
            mv "$STATE/pki/$s.pem" "$STATE/pki/$s-1.pem"
            mv "$STATE/pki/$s.key" "$STATE/pki/$s-1.key"
            issue_cert "$s"
            mv "$STATE/pki/$s.pem" "$STATE/pki/$s-2.pem"
            mv "$STATE/pki/$s.key" "$STATE/pki/$s-2.key"
            write_config "$s" "$s" "$s-1" "$optimize"
            write_config "$s-2" "$s" "$s-2" "$optimize"
        else
            write_config "$s" "$s" "$s" "$optimize"
        fi
    done
}

issue_cert() {
    # The certificate certifies the site's prefix: peers accept nothing else from it. With two
    # networks, in each (network id 1 and 2).
    local prefix args=()
    prefix="10.77.$(site_num "$1").0/24"
    if (($(lab_networks) > 1)); then
        args=(--prefix "1:$prefix" --prefix "2:$prefix")
    else
        args=(--prefix "$prefix")
    fi
    "$SKYVINE_BIN" cert issue --dir "$STATE/pki" --site "$1" "${args[@]}" \
        >>"$STATE/pki/cert.log" 2>&1 ||
        { cat "$STATE/pki/cert.log" >&2; die "skyvine cert issue --site $1 failed"; }
}

# write_config ROUTER SITE CERT OPTIMIZE: STATE/ROUTER/router.toml for router ROUTER of site
# SITE (ROUTER is the site id, or S-2 for the second router of a site with two), with the
# certificate STATE/pki/CERT.pem; checked with `skyvine check-config`.
write_config() {
    local r=$1 s=$2 cert=$3 optimize=$4 n hosts h listen t
    n=$(site_num "$s")
    mkdir -p "$STATE/$r"
    # The LNDT: the site's two VMs and the guests whose home it is.
    hosts="\"10.77.$n.1/32\", \"10.77.$n.2/32\""
    for h in $(guest_lndt_hosts "$s"); do hosts+=", \"$h\""; done
    # Behind NAT: any local address, so that a new one (nat-rebind) keeps working. With two
    # routers: any, so that the WAN virtual IP is bound whenever keepalived adds it.
    listen="100.64.0.$n:$WAN_PORT"
    if is_nat "$s" || is_ha "$s"; then listen="0.0.0.0:$WAN_PORT"; fi
    {
        echo "# skyvine lab $PREFIX, site $s, router $r (generated by netns-lab/lab.sh)"
        echo "site = \"$s\""
        # Site a relays between two NATed sites.
        [[ $s == a && $(wc -w <"$STATE/nat") -ge 2 ]] && echo "relay = true"
        if (($(lab_networks) > 1)); then
            local id name lan
            for id in 1 2; do
                name=blue lan=lan0
                ((id == 2)) && name=red lan=lan1
                echo
                echo "[[networks]]"
                echo "name = \"$name\""
                echo "id = $id"
                echo "[networks.lan]"
                echo "interface = \"$lan\""
                echo "prefixes = [\"10.77.$n.0/24\"]"
                echo "hosts = [$hosts]"
                ((optimize)) && echo "virtual_network = \"10.77.0.0/16\""
            done
        else
            echo
            echo "[lan]"
            echo "interface = \"lan0\""
            echo "prefixes = [\"10.77.$n.0/24\"]"
            echo "hosts = [$hosts]"
            ((optimize)) && echo "virtual_network = \"10.77.0.0/16\""
            # The gateway address is the site's VRRP virtual IP, not this router's own.
            is_ha "$s" && echo "address = \"10.77.$n.254\""
        fi
        echo
        echo "[wan]"
        echo "listen = \"$listen\""
        echo
        echo "[tls]"
        echo "ca = \"$STATE/pki/ca.pem\""
        echo "cert = \"$STATE/pki/$cert.pem\""
        echo "key = \"$STATE/pki/$cert.key\""
        echo
        echo "[tun]"
        (($(lab_networks) > 1)) || echo "name = \"skyvine0\""
        echo "mtu = 1380"
        echo
        echo "[admin]"
        echo "socket = \"$STATE/$r/skyvine.sock\""
        for t in $(lab_sites); do
            [[ $s == "$t" ]] && continue
            echo
            echo "[[peers]]"
            echo "site = \"$t\""
            peer_lines "$s" "$t"
        done
    } >"$STATE/$r/router.toml"
    "$SKYVINE_BIN" check-config "$STATE/$r/router.toml" >"$STATE/$r/check-config.log" 2>&1 ||
        { cat "$STATE/$r/check-config.log" >&2; die "generated config for router $r rejected"; }
}

start_router() {
    local s=$1 config=$STATE/$1/router.toml deadline
    [[ -f $config ]] || die "no router config for site $s (lab built with --no-routers?)"
    echo "--- start $(date -u +%FT%T.%NZ)" >>"$STATE/$s/router.log"
    RUST_LOG=${RUST_LOG:-info} ip netns exec "$(ns_name "r-$s")" "$SKYVINE_BIN" router \
        --config "$config" >>"$STATE/$s/router.log" 2>&1 </dev/null &
    record_pid "router-$s" $! "$config"
    # Up = its TUN device exists; a router that exits instead fails the command.
    deadline=$((SECONDS + 10))
    until in_ns "r-$s" ip link show "$(first_tun)" >/dev/null 2>&1; do
        started "router-$s" || { tail -n 30 "$STATE/$s/router.log" >&2; die "router $s exited"; }
        ((SECONDS < deadline)) || die "router $s has no TUN device after 10 s"
        sleep 0.05
    done
    # ... and its admin socket answers: the socket comes up after the TUN device, and what
    # follows a (re)start usually asks the router something.
    until "$SKYVINE_BIN" status --socket "$STATE/$s/skyvine.sock" >/dev/null 2>&1; do
        started "router-$s" || { tail -n 30 "$STATE/$s/router.log" >&2; die "router $s exited"; }
        ((SECONDS < deadline)) || die "router $s does not answer on its admin socket after 10 s"
        sleep 0.05
    done
    log "router $s running (pid $(pid_of "router-$s"))"
}

# ---------------------------------------------------------------------------------------------
# down

# do_down [keep-logs]: PIDs recorded, then whatever still runs inside the lab's namespaces
# (only the lab puts processes there), then the namespaces and any stray prefixed link.
do_down() {
    local keep=${1:-} name ns pid
    guest_down
    if [[ -d $STATE/pids ]]; then
        for name in "$STATE"/pids/*; do
            [[ -e $name ]] || continue
            stop_recorded "$(basename "$name")"
        done
    fi
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
    done
    for name in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$PREFIX-" || true); do
        ip link del "$name" 2>/dev/null || true
    done
    if [[ -s $CURRENT_FILE && $(cat "$CURRENT_FILE") == "$PREFIX" ]]; then rm -f "$CURRENT_FILE"; fi
    if [[ $keep != keep-logs && -n $PREFIX ]]; then rm -rf "$STATE"; fi
    if ip netns list | awk '{print $1}' | grep -q "^$PREFIX-"; then
        die "namespaces with prefix $PREFIX- remain"
    fi
}

cmd_down() {
    local prefix="" keep=""
    while (($#)); do
        case "$1" in
            --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
            --keep-logs) keep="keep-logs"; shift ;;
            *) die "down: unknown option '$1'" ;;
        esac
    done
    if [[ -z $prefix && ! -s $CURRENT_FILE ]]; then die "no current lab (pass --prefix)"; fi
    PREFIX=${prefix:-$(cat "$CURRENT_FILE")}
    [[ $PREFIX =~ ^[a-z0-9]{1,10}$ ]] || die "invalid prefix '$PREFIX'"
    STATE=/tmp/skyvine-lab-$PREFIX
    do_down "$keep"
    echo "lab $PREFIX down"
}

# ---------------------------------------------------------------------------------------------
# Observation

cmd_status() {
    local s pid
    echo "lab $PREFIX ($(cat "$STATE/mode"), wan delay $(cat "$STATE/wan_delay_ms") ms, optimize $(cat "$STATE/optimize"), behind NAT: $(cat "$STATE/nat" 2>/dev/null | xargs || true))"
    echo "namespaces: $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" | sort | xargs)"
    echo -n "vm locations:"
    for s in $(lab_vms); do echo -n " $s@$(cat "$STATE/vm/$s")"; done
    echo
    local g i
    for g in $(lab_guests); do
        i=$(cat "$(guest_dir "$g")/instance")
        if pid=$(pid_of "qemu-$g-$i"); then
            echo "guest $g ($(guest_ip "$g"), $(cat "$(guest_dir "$g")/nic")): site $(guest_site "$g"), QEMU instance $i running (pid $pid)"
        else
            echo "guest $g ($(guest_ip "$g")): site $(guest_site "$g"), QEMU instance $i NOT RUNNING"
        fi
    done
    if [[ -f $STATE/pids/delay ]]; then
        if pid=$(pid_of delay); then echo "wan relay: running (pid $pid)"; else echo "wan relay: DEAD"; fi
    fi
    for s in $(lab_sites); do
        if is_ha "$s"; then
            ha_status "$s"
        elif [[ $(cat "$STATE/mode") == routers ]]; then
            if pid=$(pid_of "router-$s"); then echo "router $s: running (pid $pid)"; else echo "router $s: NOT RUNNING"; fi
            local tun
            for tun in $(if (($(lab_networks) > 1)); then echo skyvine1 skyvine2; else echo skyvine0; fi); do
                echo "  routes via $tun:"
                in_ns "r-$s" ip route show vrf "svrf${tun#skyvine}" dev "$tun" 2>/dev/null | sed 's/^/    /' ||
                    in_ns "r-$s" ip route show dev "$tun" 2>/dev/null | sed 's/^/    /' || echo "    (no $tun)"
            done
        else
            echo "router $s: static kernel routes"
            in_ns "r-$s" ip route show dev wan0 | sed 's/^/    /'
        fi
    done
}

cmd_exec() {
    (($# >= 2)) || die "usage: lab.sh exec NAME CMD..."
    local name=$1
    shift
    ip netns list | awk '{print $1}' | grep -qx "$PREFIX-$name" ||
        die "no namespace '$name' in lab $PREFIX (try a1, r-b, wan, lan)"
    exec ip netns exec "$PREFIX-$name" "$@"
}

cmd_logs() {
    (($# == 1)) || die "usage: lab.sh logs SITE|wan|GUEST"
    if [[ $1 == wan ]]; then
        cat "$STATE/wan-delay.log" 2>/dev/null || die "no WAN relay in this lab (no --wan-delay-ms)"
        return
    fi
    if valid_guest_name "$1"; then
        cat "$(guest_dir "$1")/console.log" 2>/dev/null || die "no guest $1 in this lab"
        return
    fi
    if [[ $1 =~ ^([abc])-2$ ]] && is_ha "${BASH_REMATCH[1]}"; then
        cat "$STATE/$1/router.log" 2>/dev/null || echo "(router $1 has not run yet)"
        return
    fi
    valid_site "$1"
    cat "$STATE/$1/router.log" 2>/dev/null || die "no router log for site $1"
}

# ping_all WAIT_S: pings every cross-site pair (in parallel) until all answer or WAIT_S passes;
# prints the matrix and "ping-all: N/M OK"; returns 1 unless all answer. A guest is a column
# only: the VMs of every other site ping it (no command runs inside a guest).
ping_all() {
    local wait_s=$1 deadline vms src dst ok total out pids pid guests g
    vms=$(lab_vms)
    guests=$(lab_guests)
    out=$(mktemp -d)
    deadline=$((SECONDS + wait_s))
    while :; do
        pids=()
        for src in $vms; do
            for dst in $vms; do
                [[ ${src:0:1} < "${dst:0:1}" ]] || continue
                # Each network's VMs reach their own network only.
                [[ $(vm_network "$src") == "$(vm_network "$dst")" ]] || continue
                [[ -f $out/$src-$dst.ok ]] && continue
                (in_ns "$src" ping -n -q -c 1 -W 1 "$(vm_ip "$dst")" >/dev/null 2>&1 &&
                    touch "$out/$src-$dst.ok") &
                pids+=($!)
            done
            for g in $guests; do
                [[ $(cat "$STATE/vm/$src") != "$(guest_site "$g")" ]] || continue
                [[ -f $out/$src-$g.ok ]] && continue
                (in_ns "$src" ping -n -q -c 1 -W 1 "$(guest_ip "$g")" >/dev/null 2>&1 &&
                    touch "$out/$src-$g.ok") &
                pids+=($!)
            done
        done
        # Only these jobs: the lab's daemons are children of this shell too.
        for pid in "${pids[@]}"; do wait "$pid" || true; done
        ok=$(find "$out" -name '*.ok' | wc -l)
        total=0
        for src in $vms; do
            for dst in $vms; do
                [[ ${src:0:1} < "${dst:0:1}" && $(vm_network "$src") == "$(vm_network "$dst")" ]] &&
                    total=$((total + 1))
            done
            for g in $guests; do [[ $(cat "$STATE/vm/$src") != "$(guest_site "$g")" ]] && total=$((total + 1)); done
        done
        ((ok == total || SECONDS >= deadline)) && break
        sleep 0.2
    done
    printf '%-5s' ""
    for dst in $vms $guests; do printf '%-5s' "$dst"; done
    echo
    for src in $vms; do
        printf '%-5s' "$src"
        for dst in $vms; do
            if [[ ${src:0:1} == "${dst:0:1}" || $(vm_network "$src") != "$(vm_network "$dst")" ]]; then
                printf '%-5s' "-"
            elif [[ -f $out/$src-$dst.ok || -f $out/$dst-$src.ok ]]; then
                printf '%-5s' "ok"
            else
                printf '%-5s' "XX"
            fi
        done
        for g in $guests; do
            if [[ $(cat "$STATE/vm/$src") == "$(guest_site "$g")" ]]; then
                printf '%-5s' "-"
            elif [[ -f $out/$src-$g.ok ]]; then
                printf '%-5s' "ok"
            else
                printf '%-5s' "XX"
            fi
        done
        echo
    done
    rm -rf "$out"
    echo "ping-all: $ok/$total OK"
    ((ok == total))
}

# wait_s_option CMD DEFAULT ARGS...: the value of --wait-s, the one option of command CMD
# (DEFAULT without it), checked to be whole seconds; dies on any other argument.
wait_s_option() {
    local cmd=$1 wait_s=$2
    shift 2
    while (($#)); do
        case "$1" in
            --wait-s) wait_s=${2:?--wait-s needs a value}; shift 2 ;;
            *) die "$cmd: unknown option '$1'" ;;
        esac
    done
    [[ $wait_s =~ ^[0-9]+$ ]] || die "--wait-s must be whole seconds"
    echo "$wait_s"
}

cmd_ping_all() {
    local wait_s
    wait_s=$(wait_s_option ping-all 0 "$@") || exit 1
    need ping iputils-ping
    ping_all "$wait_s" || die "not every cross-site VM pair pings"
}

# ---------------------------------------------------------------------------------------------
# Routers

cmd_start_routers() {
    local wait_s s t optimize
    wait_s=$(wait_s_option start-routers 20 "$@") || exit 1
    [[ $(cat "$STATE/mode") == no-routers ]] || die "lab $PREFIX already runs routers"
    [[ -x $SKYVINE_BIN ]] || die "router binary $SKYVINE_BIN not found: run 'netns-lab/lab.sh build' or set SKYVINE_BIN"
    optimize=$(cat "$STATE/optimize")
    for s in $(lab_sites); do
        for t in $(lab_sites); do
            [[ $s == "$t" ]] && continue
            in_ns "r-$s" ip route del "10.77.$(site_num "$t").0/24" 2>/dev/null || true
        done
        in_ns "r-$s" sysctl -qw net.ipv4.conf.lan0.proxy_arp=0
    done
    make_pki_and_configs "$optimize"
    for s in $(lab_sites); do start_router "$s"; done
    echo routers >"$STATE/mode"
    ping_all "$wait_s" || die "not every cross-site VM pair pings ${wait_s} s after the routers started"
}

cmd_restart_router() {
    (($# == 1)) || die "usage: lab.sh restart-router SITE"
    valid_site "$1"
    [[ $(cat "$STATE/mode") == routers ]] || die "lab $PREFIX runs without routers"
    is_ha "$1" && die "site $1 has two routers: keepalived starts and stops them (kill-router $1 fails the active one over)"
    stop_recorded "router-$1" TERM
    start_router "$1"
    echo "router $1 restarted (pid $(pid_of "router-$1"))"
}

cmd_nat_rebind() {
    (($# == 1)) || die "usage: lab.sh nat-rebind SITE"
    valid_site "$1"
    is_nat "$1" || die "site $1 is not behind a NAT in this lab (lab.sh up --nat $1)"
    local s=$1 n old new
    n=$(site_num "$s")
    old=$(in_ns "r-$s" ip -4 -o addr show dev wan0 | awk '{print $4}' | head -n 1)
    old=${old%/24}
    if [[ $old == "192.168.$n.2" ]]; then new=192.168.$n.3; else new=192.168.$n.2; fi
    in_ns "r-$s" ip addr add "$new/24" dev wan0
    in_ns "r-$s" ip addr del "$old/24" dev wan0
    in_ns "r-$s" ip route replace default via "192.168.$n.1"
    echo "nat-rebind site=$s old=$old new=$new"
}

cmd_kill_router() {
    local site=${1:-} signal=TERM
    [[ -n $site ]] || die "usage: lab.sh kill-router SITE [-9]"
    valid_site "$site"
    [[ ${2:-} == -9 ]] && signal=KILL
    [[ -n ${2:-} && ${2:-} != -9 ]] && die "kill-router: unknown option '$2'"
    if is_ha "$site"; then
        ha_kill_router "$site" "$signal"
        return
    fi
    pid_of "router-$site" >/dev/null || die "router $site is not running"
    stop_recorded "router-$site" "$signal"
    echo "router $site stopped (SIG$signal)"
}

# ---------------------------------------------------------------------------------------------
# Migration and probing

cmd_where() {
    (($# == 1)) || die "usage: lab.sh where VM"
    valid_target "$1"
    target_site "$1"
}

cmd_migrate() {
    local vm=${1:-} dst=${2:-} announce=rarp pause_ms=100 from qemu=0 paused=0 vm_opts=0 downtime=""
    (($# >= 2)) || die "usage: lab.sh migrate VM SITE [--announce rarp|garp|none] [--pause-ms 100]
       lab.sh migrate GUEST SITE [--qemu] [--paused-destination] [--downtime-limit-ms N]"
    shift 2
    while (($#)); do
        case "$1" in
            --announce) announce=${2:?--announce needs rarp, garp or none}; vm_opts=1; shift 2 ;;
            --pause-ms) pause_ms=${2:?--pause-ms needs a value}; vm_opts=1; shift 2 ;;
            --qemu) qemu=1; shift ;;
            --paused-destination) paused=1; shift ;;
            --downtime-limit-ms) downtime=${2:?--downtime-limit-ms needs a value}; shift 2 ;;
            *) die "migrate: unknown option '$1'" ;;
        esac
    done
    if valid_guest_name "$vm" || ((qemu)); then
        valid_guest_name "$vm" || die "migrate --qemu: '$vm' is not a QEMU guest (guests are g1…g9)"
        valid_target "$vm"
        valid_site "$dst"
        ((vm_opts == 0)) || die "migrate $vm: --announce and --pause-ms are for namespace VMs; QEMU announces by itself"
        [[ $(guest_site "$vm") != "$dst" ]] || die "$vm is already at site $dst"
        [[ -z $downtime || $downtime =~ ^[1-9][0-9]*$ ]] || die "--downtime-limit-ms must be whole milliseconds > 0"
        guest_migrate "$vm" "$dst" "$paused" "$downtime"
        return
    fi
    ((paused == 0)) && [[ -z $downtime ]] ||
        die "migrate $vm: --paused-destination and --downtime-limit-ms are for QEMU guests"
    valid_vm "$vm"
    valid_site "$dst"
    [[ $announce =~ ^(rarp|garp|none)$ ]] || die "--announce must be rarp, garp or none"
    [[ $pause_ms =~ ^[0-9]+$ ]] || die "--pause-ms must be whole milliseconds"
    from=$(cat "$STATE/vm/$vm")
    [[ $from != "$dst" ]] || die "$vm is already at site $dst"
    local mover result
    mover=$(tool skyvine-announce)
    # One process detaches the VM's host-side link from br-FROM, waits, attaches it to br-DST
    # (the VM's eth0 stays up and keeps carrier, like a tap re-created on the destination
    # hypervisor) and then sends the announcement. QEMU writes its RARPs into the tap, i.e.
    # they enter the bridge through the VM's port: with a veth that is a send on the VM side
    # of the link, which the VM's own stack never sees.
    result=$("$mover" migrate --fabric-netns "$(ns_name lan)" --port "vm-$vm" --bridge "$(site_bridge "$dst" "$vm")" \
        --pause-ms "$pause_ms" --announce "$announce" --vm-netns "$(ns_name "$vm")" --iface eth0 \
        --mac "$(vm_mac "$vm")" --ip "$(vm_ip "$vm")" 2>"$STATE/announce-$vm.log") ||
        { cat "$STATE/announce-$vm.log" >&2; die "migrating $vm to site $dst failed"; }
    echo "$dst" >"$STATE/vm/$vm"
    # pause_ms: detach request sent .. attach acknowledged (the most the VM was off a LAN);
    # pause_min_ms: detach acknowledged .. attach request sent.
    echo "migrate vm=$vm from=$from to=$dst announce=$announce $result"
}

cmd_probe() {
    local to="" from="" duration=10 interval=1 port=$PROBE_PORT json=0
    while (($#)); do
        case "$1" in
            --to) to=${2:?--to needs a VM}; shift 2 ;;
            --from) from=${2:?--from needs VMs (a1,c1)}; shift 2 ;;
            --duration-s) duration=${2:?--duration-s needs a value}; shift 2 ;;
            --interval-ms) interval=${2:?--interval-ms needs a value}; shift 2 ;;
            --port) port=${2:?--port needs a value}; shift 2 ;;
            --json) json=1; shift ;;
            *) die "probe: unknown option '$1'" ;;
        esac
    done
    [[ -n $to ]] || die "usage: lab.sh probe --to VM [--from a1,c1] [--duration-s 10] [--interval-ms 1] [--json]"
    valid_target "$to"
    [[ $port =~ ^[0-9]+$ ]] || die "--port must be a number"
    [[ -n $from ]] || from=$(default_probe_sources "$to")
    local prober sources=() src
    prober=$(tool skyvine-probe)
    IFS=, read -r -a sources <<<"$from"
    for src in "${sources[@]}"; do
        valid_vm "$src"
        [[ $src != "$to" ]] || die "a VM cannot probe itself"
    done
    local run
    run=$(mktemp -d "$STATE/probe.XXXXXX")
    if valid_guest_name "$to"; then
        # The guest runs its echo responder from boot, on the lab's port.
        [[ $port == "$PROBE_PORT" ]] || die "guest $to echoes on port $PROBE_PORT only"
        echo "guest $to: echo listening since boot" >"$run/echo.log"
    else
        ip netns exec "$(ns_name "$to")" "$prober" echo --bind "0.0.0.0:$port" >"$run/echo.log" 2>&1 </dev/null &
        record_pid "probe-echo-$(basename "$run")" $! "0.0.0.0:$port"
    fi
    local deadline=$((SECONDS + 5))
    until grep -qs listening "$run/echo.log"; do
        if ! started "probe-echo-$(basename "$run")"; then
            cat "$run/echo.log" >&2
            die "the echo responder in $to exited"
        fi
        ((SECONDS < deadline)) || die "the echo responder in $to did not start"
        sleep 0.02
    done
    local pids=() rc=0 extra=()
    ((json)) && extra+=(--json)
    for src in "${sources[@]}"; do
        ip netns exec "$(ns_name "$src")" "$prober" send --to "$(target_ip "$to"):$port" \
            --duration-s "$duration" --interval-ms "$interval" --label "$src" "${extra[@]}" \
            >"$run/$src.out" 2>"$run/$src.err" &
        pids+=($!)
    done
    for src in "${!pids[@]}"; do wait "${pids[$src]}" || rc=1; done
    [[ -f $STATE/pids/probe-echo-$(basename "$run") ]] && stop_recorded "probe-echo-$(basename "$run")"
    if ((rc)); then
        cat "$run"/*.err >&2
        die "a probe sender failed"
    fi
    if ((json)); then
        local first=1
        printf '{"target":"%s","target_ip":"%s","results":[' "$to" "$(target_ip "$to")"
        for src in "${sources[@]}"; do
            ((first)) || printf ','
            first=0
            tr -d '\n' <"$run/$src.out"
        done
        printf ']}\n'
    else
        for src in "${sources[@]}"; do cat "$run/$src.out"; done
    fi
    rm -rf "$run"
}

# One VM at the target's current site and the first VM of another site (a third site when
# there is one), e.g. --to a1 probes from a2 and c1.
default_probe_sources() {
    local to=$1 here home s out=()
    here=$(target_site "$to")
    home=${to:0:1}
    valid_guest_name "$to" && home=$(cat "$(guest_dir "$to")/home")
    for s in $(lab_vms); do
        [[ $s != "$to" && $(cat "$STATE/vm/$s") == "$here" ]] && { out+=("$s"); break; }
    done
    for s in $(lab_sites | tr ' ' '\n' | tac); do
        [[ $s != "$here" && $s != "$home" ]] && { out+=("${s}1"); break; }
    done
    if ((${#out[@]} < 2)); then
        for s in $(lab_sites); do
            if [[ $s != "$here" ]]; then out+=("${s}1"); break; fi
        done
    fi
    local IFS=,
    echo "${out[*]}"
}

cmd_build() {
    (cd "$REPO_ROOT" && cargo build --release -p skyvine-router -p skyvine-labtools)
}

cmd_build_guest() {
    (($# == 0)) || die "usage: lab.sh build-guest"
    [[ $(id -u) == 0 ]] || die "building the guest needs root (apt, device nodes in the initramfs)"
    guest_build
    echo "kernel: $GUEST_KERNEL"
    echo "initramfs: $GUEST_INITRD"
}

# ---------------------------------------------------------------------------------------------

main() {
    local prefix=""
    if [[ ${1:-} == --prefix ]]; then
        prefix=${2:?--prefix needs a value}
        shift 2
    fi
    local cmd=${1:-help}
    (($#)) && shift
    if [[ -n $prefix && ($cmd == up || $cmd == down) ]]; then set -- --prefix "$prefix" "$@"; fi
    case "$cmd" in
        help | -h | --help) usage; return ;;
        up) cmd_up "$@"; return ;;
        down) cmd_down "$@"; return ;;
        build) cmd_build; return ;;
        build-guest) shift 0; cmd_build_guest "$@"; return ;;
    esac
    # Other commands accept --prefix P before the command or among its options (for exec
    # only before NAME, so the command run keeps its own arguments).
    local args=()
    while (($#)); do
        if [[ $1 == --prefix && ($cmd != exec || ${#args[@]} == 0) ]]; then
            prefix=${2:?--prefix needs a value}
            shift 2
        else
            args+=("$1")
            shift
        fi
    done
    load_lab "$prefix"
    set -- "${args[@]+"${args[@]}"}"
    case "$cmd" in
        status) cmd_status "$@" ;;
        exec) cmd_exec "$@" ;;
        logs) cmd_logs "$@" ;;
        ping-all) cmd_ping_all "$@" ;;
        start-routers) cmd_start_routers "$@" ;;
        restart-router) cmd_restart_router "$@" ;;
        kill-router) cmd_kill_router "$@" ;;
        nat-rebind) cmd_nat_rebind "$@" ;;
        migrate) cmd_migrate "$@" ;;
        probe) cmd_probe "$@" ;;
        where) cmd_where "$@" ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
