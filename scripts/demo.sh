#!/usr/bin/env bash
# holdfast demo: a container run through holdfastd keeps running, and its log
# keeps growing without a gap, while holdfastd and containerd are both killed
# with SIGKILL; once they are restarted, holdfastd adopts it with the same pid.
#
#   make demo                                           # setup + build + this script
#   HOLDFAST_DEMO_CONTAINERD=1.7 bash scripts/demo.sh   # on containerd 1.7.24 (default 1.6)
#   HOLDFAST_BIN_DIR=DIR bash scripts/demo.sh           # holdfastd, holdfast and the shim from DIR
#
# A private containerd (own root, state, sockets, namespace) and a private
# holdfastd (own root, socket, journal folder, cgroup parent) live under
# <repo>/.demo; everything is torn down on exit, success or failure. Needs
# root. Exits non-zero if anything does not hold.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONTAINERD_VERSION="${HOLDFAST_DEMO_CONTAINERD:-1.6}"
DIR="$HF_REPO/.demo"
NS="holdfast-demo-$$"
NAME=demo-logger
HD_ROOT="$DIR/holdfastd"
HD_SOCK="$HD_ROOT/holdfastd.sock"
HD_CONFIG="$DIR/holdfastd.toml"
HD_LOG="$DIR/holdfastd.log"
OUTAGE_SECONDS=5 # how long both daemons stay down
export HF_CGROUP_PARENT
HF_CGROUP_PARENT="$(hf_cgroup_parent demo)"
PID=       # the container's init pid, as holdfast ps shows it
JOURNAL=   # the container's journal folder for its init process
SHIM_SOCK= # the socket of the container's shim

fail() {
    local f
    printf '\nFAIL: %s\n' "$*"
    for f in "$HD_LOG" "$DIR/containerd.log"; do
        if [[ -s "$f" ]]; then
            printf 'last lines of %s:\n' "$f"
            tail -n 5 "$f" | sed 's/^/  | /'
        fi
    done
    exit 1
}

# hf ARGS...: the holdfast CLI against our holdfastd (never waits forever).
hf() { timeout 30 "$HOLDFAST_BIN_DIR/holdfast" --host "unix://$HD_SOCK" "$@"; }

# field JQ_FILTER: a field of the demo container from `holdfast ps --json`.
field() { hf ps -a --json | jq -r --arg n "$NAME" ".[] | select(.name == \$n) | $1"; }

# holdfastd_pid [DIR]: the pid of the holdfastd started with DIR's config, if
# it still runs (the pid file may name a reused pid: check its args).
holdfastd_pid() {
    local dir="${1:-$DIR}" pid
    pid="$(cat "$dir/holdfastd.pid" 2>/dev/null)" || return 0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    case "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in
        *holdfastd\ --config\ "$dir/holdfastd.toml"*) printf '%s\n' "$pid" ;;
    esac
}

write_holdfastd_config() {
    mkdir -p "$HD_ROOT"
    cat >"$HD_CONFIG" <<EOF
# Written by holdfast scripts/demo.sh: a private holdfastd on the demo's
# containerd. Journals go to <root>/logs/<namespace>/<name>/.
root = "$HD_ROOT"
socket = "$HD_SOCK"
log_level = "info"
live_restore = true
cgroup_parent = "$HF_CGROUP_PARENT"

[containerd]
address = "$DIR/containerd.sock"
namespace = "$NS"
EOF
}

# holdfastd_start [summary]: start holdfastd in the background and wait until
# start-up is done (its log says "start-up done; serving", so it takes
# changes, not only reads) and `holdfast ps` answers; with "summary", print
# what start-up found.
holdfastd_start() {
    local offset pid deadline=$((SECONDS + HF_START_TIMEOUT))
    : >>"$HD_LOG"
    offset="$(stat -c %s "$HD_LOG")"
    setsid "$HOLDFAST_BIN_DIR/holdfastd" --config "$HD_CONFIG" >>"$HD_LOG" 2>&1 </dev/null &
    pid=$!
    disown "$pid"
    printf '%s\n' "$pid" >"$DIR/holdfastd.pid"
    # (grep without -q reads to the end: no SIGPIPE for tail under pipefail)
    until tail -c +"$((offset + 1))" "$HD_LOG" | grep 'start-up done' >/dev/null &&
        hf ps >/dev/null 2>&1; do
        hf_pid_alive "$pid" || fail "holdfastd exited during start-up (log: $HD_LOG)"
        ((SECONDS < deadline)) || fail "holdfastd was not serving within ${HF_START_TIMEOUT}s (log: $HD_LOG)"
        sleep 0.05
    done
    [[ "${1:-}" == summary ]] || return 0
    # Its start-up summary, e.g. "records=1 ... adopted=1 ...".
    tail -c +"$((offset + 1))" "$HD_LOG" | grep 'start-up done' | tail -n 1 |
        sed 's/\x1b\[[0-9;]*m//g; s/.*start-up done; serving */  holdfastd: start-up done: /'
}

