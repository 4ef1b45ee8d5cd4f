#!/usr/bin/env bash
# Runs the end-to-end suites (integration/: the shim through containerd;
# crates/manager/tests: holdfastd and the holdfast CLI on the shim) once per
# containerd version and then checks that the tests left no containerd, shim, mount, cgroup or
# fixture folder behind.
#
#   HOLDFAST_CONTAINERD   versions to cover, space or comma separated (default "1.6 1.7")
#   HOLDFAST_TEST_THREADS parallel tests per run (default 2)
#   HOLDFAST_TEST_RUNTIME runtime under test (default io.rust.shim.v2)
#   extra arguments are passed to the test binaries (e.g. a test name filter)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

versions="${HOLDFAST_CONTAINERD:-1.6 1.7}"
threads="${HOLDFAST_TEST_THREADS:-2}"
runtime="${HOLDFAST_TEST_RUNTIME:-io.rust.shim.v2}"
# Fixture folders, cgroup parents: see integration/src/containerd.rs.
fixture_glob="/tmp/hf-it-"
cgroup_prefix="holdfast-it-"

[[ $EUID -eq 0 ]] || hf_die "the integration tests need root (private containerd, runc, mounts, cgroups)"
if [[ "$runtime" == io.rust.shim.v2 && ! -x "$HOLDFAST_BIN_DIR/$HF_SHIM_NAME" ]]; then
    hf_die "$HOLDFAST_BIN_DIR/$HF_SHIM_NAME is missing (run make build)"
fi

# leftovers: print what the tests left behind, one line each.
leftovers() {
    local pid cmd mnt d
    for pid in $(pgrep -f -- "$fixture_glob" 2>/dev/null || true); do
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
            *containerd*"$fixture_glob"* | *holdfastd*"$fixture_glob"*) printf 'process %s: %s\n' "$pid" "$cmd" ;;
        esac
    done
    while IFS= read -r mnt; do
        printf 'mount %s\n' "$mnt"
    done < <(awk -v d="$fixture_glob" 'index($2, d) == 1 { print $2 }' /proc/self/mounts)
    for d in /sys/fs/cgroup/*/"$cgroup_prefix"* /sys/fs/cgroup/"$cgroup_prefix"*; do
        [[ -d "$d" ]] && printf 'cgroup %s\n' "$d"
    done
    for d in "$fixture_glob"*; do
        [[ -e "$d" ]] && printf 'folder %s\n' "$d"
    done
    return 0
}

before="$(leftovers)"
if [[ -n "$before" ]]; then
    hf_log "warning: leftovers of an earlier run exist before the suite starts:"
    hf_log "$before"
fi

# holdfastd always runs our shim: its suite only makes sense for ours.
packages=(-p holdfast-integration)
[[ "$runtime" != io.rust.shim.v2 ]] || packages+=(-p holdfast-manager)

failed=()
for v in ${versions//,/ }; do
    bin="$(hf_bin_dir "$v")"
    [[ -x "$bin/containerd" ]] || hf_die "containerd $v not found in $bin (run make setup)"
    hf_step "integration tests: containerd $v ($("$bin/containerd" --version | awk '{print $3}')), runtime $runtime, $threads threads"
    start=$SECONDS
    if HOLDFAST_CONTAINERD="$v" HOLDFAST_TEST_RUNTIME="$runtime" \
        cargo test --release --no-fail-fast "${packages[@]}" -- --test-threads "$threads" "$@"; then
        hf_log "containerd $v: passed in $((SECONDS - start)) s"
    else
        hf_log "containerd $v: FAILED after $((SECONDS - start)) s"
        failed+=("$v")
    fi
done

hf_step "checking that the tests left nothing behind"
after="$(leftovers)"
if [[ -n "$after" && "$after" != "$before" ]]; then
    hf_log "the tests left behind:"
    hf_log "$after"
    failed+=("leftovers")
else
    hf_log "nothing left behind"
fi

if ((${#failed[@]})); then
    hf_die "integration failed: ${failed[*]}"
fi
hf_log "integration passed on containerd ${versions}"
