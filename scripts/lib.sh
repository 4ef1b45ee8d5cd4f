# shellcheck shell=bash
# holdfast script library: paths, logging, and a private containerd that is
# fully isolated from any system one (own root, state, sockets, config).
#
# Sourced by setup.sh, demo.sh and bench.sh. Defines functions and variables
# only; it starts nothing by itself.
#
# Things containerd and its shims do whatever our config says (so callers
# must use their own namespace, container ids and cgroup parent per run):
#   - shims put their sockets under /run/containerd/s/
#   - runc keeps its state under /run/containerd/runc/<namespace>
#   - ctr puts its client FIFOs under /run/containerd/fifo/
#   - runc puts a container without a cgroups path at /<id>

HF_REPO="${HF_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export HOLDFAST_CACHE="${HOLDFAST_CACHE:-$HF_REPO/.cache}"
export HOLDFAST_BIN_DIR="${HOLDFAST_BIN_DIR:-$HF_REPO/target/release}"

# The second containerd version, unpacked from Debian 13's .deb by setup.sh.
HF_CONTAINERD17_VERSION=1.7.24
HF_CONTAINERD17_DIR="$HOLDFAST_CACHE/containerd-$HF_CONTAINERD17_VERSION"
HF_ROOTFS="$HOLDFAST_CACHE/rootfs/busybox"
# CRIU, built from Debian 13's source by setup.sh (Debian 12's criu cannot
# dump on this kernel). The shim gives runc this path (`runc --criu`).
export HF_CRIU=/usr/local/sbin/criu
export HF_SHIM_NAME=containerd-shim-shim-v2

# How long to wait for containerd to answer, and for a killed pid to go.
HF_START_TIMEOUT="${HF_START_TIMEOUT:-20}"
HF_STOP_TIMEOUT="${HF_STOP_TIMEOUT:-10}"

hf_log() { printf '%s\n' "$*" >&2; }
hf_die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# A step header for people reading the demo or bench output.
hf_step() { printf '\n==> %s\n' "$*"; }

# Seconds since the epoch with nanoseconds, as a decimal.
hf_now() { date +%s.%N; }

# hf_bin_dir VERSION: the directory holding containerd, ctr and the Go shim.
hf_bin_dir() {
    case "$1" in
        1.6) printf '/usr/bin\n' ;;
        1.7) printf '%s/usr/bin\n' "$HF_CONTAINERD17_DIR" ;;
        *) hf_die "unknown containerd version '$1' (want 1.6 or 1.7)" ;;
    esac
}

# hf_ctr_bin DIR: the ctr matching the containerd started in DIR.
hf_ctr_bin() {
    local version
    version="$(cat "$1/version" 2>/dev/null)" || hf_die "no containerd was started in $1"
    printf '%s/ctr\n' "$(hf_bin_dir "$version")"
}

# hf_ctr DIR ARGS...: run the matching ctr against the containerd in DIR.
hf_ctr() {
    local dir="$1"
    shift
    "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" "$@"
}

# hf_pid_alive PID: true while PID exists and is not a zombie.
hf_pid_alive() {
    local state
    [[ -n "$1" ]] || return 1
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z* ]]
}

# hf_wait_gone PID [TIMEOUT]: wait until PID is gone; false on timeout.
hf_wait_gone() {
    local pid="$1" deadline=$((SECONDS + ${2:-$HF_STOP_TIMEOUT}))
    while hf_pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# hf_containerd_pid DIR: the pid of the containerd started in DIR, if it still
# runs (a pid file left by a dead run may name a reused pid: check its args).
hf_containerd_pid() {
    local dir pid
    dir="$(cd "$1" 2>/dev/null && pwd)" || return 0
    pid="$(cat "$dir/containerd.pid" 2>/dev/null)" || return 0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    case "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in
        *containerd\ --config\ "$dir/config.toml"*) printf '%s\n' "$pid" ;;
    esac
}

# hf_write_config DIR: a containerd config whose every path is under DIR.
hf_write_config() {
    local dir="$1"
    cat >"$dir/config.toml" <<EOF
# Written by holdfast scripts/lib.sh: a private containerd, isolated from any
# system one. Plugins a ctr-driven run does not need are disabled so it
# starts fast.
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.monitor.v1.cgroups",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[debug]
  address = "$dir/debug.sock"
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
EOF
}