# holdfastd_stop DIR: SIGTERM, then SIGKILL if it has not gone in time.
holdfastd_stop() {
    local pid
    pid="$(holdfastd_pid "$1")"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! hf_wait_gone "$pid"; then
        kill -9 "$pid" 2>/dev/null || true
        hf_wait_gone "$pid" || hf_log "warning: holdfastd pid $pid survived kill -9"
    fi
    rm -f "$1/holdfastd.pid"
}

# journal_lines: lines in the container's stdout journal, read from its
# files (one CRI record per line), with no daemon involved.
journal_lines() { cat "$JOURNAL"/stdout.*.log 2>/dev/null | wc -l; }

# leftovers: what this run left behind, one line each.
leftovers() {
    local pid cmd d
    for pid in $(pgrep -f -- "$DIR/" 2>/dev/null || true); do
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
            *containerd* | *holdfastd*) printf '  process %s: %s\n' "$pid" "$cmd" ;;
        esac
    done
    if [[ -n "$PID" ]] && hf_pid_alive "$PID"; then
        printf '  process %s: the container\n' "$PID"
    fi
    if [[ -n "$SHIM_SOCK" && -e "$SHIM_SOCK" ]]; then printf '  shim socket %s\n' "$SHIM_SOCK"; fi
    awk -v d="$DIR/" 'index($2, d) == 1 { print "  mount " $2 }' /proc/self/mounts
    for d in /sys/fs/cgroup"$HF_CGROUP_PARENT" /sys/fs/cgroup/*"$HF_CGROUP_PARENT" \
        "/run/containerd/runc/$NS" "$DIR"; do
        if [[ -e "$d" ]]; then printf '  %s\n' "$d"; fi
    done
}

# teardown: remove the container through holdfastd, stop holdfastd, then
# everything containerd-side (lib.sh), and check that nothing is left.
teardown() {
    local status=$? left
    trap - EXIT
    hf_step "tearing down"
    if [[ -n "$PID" && -n "$(holdfastd_pid)" && -S "$HD_SOCK" ]]; then
        printf '  holdfast rm -f %s\n' "$NAME"
        hf rm -f "$NAME" >/dev/null 2>&1 || printf '  (failed; removing it through containerd)\n'
    fi
    holdfastd_stop "$DIR"
    hf_cleanup "$DIR" "$NS"
    left="$(leftovers)"
    if [[ -n "$left" ]]; then
        printf 'left behind:\n%s\n' "$left"
        exit 1
    fi
    printf '  holdfastd, containerd, shim, container, mounts, cgroups and %s are gone\n' "$DIR"
    exit "$status"
}

# cleanup_previous: a previous demo killed hard may have left its daemons and
# folder behind; its namespace and cgroup parent are in its run file.
cleanup_previous() {
    local ns="" cg=""
    [[ -d "$DIR" ]] || return 0
    hf_log "removing what a previous demo left in $DIR"
    if [[ -f "$DIR/run" ]]; then
        read -r ns cg <"$DIR/run" || true
    fi
    holdfastd_stop "$DIR"
    if [[ "$cg" == /holdfast-demo-* ]]; then
        HF_CGROUP_PARENT="$cg" hf_cleanup "$DIR" ${ns:+"$ns"}
    else
        HF_CGROUP_PARENT='' hf_cleanup "$DIR" ${ns:+"$ns"}
    fi
}

main() {
    local hd_pid cd_pid pid_after status before after now n start=$SECONDS logs gap_report i

    [[ $EUID -eq 0 ]] || hf_die "the demo needs root (containerd, runc, mounts, cgroups)"
    for i in holdfastd holdfast "$HF_SHIM_NAME"; do
        [[ -x "$HOLDFAST_BIN_DIR/$i" ]] || hf_die "$HOLDFAST_BIN_DIR/$i not found: run make build"
    done
    if [[ -n "${HOLDFAST_DEMO_RUNTIME:-}" ]]; then
        hf_log "note: HOLDFAST_DEMO_RUNTIME is ignored: holdfastd always runs io.rust.shim.v2" \
            "(scripts/bench.sh compares it with the Go shim)"
    fi
    command -v jq >/dev/null || hf_die "jq not found (run make setup)"
    hf_bin_dir "$CONTAINERD_VERSION" >/dev/null

    cleanup_previous
    trap teardown EXIT
    trap 'exit 130' INT TERM HUP
    mkdir -p "$DIR"
    printf '%s %s\n' "$NS" "$HF_CGROUP_PARENT" >"$DIR/run"

    hf_step "starting a private containerd $CONTAINERD_VERSION and holdfastd in $DIR"
    hf_containerd_start "$CONTAINERD_VERSION" "$DIR"
    hf_ctr "$DIR" version | sed -n 's/^ *Version: */  containerd /p' | tail -n 1
    write_holdfastd_config
    holdfastd_start
    printf '  holdfastd %s on unix://%s, containerd namespace %s\n' \
        "$("$HOLDFAST_BIN_DIR/holdfastd" --version | awk '{print $2}')" "$HD_SOCK" "$NS"
    hf_copy_rootfs "$DIR/rootfs"

    hf_step "holdfast run -d --name $NAME: prints 'line N' every 0.2 s"
    # shellcheck disable=SC2016 # the $ are for the container's shell
    hf run -d --name "$NAME" --rootfs "$DIR/rootfs" -- \
        /bin/sh -c 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.2; done' >/dev/null ||
        fail "holdfast run failed"
    sleep 1
    hf ps | sed 's/^/  /' || fail "holdfast ps failed"
    [[ "$(field .state.status)" == running ]] || fail "$NAME is not running"
    PID="$(field .state.pid)"
    JOURNAL="$(field .log_dir)/init"
    SHIM_SOCK="$(sed 's|^unix://||' "$DIR/state/io.containerd.runtime.v2.task/$NS/$NAME/address" 2>/dev/null)" || true
    printf '  holdfast logs --tail 3 %s:\n' "$NAME"
    hf logs --tail 3 "$NAME" | sed 's/^/  | /' || fail "holdfast logs --tail 3 failed"
    [[ -d "$JOURNAL" ]] || fail "no journal folder at $JOURNAL"

    hd_pid="$(holdfastd_pid)"
    cd_pid="$(hf_containerd_pid "$DIR")"
    [[ -n "$hd_pid" && -n "$cd_pid" ]] || fail "holdfastd ($hd_pid) or containerd ($cd_pid) is not running"
    hf_step "kill -9 holdfastd (pid $hd_pid) and containerd (pid $cd_pid) together"
    kill -9 "$hd_pid" "$cd_pid"
    hf_wait_gone "$hd_pid" || fail "holdfastd survived kill -9"
    hf_wait_gone "$cd_pid" || fail "containerd survived kill -9"
    rm -f "$DIR/holdfastd.pid" "$DIR/containerd.pid"
    printf '  holdfast ps now: %s\n' "$(hf ps 2>&1 | head -n 1 | sed 's| at unix://[^ ]*:|:|' || true)"

    hf_step "both daemons are down: the container runs on and its journal grows"
    ps -o pid,stat,etime,args -p "$PID" | sed 's/^/  /' || fail "container process $PID died with the daemons"
    printf '  journal %s/stdout.*.log:\n' "$JOURNAL"
    before="$(journal_lines)"
    printf '    %ss down: %4s lines\n' 0 "$before"
    for ((i = 1; i <= OUTAGE_SECONDS; i++)); do
        sleep 1
        printf '    %ss down: %4s lines\n' "$i" "$(journal_lines)"
    done
    after="$(journal_lines)"
    hf_pid_alive "$PID" || fail "container process $PID died while the daemons were down"
    # 5 lines a second; ask for 3 so that a busy machine does not fail it.
    ((after - before >= 3 * OUTAGE_SECONDS)) ||
        fail "the journal grew by $((after - before)) lines in ${OUTAGE_SECONDS}s with no daemon"
    # Segment names sort by their sequence number (zero-padded).
    cat "$JOURNAL"/stdout.*.log | tail -n 1 | sed 's/^/  newest record: /'

    hf_step "restarting containerd and holdfastd"
    hf_containerd_start "$CONTAINERD_VERSION" "$DIR"
    holdfastd_start summary
    hf ps | sed 's/^/  /' || fail "holdfast ps failed after the restart"
    status="$(field .state.status)"
    pid_after="$(field .state.pid)"
    [[ "$status" == running ]] || fail "$NAME is '$status' after the restart, not running"
    [[ "$pid_after" == "$PID" ]] || fail "$NAME has pid '$pid_after' after the restart, was $PID"
    printf '  same container, same pid %s, running\n' "$PID"

    hf_step "holdfast logs $NAME: every line, no gap, no duplicate"
    sleep 1
    logs="$(hf logs "$NAME")" || fail "holdfast logs failed"
    n="$(wc -l <<<"$logs")"
    gap_report="$(awk '
        $1 != "line" || $2 != NR { printf "  line %d of the output is \"%s\", expected \"line %d\"\n", NR, $0, NR; bad = 1; exit }
        END { if (!bad) printf "  %d lines, line 1 to line %d in order, none missing or repeated\n", NR, NR; exit bad }
    ' <<<"$logs")" || fail "gap, duplicate or disorder in holdfast logs:
$gap_report"
    tail -n 3 <<<"$logs" | sed 's/^/  | /'
    printf '%s\n' "$gap_report"
    ((n > after)) || fail "holdfast logs has $n lines, but the journal had $after while the daemons were down"
    now="$(journal_lines)"
    ((now > after)) || fail "the journal stopped growing after the restart ($now lines)"
    printf '  lines %d to %d were written while both daemons were down\n' "$((before + 1))" "$after"

    printf '\nPASS: %s survived kill -9 of holdfastd and containerd %s: same pid, no line lost (%ss)\n' \
        "$NAME" "$CONTAINERD_VERSION" "$((SECONDS - start))"
}

main "$@"
