#!/usr/bin/env bash
# The skyvine demo: build, bring up three sites, migrate a VM from site a to site b while
# traffic flows, and show the routers' tables before and after and the measured outage.
#
#   netns-lab/demo.sh [--announce rarp|garp|none] [--wan-delay-ms N] [--keep]
#                     [--qemu [--paused-destination] [--nic virtio|e1000]]
#
# With --qemu the VM that moves is a real QEMU guest (g1, 10.77.1.10, TCG), live-migrated
# over QMP; the outage is then the loss beyond the guest's own off time (QMP STOP -> RESUME).
#
# Everything it creates carries a prefix unique to the run and is removed on exit (also on
# failure or Ctrl-C), unless --keep is given.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
lab="$here/lab.sh"
announce=rarp
announce_set=0
wan_delay=0
keep=0
pause_ms=100
qemu=0
paused=0
nic=virtio

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
    case $1 in
        --announce) announce=${2:?--announce needs rarp, garp or none}; announce_set=1; shift 2 ;;
        --qemu) qemu=1; shift ;;
        --paused-destination) paused=1; shift ;;
        --nic) nic=${2:?--nic needs virtio or e1000}; shift 2 ;;
        --wan-delay-ms) wan_delay=${2:?--wan-delay-ms needs a value}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $announce =~ ^(rarp|garp|none)$ ]] || { echo "demo.sh: --announce must be rarp, garp or none" >&2; exit 2; }
[[ $wan_delay =~ ^[0-9]+$ ]] || { echo "demo.sh: --wan-delay-ms must be whole milliseconds" >&2; exit 2; }
[[ $nic =~ ^(virtio|e1000)$ ]] || { echo "demo.sh: --nic must be virtio or e1000" >&2; exit 2; }
if ((qemu)); then
    ((announce_set == 0)) || { echo "demo.sh: --announce is for the namespace VM; QEMU announces by itself" >&2; exit 2; }
else
    ((paused == 0)) && [[ $nic == virtio ]] ||
        { echo "demo.sh: --paused-destination and --nic need --qemu" >&2; exit 2; }
fi
((EUID == 0)) || { echo "demo.sh: needs root (network namespaces); run it as root" >&2; exit 1; }

prefix="demo$(printf '%04x' $((RANDOM ^ $$ & 0xffff)))"
state="/tmp/skyvine-lab-$prefix"
skyvine="${SKYVINE_BIN:-$root/target/release/skyvine}"
workdir=$(mktemp -d)