# hf_containerd_start VERSION DIR: start a private containerd VERSION (1.6 or
# 1.7) with everything under DIR; wait until it answers. Can be called again
# after hf_containerd_kill9/hf_containerd_stop to restart it on the same DIR.
hf_containerd_start() {
    local version="$1" dir="$2" bin pid deadline
    bin="$(hf_bin_dir "$version")"
    [[ -x "$bin/containerd" ]] || hf_die "containerd $version not found in $bin (run make setup)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    printf '%s\n' "$version" >"$dir/version"
    hf_write_config "$dir"
    # Our shim first, then this version's own Go shim.
    PATH="$HOLDFAST_BIN_DIR:$bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        setsid "$bin/containerd" --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 </dev/null &
    pid=$!
    # Not a job of ours: no "Killed" notice when a test kills it on purpose.
    disown "$pid"
    printf '%s\n' "$pid" >"$dir/containerd.pid"
    deadline=$((SECONDS + HF_START_TIMEOUT))
    until "$bin/ctr" --address "$dir/containerd.sock" version >/dev/null 2>&1; do
        if ! hf_pid_alive "$pid"; then
            tail -n 20 "$dir/containerd.log" >&2 || true
            hf_die "containerd $version exited during start-up (log: $dir/containerd.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$dir/containerd.log" >&2 || true
            hf_die "containerd $version did not answer within ${HF_START_TIMEOUT}s (log: $dir/containerd.log)"
        fi
        sleep 0.05
    done
}

# hf_containerd_kill9 DIR: kill -9 the containerd in DIR and wait until it is gone.
hf_containerd_kill9() {
    local pid
    pid="$(hf_containerd_pid "$1")"
    [[ -n "$pid" ]] || return 0
    kill -9 "$pid" 2>/dev/null || true
    hf_wait_gone "$pid" || hf_die "containerd pid $pid survived kill -9"
    rm -f "$1/containerd.pid"
}

# hf_containerd_stop DIR: SIGTERM, then SIGKILL if it has not gone in time.
hf_containerd_stop() {
    local pid
    pid="$(hf_containerd_pid "$1")"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! hf_wait_gone "$pid"; then
        kill -9 "$pid" 2>/dev/null || true
        hf_wait_gone "$pid" || hf_die "containerd pid $pid survived kill -9"
    fi
    rm -f "$1/containerd.pid"
}

# hf_shim_pids DIR: pids of every shim (ours or Go) serving the containerd in DIR.
hf_shim_pids() {
    local dir="$1" pid cmd
    for pid in $(pgrep -f -- "-address $dir/containerd.sock" 2>/dev/null || true); do
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
            *containerd-shim-*" -address $dir/containerd.sock "*) printf '%s\n' "$pid" ;;
        esac
    done
}

# hf_cgroup_parent NAME: a cgroup parent unique to this run, e.g.
# /holdfast-demo-1234. Pass `--cgroup <parent>/<id>` to ctr run.
hf_cgroup_parent() { printf '/holdfast-%s-%s\n' "$1" "$$"; }

