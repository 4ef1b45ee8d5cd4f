#!/usr/bin/env bash
# holdfast bench: our shim (io.rust.shim.v2) against containerd's Go shim
# (io.containerd.runc.v2) on containerd 1.6 and 1.7, in one run; writes
# BENCHMARKS.md.
#
#   make bench                 # setup + build + this script
#   bash scripts/bench.sh      # the same, without setup and build
#
# Knobs (env): HOLDFAST_BENCH_VERSIONS ("1.6 1.7"), HOLDFAST_BENCH_IDLE (20
# containers), HOLDFAST_BENCH_REPEAT (3 rounds of those),
# HOLDFAST_BENCH_SINGLE_ROUNDS (3), HOLDFAST_BENCH_SETTLE (1 s before reading
# memory), HOLDFAST_BENCH_OUT (<repo>/BENCHMARKS.md).
#
# Sections: each is a pair of functions, section_<name> VERSION (measures,
# filling R[...]) and render_<name> VERSION (prints its markdown). Add one by
# writing both and appending <name> to SECTIONS.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECTIONS=(idle)
OURS=io.rust.shim.v2
GO=io.containerd.runc.v2
RUNTIMES=("$OURS" "$GO")
read -r -a VERSIONS <<<"${HOLDFAST_BENCH_VERSIONS:-1.6 1.7}"
IDLE_N="${HOLDFAST_BENCH_IDLE:-20}"
SINGLE_ROUNDS="${HOLDFAST_BENCH_SINGLE_ROUNDS:-3}"
SETTLE="${HOLDFAST_BENCH_SETTLE:-1}"
REPEAT="${HOLDFAST_BENCH_REPEAT:-3}"
OUT="${HOLDFAST_BENCH_OUT:-$HF_REPO/BENCHMARKS.md}"

BENCH_DIR="$HF_REPO/.bench"
RUN_ID="$$"
export HF_CGROUP_PARENT
HF_CGROUP_PARENT="$(hf_cgroup_parent bench)"

# Results: R["<version>|<runtime>|<metric>"] = value, or unset.
declare -A R=()
# Why a runtime failed on a version: ERR["<version>|<runtime>"] = message.
declare -A ERR=()
# Our shim's binary as measured: size and checksum.
SHIM_INFO=""
SHIM_SRC=""

# ---------------------------------------------------------------- helpers

ns_of() { printf 'holdfast-bench-%s-%s\n' "$RUN_ID" "${1//./}"; }
dir_of() { printf '%s/%s\n' "$BENCH_DIR" "$1"; }
short() { [[ "$1" == "$OURS" ]] && echo ours || echo go; }

# median / p90 of the numbers on stdin (nearest rank); empty input → nothing.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
p90() { sort -g | awk '{ v[NR] = $1 } END { if (NR) { i = int(NR * 0.9); if (i < NR * 0.9) i++; print v[i] } }'; }

# shim_stats PID: "rss_kib pss_kib private_kib threads" of one process.
shim_stats() {
    local pid="$1" mem threads
    mem="$(awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } /^Private_(Clean|Dirty):/ { v += $2 }
        END { if (r == "") exit 1; print r, p, v }' "/proc/$pid/smaps_rollup")" || return 1
    threads="$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")" || return 1
    printf '%s %s\n' "$mem" "$threads"
}

# same_exe PID: how many other processes run the same executable as PID
# (they share its pages, which lowers PID's PSS and private memory).
same_exe() {
    local exe p n=0
    exe="$(readlink "/proc/$1/exe")" || { echo 0; return; }
    for p in /proc/[0-9]*; do
        [[ "${p#/proc/}" != "$1" && "$(readlink "$p/exe" 2>/dev/null)" == "$exe" ]] && n=$((n + 1))
    done
    echo "$n"
}

# shim_of VERSION ID: the pid of the shim serving task ID (the parent of its
# init process), checked against the shim's command line.
shim_of() {
    local version="$1" id="$2" dir pid ppid cmd
    dir="$(dir_of "$version")"
    pid="$(hf_task_field "$dir" "$(ns_of "$version")" "$id" PID)"
    [[ -n "$pid" && "$pid" != 0 ]] || return 1
    ppid="$(ps -o ppid= -p "$pid" | tr -d ' ')"
    cmd="$(tr '\0' ' ' <"/proc/$ppid/cmdline" 2>/dev/null)" || return 1
    case "$cmd" in
        *containerd-shim*" -id $id "*) printf '%s\n' "$ppid" ;;
        *) return 1 ;;
    esac
}