cleanup() {
    local status=$?
    if ((keep)); then
        echo "demo.sh: lab $prefix kept; remove it with: $lab down --prefix $prefix" >&2
    else
        "$lab" down --prefix "$prefix" >/dev/null 2>&1 || true
    fi
    rm -rf "$workdir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -t 1 ]]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi
tables() { # SITE: the router's view, through its admin socket
    local site=$1
    ip netns exec "$prefix-r-$site" "$skyvine" tables --socket "$state/$site/skyvine.sock"
}

step "1. build (cargo build --release)"
(cd "$root" && cargo build --release -p skyvine-router -p skyvine-labtools)

up_args=(--prefix "$prefix" --wan-delay-ms "$wan_delay")
if ((qemu)); then
    vm=g1
    vm_ip=10.77.1.10
    xfer_port=7800 # the guest's transfer server runs from boot
    up_args+=(--qemu a --nic "$nic")
    step "2. three sites: a 10.77.1.0/24, b 10.77.2.0/24, c 10.77.3.0/24, two VMs each, and a QEMU guest g1 ($vm_ip, $nic) on site a (lab $prefix)"
else
    vm=a1
    vm_ip=10.77.1.1
    xfer_port=7801
    step "2. three sites: a 10.77.1.0/24, b 10.77.2.0/24, c 10.77.3.0/24, two VMs each (lab $prefix)"
fi
"$lab" up "${up_args[@]}"
"$lab" ping-all --prefix "$prefix"

step "3. tables before the migration"
for site in a b c; do
    echo "-- router $site"
    tables "$site"
done

step "4. traffic towards $vm ($vm_ip): 1 ms probes from a2 (same site) and c1 (third site), and a checked TCP transfer from c1"
tools="${SKYVINE_LABTOOLS_DIR:-$root/target/release}"
xfer_server=""
if ((qemu)); then
    console="$state/guest/g1/console.log"
    console_mark=$(stat -c %s "$console")
else
    ip netns exec "$prefix-a1" "$tools/skyvine-xfer" server --listen 0.0.0.0:7801 --connections 1 \
        >"$workdir/xfer-server.txt" 2>&1 &
    xfer_server=$!
fi
"$lab" probe --prefix "$prefix" --to "$vm" --from a2,c1 --duration-s 6 --json >"$workdir/probe.json" &
probe=$!
sleep 1 # let the prober and the transfer server start (the prober itself waits for its echo)
ip netns exec "$prefix-c1" "$tools/skyvine-xfer" client --to "$vm_ip:$xfer_port" \
    --bytes 8M --rate-mbps 16 >"$workdir/xfer-client.txt" 2>&1 &
xfer_client=$!
sleep 1.5

if ((qemu)); then
    migrate_args=()
    how="live migration over QMP"
    ((paused)) && { migrate_args+=(--paused-destination); how+=", destination started paused (-S, then cont)"; }
    step "5. live-migrate g1 from site a to site b ($how)"
    migrate_line=$("$lab" migrate g1 b --prefix "$prefix" "${migrate_args[@]}")
    echo "$migrate_line"
    imposed=$(sed -n 's/.* off_ms=\([0-9.]*\).*/\1/p' <<<"$migrate_line")
    imposed_what="the guest's own off time of ${imposed} ms (QMP STOP -> RESUME)"
else
    step "5. live-migrate a1 from site a to site b (announcement: $announce, link down for ${pause_ms} ms)"
    migrate_line=$("$lab" migrate a1 b --prefix "$prefix" --announce "$announce" --pause-ms "$pause_ms")
    echo "$migrate_line"
    imposed=$(sed -n 's/.* pause_ms=\([0-9.]*\).*/\1/p' <<<"$migrate_line")
    imposed_what="the ${imposed} ms the lab held the link down"
fi

wait "$probe" || { echo "demo.sh: the prober failed" >&2; exit 1; }
xfer_ok=1
wait "$xfer_client" || xfer_ok=0
if [[ -n $xfer_server ]]; then
    wait "$xfer_server" || xfer_ok=0
else
    # The guest's server prints its result on the serial console, right after its answer
    # to the client: give the line a moment to arrive.
    deadline=$((SECONDS + 10))
    until tail -c "+$((console_mark + 1))" "$console" | tr -d '\r' | grep '^xfer-server' >"$workdir/xfer-server.txt"; do
        ((SECONDS < deadline)) || { xfer_ok=0; echo "(no result line from the guest's transfer server)" >"$workdir/xfer-server.txt"; break; }
        sleep 0.1
    done
    grep -q ' ok$' "$workdir/xfer-server.txt" || xfer_ok=0
fi

step "6. tables after the migration"
for site in a b c; do
    echo "-- router $site"
    tables "$site"
done
echo "-- router b: migrations it took part in"
ip netns exec "$prefix-r-b" "$skyvine" migrations --socket "$state/b/skyvine.sock"

step "7. measured outage (longest run of lost 1 ms probes, minus $imposed_what)"
python3 - "$workdir/probe.json" "$imposed" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
imposed = float(sys.argv[2])
for result in doc["results"]:
    r = result["report"]
    run = float(r["max_loss_run_ms"])
    print(f'  from {result["label"]}: longest loss {run:8.1f} ms  -> outage beyond it {max(run - imposed, 0.0):7.1f} ms'
          f'   (sent {r["sent"]}, lost {r["lost"]})')
PY
echo "  TCP transfer c1 -> $vm across the migration:"
sed 's/^/    /' "$workdir/xfer-client.txt" "$workdir/xfer-server.txt"
((xfer_ok)) || { echo "demo.sh: the TCP transfer failed" >&2; exit 1; }
echo
if ((qemu)); then
    reproduce="--qemu --nic $nic --wan-delay-ms $wan_delay"
    ((paused)) && reproduce+=" --paused-destination"
else
    reproduce="--announce $announce --wan-delay-ms $wan_delay"
fi
echo "Reproduce (as root): netns-lab/demo.sh $reproduce"
