#!/usr/bin/env bash
# The skyvine demo: build, bring up three sites, migrate a VM from site a to site b while
# traffic flows, and show the routers' tables before and after and the measured outage.
#
#   netns-lab/demo.sh [--announce rarp|garp|none] [--wan-delay-ms N] [--keep]
#
# Everything it creates carries a prefix unique to the run and is removed on exit (also on
# failure or Ctrl-C), unless --keep is given.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
lab="$here/lab.sh"
announce=rarp
wan_delay=0
keep=0
pause_ms=100

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
    case $1 in
        --announce) announce=${2:?--announce needs rarp, garp or none}; shift 2 ;;
        --wan-delay-ms) wan_delay=${2:?--wan-delay-ms needs a value}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $announce =~ ^(rarp|garp|none)$ ]] || { echo "demo.sh: --announce must be rarp, garp or none" >&2; exit 2; }
[[ $wan_delay =~ ^[0-9]+$ ]] || { echo "demo.sh: --wan-delay-ms must be whole milliseconds" >&2; exit 2; }
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

step "2. three sites: a 10.77.1.0/24, b 10.77.2.0/24, c 10.77.3.0/24, two VMs each (lab $prefix)"
"$lab" up --prefix "$prefix" --wan-delay-ms "$wan_delay"
"$lab" ping-all --prefix "$prefix"

step "3. tables before the migration"
for site in a b c; do
    echo "-- router $site"
    tables "$site"
done

step "4. traffic towards VM a1 (10.77.1.1): 1 ms probes from a2 (same site) and c1 (third site), and a checked TCP transfer from c1"
tools="${SKYVINE_LABTOOLS_DIR:-$root/target/release}"
ip netns exec "$prefix-a1" "$tools/skyvine-xfer" server --listen 0.0.0.0:7801 --connections 1 \
    >"$workdir/xfer-server.txt" 2>&1 &
xfer_server=$!
"$lab" probe --prefix "$prefix" --to a1 --from a2,c1 --duration-s 6 --json >"$workdir/probe.json" &
probe=$!
sleep 1 # let the prober and the transfer server start (the prober itself waits for its echo)
ip netns exec "$prefix-c1" "$tools/skyvine-xfer" client --to 10.77.1.1:7801 \
    --bytes 8M --rate-mbps 16 >"$workdir/xfer-client.txt" 2>&1 &
xfer_client=$!
sleep 1.5

step "5. live-migrate a1 from site a to site b (announcement: $announce, link down for ${pause_ms} ms)"
migrate_line=$("$lab" migrate a1 b --prefix "$prefix" --announce "$announce" --pause-ms "$pause_ms")
echo "$migrate_line"
imposed=$(sed -n 's/.* pause_ms=\([0-9.]*\).*/\1/p' <<<"$migrate_line")

wait "$probe" || { echo "demo.sh: the prober failed" >&2; exit 1; }
xfer_ok=1
wait "$xfer_client" || xfer_ok=0
wait "$xfer_server" || xfer_ok=0

step "6. tables after the migration"
for site in a b c; do
    echo "-- router $site"
    tables "$site"
done
echo "-- router b: migrations it took part in"
ip netns exec "$prefix-r-b" "$skyvine" migrations --socket "$state/b/skyvine.sock"

step "7. measured outage (longest run of lost 1 ms probes, minus the ${imposed} ms the lab held the link down)"
python3 - "$workdir/probe.json" "$imposed" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
imposed = float(sys.argv[2])
for result in doc["results"]:
    r = result["report"]
    run = float(r["max_loss_run_ms"])
    print(f'  from {result["label"]}: longest loss {run:8.1f} ms  -> outage beyond the lab pause {max(run - imposed, 0.0):7.1f} ms'
          f'   (sent {r["sent"]}, lost {r["lost"]})')
PY
echo "  TCP transfer c1 -> a1 across the migration:"
sed 's/^/    /' "$workdir/xfer-client.txt" "$workdir/xfer-server.txt"
((xfer_ok)) || { echo "demo.sh: the TCP transfer failed" >&2; exit 1; }
echo
echo "Reproduce (as root): netns-lab/demo.sh --announce $announce --wan-delay-ms $wan_delay"
