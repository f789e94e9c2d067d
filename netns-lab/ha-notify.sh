#!/usr/bin/env bash
# keepalived's notify script for one lab router of a site with two routers (lab.sh up --ha S).
#
#   ha-notify.sh STATE ROUTER SKYVINE_BIN   TYPE NAME VRRP_STATE PRIORITY
#
# keepalived appends TYPE (INSTANCE), the instance NAME, the new VRRP_STATE and the PRIORITY to
# the configured arguments. MASTER starts the skyvine router of ROUTER (config in
# STATE/ROUTER/router.toml); BACKUP, FAULT and STOP stop it. The router is watched: if it exits
# while this router is MASTER without being told to (it crashed or was killed), "1" is written
# to STATE/ROUTER/down, keepalived's track_file for this router, which puts the instance into
# FAULT at once (inotify): it gives up the virtual IPs with a priority-0 advert and the other
# router takes over within the skew time. A human (here: the next lab) clears the file.
#
# The PID is recorded as the lab records its processes (STATE/pids/router-ROUTER = "PID
# MARKER"), so lab.sh kill-router and lab.sh down find it. Everything is logged to
# STATE/ROUTER/vrrp.log. keepalived waits for nothing here: the router starts in the
# background.
set -u
state=$1 router=$2 bin=$3 vrrp=${6:-}
dir=$state/$router
record=$state/pids/router-$router
now() { date -u +%FT%T.%NZ; }
echo "$(now) $vrrp (priority ${7:-?})" >>"$dir/vrrp.log"
echo "$vrrp" >"$dir/vrrp-state"

running_pid() {
    local pid marker
    [[ -f $record ]] || return 1
    read -r pid marker <"$record"
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" &&
        echo "$pid"
}

case $vrrp in
    MASTER)
        if running_pid >/dev/null; then exit 0; fi
        rm -f "$dir/stopping"
        echo "--- start (VRRP MASTER) $(now)" >>"$dir/router.log"
        (
            RUST_LOG=${RUST_LOG:-info} "$bin" router --config "$dir/router.toml" \
                >>"$dir/router.log" 2>&1 </dev/null &
            pid=$!
            echo "$pid $dir/router.toml" >"$record"
            wait "$pid"
            rc=$?
            if [[ ! -e $dir/stopping ]]; then
                echo "$(now) router exited (status $rc) while MASTER: FAULT" >>"$dir/vrrp.log"
                echo 1 >"$dir/down"
            fi
        ) </dev/null >/dev/null 2>&1 &
        ;;
    BACKUP | FAULT | STOP)
        touch "$dir/stopping"
        if pid=$(running_pid); then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; fi
            echo "$(now) router (pid $pid) stopped" >>"$dir/vrrp.log"
        fi
        rm -f "$record"
        ;;
    *) echo "$(now) unknown state '$vrrp'" >>"$dir/vrrp.log" ;;
esac
exit 0
