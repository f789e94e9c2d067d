#!/usr/bin/env bash
# Runs every skyvine test: unit, property, in-process simulation and network-namespace tests.
#
#   tests/run.sh [extra cargo test arguments]      (as root)
#
# Installs what the tests need when it is missing (Debian packages), builds the release
# binaries the lab uses, then runs `cargo test --release --workspace`. The namespace tests
# need root; without it they print "skipped" and the rest still runs (with
# SKYVINE_REQUIRE_ROOT_TESTS=1, as in CI, they fail instead). The QEMU test's guest is built
# once into /var/cache/skyvine-lab and reused.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ethtool >/dev/null || need+=(ethtool)
command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# netns_faults' spy filters.
command -v nft >/dev/null || need+=(nftables)
# The QEMU guest test (netns_qemu): Debian's QEMU 7.2 (TCG), busybox and cpio for the guest's
# initramfs, depmod for the kernel package's modules.dep, flock for the build cache.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v busybox >/dev/null || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v flock >/dev/null || need+=(util-linux)
# The BGP test (netns_bgp) runs real BIRD 2 daemons next to the lab routers.
[[ -x /usr/sbin/bird && -x /usr/sbin/birdc ]] || need+=(bird2)
# The two-routers-per-site test (netns_ha) runs real keepalived (VRRP) in each router namespace.
[[ -x /usr/sbin/keepalived ]] || need+=(keepalived)
if ((${#need[@]})); then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        echo "tests/run.sh: installing ${need[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

# The namespace tests drive netns-lab/lab.sh, which runs the release binaries.
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
