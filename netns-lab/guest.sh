# shellcheck shell=bash
# The lab's QEMU guest, sourced by netns-lab/lab.sh (it uses lab.sh's die, log, need, in_ns,
# ns_name, record_pid, pid_of, stop_recorded, site_num, tool and STATE).
#
# A guest is a real Linux VM: Debian's kernel package (fetched with apt-get download, never
# installed on the host) plus a busybox initramfs that loads the NIC driver (virtio-net or
# e1000), configures eth0 and runs the lab's prober echo (UDP 7700) and checked-transfer
# server (TCP 7800). It boots under TCG in the switch namespace P-lan, its tap enslaved to a
# site bridge, with a QMP socket per QEMU instance. Live migration starts a second QEMU with
# -incoming on the destination bridge and drives the move over QMP (skyvine-qmp).
#
# Guest gK (K = 1..9) of home site S (number N): eth0 = 10.77.N.(9+K)/24 (/16 with
# --optimize), MAC 52:54:00:77:0N:(9+K), default route via 10.77.N.254 (none with
# --optimize). State: STATE/guest/gK/{home,site,nic,instance,console.log,qemu-I.log,
# qmp-I.sock}; QEMU instance I runs on tap "tap-gK-I".
#
# Build cache (SKYVINE_GUEST_CACHE, default /var/cache/skyvine-lab): kernel-PKG_VERSION/ holds
# the kernel and the NIC modules taken from the package, initramfs-HASH.cpio.gz the initramfs
# for one set of inputs (kernel, busybox, lab tools and their libraries, guest/init).

GUEST_CACHE=${SKYVINE_GUEST_CACHE:-/var/cache/skyvine-lab}
GUEST_MEM_MB=${SKYVINE_GUEST_MEM_MB:-128}
GUEST_BOOT_S=${SKYVINE_GUEST_BOOT_S:-240}
# The NIC drivers the guest loads; their dependencies come from the package's modules.dep.
GUEST_MODULES="virtio_pci virtio_net e1000"
QEMU=qemu-system-x86_64

valid_guest_name() { [[ $1 =~ ^g[1-9]$ ]]; }

guest_dir() { echo "$STATE/guest/$1"; }

lab_guests() {
    local d out=()
    for d in "$STATE"/guest/g[1-9]; do
        if [[ -d $d ]]; then out+=("$(basename "$d")"); fi
    done
    echo "${out[*]}"
}

guest_ip() {
    local g=$1 home
    home=$(cat "$(guest_dir "$g")/home")
    echo "10.77.$(site_num "$home").$((9 + ${g:1:1}))"
}

guest_mac() {
    local g=$1 home
    home=$(cat "$(guest_dir "$g")/home")
    echo "52:54:00:77:0$(site_num "$home"):$((9 + ${g:1:1}))"
}

guest_site() { cat "$(guest_dir "$1")/site"; }

# guest_define NAME HOME NIC: records a guest before the routers' configs are written (its
# address goes into its home site's LNDT).
guest_define() {
    local g=$1 home=$2 nic=$3 dir
    dir=$(guest_dir "$g")
    mkdir -p "$dir"
    echo "$home" >"$dir/home"
    echo "$home" >"$dir/site"
    echo "$nic" >"$dir/nic"
    echo 0 >"$dir/instance"
}

# The guests whose home is site $1, as LNDT host entries ("10.77.1.10/32" …).
guest_lndt_hosts() {
    local s=$1 g
    for g in $(lab_guests); do
        if [[ $(cat "$(guest_dir "$g")/home") == "$s" ]]; then echo "$(guest_ip "$g")/32"; fi
    done
}

# ---------------------------------------------------------------------------------------------
# Building the guest (cached)

guest_packages() {
    need "$QEMU" qemu-system-x86
    need busybox busybox-static
    need cpio cpio
    need depmod kmod
    need flock util-linux
    [[ -r /usr/share/qemu/bios-256k.bin || -r /usr/share/seabios/bios-256k.bin ]] ||
        die "QEMU's firmware is missing (apt-get install qemu-system-x86 seabios)"
}