# run_container VERSION RUNTIME ID: `ctr run -d` an idle container; prints the
# wall time of ctr run -d in ms. ctr returns after the task's Start.
run_container() {
    local version="$1" runtime="$2" id="$3" dir ns t0 t1 err
    dir="$(dir_of "$version")"
    ns="$(ns_of "$version")"
    t0="$EPOCHREALTIME"
    if ! timeout 60 "$(hf_ctr_bin "$dir")" --address "$dir/containerd.sock" -n "$ns" \
        run -d --runtime "$runtime" \
        --log-uri "file://$dir/logs/$id.log" \
        --cgroup "$HF_CGROUP_PARENT/${version//./}-$id" \
        --rootfs "$BENCH_DIR/rootfs" "$id" /bin/sleep 100000 >/dev/null 2>"$dir/ctr.err"; then
        # The last line ctr printed (without NUL bytes a broken shim may send).
        err="$(tr -d '\0' <"$dir/ctr.err" | awk 'NF { l = $0 } END { print l }')"
        printf '%s\n' "${err:-ctr run -d failed}" >&2
        return 1
    fi
    t1="$EPOCHREALTIME"
    if ! hf_wait_status "$dir" "$ns" "$id" RUNNING 10; then
        echo "task $id is not RUNNING after ctr run -d" >&2
        return 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

remove_container() {
    local dir ns
    dir="$(dir_of "$1")"
    ns="$(ns_of "$1")"
    hf_ctr "$dir" -n "$ns" t rm -f "$2" >/dev/null 2>&1 || true
    hf_ctr "$dir" -n "$ns" c rm "$2" >/dev/null 2>&1 || true
}

# failed VERSION RUNTIME MESSAGE: remember the first failure of a runtime.
failed() {
    local key="$1|$2"
    [[ -n "${ERR[$key]:-}" ]] || ERR[$key]="$3"
    hf_log "bench: $(short "$2") shim on containerd $1 failed: $3"
}

ok() { [[ -z "${ERR[$1|$2]:-}" ]]; }

# record VERSION RUNTIME PREFIX FILE: medians of the "rss pss private threads"
# lines in FILE into R[...|PREFIX_{rss,pss,priv,threads}].
record() {
    local key="$1|$2|$3" col name
    [[ -s "$4" ]] || return 0
    for col in 1:rss 2:pss 3:priv 4:threads; do
        name="${col#*:}"
        R[$key"_$name"]="$(awk -v c="${col%%:*}" '{ print $c }' "$4" | median)"
    done
    R[$key"_n"]="$(wc -l <"$4")"
}

# ---------------------------------------------------------------- section: idle

# idle_round VERSION TMP ROUND: IDLE_N containers per runtime, started
# alternately; the wall time of each start, then every shim's memory.
idle_round() {
    local version="$1" tmp="$2" r="$3" rt i id ms pid stats
    for ((i = 1; i <= IDLE_N; i++)); do
        for rt in "${RUNTIMES[@]}"; do
            ok "$version" "$rt" || continue
            id="idle-$(short "$rt")-$r-$i"
            if ms="$(run_container "$version" "$rt" "$id" 2>"$tmp/err")"; then
                printf '%s\n' "$ms" >>"$tmp/start-$(short "$rt")"
            else
                failed "$version" "$rt" "$(cat "$tmp/err")"
            fi
        done
    done
    sleep "$SETTLE"
    for rt in "${RUNTIMES[@]}"; do
        for ((i = 1; i <= IDLE_N; i++)); do
            ok "$version" "$rt" || break
            id="idle-$(short "$rt")-$r-$i"
            if pid="$(shim_of "$version" "$id")" && stats="$(shim_stats "$pid")"; then
                printf '%s\n' "$stats" >>"$tmp/many-$(short "$rt")"
            else
                failed "$version" "$rt" "no shim process found for task $id"
            fi
        done
    done
    for rt in "${RUNTIMES[@]}"; do
        for ((i = 1; i <= IDLE_N; i++)); do remove_container "$version" "idle-$(short "$rt")-$r-$i"; done
    done
}

# Memory of one idle shim (median of SINGLE_ROUNDS rounds, alone), then
# REPEAT rounds of IDLE_N idle containers per runtime (idle_round).
section_idle() {
    local version="$1" tmp rt r id ms pid stats
    tmp="$(dir_of "$version")/idle"
    mkdir -p "$tmp"

    hf_log "bench: containerd $version: one idle container, $SINGLE_ROUNDS rounds"
    for ((r = 1; r <= SINGLE_ROUNDS; r++)); do
        for rt in "${RUNTIMES[@]}"; do
            ok "$version" "$rt" || continue
            id="single-$(short "$rt")-$r"
            if ! ms="$(run_container "$version" "$rt" "$id" 2>"$tmp/err")"; then
                failed "$version" "$rt" "$(cat "$tmp/err")"
                remove_container "$version" "$id"
                continue
            fi
            sleep "$SETTLE"
            if pid="$(shim_of "$version" "$id")" && stats="$(shim_stats "$pid")"; then
                printf '%s\n' "$stats" >>"$tmp/single-$(short "$rt")"
                same_exe "$pid" >>"$tmp/others-$(short "$rt")"
            else
                failed "$version" "$rt" "no shim process found for task $id"
            fi
            remove_container "$version" "$id"
        done
    done

    for ((r = 1; r <= REPEAT; r++)); do
        hf_log "bench: containerd $version: $IDLE_N idle containers per shim, round $r of $REPEAT"
        idle_round "$version" "$tmp" "$r"
    done

    for rt in "${RUNTIMES[@]}"; do
        ok "$version" "$rt" || continue
        record "$version" "$rt" single "$tmp/single-$(short "$rt")"
        if [[ -s "$tmp/others-$(short "$rt")" ]]; then
            R[$version|$rt|single_others]="$(sort -n "$tmp/others-$(short "$rt")" | tail -n 1)"
        fi
        record "$version" "$rt" many "$tmp/many-$(short "$rt")"
        if [[ -s "$tmp/start-$(short "$rt")" ]]; then
            R[$version|$rt|start_median]="$(median <"$tmp/start-$(short "$rt")")"
            R[$version|$rt|start_p90]="$(p90 <"$tmp/start-$(short "$rt")")"
            R[$version|$rt|start_n]="$(wc -l <"$tmp/start-$(short "$rt")")"
        fi
    done
}

# cell VERSION RUNTIME METRIC SCALE FORMAT: a value divided by SCALE, printed
# with the printf FORMAT, or n/a.
cell() {
    local v="${R[$1|$2|$3]:-}"
    if [[ -n "$v" ]]; then
        awk -v v="$v" -v s="$4" -v f="$5" 'BEGIN { printf f "\n", v / s }'
    elif [[ -n "${ERR[$1|$2]:-}" ]]; then
        echo "n/a (error, see below)"
    else
        echo n/a
    fi
}

ratio() {
    local a="${R[$1|$OURS|$2]:-}" b="${R[$1|$GO|$2]:-}"
    if [[ -n "$a" && -n "$b" ]] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f\n", a / b }'
    else
        echo n/a
    fi
}

# row LABEL METRIC SCALE FORMAT: one table row for version $V.
row() {
    printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$V" "$OURS" "$2" "$3" "$4")" \
        "$(cell "$V" "$GO" "$2" "$3" "$4")" "$(ratio "$V" "$2")"
}

# others VERSION: a warning when other processes on the machine ran a shim
# binary during the one-container measurement.
others() {
    local rt n
    for rt in "${RUNTIMES[@]}"; do
        n="${R[$1|$rt|single_others]:-0}"
        ((n > 0)) || continue
        printf '\nNote: while the 1-idle-container rows were measured, %s other process(es) on the machine ran the same %s shim binary (another containerd'"'"'s shims); they share its pages, so those rows read low for %s. The %s-container rows are barely affected.\n' \
            "$n" "$(short "$rt")" "$(short "$rt")" "$IDLE_N"
    done
}

# errors VERSION: what failed on this version, if anything.
errors() {
    local rt msg
    for rt in "${RUNTIMES[@]}"; do
        msg="${ERR[$1|$rt]:-}"
        [[ -n "$msg" ]] || continue
        # shellcheck disable=SC2016 # markdown backquotes
        printf '\n**%s (`%s`) failed on containerd %s:** `%s`\n' "$(short "$rt")" "$rt" "$1" \
            "$(printf '%s' "$msg" | tr '`\n' "' " | cut -c1-300)"
    done
}

# goal TEXT RATIO MAX: "met"/"not met"/"not measured" for ratio ≤ MAX.
goal() {
    local verdict="not measured"
    if [[ "$2" != n/a ]]; then
        if awk -v r="$2" -v m="$3" 'BEGIN { exit !(r <= m) }'; then verdict=met; else verdict="**not met**"; fi
    fi
    printf -- '- %s: ratio %s → %s\n' "$1" "$2" "$verdict"
}

render_idle() {
    V="$1"
    cat <<EOF
| metric | ours (\`$OURS\`) | Go (\`$GO\`) | ratio ours÷Go |
| --- | --- | --- | --- |
EOF
    row "1 idle container: shim RSS (MiB)" single_rss 1024 %.2f
    row "1 idle container: shim PSS (MiB)" single_pss 1024 %.2f
    row "1 idle container: shim private (MiB)" single_priv 1024 %.2f
    row "1 idle container: shim threads" single_threads 1 %g
    row "$IDLE_N idle containers: RSS per shim (MiB)" many_rss 1024 %.2f
    row "$IDLE_N idle containers: PSS per shim (MiB)" many_pss 1024 %.2f
    row "$IDLE_N idle containers: private per shim (MiB)" many_priv 1024 %.2f
    row "$IDLE_N idle containers: threads per shim" many_threads 1 %g
    row "\`ctr run -d\` start latency, median (ms)" start_median 1 %.1f
    row "\`ctr run -d\` start latency, p90 (ms)" start_p90 1 %.1f
    errors "$V"
    others "$V"
    echo
    goal "private memory per shim ($IDLE_N idle) at most a quarter of the Go shim's" "$(ratio "$V" many_priv)" 0.25
    goal "start latency (median) no worse than the Go shim's (5 % noise allowance)" "$(ratio "$V" start_median)" 1.05
}

# ---------------------------------------------------------------- the report

cgroup_mode() {
    case "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" in
        cgroup2fs) echo "v2 (unified)" ;;
        tmpfs) [[ -d /sys/fs/cgroup/unified ]] && echo "v1 (hybrid)" || echo "v1 (legacy)" ;;
        *) echo unknown ;;
    esac
}

containerd_version() { "$(hf_bin_dir "$1")/containerd" --version 2>/dev/null | awk '{ print $3 }'; }

render() {
    local version s
    cat <<EOF
# Benchmarks

Generated by \`make bench\` (\`scripts/bench.sh\`); do not edit by hand.

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- commit: $(git -C "$HF_REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -z "$(git -C "$HF_REPO" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]] || echo " plus uncommitted changes in crates/")
- machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), cgroup $(cgroup_mode), $(runc --version 2>/dev/null | head -n 1)
- shims: ours \`$HF_SHIM_NAME\` (${SHIM_INFO:-not built}); Go \`containerd-shim-runc-v2\` from each containerd's own package

## Goals

- private memory per shim at most a quarter of the Go shim's (ratio ≤ 0.25)
- start latency no worse than the Go shim's (ratio ≤ 1, read with the noise of a shared 2-core machine in mind)

## Method

- One private containerd per version (own root, state and sockets, CRI
  disabled), one namespace and one cgroup parent per run; containers are
  \`ctr run -d --rootfs <busybox> --log-uri file://… /bin/sleep 100000\`.
- Both shims run from copies of their binaries taken when the bench starts
  (first on that containerd's PATH), so a rebuild during the run changes
  nothing and no process outside the bench shares their pages.
- Memory comes from \`/proc/<shim>/smaps_rollup\` (RSS, PSS, private =
  Private_Clean + Private_Dirty) and threads from \`/proc/<shim>/status\`,
  read ${SETTLE} s after the last start; the shim is the parent of the task's
  init pid. MiB = 1024 KiB.
- "1 idle container": the only container of the daemon; median of
  $SINGLE_ROUNDS rounds. "$IDLE_N idle containers": $IDLE_N per shim kind
  running at once, started alternately (ours, Go, ours, …) so both see the
  same machine noise; $REPEAT such rounds; the median over all
  $((REPEAT * IDLE_N)) shims of each kind.
- Start latency: the wall time of \`ctr run -d\` until it returns (it returns
  after the task's Start; RUNNING is then checked with \`ctr t ls\`, outside
  the timing), over the $((REPEAT * IDLE_N)) starts above (${IDLE_N} per round);
  median and p90 (nearest rank). The machine is shared and noisy: read
  differences of a few percent as noise.
EOF
    for version in "${VERSIONS[@]}"; do
        printf '\n## containerd %s (%s)\n\n' "$version" "$(containerd_version "$version")"
        for s in "${SECTIONS[@]}"; do "render_$s" "$version"; done
    done
}

# ---------------------------------------------------------------- main

snapshot_dir() { printf '%s/bin-%s\n' "$BENCH_DIR" "$1"; }

# snapshot_ours: one copy of our shim, taken once for the whole run.
snapshot_ours() {
    local f="$BENCH_DIR/ours/$HF_SHIM_NAME" version
    if [[ ! -x "$SHIM_SRC" ]]; then
        for version in "${VERSIONS[@]}"; do failed "$version" "$OURS" "$SHIM_SRC not built (make build)"; done
        return 0
    fi
    mkdir -p "$BENCH_DIR/ours"
    cp "$SHIM_SRC" "$f"
    SHIM_INFO="$(awk -v b="$(stat -c %s "$f")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'), sha256 $(sha256sum "$f" | cut -c1-12)"
}

# snapshot_shims VERSION: copy our shim and VERSION's Go shim into the folder
# that comes first on that containerd's PATH.
snapshot_shims() {
    local bin
    bin="$(snapshot_dir "$1")"
    mkdir -p "$bin"
    cp "$(hf_bin_dir "$1")/containerd-shim-runc-v2" "$bin/"
    [[ ! -x "$BENCH_DIR/ours/$HF_SHIM_NAME" ]] || cp "$BENCH_DIR/ours/$HF_SHIM_NAME" "$bin/"
}

cleanup_all() {
    local version
    for version in "${VERSIONS[@]}"; do
        hf_cleanup "$(dir_of "$version")" "$(ns_of "$version")"
    done
    hf_remove_cgroups "$HF_CGROUP_PARENT"
    rm -rf "$BENCH_DIR"
}

main() {
    local version s rt status=0 start=$SECONDS
    SHIM_SRC="$HOLDFAST_BIN_DIR/$HF_SHIM_NAME"
    # A previous run killed hard may have left its folder behind.
    for version in "${VERSIONS[@]}"; do hf_cleanup "$(dir_of "$version")"; done
    rm -rf "$BENCH_DIR"
    trap cleanup_all EXIT
    trap 'exit 130' INT TERM HUP
    mkdir -p "$BENCH_DIR"
    hf_copy_rootfs "$BENCH_DIR/rootfs"
    snapshot_ours

    for version in "${VERSIONS[@]}"; do
        # Both shims run from private copies made now: a rebuild of ours
        # during the run cannot change what is measured, and no process
        # outside the bench shares their pages (which would lower PSS).
        snapshot_shims "$version"
        HOLDFAST_BIN_DIR="$(snapshot_dir "$version")" hf_containerd_start "$version" "$(dir_of "$version")"
        mkdir -p "$(dir_of "$version")/logs"
        for s in "${SECTIONS[@]}"; do "section_$s" "$version"; done
        hf_cleanup "$(dir_of "$version")" "$(ns_of "$version")"
    done

    render >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
    hf_log "bench: wrote $OUT in $((SECONDS - start)) s"
    for version in "${VERSIONS[@]}"; do
        for rt in "${RUNTIMES[@]}"; do
            if ! ok "$version" "$rt"; then
                hf_log "bench: FAILED: $(short "$rt") shim on containerd $version: ${ERR[$version|$rt]}"
                status=1
            fi
        done
    done
    return "$status"
}

main "$@"
