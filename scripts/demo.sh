#!/usr/bin/env bash
# holdfast demo: a container keeps running, and its log keeps growing without
# a gap, while containerd is killed with SIGKILL and restarted.
#
#   make demo                      # setup + build + this script
#   HOLDFAST_DEMO_RUNTIME=io.containerd.runc.v2 bash scripts/demo.sh   # the Go shim
#   HOLDFAST_DEMO_CONTAINERD=1.7 bash scripts/demo.sh                  # containerd 1.7.24
#
# Everything lives under <repo>/.demo and is torn down on exit.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNTIME="${HOLDFAST_DEMO_RUNTIME:-io.rust.shim.v2}"
CONTAINERD_VERSION="${HOLDFAST_DEMO_CONTAINERD:-1.6}"
DIR="$HF_REPO/.demo"
NS="holdfast-demo-$$"
ID=demo-logger
LOG="$DIR/$ID.log"
OUTAGE_LINES=15 # lines the container must write while containerd is down
export HF_CGROUP_PARENT
HF_CGROUP_PARENT="$(hf_cgroup_parent demo)"

lines() { wc -l <"$LOG" 2>/dev/null || echo 0; }

# wait_lines N TIMEOUT: wait until the log has at least N lines.
wait_lines() {
    local deadline=$((SECONDS + $2))
    while (($(lines) < $1)); do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

fail() {
    printf '\nFAIL: %s\n' "$*"
    if [[ -s "$DIR/containerd.log" ]]; then
        printf 'last lines of the containerd log:\n'
        tail -n 5 "$DIR/containerd.log" | sed 's/^/  | /'
    fi
    exit 1
}

install_shim() {
    local src="$HOLDFAST_BIN_DIR/$HF_SHIM_NAME"
    if [[ ! -x "$src" ]]; then
        [[ "$RUNTIME" == io.rust.shim.v2 ]] || return 0
        hf_die "$src not found: run make build"
    fi
    # Copy then rename, so a shim still running from the old file is not hit.
    install -m 0755 "$src" "/usr/local/bin/.$HF_SHIM_NAME.tmp.$$"
    mv -f "/usr/local/bin/.$HF_SHIM_NAME.tmp.$$" "/usr/local/bin/$HF_SHIM_NAME"
}

main() {
    local pid pid_after status before after gap_report start=$SECONDS

    hf_step "installing $HF_SHIM_NAME into /usr/local/bin (runtime under test: $RUNTIME)"
    install_shim

    # A previous demo that was killed hard may have left its folder behind.
    hf_cleanup "$DIR"
    trap 'hf_cleanup "$DIR" "$NS"' EXIT
    trap 'exit 130' INT TERM HUP

    hf_step "starting a private containerd $CONTAINERD_VERSION in $DIR"
    hf_containerd_start "$CONTAINERD_VERSION" "$DIR"
    hf_ctr "$DIR" version | sed -n 's/^ *Version: */  containerd /p' | tail -n 1
    hf_copy_rootfs "$DIR/rootfs"

    hf_step "running $ID: prints 'line N' every 0.2 s; the shim writes $LOG"
    # shellcheck disable=SC2016 # the $ are for the container's shell
    hf_ctr "$DIR" -n "$NS" run -d --runtime "$RUNTIME" \
        --log-uri "file://$LOG" \
        --cgroup "$HF_CGROUP_PARENT/$ID" \
        --rootfs "$DIR/rootfs" "$ID" \
        /bin/sh -c 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.2; done' ||
        fail "ctr run --runtime $RUNTIME failed"
    hf_wait_status "$DIR" "$NS" "$ID" RUNNING || fail "$ID is not RUNNING"
    wait_lines 3 10 || fail "no output in $LOG"
    hf_ctr "$DIR" -n "$NS" t ls
    pid="$(hf_task_field "$DIR" "$NS" "$ID" PID)"

    hf_step "kill -9 containerd (pid $(hf_containerd_pid "$DIR"))"
    hf_containerd_kill9 "$DIR"
    before="$(lines)"
    printf '  containerd is gone; the log has %s lines\n' "$before"

    hf_step "while containerd is down: the container is alive and still writing"
    ps -o pid,stat,etime,args -p "$pid" || fail "container process $pid died with containerd"
    wait_lines $((before + OUTAGE_LINES)) 15 ||
        fail "log stopped growing while containerd was down (still $(lines) lines)"
    after="$(lines)"
    printf '  log: %s lines -> %s lines with no containerd running\n' "$before" "$after"
    tail -n 3 "$LOG" | sed 's/^/  | /'

    hf_step "restarting containerd"
    hf_containerd_start "$CONTAINERD_VERSION" "$DIR"
    hf_ctr "$DIR" -n "$NS" t ls
    status="$(hf_task_field "$DIR" "$NS" "$ID" STATUS)"
    pid_after="$(hf_task_field "$DIR" "$NS" "$ID" PID)"
    [[ "$status" == RUNNING ]] || fail "$ID is '$status' after the restart, not RUNNING"
    [[ "$pid_after" == "$pid" ]] || fail "$ID has pid '$pid_after' after the restart, was $pid"
    printf '  same task, same pid %s, RUNNING\n' "$pid"

    hf_step "checking the log: consecutive line numbers, no gap"
    wait_lines $((after + 5)) 10 || fail "log stopped growing after the restart"
    # Stop the writer first so the last line is complete.
    hf_ctr "$DIR" -n "$NS" t kill -s 9 "$ID"
    hf_wait_status "$DIR" "$NS" "$ID" STOPPED || true
    gap_report="$(awk '
        $1 != "line" || $2 != NR { printf "  line %d of the file is \"%s\", expected \"line %d\"\n", NR, $0, NR; bad = 1; exit }
        END { if (!bad) printf "  %d lines, line 1 to line %d, none missing or repeated\n", NR, NR; exit bad }
    ' "$LOG")" || fail "gap or disorder in the log:
$gap_report"
    printf '%s\n' "$gap_report"

    printf '\nPASS: %s survived kill -9 of containerd with the same pid and a gap-free log (%ss)\n' \
        "$ID" "$((SECONDS - start))"
}

main "$@"