# Sets GUEST_KPKG and GUEST_KVERSION: the Debian kernel package that linux-image-amd64
# depends on, and its version.
guest_kernel_package() {
    local pkg version
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    if [[ -z $pkg ]]; then
        log "no linux-image-amd64 in apt's lists: apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    [[ -n $pkg ]] || die "apt knows no linux-image-amd64: cannot fetch a kernel for the guest"
    version=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }')
    [[ -n $version ]] || die "apt shows no version of $pkg"
    GUEST_KPKG=$pkg
    GUEST_KVERSION=$version
}

# guest_kernel: sets GUEST_KDIR, the cache folder with vmlinuz, modules/ and modules.load for
# the current Debian kernel package, extracting it first when missing.
guest_kernel() {
    guest_kernel_package
    GUEST_KDIR=$GUEST_CACHE/kernel-${GUEST_KPKG}_${GUEST_KVERSION//[:~]/_}
    if [[ ! -s $GUEST_KDIR/modules.load || ! -s $GUEST_KDIR/vmlinuz ]]; then
        guest_extract_kernel "$GUEST_KPKG" "$GUEST_KVERSION" "$GUEST_KDIR"
    fi
}

# guest_extract_kernel PKG VERSION DIR: apt-get download (or apt's cache), dpkg-deb -x into a
# scratch folder, depmod there, keep vmlinuz and the NIC modules with their dependencies.
guest_extract_kernel() {
    local pkg=$1 version=$2 dir=$3 scratch deb kver mod
    log "guest kernel: fetching $pkg $version (apt-get download; not installed on the host)"
    scratch=$(mktemp -d "$GUEST_CACHE/.kernel.XXXXXX")
    deb=$(ls /var/cache/apt/archives/"${pkg}_${version//:/%3a}"_amd64.deb 2>/dev/null | head -n 1 || true)
    if [[ -z $deb ]]; then
        # _apt cannot write into a root-only folder: download in one it may use.
        chmod 0755 "$scratch"
        (cd "$scratch" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2) ||
            { rm -rf "$scratch"; die "apt-get download $pkg=$version failed"; }
        deb=$(ls "$scratch"/*.deb | head -n 1)
    fi
    dpkg-deb -x "$deb" "$scratch/root" || { rm -rf "$scratch"; die "dpkg-deb -x $deb failed"; }
    kver=$(ls "$scratch/root/lib/modules" | head -n 1)
    [[ -n $kver && -s $scratch/root/boot/vmlinuz-$kver ]] ||
        { rm -rf "$scratch"; die "$deb holds no kernel (boot/vmlinuz-*, lib/modules/*)"; }
    depmod -b "$scratch/root" "$kver" || { rm -rf "$scratch"; die "depmod for $kver failed"; }
    mkdir -p "$scratch/out/modules"
    cp "$scratch/root/boot/vmlinuz-$kver" "$scratch/out/vmlinuz" || { rm -rf "$scratch"; die "no vmlinuz"; }
    echo "$kver" >"$scratch/out/kver"
    # modules.dep: "path.ko: dep1.ko dep2.ko …", each list complete, loadable right to left.
    # shellcheck disable=SC2086 # one word per module
    guest_module_order "$scratch/root/lib/modules/$kver/modules.dep" $GUEST_MODULES \
        >"$scratch/out/modules.load" || { rm -rf "$scratch"; die "resolving the NIC modules failed"; }
    while read -r mod; do
        cp "$scratch/root/lib/modules/$kver/$mod" "$scratch/out/modules/$(basename "$mod")" ||
            { rm -rf "$scratch"; die "copying $mod failed"; }
    done <"$scratch/out/modules.load"
    sed -i 's|.*/||' "$scratch/out/modules.load"
    rm -rf "$dir"
    mv "$scratch/out" "$dir"
    rm -rf "$scratch"
    log "guest kernel: $kver, modules $(xargs <"$dir/modules.load")"
}

# guest_module_order MODULES_DEP NAME…: the module files to insmod, dependencies first, once.
guest_module_order() {
    local dep=$1
    shift
    awk -v want="$*" '
        BEGIN { n = split(want, names, " ") }
        {
            path = $1; sub(/:$/, "", path)
            base = path; sub(/.*\//, "", base); sub(/\.ko(\.[a-z]+)?$/, "", base)
            line[base] = $0
        }
        function load(base,   f, i, k, parts, dep) {
            if (!(base in line)) { printf "no module %s in modules.dep\n", base > "/dev/stderr"; exit 1 }
            k = split(line[base], parts, " ")
            for (i = k; i >= 2; i--) {
                dep = parts[i]; sub(/.*\//, "", dep); sub(/\.ko(\.[a-z]+)?$/, "", dep)
                load(dep)
            }
            f = parts[1]; sub(/:$/, "", f)
            if (!(f in done)) { done[f] = 1; print f }
        }
        END { for (i = 1; i <= n; i++) load(names[i]) }
    ' "$dep"
}

# guest_initramfs KERNEL_DIR: sets GUEST_INITRD, the cached initramfs for the current inputs
# (kernel modules, busybox, the lab tools and their libraries, guest/init), building it when
# one of them changed.
guest_initramfs() {
    local kdir=$1 init=$LAB_DIR/guest/init busybox probe xfer libs=() hash
    busybox=$(command -v busybox) || die "no busybox"
    probe=$(tool skyvine-probe)
    xfer=$(tool skyvine-xfer)
    mapfile -t libs < <(guest_libraries "$probe" "$xfer")
    ((${#libs[@]})) || die "ldd found no libraries for $probe"
    hash=$(cat "$init" "$busybox" "$probe" "$xfer" "${libs[@]}" "$kdir/modules.load" "$kdir/kver" |
        sha256sum | cut -c1-16)
    GUEST_INITRD=$GUEST_CACHE/initramfs-$hash.cpio.gz
    if [[ ! -s $GUEST_INITRD ]]; then
        log "guest initramfs: building $GUEST_INITRD"
        guest_build_initramfs "$kdir" "$GUEST_INITRD" "$busybox" "$probe" "$xfer" "${libs[@]}"
        # Builds for other inputs are stale now (kept an hour for a lab still running on one).
        find "$GUEST_CACHE" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "$(basename "$GUEST_INITRD")" \
            -mmin +60 -delete 2>/dev/null || true
    fi
}

# The shared libraries (and the dynamic loader) the given binaries need, from ldd (which
# heads each binary's list with "PATH:").
guest_libraries() {
    ldd "$@" | awk '
        /:$/ { next }
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }
    ' | sort -u
}

guest_build_initramfs() {
    local kdir=$1 out=$2 busybox=$3 probe=$4 xfer=$5 root lib
    shift 5
    root=$(mktemp -d "$GUEST_CACHE/.initramfs.XXXXXX")
    if ! guest_fill_root "$root" "$kdir" "$busybox" "$probe" "$xfer" "$@"; then
        rm -rf "$root"
        die "assembling the initramfs failed"
    fi
    (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$out.tmp" ||
        { rm -rf "$root" "$out.tmp"; die "packing the initramfs failed"; }
    mv "$out.tmp" "$out"
    rm -rf "$root"
}

# guest_fill_root ROOT KERNEL_DIR BUSYBOX PROBE XFER LIB…: the initramfs tree; fails on the
# first step that fails.
guest_fill_root() {
    local root=$1 kdir=$2 busybox=$3 probe=$4 xfer=$5 lib
    shift 5
    mkdir -p "$root"/{bin,dev,etc/skyvine,lib/modules,proc,sys,tmp,run} &&
        install -m 0755 "$LAB_DIR/guest/init" "$root/init" &&
        cp "$busybox" "$root/bin/busybox" &&
        cp "$probe" "$root/bin/skyvine-probe" &&
        cp "$xfer" "$root/bin/skyvine-xfer" &&
        cp "$kdir"/modules/*.ko "$root/lib/modules/" &&
        cp "$kdir/modules.load" "$root/etc/skyvine/modules" || return 1
    for lib in "$@"; do
        mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib" || return 1
    done
    # The kernel opens /dev/console for init before anything is mounted.
    mknod -m 600 "$root/dev/console" c 5 1 && mknod -m 666 "$root/dev/null" c 1 3
}

# guest_build: sets GUEST_KERNEL and GUEST_INITRD (cached; rebuilt when an input changed).
# Holds a lock so two labs building at once do not race.
guest_build() {
    local start=$SECONDS lock
    guest_packages
    mkdir -p "$GUEST_CACHE"
    exec {lock}>"$GUEST_CACHE/.lock"
    flock "$lock"
    guest_kernel
    guest_initramfs "$GUEST_KDIR"
    flock -u "$lock"
    exec {lock}>&-
    GUEST_KERNEL=$GUEST_KDIR/vmlinuz
    log "guest build: $((SECONDS - start)) s (kernel $(cat "$GUEST_KDIR/kver"), $(du -h "$GUEST_INITRD" | cut -f1) initramfs)"
}

# ---------------------------------------------------------------------------------------------
# Running QEMU

# guest_qemu_start NAME SITE INSTANCE [INCOMING_URI [paused]]: a tap on br-SITE and a QEMU
# on it (in P-lan), recorded as qemu-NAME-INSTANCE; returns once its QMP socket answers.
guest_qemu_start() {
    local g=$1 site=$2 i=$3 incoming=${4:-} paused=${5:-} dir tap nic device kernel initrd
    local append args=()
    dir=$(guest_dir "$g")
    tap=tap-$g-$i
    nic=$(cat "$dir/nic")
    read -r kernel initrd <"$STATE/guest-image"
    case $nic in
        virtio) device=virtio-net-pci ;;
        e1000) device=e1000 ;;
        *) die "unknown NIC model '$nic' for guest $g" ;;
    esac
    append="console=ttyS0,115200 panic=-1 loglevel=4 skyvine.name=$g"
    if [[ $(cat "$STATE/optimize") == 1 ]]; then
        append+=" skyvine.ip=$(guest_ip "$g")/16"
    else
        append+=" skyvine.ip=$(guest_ip "$g")/24 skyvine.gw=10.77.$(site_num "$(cat "$dir/home")").254"
    fi
    in_ns lan ip tuntap add dev "$tap" mode tap
    echo "$tap" >>"$dir/taps"
    in_ns lan ip link set "$tap" master "br-$site" up
    # Everything that affects the migration stream is the same on both ends: machine, CPU,
    # memory, devices (the NIC without option ROM), kernel and initramfs.
    args=(-name "$g,debug-threads=on" -machine pc -accel tcg -cpu qemu64 -smp 1 -m "$GUEST_MEM_MB"
        -nodefaults -no-user-config -no-reboot -display none
        -kernel "$kernel" -initrd "$initrd" -append "$append"
        -chardev "file,id=console,path=$dir/console.log,append=on" -serial chardev:console
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no"
        -device "$device,netdev=net0,mac=$(guest_mac "$g"),romfile="
        -qmp "unix:$dir/qmp-$i.sock,server=on,wait=off")
    if [[ -n $incoming ]]; then
        args+=(-incoming "$incoming")
        [[ $paused == paused ]] && args+=(-S)
    fi
    rm -f "$dir/qmp-$i.sock"
    echo "--- qemu instance $i on site $site $(date -u +%FT%T.%NZ)" >>"$dir/console.log"
    ip netns exec "$(ns_name lan)" "$QEMU" "${args[@]}" >"$dir/qemu-$i.log" 2>&1 </dev/null &
    record_pid "qemu-$g-$i" $! "$dir/qmp-$i.sock"
    if ! "$(tool skyvine-qmp)" status --socket "$dir/qmp-$i.sock" --wait-s 20 >"$dir/qmp-$i.status" 2>&1; then
        cat "$dir/qemu-$i.log" "$dir/qmp-$i.status" >&2
        die "QEMU instance $i of guest $g does not answer on QMP"
    fi
}

# guest_wait_ready NAME OFFSET: until the console shows the guest's "ready" line after byte
# OFFSET of the console log (or QEMU exits, or GUEST_BOOT_S passes).
guest_wait_ready() {
    local g=$1 offset=$2 dir i deadline start=$SECONDS
    dir=$(guest_dir "$g")
    i=$(cat "$dir/instance")
    deadline=$((SECONDS + GUEST_BOOT_S))
    until tail -c "+$((offset + 1))" "$dir/console.log" | grep -q '^skyvine-guest: ready'; do
        if ! started "qemu-$g-$i"; then
            tail -n 40 "$dir/console.log" >&2
            cat "$dir/qemu-$i.log" >&2
            die "QEMU of guest $g exited during boot"
        fi
        if tail -c "+$((offset + 1))" "$dir/console.log" | grep -q '^skyvine-guest: FAILED'; then
            tail -n 40 "$dir/console.log" >&2
            die "guest $g failed to start its services"
        fi
        ((SECONDS < deadline)) ||
            { tail -n 40 "$dir/console.log" >&2; die "guest $g not ready after ${GUEST_BOOT_S} s"; }
        sleep 0.2
    done
    log "guest $g ready after $((SECONDS - start)) s: $(tail -c "+$((offset + 1))" "$dir/console.log" | grep -m1 '^skyvine-guest: ready')"
}

# guest_boot NAME: the first QEMU instance on the guest's home bridge (not waited for).
guest_boot() {
    local g=$1 dir
    dir=$(guest_dir "$g")
    stat -c %s "$dir/console.log" 2>/dev/null >"$dir/boot-offset" || echo 0 >"$dir/boot-offset"
    guest_qemu_start "$g" "$(cat "$dir/site")" 0
    log "guest $g booting on site $(cat "$dir/site") (QEMU pid $(pid_of "qemu-$g-0"), TCG, $(cat "$dir/nic"))"
}

# guest_migrate NAME SITE PAUSED(0|1) [DOWNTIME_LIMIT_MS]: live migration over QMP to a new
# QEMU on br-SITE.
guest_migrate() {
    local g=$1 to=$2 paused=$3 downtime=${4:-} dir from i j uri result mode=""
    dir=$(guest_dir "$g")
    from=$(guest_site "$g")
    i=$(cat "$dir/instance")
    j=$((i + 1))
    if ! pid_of "qemu-$g-$i" >/dev/null; then
        # Whatever QEMU said before it went, and the guest's last words.
        tail -n 20 "$dir/qemu-$i.log" >&2 2>/dev/null || true
        tail -n 20 "$dir/console.log" >&2 2>/dev/null || true
        die "guest $g's QEMU (instance $i) is not running"
    fi
    uri="unix:$dir/migrate-$j.sock"
    ((paused)) && mode=paused
    guest_qemu_start "$g" "$to" "$j" "$uri" "$mode"
    local qmp_args=(migrate --source "$dir/qmp-$i.sock" --destination "$dir/qmp-$j.sock"
        --uri "$uri" --quit-source)
    ((paused)) && qmp_args+=(--paused-destination)
    [[ -n $downtime ]] && qmp_args+=(--downtime-limit-ms "$downtime")
    if ! result=$("$(tool skyvine-qmp)" "${qmp_args[@]}" 2>"$dir/migrate-$j.err"); then
        cat "$dir/migrate-$j.err" >&2
        # As libvirt does: drop the destination, let the source run on (a source that had
        # stopped for the final copy waits in postmigrate).
        stop_recorded "qemu-$g-$j"
        guest_remove_tap "$g" "tap-$g-$j"
        "$(tool skyvine-qmp)" cont --socket "$dir/qmp-$i.sock" >&2 ||
            log "could not resume guest $g's source QEMU"
        die "live migration of $g to site $to failed (the guest stays on site $from)"
    fi
    # The source quit on QMP: wait for its exit, then its tap goes.
    stop_recorded "qemu-$g-$i"
    guest_remove_tap "$g" "tap-$g-$i"
    rm -f "$dir/migrate-$j.sock"
    echo "$j" >"$dir/instance"
    echo "$to" >"$dir/site"
    echo "migrate vm=$g from=$from to=$to qemu=yes nic=$(cat "$dir/nic") ${result#qmp-migrate }"
}

guest_remove_tap() {
    local g=$1 tap=$2 dir
    dir=$(guest_dir "$g")
    in_ns lan ip link del "$tap" 2>/dev/null || true
    if [[ -f $dir/taps ]]; then
        grep -vx "$tap" "$dir/taps" >"$dir/taps.new" || true
        mv "$dir/taps.new" "$dir/taps"
    fi
}

# guest_down: every guest's QEMU (by recorded PID) and tap.
guest_down() {
    local g dir name tap
    [[ -d $STATE/guest ]] || return 0
    for g in $(lab_guests); do
        dir=$(guest_dir "$g")
        for name in "$STATE"/pids/qemu-"$g"-*; do
            [[ -e $name ]] && stop_recorded "$(basename "$name")"
        done
        if [[ -f $dir/taps ]]; then
            for tap in $(cat "$dir/taps"); do in_ns lan ip link del "$tap" 2>/dev/null || true; done
            rm -f "$dir/taps"
        fi
    done
}