# hf_remove_cgroups PARENT: remove PARENT and everything under it in every
# cgroup v1 controller hierarchy and the unified one, deepest first.
hf_remove_cgroups() {
    local parent="$1" root d deadline=$((SECONDS + 5)) left
    [[ "$parent" == /holdfast-* ]] || hf_die "refusing to remove cgroup '$parent'"
    while :; do
        left=0
        for root in /sys/fs/cgroup /sys/fs/cgroup/*; do
            [[ -d "$root$parent" ]] || continue
            while IFS= read -r d; do
                rmdir "$d" 2>/dev/null || left=1
            done < <(find "$root$parent" -depth -type d 2>/dev/null)
        done
        # A just-killed process may still be leaving its cgroup.
        ((left && SECONDS < deadline)) || break
        sleep 0.1
    done
    ((!left)) || hf_log "warning: could not remove every cgroup under $parent"
}

# hf_cleanup DIR [NAMESPACE...]: tear down everything a run made in DIR: its
# tasks and containers, leftover shims, containerd, mounts under DIR, the
# cgroups under $HF_CGROUP_PARENT (when set) and DIR itself. Safe to call from
# an EXIT trap and more than once.
hf_cleanup() {
    local dir="$1" ns id pid mnt f sock
    shift
    [[ -n "$dir" ]] || return 0
    if [[ -d "$dir" ]]; then
        dir="$(cd "$dir" && pwd)"
        if [[ -n "$(hf_containerd_pid "$dir")" ]] && hf_pid_alive "$(hf_containerd_pid "$dir")"; then
            for ns in "$@"; do
                for id in $(hf_ctr "$dir" -n "$ns" t ls -q 2>/dev/null || true); do
                    timeout 10 "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" -n "$ns" \
                        t kill -a -s 9 "$id" >/dev/null 2>&1 || true
                done
                for id in $(hf_ctr "$dir" -n "$ns" t ls -q 2>/dev/null || true); do
                    timeout 10 "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" -n "$ns" \
                        t rm -f "$id" >/dev/null 2>&1 || true
                done
                for id in $(hf_ctr "$dir" -n "$ns" c ls -q 2>/dev/null || true); do
                    timeout 10 "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" -n "$ns" \
                        c rm "$id" >/dev/null 2>&1 || true
                done
                timeout 10 "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" \
                    namespaces rm "$ns" >/dev/null 2>&1 || true
            done
        fi
        # Shims that outlived their task (or containerd): kill their children
        # (the containers' init processes) and them.
        for pid in $(hf_shim_pids "$dir"); do
            pkill -9 -P "$pid" 2>/dev/null || true
            kill -9 "$pid" 2>/dev/null || true
        done
        for pid in $(hf_shim_pids "$dir"); do hf_wait_gone "$pid" 2 || true; done
        # Their sockets, which a killed shim leaves in /run/containerd/s/.
        for f in "$dir"/state/io.containerd.runtime.v2.task/*/*/address; do
            [[ -f "$f" ]] || continue
            sock="$(sed 's|^unix://||' "$f")"
            if [[ "$sock" == /run/containerd/s/* && -S "$sock" ]]; then rm -f "$sock"; fi
        done
        hf_containerd_stop "$dir" || true
        # Mounts under DIR (rootfs overlays, shm), deepest first.
        while IFS= read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
    fi
    for ns in "$@"; do
        rm -rf "/run/containerd/runc/$ns" 2>/dev/null || true
    done
    if [[ -n "${HF_CGROUP_PARENT:-}" ]]; then
        hf_remove_cgroups "$HF_CGROUP_PARENT"
    fi
    if [[ -d "$dir" ]]; then
        rm -rf "$dir" 2>/dev/null || { sleep 0.2; rm -rf "$dir" || true; }
    fi
}

# hf_copy_rootfs DEST: a private copy of the busybox rootfs.
hf_copy_rootfs() {
    [[ -x "$HF_ROOTFS/bin/busybox" ]] || hf_die "no busybox rootfs at $HF_ROOTFS (run make setup)"
    mkdir -p "$(dirname "$1")"
    cp -a "$HF_ROOTFS" "$1"
}

# hf_task_field DIR NS ID FIELD: PID or STATUS of task ID from `ctr t ls`.
hf_task_field() {
    local col
    case "$4" in PID) col=2 ;; STATUS) col=3 ;; *) hf_die "bad field $4" ;; esac
    hf_ctr "$1" -n "$2" t ls 2>/dev/null | awk -v id="$3" -v c="$col" '$1 == id { print $c }'
}

# hf_wait_status DIR NS ID STATUS [TIMEOUT]: wait until task ID shows STATUS.
hf_wait_status() {
    local deadline=$((SECONDS + ${5:-10}))
    until [[ "$(hf_task_field "$1" "$2" "$3" STATUS)" == "$4" ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# hf_cpu_ticks PID: utime + stime of PID (all its threads, in clock ticks of
# `getconf CLK_TCK`), from /proc/PID/stat; fails when PID is gone.
hf_cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$stat" ]] || return 1
    # The command name (field 2) may hold spaces: cut after its closing ')'.
    stat="${stat##*) }"
    awk '{ print $12 + $13 }' <<<"$stat"
}

# hf_remove_client_fifos PATTERN: remove the folders ctr made under
# /run/containerd/fifo/ that hold a FIFO whose name matches the glob PATTERN
# (a `kill -9`'d ctr leaves its FIFOs behind).
hf_remove_client_fifos() {
    local d f
    for d in /run/containerd/fifo/*/; do
        [[ -d "$d" ]] || continue
        for f in "$d"$1; do
            if [[ -e "$f" ]]; then
                rm -rf "$d"
                break
            fi
        done
    done
}
