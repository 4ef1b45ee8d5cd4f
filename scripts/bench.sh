#!/usr/bin/env bash
# holdfast bench: our shim (io.rust.shim.v2) against containerd's Go shim
# (io.containerd.runc.v2), holdfastd against dockerd --live-restore
# (Debian's docker.io, installed if missing), and holdfast's checkpoint,
# restore, export and import against raw runc + CRIU, on containerd 1.6 and
# 1.7, in one run; writes BENCHMARKS.md.
#
#   make bench                 # setup + build + this script
#   bash scripts/bench.sh      # the same, without setup and build
#
# Knobs (env; defaults, then the quick mode's): HOLDFAST_BENCH_QUICK=1 (a
# short run, a few minutes), HOLDFAST_BENCH_SECTIONS ("idle throughput
# outage manager checkpoint cri"), HOLDFAST_BENCH_VERSIONS ("1.6 1.7"),
# HOLDFAST_BENCH_IDLE (20 / 5 containers), HOLDFAST_BENCH_REPEAT (3 / 1
# rounds of those), HOLDFAST_BENCH_SINGLE_ROUNDS (3 / 1),
# HOLDFAST_BENCH_SETTLE (1 s before reading memory), HOLDFAST_BENCH_TP_MIB
# (128 / 64 MiB written per throughput run), HOLDFAST_BENCH_TP_RUNS (3 / 1
# runs per sink and shim),
# HOLDFAST_BENCH_TP_TIMEOUT (120 s), HOLDFAST_BENCH_OUTAGE_SECS (60 / 10 s
# of containerd outage), HOLDFAST_BENCH_OUTAGE_WARMUP (3 / 2 s),
# HOLDFAST_BENCH_OUTAGE_AFTER (5 / 3 s), HOLDFAST_BENCH_OUTAGE_BATCH (100
# lines per progress record), HOLDFAST_BENCH_OUTAGE_STALL (0.25 s: longer
# gaps count as blocked), HOLDFAST_BENCH_MANAGER_N (200 / 20 containers
# per daemon; a list such as "200 1000" measures each size, smallest first,
# skipping one the machine's memory or pid_max cannot hold),
# HOLDFAST_BENCH_MANAGER_ROUNDS (3 / 2 kill -9 and restart rounds per
# daemon), HOLDFAST_BENCH_MANAGER_CALLS (20 / 5 calls per latency figure),
# HOLDFAST_BENCH_MANAGER_EVERY (1 s between a container's lines),
# HOLDFAST_BENCH_MANAGER_TIMEOUT (300 s for a daemon to be ready),
# HOLDFAST_BENCH_CKPT_MIB ("0 256 1024": MiB of touched memory per
# checkpoint size), HOLDFAST_BENCH_CKPT_ROUNDS (3 / 1 rounds per size),
# HOLDFAST_BENCH_CKPT_TICK (0.01 s between the container's ticks),
# HOLDFAST_BENCH_CKPT_TIMEOUT (300 s per checkpoint step),
# HOLDFAST_BENCH_CRI_SECS (60 / 10 s of containerd outage under a CRI pod),
# HOLDFAST_BENCH_CRI_ROUNDS (3 / 1), HOLDFAST_BENCH_CRI_POD (5 containers
# per pod for the memory figure), HOLDFAST_BENCH_OUT (<repo>/BENCHMARKS.md).
#
# Sections: each is a pair of functions, section_<name> VERSION (measures,
# filling R[...]) and render_<name> VERSION (prints its markdown). Add one by
# writing both and appending <name> to SECTIONS.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OURS=io.rust.shim.v2
GO=io.containerd.runc.v2
RUNTIMES=("$OURS" "$GO")
QUICK="${HOLDFAST_BENCH_QUICK:-0}"
[[ "$QUICK" == 1 ]] || QUICK=0
# q FULL QUICK: the default of a knob in a full or a quick run.
q() { if ((QUICK)); then echo "$2"; else echo "$1"; fi; }
read -r -a SECTIONS <<<"${HOLDFAST_BENCH_SECTIONS:-idle throughput outage manager checkpoint cri}"
read -r -a VERSIONS <<<"${HOLDFAST_BENCH_VERSIONS:-1.6 1.7}"
IDLE_N="${HOLDFAST_BENCH_IDLE:-$(q 20 5)}"
SINGLE_ROUNDS="${HOLDFAST_BENCH_SINGLE_ROUNDS:-$(q 3 1)}"
SETTLE="${HOLDFAST_BENCH_SETTLE:-1}"
REPEAT="${HOLDFAST_BENCH_REPEAT:-$(q 3 1)}"
# Throughput: TP_COPIES copies of an 8 MiB file per run, TP_RUNS runs.
TP_FILE_BYTES=$((8 * 1048576))
TP_COPIES="$((${HOLDFAST_BENCH_TP_MIB:-$(q 128 64)} / 8))"
((TP_COPIES >= 1)) || TP_COPIES=1
TP_RUNS="${HOLDFAST_BENCH_TP_RUNS:-$(q 3 1)}"
TP_TIMEOUT="${HOLDFAST_BENCH_TP_TIMEOUT:-120}"
# Outage: how long containerd stays down, the logging before and after it,
# lines per progress record, and the gap that counts as blocked.
OUT_SECS="${HOLDFAST_BENCH_OUTAGE_SECS:-$(q 60 10)}"
OUT_WARMUP="${HOLDFAST_BENCH_OUTAGE_WARMUP:-$(q 3 2)}"
OUT_AFTER="${HOLDFAST_BENCH_OUTAGE_AFTER:-$(q 5 3)}"
OUT_BATCH="${HOLDFAST_BENCH_OUTAGE_BATCH:-100}"
OUT_STALL="${HOLDFAST_BENCH_OUTAGE_STALL:-0.25}"
# Manager: containers per daemon (a list of sizes), restart rounds, calls
# per latency figure, seconds between a container's lines, and how long a
# daemon may take to be ready.
read -r -a MGR_SIZES <<<"${HOLDFAST_BENCH_MANAGER_N:-$(q 200 20)}"
MGR_ROUNDS="${HOLDFAST_BENCH_MANAGER_ROUNDS:-$(q 3 2)}"
MGR_CALLS="${HOLDFAST_BENCH_MANAGER_CALLS:-$(q 20 5)}"
MGR_EVERY="${HOLDFAST_BENCH_MANAGER_EVERY:-1}"
MGR_TIMEOUT="${HOLDFAST_BENCH_MANAGER_TIMEOUT:-300}"
CLK_TCK="$(getconf CLK_TCK)"
OUT="${HOLDFAST_BENCH_OUT:-$HF_REPO/BENCHMARKS.md}"

BENCH_DIR="$HF_REPO/.bench"
RUN_ID="$$"
export HF_CGROUP_PARENT
HF_CGROUP_PARENT="$(hf_cgroup_parent bench)"

# Results: R["<version>|<runtime>|<metric>"] = value, or unset.
declare -A R=()
# Why a runtime failed on a version: ERR["<version>|<runtime>"] = message.
declare -A ERR=()
# Failures of one measurement (not of the whole shim):
# SERR["<version>|<runtime>|<measurement>"] = message.
declare -A SERR=()
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

# ratio_of VERSION A B METRIC: R[VERSION|A|METRIC] ÷ R[VERSION|B|METRIC]
# with two decimals, or n/a.
ratio_of() {
    local a="${R[$1|$2|$4]:-}" b="${R[$1|$3|$4]:-}"
    if [[ -n "$a" && -n "$b" ]] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f\n", a / b }'
    else
        echo n/a
    fi
}

ratio() { ratio_of "$1" "$OURS" "$GO" "$2"; }

# row LABEL METRIC SCALE FORMAT: one table row for version $V.
row() {
    printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$V" "$OURS" "$2" "$3" "$4")" \
        "$(cell "$V" "$GO" "$2" "$3" "$4")" "$(ratio "$V" "$2")"
}

# row_plain LABEL METRIC SCALE FORMAT NOTE: a row whose ratio means nothing;
# NOTE stands in its place.
row_plain() {
    printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$V" "$OURS" "$2" "$3" "$4")" \
        "$(cell "$V" "$GO" "$2" "$3" "$4")" "$5"
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
            "$(md_code "$msg")"
    done
}

# goal_check TEXT RATIO OP LIMIT: "met"/"not met"/"not measured" for
# RATIO OP LIMIT (OP is <= or >=).
goal_check() {
    local verdict="not measured"
    if [[ "$2" != n/a ]]; then
        if awk -v r="$2" -v m="$4" -v op="$3" 'BEGIN { exit !(op == "<=" ? r <= m : r >= m) }'; then
            verdict=met
        else
            verdict="**not met**"
        fi
    fi
    printf -- '- %s: ratio %s → %s\n' "$1" "$2" "$verdict"
}

# goal TEXT RATIO MAX: met when ratio ≤ MAX.
goal() { goal_check "$1" "$2" "<=" "$3"; }

# goal_min TEXT RATIO MIN: met when ratio ≥ MIN.
goal_min() { goal_check "$1" "$2" ">=" "$3"; }

# md_code TEXT: TEXT as one line for a markdown code span (at most 300 chars).
md_code() { printf '%s' "$1" | tr '`\n' "' " | cut -c1-300; }

method_idle() {
    cat <<EOF

### Idle shims

- Containers are \`ctr run -d --rootfs <busybox> --log-uri file://… /bin/sleep 100000\`;
  memory is read ${SETTLE} s after the last start.
- "1 idle container": the only container of the daemon; median of
  $SINGLE_ROUNDS rounds. "$IDLE_N idle containers": $IDLE_N per shim kind
  running at once, started alternately (ours, Go, ours, …) so both see the
  same machine noise; $REPEAT such rounds; the median over all
  $((REPEAT * IDLE_N)) shims of each kind.
- Start latency: the wall time of \`ctr run -d\` until it returns (it returns
  after the task's Start; RUNNING is then checked with \`ctr t ls\`, outside
  the timing), over the $((REPEAT * IDLE_N)) starts above (${IDLE_N} per round);
  median and p90 (nearest rank).
EOF
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

# ---------------------------------------------------------------- section: throughput

# The writer: a container that waits for its go file, records its start time,
# writes TP_COPIES copies of an 8 MiB file of 128-byte lines to stdout with
# busybox `cat` (sendfile: 64 KiB pipe-fulls, far faster than a shim drains
# them), records its end time, then waits for its exit file so that its shim
# is still there to be measured.
# shellcheck disable=SC2016 # expanded by the container's shell
TP_SCRIPT='id=$1 n=$2
while [ ! -e /bench/$id.go ]; do sleep 0.01; done
set --
i=0
while [ $i -lt $n ]; do set -- "$@" /bench/data; i=$((i + 1)); done
echo $EPOCHREALTIME >/bench/$id.t0
cat "$@"
echo $EPOCHREALTIME >/bench/$id.t1
while [ ! -e /bench/$id.exit ]; do sleep 0.05; done'

# Throughput modes: a = no sink (ctr run -d --null-io), b = FIFO read by a
# foreground ctr, c = file:// (ctr run -d --log-uri).
TP_MODES=(a b c)

tp_mode_name() {
    case "$1" in
        a) echo "(a) no sink: ours journal alone, Go /dev/null" ;;
        b) echo "(b) FIFO read by a foreground \`ctr run\`" ;;
        c) echo "(c) \`file://\` (\`--log-uri\`)" ;;
    esac
}

# mem_sampler PID OUT: until OUT.stop exists or PID is gone, every 0.1 s, the
# largest RSS and private (Private_Clean + Private_Dirty) KiB of PID seen so
# far into OUT as "rss private". Shell builtins only (no forks but sleep).
mem_sampler() {
    local pid="$1" out="$2" k v rss=0 priv=0 r p
    while [[ ! -e "$out.stop" ]]; do
        r=0 p=0
        { while read -r k v _; do
            case "$k" in
                Rss:) r="$v" ;;
                Private_Clean: | Private_Dirty:) p=$((p + v)) ;;
            esac
        done <"/proc/$pid/smaps_rollup"; } 2>/dev/null || break
        ((r <= rss)) || rss="$r"
        ((p <= priv)) || priv="$p"
        printf '%s %s\n' "$rss" "$priv" >"$out"
        sleep 0.1
    done
}

# our_config VERSION NAME TOML: a runtime options file for our shim (ctr run
# --runtime-config-path) with its journal under the bench folder (removed with
# it), plus the TOML lines given; prints its path.
our_config() {
    local f
    f="$(dir_of "$1")/$2.toml"
    printf 'dir = "%s"\n%s' "$(dir_of "$1")/journal" "$3" >"$f"
    printf '%s\n' "$f"
}

# wait_for TIMEOUT COMMAND...: run COMMAND every 20 ms until it succeeds;
# false on timeout.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
}

file_size_at_least() { [[ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ]]; }
gone() { [[ ! -d "/proc/$1" ]]; }
last_line() { tr -d '\0' <"$1" 2>/dev/null | awk 'NF { l = $0 } END { print l }'; }

# section_error VERSION RUNTIME KEY MESSAGE: remember the first failure of a
# measurement (it does not stop the other measurements of that shim).
section_error() {
    [[ -n "${SERR[$1|$2|$3]:-}" ]] || SERR[$1|$2|$3]="$4"
    hf_log "bench: $3, $(short "$2") shim on containerd $1: $4"
}

# tp_run VERSION RUNTIME MODE ROUND TMP: one throughput run; appends
# "MB/s cpu-s-per-GB max-rss-KiB max-private-KiB" to TMP/tp-MODE-<short>.
tp_run() {
    local version="$1" rt="$2" mode="$3" r="$4" tmp="$5" dir ns ctr id root bytes
    local args=() job="" sampler="" pid t0 t1 c0 c1="" mem err=""
    dir="$(dir_of "$version")"
    ns="$(ns_of "$version")"
    ctr="$(hf_ctr_bin "$dir")"
    id="hfb$RUN_ID-tp$mode-$(short "$rt")-$r"
    root="$BENCH_DIR/rootfs/bench"
    bytes=$((TP_COPIES * TP_FILE_BYTES))
    args=(--runtime "$rt" --cgroup "$HF_CGROUP_PARENT/${version//./}-$id")
    [[ "$rt" != "$OURS" ]] || args+=(--runtime-config-path "$(dir_of "$version")/tp.toml")
    case "$mode" in
        a) args+=(-d --null-io) ;;
        c) args+=(-d --log-uri "file://$tmp/$id.log") ;;
    esac
    # --rootfs is a switch: the folder takes the image's place, last.
    args+=(--rootfs "$BENCH_DIR/rootfs")
    if [[ "$mode" == b ]]; then
        # ctr copies the FIFO to a pipe; dd counts the bytes and notes when
        # the last one arrived; cat keeps the pipe open afterwards.
        (
            "$ctr" --address "$dir/containerd.sock" -n "$ns" run "${args[@]}" "$id" \
                /bin/sh -c "$TP_SCRIPT" sh "$id" "$TP_COPIES" </dev/null 2>"$tmp/$id.err" |
                {
                    dd of=/dev/null bs=64k count=$((bytes / 65536)) iflag=fullblock 2>/dev/null
                    echo "$EPOCHREALTIME" >"$tmp/$id.got"
                    cat >/dev/null
                }
        ) &
        job=$!
    elif ! timeout 60 "$ctr" --address "$dir/containerd.sock" -n "$ns" run "${args[@]}" "$id" \
        /bin/sh -c "$TP_SCRIPT" sh "$id" "$TP_COPIES" </dev/null >/dev/null 2>"$tmp/$id.err"; then
        err="ctr run failed: $(last_line "$tmp/$id.err")"
    fi
    if [[ -z "$err" ]] && ! hf_wait_status "$dir" "$ns" "$id" RUNNING 20; then
        err="task $id is not RUNNING: $(last_line "$tmp/$id.err")"
    fi
    if [[ -z "$err" ]] && ! pid="$(shim_of "$version" "$id")"; then
        err="no shim process found for task $id"
    fi
    if [[ -z "$err" ]]; then
        mem_sampler "$pid" "$tmp/$id.mem" &
        sampler=$!
        c0="$(hf_cpu_ticks "$pid")"
        : >"$root/$id.go"
        case "$mode" in
            a) wait_for "$TP_TIMEOUT" test -s "$root/$id.t1" || err="not done after ${TP_TIMEOUT}s" ;;
            b) wait_for "$TP_TIMEOUT" test -s "$tmp/$id.got" || err="not done after ${TP_TIMEOUT}s" ;;
            c)
                if wait_for "$TP_TIMEOUT" file_size_at_least "$tmp/$id.log" "$bytes"; then
                    echo "$EPOCHREALTIME" >"$tmp/$id.got"
                else
                    err="not done after ${TP_TIMEOUT}s ($(stat -c %s "$tmp/$id.log" 2>/dev/null || echo 0) of $bytes bytes in the file)"
                fi
                ;;
        esac
        c1="$(hf_cpu_ticks "$pid" || true)"
        : >"$tmp/$id.mem.stop"
        wait "$sampler" 2>/dev/null || true
    fi
    if [[ -z "$err" && -z "$c1" ]]; then err="shim $pid exited during the run"; fi
    if [[ -z "$err" ]]; then
        t0="$(cat "$root/$id.t0")"
        if [[ "$mode" == a ]]; then t1="$(cat "$root/$id.t1")"; else t1="$(cat "$tmp/$id.got")"; fi
        mem="$(cat "$tmp/$id.mem" 2>/dev/null || echo "0 0")"
        awk -v b="$bytes" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v m="$mem" \
            'BEGIN { split(m, mm, " "); printf "%.1f %.3f %s %s\n", b / 1e6 / (t1 - t0), (c1 - c0) / hz / (b / 1e9), mm[1], mm[2] }' \
            >>"$tmp/tp-$mode-$(short "$rt")"
    fi
    # Let the container go, and clean up.
    : >"$root/$id.exit"
    if [[ -n "$job" ]]; then
        # A foreground ctr exits with its task.
        wait_for 30 gone "$job" || pkill -9 -P "$job" 2>/dev/null || true
        wait "$job" 2>/dev/null || true
    elif [[ -n "$(hf_task_field "$dir" "$ns" "$id" STATUS)" ]]; then
        hf_wait_status "$dir" "$ns" "$id" STOPPED 30 || true
    fi
    remove_container "$version" "$id"
    rm -f "$root/$id".* "$tmp/$id".*
    [[ -z "$err" ]] || section_error "$version" "$rt" "throughput $mode" "$err"
}

section_throughput() {
    local version="$1" tmp rt mode r f
    tmp="$(dir_of "$version")/tp"
    mkdir -p "$tmp"
    our_config "$version" tp "" >/dev/null
    hf_log "bench: containerd $version: throughput, $((TP_COPIES * TP_FILE_BYTES / 1048576)) MiB per run, $TP_RUNS run(s) per sink and shim"
    for ((r = 1; r <= TP_RUNS; r++)); do
        for mode in "${TP_MODES[@]}"; do
            for rt in "${RUNTIMES[@]}"; do
                ok "$version" "$rt" || continue
                tp_run "$version" "$rt" "$mode" "$r" "$tmp"
            done
        done
    done
    for rt in "${RUNTIMES[@]}"; do
        for mode in "${TP_MODES[@]}"; do
            f="$tmp/tp-$mode-$(short "$rt")"
            [[ -s "$f" ]] || continue
            R[$version|$rt|tp_${mode}_mbs]="$(awk '{ print $1 }' "$f" | median)"
            R[$version|$rt|tp_${mode}_cpu]="$(awk '{ print $2 }' "$f" | median)"
            R[$version|$rt|tp_${mode}_rss]="$(awk '{ print $3 }' "$f" | median)"
            R[$version|$rt|tp_${mode}_priv]="$(awk '{ print $4 }' "$f" | median)"
            R[$version|$rt|tp_${mode}_n]="$(wc -l <"$f")"
        done
    done
}

# section_errors VERSION KEY...: the failures recorded for those keys.
section_errors() {
    local version="$1" rt key msg
    shift
    for key in "$@"; do
        for rt in "${RUNTIMES[@]}"; do
            msg="${SERR[$version|$rt|$key]:-}"
            [[ -n "$msg" ]] || continue
            # shellcheck disable=SC2016 # markdown backquotes
            printf '\n**%s, %s:** `%s`\n' "$(short "$rt")" "$key" "$(md_code "$msg")"
        done
    done
}

# goal_zero TEXT VERSION METRIC: "met" when ours measured exactly 0.
goal_zero() {
    local v="${R[$2|$OURS|$3]:-}" verdict
    if [[ -z "$v" ]]; then
        verdict="not measured"
    elif awk -v v="$v" 'BEGIN { exit !(v + 0 == 0) }'; then
        verdict=met
    else
        verdict="**not met**"
    fi
    printf -- '- %s: ours %s → %s\n' "$1" "${v:-n/a}" "$verdict"
}

method_throughput() {
    cat <<EOF

### Log throughput, shim CPU and memory under load

- The writer: busybox \`cat\` of $TP_COPIES copies of an 8 MiB file of 128-byte
  lines (\`%08d\` and 119 letters and digits, then \`\\n\`) to stdout,
  $((TP_COPIES * TP_FILE_BYTES / 1048576)) MiB per run. busybox \`cat\` uses
  \`sendfile\` into the pipe (about 2.5 GB/s here), so the shim, not the
  writer, is the bottleneck. The container waits for a go file, notes
  \`\$EPOCHREALTIME\` (start), writes, notes it again, and waits for an exit
  file so that its shim is still there to be measured.
- Sinks, each run with both shims (ours: \`--runtime-config-path\` to a TOML
  file setting \`dir\` to the bench folder; journal defaults otherwise:
  256 MiB budget, 16 MiB segments, \`block\`):
  - (a) \`ctr run -d --null-io\`: no sink. Ours still drains everything into
    its journal; the Go shim hands the container /dev/null and does nothing,
    so its column is the writer's own speed, not a shim's: compare (b) and (c).
    (Plain \`ctr run -d\` would give FIFOs that nobody reads after ctr exits:
    the Go shim's container would block at once.)
  - (b) a foreground \`ctr run … </dev/null | dd bs=64k count=… iflag=fullblock\`:
    ctr reads the stdout FIFO the shim writes; the run ends when dd has
    counted every byte.
  - (c) \`ctr run -d --log-uri file://<bench>/<id>.log\`: the run ends when the
    file holds every byte (its size, polled every 20 ms).
- Throughput = bytes written ÷ (end − the container's start time), in MB/s.
- Shim CPU: utime + stime of the shim process (all threads) from
  \`/proc/<shim>/stat\`, read just before the go file and at the end, in
  seconds per GB written.
- Shim RSS and private memory: \`/proc/<shim>/smaps_rollup\` sampled every
  0.1 s during the run; the largest value of a run.
- $TP_RUNS run(s) per sink and shim, alternating shims; each number is the
  median over the runs.
EOF
}

render_throughput() {
    local mode keys=() n
    V="$1"
    n="${R[$V|$OURS|tp_b_n]:-${R[$V|$GO|tp_b_n]:-0}}"
    printf '\n### Log throughput: %s MiB per run, median of %s run(s) per sink and shim\n\n' \
        "$((TP_COPIES * TP_FILE_BYTES / 1048576))" "$n"
    echo "| sink | metric | ours (\`$OURS\`) | Go (\`$GO\`) | ratio ours÷Go |"
    echo "| --- | --- | --- | --- | --- |"
    for mode in "${TP_MODES[@]}"; do
        keys+=("throughput $mode")
        if [[ "$mode" == a ]]; then
            row_plain "$(tp_mode_name "$mode") | throughput (MB/s)" "tp_${mode}_mbs" 1 %.1f "— (Go: the writer alone)"
            row_plain "$(tp_mode_name "$mode") | shim CPU (s per GB)" "tp_${mode}_cpu" 1 %.3f "— (Go copies nothing)"
        else
            row "$(tp_mode_name "$mode") | throughput (MB/s)" "tp_${mode}_mbs" 1 %.1f
            row "$(tp_mode_name "$mode") | shim CPU (s per GB)" "tp_${mode}_cpu" 1 %.3f
        fi
        row "$(tp_mode_name "$mode") | shim RSS, max (MiB)" "tp_${mode}_rss" 1024 %.2f
        row "$(tp_mode_name "$mode") | shim private, max (MiB)" "tp_${mode}_priv" 1024 %.2f
    done
    section_errors "$V" "${keys[@]}"
    echo
    goal_min "FIFO throughput at least the Go shim's (5 % noise allowance)" "$(ratio "$V" tp_b_mbs)" 0.95
    goal_min "\`file://\` throughput at least the Go shim's (5 % noise allowance)" "$(ratio "$V" tp_c_mbs)" 0.95
}

# ---------------------------------------------------------------- section: outage

# The logger: numbered lines "n=<k> t=<time> ...", OUT_BATCH at a time, then
# one progress record "<lines so far> <time>" in a file of its rootfs and a
# 10 ms pause; a last record "total <lines>" once its stop file appears.
# shellcheck disable=SC2016 # expanded by the container's shell
OUT_SCRIPT='id=$1 batch=$2
p=/bench/$id.progress
i=0
echo "0 $EPOCHREALTIME" >$p
while [ ! -e /bench/$id.stop ]; do
    j=0
    while [ $j -lt $batch ]; do
        i=$((i + 1))
        j=$((j + 1))
        echo "n=$i t=$EPOCHREALTIME the quick brown fox jumps over the lazy dog"
    done
    echo "$i $EPOCHREALTIME" >>$p
    sleep 0.01
done
echo "total $i" >>$p'

# out_stalls FILE T_DOWN T_UP: "longest-gap blocked-s blocked-in-outage-s
# longest-gap-start-relative-to-T_DOWN"
# from the progress records: a gap between consecutive records longer than
# OUT_STALL seconds counts as blocked; the part of it between T_DOWN and T_UP
# counts as blocked during the outage.
out_stalls() {
    awk -v th="$OUT_STALL" -v d="$2" -v u="$3" '
        $1 == "total" { next }
        NR > 1 {
            g = $2 - prev
            if (g > max) { max = g; at = prev - d }
            if (g > th) {
                sum += g
                s = prev > d ? prev : d; e = $2 < u ? $2 : u
                if (e > s) ins += e - s
            }
        }
        { prev = $2 }
        END { printf "%.3f %.3f %.3f %.3f\n", max, sum, ins, at }' "$1"
}

# out_count FILES...: "lines distinct out-of-order" of the n=<k> lines in FILES
# (read in order; out-of-order counts lines whose k is not above the last k
# seen in the same file).
out_count() {
    awk 'FNR == 1 { last = 0 }
        { for (i = 1; i <= NF; i++) if ($i ~ /^n=[0-9]+$/) {
              k = substr($i, 3) + 0; n++
              if (!(k in seen)) { seen[k] = 1; d++ }
              if (k <= last) o++
              last = k
              break } }
        END { printf "%d %d %d\n", n, d, o }' "$@" 2>/dev/null
}

# out_run VERSION RUNTIME TMP: one outage run (see render_outage).
out_run() {
    local version="$1" rt="$2" tmp="$3" dir ns ctr id root args=() job ajob="" td="" tu="" st total cnt jcnt="" jfiles=() err="" pid=""
    dir="$(dir_of "$version")"
    ns="$(ns_of "$version")"
    ctr="$(hf_ctr_bin "$dir")"
    id="hfb$RUN_ID-out-$(short "$rt")"
    root="$BENCH_DIR/rootfs/bench"
    args=(--runtime "$rt" --cgroup "$HF_CGROUP_PARENT/${version//./}-$id")
    [[ "$rt" != "$OURS" ]] || args+=(--runtime-config-path "$(dir_of "$version")/out.toml")
    args+=(--rootfs "$BENCH_DIR/rootfs")
    "$ctr" --address "$dir/containerd.sock" -n "$ns" run "${args[@]}" "$id" \
        /bin/sh -c "$OUT_SCRIPT" sh "$id" "$OUT_BATCH" </dev/null >"$tmp/$id.out1" 2>"$tmp/$id.err1" &
    job=$!
    if ! hf_wait_status "$dir" "$ns" "$id" RUNNING 20; then
        err="task $id is not RUNNING: $(last_line "$tmp/$id.err1")"
    fi
    if [[ -z "$err" ]]; then
        pid="$(hf_task_field "$dir" "$ns" "$id" PID)"
        sleep "$OUT_WARMUP"
        # The reader dies first (as a node's log reader dies with
        # containerd), then containerd; both stay down.
        kill -9 "$job" 2>/dev/null || true
        wait "$job" 2>/dev/null || true
        hf_containerd_kill9 "$dir"
        td="$EPOCHREALTIME"
        hf_log "bench: containerd $version, $(short "$rt") shim: containerd and the FIFO reader are down for ${OUT_SECS} s"
        sleep "$OUT_SECS"
        HOLDFAST_BIN_DIR="$(snapshot_dir "$version")" hf_containerd_start "$version" "$dir"
        tu="$EPOCHREALTIME"
        if [[ -z "$(hf_task_field "$dir" "$ns" "$id" STATUS)" ]]; then
            err="task gone after containerd's restart (its init process $(hf_pid_alive "$pid" && echo still runs || echo is gone))"
            if grep -q "cleaning up dead shim" "$dir/containerd.log"; then err="$err; containerd logged 'cleaning up dead shim'"; fi
        else
            # A new reader on the same FIFOs.
            "$ctr" --address "$dir/containerd.sock" -n "$ns" t attach "$id" </dev/null >"$tmp/$id.out2" 2>"$tmp/$id.err2" &
            ajob=$!
            sleep "$OUT_AFTER"
        fi
    else
        kill -9 "$job" 2>/dev/null || true
        wait "$job" 2>/dev/null || true
    fi
    : >"$root/$id.stop"
    if [[ -n "$pid" ]] && ! wait_for 30 grep -q '^total' "$root/$id.progress"; then
        err="${err:-the container did not stop within 30 s of its stop file}"
    fi
    if [[ -n "$ajob" ]]; then
        # The reader ends once the task has exited and its output is read.
        if ! wait_for 30 gone "$ajob"; then
            err="${err:-ctr t attach did not end within 30 s of the task exit}"
            kill -9 "$ajob" 2>/dev/null || true
        fi
        wait "$ajob" 2>/dev/null || true
    fi
    if [[ -n "$pid" && "$rt" == "$OURS" ]]; then
        # The journal (kept after the task's delete, which ctr t attach does).
        hf_wait_status "$dir" "$ns" "$id" STOPPED 10 || true
        jfiles=("$(dir_of "$version")/journal/$ns/$id/init/"stdout.*.log)
        if [[ -e "${jfiles[0]}" ]]; then
            jcnt="$(out_count "${jfiles[@]}")"
        else
            err="${err:-no journal segment in $(dir_of "$version")/journal/$ns/$id/init/}"
        fi
    fi
    if [[ -s "$root/$id.progress" && -n "$td" ]]; then
        total="$(awk '$1 == "total" { print $2 }' "$root/$id.progress")"
        st="$(out_stalls "$root/$id.progress" "$td" "$tu")"
        R[$version|$rt|out_longest]="$(awk '{ print $1 }' <<<"$st")"
        R[$version|$rt|out_blocked]="$(awk '{ print $2 }' <<<"$st")"
        R[$version|$rt|out_blocked_outage]="$(awk '{ print $3 }' <<<"$st")"
        R[$version|$rt|out_longest_at]="$(awk '{ print $4 }' <<<"$st")"
        if [[ -n "$total" ]]; then
            cnt="$(out_count "$tmp/$id.out1" "$tmp/$id.out2")"
            R[$version|$rt|out_total]="$total"
            R[$version|$rt|out_lost]="$(awk -v t="$total" '{ print t - $2 }' <<<"$cnt")"
            R[$version|$rt|out_dup]="$(awk '{ print $1 - $2 }' <<<"$cnt")"
            R[$version|$rt|out_order]="$(awk '{ print $3 }' <<<"$cnt")"
            if [[ -n "$jcnt" ]]; then
                R[$version|$rt|out_jlost]="$(awk -v t="$total" '{ print t - $2 }' <<<"$jcnt")"
            fi
        fi
    fi
    [[ -z "$err" ]] || section_error "$version" "$rt" outage "$err"
    remove_container "$version" "$id"
    hf_remove_client_fifos "$id-std*"
    rm -rf "$root/$id".* "$(dir_of "$version")/journal/$ns/$id" "$tmp/$id".*
}

section_outage() {
    local version="$1" tmp rt
    tmp="$(dir_of "$version")/outage"
    mkdir -p "$tmp"
    # A budget and a retention that hold the whole run (the full policy is
    # not measured here, and the journal is counted), kept after the delete.
    our_config "$version" out 'budget_bytes = "4GiB"
max_segments = 1000
keep_after_delete = true
' >/dev/null
    for rt in "${RUNTIMES[@]}"; do
        ok "$version" "$rt" || continue
        out_run "$version" "$rt" "$tmp"
    done
}

method_outage() {
    cat <<EOF

### A containerd outage under a logging container

- The logger: a busybox shell loop writing numbered lines
  (\`n=<k> t=<time> the quick brown fox …\`, about 80 bytes) to stdout,
  $OUT_BATCH at a time, then appending a progress record
  \`<lines so far> \$EPOCHREALTIME\` to a file in its rootfs and pausing
  10 ms (so a 60 s run stays within the journal's disk budget). A
  \`write()\` that blocks shows up as a gap between progress records.
- The FIFO reader is a foreground \`ctr run </dev/null >out1\`. After
  ${OUT_WARMUP} s, the reader is \`kill -9\`'d, then containerd is
  \`kill -9\`'d and kept down ${OUT_SECS} s
  (\`HOLDFAST_BENCH_OUTAGE_SECS\`). Then containerd is started again on
  the same state, and \`ctr t attach <id> </dev/null >out2\` opens the same
  FIFOs as the new reader; ${OUT_AFTER} s later the container is told to
  stop (a stop file), writes its last progress record
  \`total <lines>\` and exits; \`ctr t attach\` ends with the task.
- Blocked seconds: the sum of the gaps between consecutive progress records
  longer than ${OUT_STALL} s (normal gaps are 10-20 ms), over the whole run
  and the part of it between the \`kill -9\` of containerd and its return.
- Lines lost: the container's own total minus the distinct \`n=<k>\` lines
  found in out1 and out2; also counted: lines received twice, and lines not
  in increasing order within a reader's output. For ours, the same count
  over the journal's stdout segments (options: 4 GiB budget,
  \`max_segments = 1000\`, \`keep_after_delete = true\`, so the journal
  still holds every line when it is counted; the bench removes it).
- One run per shim and version (an outage run takes ${OUT_SECS} s and more).
EOF
}

render_outage() {
    V="$1"
    printf '\n### A %s s containerd outage under a logging container (FIFO sink)\n\n' "$OUT_SECS"
    echo "| metric | ours (\`$OURS\`) | Go (\`$GO\`) | ratio ours÷Go |"
    echo "| --- | --- | --- | --- |"
    row_plain "lines the container wrote" out_total 1 %d "— (a blocked writer writes less)"
    row "longest gap between its progress records (s)" out_longest 1 %.3f
    row_plain "… it began at (s after containerd's kill -9; containerd was back at ${OUT_SECS} s)" out_longest_at 1 %.2f —
    row "seconds blocked (gaps > ${OUT_STALL} s), whole run" out_blocked 1 %.3f
    row "… of which while containerd was down" out_blocked_outage 1 %.3f
    row "lines lost (not received by either ctr reader)" out_lost 1 %d
    row "lines received more than once" out_dup 1 %d
    row "lines received out of order" out_order 1 %d
    row "lines missing from the journal (ours only)" out_jlost 1 %d
    section_errors "$V" outage
    echo
    goal_zero "zero seconds blocked while containerd was down" "$V" out_blocked_outage
    goal_zero "zero lines lost" "$V" out_lost
}

# ---------------------------------------------------------------- section: manager

# holdfastd (our manager) against dockerd --live-restore (Debian's docker.io)
# as the peer, both on the bench's containerd for the version: the same
# count of logging containers under each, then MGR_ROUNDS rounds of
# `kill -9` and restart of each daemon (alternately), then `ps` and
# `logs --tail 100` latency. Results go to R["<version>|<daemon>|m<N>_<metric>"]
# with <daemon> holdfastd or dockerd.
MGR_OURS=holdfastd
MGR_PEER=dockerd
MGR_DAEMONS=("$MGR_OURS" "$MGR_PEER")
DOCKERD=/usr/sbin/dockerd
# /usr/local/bin/docker (another Docker) may come first on PATH.
DOCKER=/usr/bin/docker
MGR_IMAGE=holdfast-bench/busybox:latest
# The logger: a burst of MGR_BURST numbered lines (so `logs --tail 100` has
# them at once), then one line per MGR_EVERY seconds.
MGR_BURST=500
# shellcheck disable=SC2016 # expanded by the container's shell
MGR_SCRIPT='i=0
while [ $i -lt $2 ]; do i=$((i + 1)); echo "line $i the quick brown fox jumps over the lazy dog"; done
while :; do sleep $1; i=$((i + 1)); echo "line $i the quick brown fox jumps over the lazy dog"; done'
# What one more container of each daemon may take (a shim each, the
# container's shell and sleep, the daemons' and containerd's share): about
# 5 MiB and 18 threads were seen here (60 of each); checked with a margin
# against MemAvailable and 85 % of pid_max before each size.
MGR_KIB_PER_PAIR=$((12 * 1024))
MGR_TASKS_PER_PAIR=24
# Set once per run by mgr_prepare: the peer's version, or why it cannot run;
# sizes skipped (and why); whether /run/docker existed before the bench.
MGR_PEER_VERSION=""
MGR_PEER_MISSING=""
declare -A MGR_SKIP=()
MGR_RUN_DOCKER_EXISTED=1
MGR_PREPARED=0
# How long one CLI call may take (removing every container takes longer).
MGR_CLI_TIMEOUT=120

mgr_dir() { printf '%s/mgr\n' "$(dir_of "$1")"; }
# dockerd's --exec-root holds sockets with 64-character names: a short path.
mgr_exec_root() { printf '/run/holdfast-bench-%s-%s\n' "$RUN_ID" "${1//./}"; }
mgr_ns_hd() { printf '%s-hd\n' "$(ns_of "$1")"; }
mgr_ns_dk() { printf '%s-moby\n' "$(ns_of "$1")"; }
mgr_ns_dkp() { printf '%s-mobyp\n' "$(ns_of "$1")"; }
mgr_namespaces() { printf '%s\n' "$(mgr_ns_hd "$1")" "$(mgr_ns_dk "$1")" "$(mgr_ns_dkp "$1")"; }
mgr_name() { printf 'm-%s\n' "$1"; }

# ours_cli DIR TIMEOUT ARGS...: our CLI (the run's copy) against the
# holdfastd whose socket is DIR/holdfastd.sock.
ours_cli() {
    local d="$1" t="$2"
    shift 2
    timeout "$t" "$BENCH_DIR/ours/holdfast" --host "unix://$d/holdfastd.sock" "$@"
}

# hd_config DIR VERSION NAMESPACE CGROUP_PARENT: DIR/holdfastd.toml for a
# private holdfastd on the bench's containerd VERSION with everything under
# DIR (root, socket, journals).
hd_config() {
    local d="$1" version="$2"
    mkdir -p "$d"
    cat >"$d/holdfastd.toml" <<EOF
# Written by holdfast scripts/bench.sh: a private holdfastd on the bench's
# containerd $version.
root = "$d/root"
socket = "$d/holdfastd.sock"
log_level = "info"
live_restore = true
cgroup_parent = "$4"

[containerd]
address = "$(dir_of "$version")/containerd.sock"
namespace = "$3"

[log]
dir = "$d/logs"
EOF
}

# daemon_pid PIDFILE DIR: the pid in PIDFILE if it runs with DIR/ on its
# command line (a pid file left by a dead run may name a reused pid).
daemon_pid() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    case "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" in
        *"$2/"*) hf_pid_alive "$pid" && printf '%s\n' "$pid" ;;
    esac
    return 0
}

# hd VERSION ARGS...: our CLI against the bench's holdfastd for VERSION.
hd() { ours_cli "$(mgr_dir "$1")/hd" "$MGR_CLI_TIMEOUT" "${@:2}"; }

# dk VERSION ARGS...: Debian's docker CLI against the bench's dockerd.
dk() {
    local m
    m="$(mgr_dir "$1")"
    shift
    DOCKER_CONFIG="$m/dk/cli" timeout "$MGR_CLI_TIMEOUT" "$DOCKER" -H "unix://$m/dk/docker.sock" "$@"
}

# mgr_pid VERSION DAEMON: the pid of the bench's holdfastd or dockerd for
# VERSION, if it runs (its pid file may name a reused pid: check its args).
mgr_pid() {
    local m
    m="$(mgr_dir "$1")"
    if [[ "$2" == "$MGR_OURS" ]]; then daemon_pid "$m/hd/holdfastd.pid" "$m"
    else daemon_pid "$m/dk/docker.pid" "$m"; fi
}

# mgr_kill VERSION DAEMON SIGNAL: signal the daemon and wait until it is
# gone (SIGKILL after HF_STOP_TIMEOUT s); its pid file goes with it.
mgr_kill() {
    local pid m
    m="$(mgr_dir "$1")"
    pid="$(mgr_pid "$1" "$2")"
    if [[ -n "$pid" ]]; then
        kill "-$3" "$pid" 2>/dev/null || true
        if ! hf_wait_gone "$pid" 30; then
            kill -9 "$pid" 2>/dev/null || true
            hf_wait_gone "$pid" || hf_log "warning: $2 pid $pid survived kill -9"
        fi
    fi
    if [[ "$2" == "$MGR_OURS" ]]; then rm -f "$m/hd/holdfastd.pid"; else rm -f "$m/dk/docker.pid"; fi
}

# mgr_fits N HAVE: why N containers per daemon (HAVE already running) do not
# fit this machine's MemAvailable and pid_max now, or nothing.
mgr_fits() {
    local more=$(($1 - $2)) avail tasks max
    ((more > 0)) || return 0
    avail="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)"
    # Threads on the machine: the 4th field of /proc/loadavg, "running/all".
    tasks="$(awk '{ split($4, t, "/"); print t[2] }' /proc/loadavg)"
    max="$(cat /proc/sys/kernel/pid_max)"
    if ((avail < more * MGR_KIB_PER_PAIR + 1048576)); then
        printf 'needs about %s MiB more memory (%s more containers per daemon, %s MiB each pair, plus 1 GiB), MemAvailable is %s MiB\n' \
            "$((more * MGR_KIB_PER_PAIR / 1024 + 1024))" "$more" "$((MGR_KIB_PER_PAIR / 1024))" "$((avail / 1024))"
    elif ((tasks + more * MGR_TASKS_PER_PAIR > max * 85 / 100)); then
        printf 'needs about %s more tasks (threads), %s run now, pid_max is %s\n' \
            "$((more * MGR_TASKS_PER_PAIR))" "$tasks" "$max"
    fi
}

# mgr_image_tar OUT: a docker-archive of the busybox rootfs (one layer),
# made by hand: no registry is needed.
mgr_image_tar() {
    local out="$1" tmp diff cfg
    tmp="$BENCH_DIR/image"
    mkdir -p "$tmp/layer"
    tar -C "$HF_ROOTFS" -cf "$tmp/layer/layer.tar" .
    diff="sha256:$(sha256sum "$tmp/layer/layer.tar" | cut -d' ' -f1)"
    printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
        "$diff" >"$tmp/config.json"
    cfg="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
    mv "$tmp/config.json" "$tmp/$cfg.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer/layer.tar"]}]' "$cfg" "$MGR_IMAGE" >"$tmp/manifest.json"
    tar -C "$tmp" -cf "$out" manifest.json "$cfg.json" layer
    rm -rf "$tmp"
}

# mgr_need_docker: install Debian's docker.io if dockerd or its CLI is
# missing (its service is not started here: a policy-rc.d refuses it while
# apt runs, unless the machine has one already). Prints why not, if not.
mgr_need_docker() {
    local made=0
    [[ -x "$DOCKERD" && -x "$DOCKER" ]] && return 0
    if [[ "$(id -u)" != 0 ]]; then
        echo "docker.io is not installed (run the bench as root to install it)"
        return 0
    fi
    hf_log "bench: installing Debian's docker.io (the manager section's peer)"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# holdfast bench: do not start services while docker.io installs\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >"$BENCH_DIR/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$BENCH_DIR/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >>"$BENCH_DIR/apt.log" 2>&1 || true
    fi
    ((!made)) || rm -f /usr/sbin/policy-rc.d
    [[ -x "$DOCKERD" && -x "$DOCKER" ]] || echo "cannot install docker.io: $(last_line "$BENCH_DIR/apt.log")"
}

# ours_daemons: once per run, copies of holdfastd and holdfast (a rebuild
# during the run changes nothing); the manager and checkpoint sections use
# them.
ours_daemons() {
    local b
    mkdir -p "$BENCH_DIR/ours"
    for b in holdfastd holdfast; do
        [[ -x "$BENCH_DIR/ours/$b" || ! -x "$HOLDFAST_BIN_DIR/$b" ]] || cp "$HOLDFAST_BIN_DIR/$b" "$BENCH_DIR/ours/$b"
    done
}

# mgr_prepare: once per run: copies of holdfastd and holdfast, the peer
# installed and its image archive.
mgr_prepare() {
    ((!MGR_PREPARED)) || return 0
    MGR_PREPARED=1
    ours_daemons
    [[ -d /run/docker ]] || MGR_RUN_DOCKER_EXISTED=0
    MGR_PEER_MISSING="$(mgr_need_docker)"
    if [[ -z "$MGR_PEER_MISSING" ]]; then
        MGR_PEER_VERSION="$("$DOCKERD" --version 2>/dev/null | awk '{ sub(/,$/, "", $3); print $3 }')"
        mgr_image_tar "$BENCH_DIR/busybox-image.tar"
    fi
}

mgr_hd_config() {
    hd_config "$(mgr_dir "$1")/hd" "$1" "$(mgr_ns_hd "$1")" "$HF_CGROUP_PARENT/hd${1//./}"
}

mgr_dk_config() {
    local version="$1" m
    m="$(mgr_dir "$version")"
    mkdir -p "$m/dk/cli"
    # Its own trust key path: dockerd would write /etc/docker/key.json.
    printf '{ "deprecated-key-path": "%s/dk/key.json" }\n' "$m" >"$m/dk/daemon.json"
}

# mgr_launch VERSION DAEMON LOG: start the daemon in the background with its
# log in LOG; MGR_T0 is the time just before.
mgr_launch() {
    local version="$1" m pid
    m="$(mgr_dir "$version")"
    MGR_T0="$EPOCHREALTIME"
    if [[ "$2" == "$MGR_OURS" ]]; then
        NO_COLOR=1 setsid "$BENCH_DIR/ours/holdfastd" --config "$m/hd/holdfastd.toml" >"$3" 2>&1 </dev/null &
        pid=$!
        printf '%s\n' "$pid" >"$m/hd/holdfastd.pid"
    else
        # dockerd writes its own pid file; the containers' cgroups go under
        # the run's cgroup parent.
        setsid "$DOCKERD" --config-file "$m/dk/daemon.json" --data-root "$m/dk/data" \
            --exec-root "$(mgr_exec_root "$version")" -H "unix://$m/dk/docker.sock" \
            --pidfile "$m/dk/docker.pid" --containerd "$(dir_of "$version")/containerd.sock" \
            --containerd-namespace "$(mgr_ns_dk "$version")" \
            --containerd-plugins-namespace "$(mgr_ns_dkp "$version")" \
            --live-restore --iptables=false --ip-masq=false --bridge=none \
            --cgroup-parent "$HF_CGROUP_PARENT/dk${version//./}" >"$3" 2>&1 </dev/null &
        pid=$!
    fi
    disown "$pid"
    MGR_LAUNCHED="$pid"
}

# The log line each daemon writes when it is ready (holdfastd: health
# SERVING follows at once; dockerd: the API serves right after).
mgr_ready_line() { if [[ "$1" == "$MGR_OURS" ]]; then echo 'start-up done; serving'; else echo 'API listen on '; fi; }

# mgr_start VERSION DAEMON LOG: launch the daemon and wait until its log says
# it is ready; false (with the reason on stderr) if it exits or times out.
mgr_start() {
    local version="$1" daemon="$2" log="$3" line deadline
    line="$(mgr_ready_line "$daemon")"
    mgr_launch "$version" "$daemon" "$log"
    deadline=$((SECONDS + MGR_TIMEOUT))
    until grep -q -- "$line" "$log" 2>/dev/null; do
        if ! hf_pid_alive "$MGR_LAUNCHED"; then
            echo "$daemon exited during start-up: $(grep -v '\[core\]' "$log" | last_line /dev/stdin)" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$daemon was not ready within ${MGR_TIMEOUT} s: $(grep -v '\[core\]' "$log" | last_line /dev/stdin)" >&2
            return 1
        fi
        sleep 0.02
    done
}

# mgr_stamps LOG PATTERN...: the time (epoch seconds) of the first line of
# LOG matching each PATTERN, one a line ("-" when missing). holdfastd's
# lines begin with an RFC 3339 time; dockerd's carry time="...".
mgr_stamps() {
    local log="$1" p t
    shift
    for p in "$@"; do
        t="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m 1 -F -- "$p" |
            sed -n 's/^time="\([^"]*\)".*/\1/p; t; s/^\([0-9-]*T[0-9:.]*Z\) .*/\1/p')"
        if [[ -n "$t" ]]; then date -d "$t" +%s.%N; else echo -; fi
    done
}

# mgr_phases VERSION DAEMON LOG: one line of milliseconds from MGR_T0 and
# the log's time stamps. holdfastd: "total before p1 p2 p3 after reads";
# dockerd: "total before loading - - - after reads" (reads: when the API
# first answered reads).
mgr_phases() {
    local s
    if [[ "$2" == "$MGR_OURS" ]]; then
        s="$(mgr_stamps "$3" 'serving reads; starting up' 'start-up phase 1 done' \
            'start-up phase 2 done' 'start-up phase 3 done' 'start-up done; serving' | tr '\n' ' ')"
        # shellcheck disable=SC2086 # five fields
        awk -v t0="$MGR_T0" -v s="$s" 'BEGIN { split(s, v, " ")
            for (i = 1; i <= 5; i++) if (v[i] == "-") exit 1
            printf "%.1f %.1f %.1f %.1f %.1f %.1f %.1f\n", (v[5] - t0) * 1000, (v[1] - t0) * 1000,
                (v[2] - v[1]) * 1000, (v[3] - v[2]) * 1000, (v[4] - v[3]) * 1000, (v[5] - v[4]) * 1000,
                (v[1] - t0) * 1000 }'
    else
        s="$(mgr_stamps "$3" 'Loading containers: start.' 'Loading containers: done.' 'API listen on ' | tr '\n' ' ')"
        awk -v t0="$MGR_T0" -v s="$s" 'BEGIN { split(s, v, " ")
            for (i = 1; i <= 3; i++) if (v[i] == "-") exit 1
            printf "%.1f %.1f %.1f - - %.1f %.1f\n", (v[3] - t0) * 1000, (v[1] - t0) * 1000,
                (v[2] - v[1]) * 1000, (v[3] - v[2]) * 1000, (v[3] - t0) * 1000 }'
    fi
}

# mgr_running VERSION DAEMON: "name pid" of each running container, sorted.
mgr_running() {
    if [[ "$2" == "$MGR_OURS" ]]; then
        hd "$1" ps --json | jq -r '.[] | select(.state.status == "running") | "\(.name) \(.state.pid)"' | sort
    else
        local ids
        ids="$(dk "$1" ps -q)" || return 1
        [[ -z "$ids" ]] && return 0
        # shellcheck disable=SC2086 # one id a word
        dk "$1" inspect -f '{{.Name}} {{.State.Pid}}' $ids | sed 's|^/||' | sort
    fi
}

# mgr_ms COMMAND...: run COMMAND (output to MGR_OUT); print its wall time in ms.
mgr_ms() {
    local t0 t1
    t0="$EPOCHREALTIME"
    "$@" >"$MGR_OUT" 2>&1 || return 1
    t1="$EPOCHREALTIME"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

# mgr_error VERSION DAEMON N MESSAGE: remember the first failure of a daemon
# at size N.
mgr_error() {
    [[ -n "${SERR[$1|$2|manager $3]:-}" ]] || SERR[$1|$2|manager $3]="$4"
    hf_log "bench: manager, $2 with $3 containers on containerd $1: $4"
}

# mgr_create VERSION FROM TO TMP: containers FROM..TO under each daemon,
# alternately; the wall time of each `run -d` into TMP/run-<daemon>.
mgr_create() {
    local version="$1" i name ms
    for ((i = $2; i <= $3; i++)); do
        name="$(mgr_name "$i")"
        if [[ -z "${MGR_DOWN[$MGR_OURS]:-}" ]]; then
            if ms="$(mgr_ms hd "$version" run -d --name "$name" --rootfs "$BENCH_DIR/rootfs" -- \
                /bin/sh -c "$MGR_SCRIPT" sh "$MGR_EVERY" "$MGR_BURST")"; then
                echo "$ms" >>"$4/run-$MGR_OURS"
            else
                MGR_DOWN[$MGR_OURS]="holdfast run -d $name: $(last_line "$MGR_OUT")"
            fi
        fi
        if [[ -z "${MGR_DOWN[$MGR_PEER]:-}" ]]; then
            if ms="$(mgr_ms dk "$version" run -d --name "$name" --network none "$MGR_IMAGE" \
                /bin/sh -c "$MGR_SCRIPT" sh "$MGR_EVERY" "$MGR_BURST")"; then
                echo "$ms" >>"$4/run-$MGR_PEER"
            else
                MGR_DOWN[$MGR_PEER]="docker run -d $name: $(last_line "$MGR_OUT")"
            fi
        fi
    done
}

# mgr_restart VERSION DAEMON N TMP ROUND: kill -9 the daemon (its containers
# run on), start it again, note its phases into TMP/phases-<daemon>, and
# check that the N containers run with the same pids as before.
mgr_restart() {
    local version="$1" daemon="$2" n="$3" tmp="$4" r="$5" before after log phases
    log="$tmp/$daemon-$n-$r.log"
    before="$(mgr_running "$version" "$daemon")" || before=""
    if [[ "$(grep -c . <<<"$before")" != "$n" ]]; then
        MGR_DOWN[$daemon]="$(grep -c . <<<"$before") of $n containers running before the kill -9"
        return
    fi
    mgr_kill "$version" "$daemon" 9
    if ! mgr_start "$version" "$daemon" "$log" 2>"$tmp/err"; then
        MGR_DOWN[$daemon]="$(cat "$tmp/err")"
        return
    fi
    if phases="$(mgr_phases "$version" "$daemon" "$log")"; then
        echo "$phases" >>"$tmp/phases-$daemon"
    else
        MGR_DOWN[$daemon]="start-up lines missing from $log"
        return
    fi
    after="$(mgr_running "$version" "$daemon")" || after=""
    if [[ "$after" != "$before" ]]; then
        MGR_DOWN[$daemon]="after the restart, $(comm -12 <(echo "$before") <(echo "$after") | grep -c .) of $n containers run with the pid they had"
    fi
}

# mgr_latency VERSION N TMP: MGR_CALLS calls of `ps` and of `logs --tail 100`
# (over different containers) per daemon, alternately.
mgr_latency() {
    local version="$1" n="$2" tmp="$3" k name ms d
    local -A cli=([$MGR_OURS]=hd [$MGR_PEER]=dk)
    for ((k = 0; k < MGR_CALLS; k++)); do
        name="$(mgr_name $((k * 7919 % n + 1)))"
        for d in "${MGR_DAEMONS[@]}"; do
            [[ -z "${MGR_DOWN[$d]:-}" ]] || continue
            if ms="$(mgr_ms "${cli[$d]}" "$version" ps)"; then
                echo "$ms" >>"$tmp/ps-$d"
            else
                MGR_DOWN[$d]="ps: $(last_line "$MGR_OUT")"
                continue
            fi
            if ms="$(mgr_ms "${cli[$d]}" "$version" logs --tail 100 "$name")"; then
                echo "$ms" >>"$tmp/logs-$d"
                if [[ "$(grep -c '^line [0-9]* the quick' "$MGR_OUT")" != 100 ]]; then
                    MGR_DOWN[$d]="logs --tail 100 $name printed $(wc -l <"$MGR_OUT") lines, $(grep -c '^line [0-9]* the quick' "$MGR_OUT") of them the container's"
                fi
            else
                MGR_DOWN[$d]="logs --tail 100 $name: $(last_line "$MGR_OUT")"
            fi
        done
    done
}

# mgr_record VERSION N TMP: medians into R[...|m<N>_...].
mgr_record() {
    local version="$1" n="$2" tmp="$3" d c f pid stats
    for d in "${MGR_DAEMONS[@]}"; do
        f="$tmp/phases-$d"
        if [[ -s "$f" ]]; then
            for c in 1:ready 2:before 6:after 7:reads; do
                R[$version|$d|m${n}_${c#*:}]="$(awk -v c="${c%%:*}" '{ print $c }' "$f" | median)"
            done
            if [[ "$d" == "$MGR_OURS" ]]; then
                for c in 3:p1 4:p2 5:p3; do
                    R[$version|$d|m${n}_${c#*:}]="$(awk -v c="${c%%:*}" '{ print $c }' "$f" | median)"
                done
                # Its three phases together, as dockerd's one.
                R[$version|$d|m${n}_loading]="$(awk '{ print $3 + $4 + $5 }' "$f" | median)"
            else
                R[$version|$d|m${n}_loading]="$(awk '{ print $3 }' "$f" | median)"
            fi
            R[$version|$d|m${n}_rounds]="$(wc -l <"$f")"
        fi
        for c in ps logs run; do
            f="$tmp/$c-$d"
            [[ -s "$f" ]] || continue
            R[$version|$d|m${n}_${c}_median]="$(median <"$f")"
            R[$version|$d|m${n}_${c}_p90]="$(p90 <"$f")"
            R[$version|$d|m${n}_${c}_n]="$(wc -l <"$f")"
        done
        pid="$(mgr_pid "$version" "$d")"
        if [[ -n "$pid" ]] && stats="$(shim_stats "$pid")"; then
            R[$version|$d|m${n}_rss]="$(awk '{ print $1 }' <<<"$stats")"
            R[$version|$d|m${n}_priv]="$(awk '{ print $3 }' <<<"$stats")"
            R[$version|$d|m${n}_threads]="$(awk '{ print $4 }' <<<"$stats")"
        fi
        [[ -z "${MGR_DOWN[$d]:-}" ]] || mgr_error "$version" "$d" "$n" "${MGR_DOWN[$d]}"
    done
}

# mgr_teardown VERSION HAVE: remove the containers through their daemons,
# stop the daemons (live restore leaves anything left running: lib.sh's
# cleanup of the namespaces kills it), unmount what dockerd mounted.
mgr_teardown() {
    local version="$1" have="$2" m names=() i MGR_CLI_TIMEOUT=900
    m="$(mgr_dir "$version")"
    for ((i = 1; i <= have; i++)); do names+=("$(mgr_name "$i")"); done
    if ((have)); then
        [[ -z "$(mgr_pid "$version" "$MGR_OURS")" ]] || hd "$version" rm -f "${names[@]}" >/dev/null 2>&1 || true
        [[ -z "$(mgr_pid "$version" "$MGR_PEER")" ]] || dk "$version" rm -f "${names[@]}" >/dev/null 2>&1 || true
    fi
    mgr_cleanup "$version"
}

# mgr_cleanup VERSION: the daemons and what dockerd leaves outside the bench
# folder (its exec root, /run/docker); safe to call more than once.
mgr_cleanup() {
    local version="$1" d mnt root
    root="$(mgr_exec_root "$version")"
    for d in "${MGR_DAEMONS[@]}"; do mgr_kill "$version" "$d" TERM; done
    while IFS= read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$root/" -v m="$(mgr_dir "$version")/" \
        'index($2, d) == 1 || index($2, m) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf "$root"
    if ((!MGR_RUN_DOCKER_EXISTED)); then
        rmdir /run/docker/plugins /run/docker 2>/dev/null || true
    fi
}

section_manager() {
    local version="$1" tmp m n have=0 why r d
    declare -gA MGR_DOWN=()
    MGR_OUT="$(dir_of "$version")/mgr-out"
    tmp="$(dir_of "$version")/mgr-tmp"
    m="$(mgr_dir "$version")"
    mkdir -p "$tmp" "$m"
    mgr_prepare
    if [[ ! -x "$BENCH_DIR/ours/holdfastd" || ! -x "$BENCH_DIR/ours/holdfast" ]]; then
        MGR_DOWN[$MGR_OURS]="holdfastd or holdfast not built in $HOLDFAST_BIN_DIR (make build)"
    else
        mgr_hd_config "$version"
        mgr_start "$version" "$MGR_OURS" "$tmp/$MGR_OURS-start.log" 2>"$tmp/err" || MGR_DOWN[$MGR_OURS]="$(cat "$tmp/err")"
    fi
    if [[ -n "$MGR_PEER_MISSING" ]]; then
        MGR_DOWN[$MGR_PEER]="$MGR_PEER_MISSING"
    else
        mgr_dk_config "$version"
        if ! mgr_start "$version" "$MGR_PEER" "$tmp/$MGR_PEER-start.log" 2>"$tmp/err"; then
            MGR_DOWN[$MGR_PEER]="$(cat "$tmp/err")"
        elif ! dk "$version" load -i "$BENCH_DIR/busybox-image.tar" >"$MGR_OUT" 2>&1; then
            MGR_DOWN[$MGR_PEER]="docker load: $(last_line "$MGR_OUT")"
        fi
    fi
    for n in $(printf '%s\n' "${MGR_SIZES[@]}" | sort -n -u); do
        if why="$(mgr_fits "$n" "$have")" && [[ -n "$why" ]]; then
            MGR_SKIP[$version|$n]="$why"
            hf_log "bench: containerd $version: manager, $n containers skipped: $why"
            continue
        fi
        hf_log "bench: containerd $version: manager, creating $((n - have)) containers per daemon ($n in all)"
        mgr_create "$version" $((have + 1)) "$n" "$tmp"
        have="$n"
        for d in "${MGR_DAEMONS[@]}"; do rm -f "$tmp/phases-$d" "$tmp/ps-$d" "$tmp/logs-$d"; done
        # Let every container print its burst and settle.
        sleep 2
        for ((r = 1; r <= MGR_ROUNDS; r++)); do
            hf_log "bench: containerd $version: manager, $n containers, kill -9 and restart, round $r of $MGR_ROUNDS"
            for d in "${MGR_DAEMONS[@]}"; do
                [[ -n "${MGR_DOWN[$d]:-}" ]] || mgr_restart "$version" "$d" "$n" "$tmp" "$r"
            done
        done
        mgr_latency "$version" "$n" "$tmp"
        mgr_record "$version" "$n" "$tmp"
    done
    hf_log "bench: containerd $version: manager, removing the containers"
    mgr_teardown "$version" "$have"
}

# mratio METRIC: holdfastd ÷ dockerd for version $V, or n/a.
mratio() { ratio_of "$V" "$MGR_OURS" "$MGR_PEER" "$1"; }

# mrow LABEL METRIC SCALE FORMAT [PEER]: one row for version $V; PEER, when
# given, stands in dockerd's column (and the ratio is —).
mrow() {
    if [[ $# -ge 5 ]]; then
        printf '| %s | %s | %s | — |\n' "$1" "$(cell "$V" "$MGR_OURS" "$2" "$3" "$4")" "$5"
    else
        printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$V" "$MGR_OURS" "$2" "$3" "$4")" \
            "$(cell "$V" "$MGR_PEER" "$2" "$3" "$4")" "$(mratio "$2")"
    fi
}

method_manager() {
    cat <<EOF

### holdfastd restarting with running containers, against dockerd --live-restore

- Both daemons run on the bench's containerd of the version (each in its
  own namespace; dockerd with \`--containerd\`, so no containerd of its own):
  holdfastd (a copy of the built one; own root, socket, journal folder,
  cgroup parent; \`live_restore = true\`, log level info) and Debian's
  dockerd ${MGR_PEER_VERSION:-(docker.io)} (\`--live-restore\`, own
  \`--data-root\`, \`--exec-root\`, socket, pid file and config file,
  \`--iptables=false --bridge=none\`, overlay2, json-file logs, cgroup
  parent under the run's; containers run by the Go shim
  \`io.containerd.runc.v2\`, ours by \`io.rust.shim.v2\`).
- The same N containers under each, created alternately (\`holdfast run -d
  --rootfs <busybox folder>\`; \`docker run -d --network none <busybox
  image>\`, the image loaded from an archive made by hand from the same
  folder), each running \`/bin/sh -c\` a loop that prints $MGR_BURST
  numbered lines at once, then one every ${MGR_EVERY} s
  (\`HOLDFAST_BENCH_MANAGER_EVERY\`). Sizes (\`HOLDFAST_BENCH_MANAGER_N\`:
  ${MGR_SIZES[*]}) run from the smallest up, adding containers; a size is
  skipped when MemAvailable is below $((MGR_KIB_PER_PAIR / 1024)) MiB per
  added pair plus 1 GiB, or the machine's threads would pass 85 % of
  pid_max at $MGR_TASKS_PER_PAIR per added pair.
- A round: \`kill -9\` of the daemon (its containers run on), then it is
  started again on the same state; $MGR_ROUNDS rounds
  (\`HOLDFAST_BENCH_MANAGER_ROUNDS\`), holdfastd and dockerd alternately.
  After each restart every container must still run with the pid it had
  before (\`holdfast ps --json\`; \`docker ps -q\` + \`docker inspect\`),
  checked outside the timing.
- Start-up to ready: from just before the daemon's exec to the time stamp
  of its ready line in its own log: holdfastd's \`start-up done; serving\`
  (health SERVING follows at once; writes are refused before it), dockerd's
  \`API listen on\` (its API answers nothing before it). Phases come from the
  same logs' time stamps: holdfastd's \`serving reads; starting up\` and
  \`start-up phase N done\` lines (their \`elapsed_ms\` agree to the
  millisecond), dockerd's \`Loading containers: start.\` and \`done.\`
  (which spans loading and registering the containers, reconnecting to
  their running tasks and reopening their stdio FIFOs, the network
  controller, restart policies and auto-remove, so it stands beside our
  three phases together; holdfastd has no FIFOs to reopen: the shim
  journals the output). "Reads answered
  from": holdfastd serves \`ps\`, \`inspect\` and \`logs\` from its socket's
  bind, before phase 1; dockerd from \`API listen on\`. Each figure is the
  median over the rounds, so the parts need not add up to the total.
- Latency: $MGR_CALLS calls of each (\`HOLDFAST_BENCH_MANAGER_CALLS\`), the
  two daemons alternately, after the last restart: the wall time of the CLI
  (\`holdfast ps\`, \`docker ps\`: every running container, as a table;
  \`holdfast logs --tail 100 NAME\`, \`docker logs --tail 100 NAME\` over
  different containers, each output checked to hold 100 of the
  container's lines). Both include the CLI's own start (\`/usr/bin/docker\`
  is a Go binary). \`run -d\`: every start of the set-up.
- Daemon memory: \`/proc/<daemon>/smaps_rollup\` once the latency calls are
  done (RSS, private = Private_Clean + Private_Dirty).
EOF
}

render_manager() {
    local n d msg
    V="$1"
    for n in $(printf '%s\n' "${MGR_SIZES[@]}" | sort -n -u); do
        printf '\n### holdfastd restarting with %s running containers, against dockerd --live-restore\n\n' "$n"
        if [[ -n "${MGR_SKIP[$V|$n]:-}" ]]; then
            printf 'Not measured: %s.\n' "${MGR_SKIP[$V|$n]}"
            continue
        fi
        echo "| metric | holdfastd | dockerd \`--live-restore\` | ratio holdfastd÷dockerd |"
        echo "| --- | --- | --- | --- |"
        mrow "\`kill -9\`, then start-up to ready, median of ${R[$V|$MGR_OURS|m${n}_rounds]:-${R[$V|$MGR_PEER|m${n}_rounds]:-0}} (ms)" "m${n}_ready" 1 %.1f
        mrow "… exec to restoring (ours: config, store, containerd connection, socket; dockerd: config, graph driver, containerd connection, …) (ms)" "m${n}_before" 1 %.1f
        mrow "… restoring the containers (ours: phases 1-3; dockerd: \`Loading containers\`) (ms)" "m${n}_loading" 1 %.1f
        mrow "… … phase 1: load and register the records (ms)" "m${n}_p1" 1 %.1f "—"
        mrow "… … phase 2: reconcile with containerd's tasks (ms)" "m${n}_p2" 1 %.1f "—"
        mrow "… … phase 3: restart policies, auto-remove, exit monitor (ms)" "m${n}_p3" 1 %.1f "—"
        mrow "… restored to ready (ms)" "m${n}_after" 1 %.1f
        mrow "reads answered from (ms after exec)" "m${n}_reads" 1 %.1f
        mrow "daemon RSS after the restarts (MiB)" "m${n}_rss" 1024 %.1f
        mrow "daemon private memory (MiB)" "m${n}_priv" 1024 %.1f
        mrow "daemon threads" "m${n}_threads" 1 %g
        mrow "\`ps\` latency, median (ms)" "m${n}_ps_median" 1 %.1f
        mrow "\`ps\` latency, p90 (ms)" "m${n}_ps_p90" 1 %.1f
        mrow "\`logs --tail 100\` latency, median (ms)" "m${n}_logs_median" 1 %.1f
        mrow "\`logs --tail 100\` latency, p90 (ms)" "m${n}_logs_p90" 1 %.1f
        mrow "\`run -d\` latency while creating them, median (ms)" "m${n}_run_median" 1 %.1f
        mrow "\`run -d\` latency while creating them, p90 (ms)" "m${n}_run_p90" 1 %.1f
        for d in "${MGR_DAEMONS[@]}"; do
            msg="${SERR[$V|$d|manager $n]:-}"
            [[ -n "$msg" ]] || continue
            # shellcheck disable=SC2016 # markdown backquotes
            printf '\n**%s, %s containers:** `%s`\n' "$d" "$n" "$(md_code "$msg")"
        done
    done
}

# ---------------------------------------------------------------- section: checkpoint

# Checkpoint and restore through holdfast (holdfastd on the bench's
# containerd, its CLI, our shim, runc, CRIU) against raw `runc checkpoint` /
# `runc restore` with the same CRIU on an equivalent bundle (the OCI spec
# holdfastd made, the same busybox rootfs, the same process), for each size
# of touched memory; both alternately in each round. Results go to
# R["<version>|<who>|ck<MiB>_<metric>"] with <who> holdfast or runc.
CK_OURS=holdfast
CK_PEER=runc
CK_WHO=("$CK_OURS" "$CK_PEER")
read -r -a CK_SIZES <<<"${HOLDFAST_BENCH_CKPT_MIB:-0 256 1024}"
CK_ROUNDS="${HOLDFAST_BENCH_CKPT_ROUNDS:-$(q 3 1)}"
CK_TICK="${HOLDFAST_BENCH_CKPT_TICK:-0.01}"
CK_TIMEOUT="${HOLDFAST_BENCH_CKPT_TIMEOUT:-300}"
# The process: its stdio is the container's own /dev/null (so the raw runc
# container needs no pipes from the bench, and both dump the same fds). For
# MiB > 0 a busybox dd reads MiB MiB of /dev/urandom into one buffer (its
# anonymous memory, which CRIU dumps; random, so that the export archive
# cannot shrink it) and then blocks writing it into a pipe nobody reads;
# once its read is done the ready file appears. The init shell appends
# $EPOCHREALTIME to a ticks file every CK_TICK s: the gaps show how long it
# was frozen.
# shellcheck disable=SC2016 # expanded by the container's shell
CK_SCRIPT='id=$1 mib=$2 tick=$3
exec </dev/null >/dev/null 2>&1
if [ "$mib" -gt 0 ]; then
    dd if=/dev/urandom bs=${mib}M count=1 iflag=fullblock | { head -c 1 >/dev/null; echo >/bench/$id.ready; exec sleep 2147483647; } &
else
    echo >/bench/$id.ready
fi
while :; do echo $EPOCHREALTIME >>/bench/$id.ticks; sleep $tick; done'
# zstd as holdfast's archive writes it (level 3, one thread, with checksum).
CK_ZSTD="zstd -3 -T1 --check -q"

ck_dir() { printf '%s/ck\n' "$(dir_of "$1")"; }
ck_ns() { printf '%s-ck\n' "$(ns_of "$1")"; }
ck_cgroup() { printf '%s/ck%s\n' "$HF_CGROUP_PARENT" "${1//./}"; }
ck_rootfs() { printf '%s/ck-rootfs-%s\n' "$BENCH_DIR" "$1"; }
ck_label() {
    case "$1" in
        0) echo "~0 MiB" ;;
        1024) echo "1 GiB" ;;
        *) echo "$1 MiB" ;;
    esac
}

# ckh VERSION ARGS...: our CLI against the section's holdfastd for VERSION.
ckh() { ours_cli "$(ck_dir "$1")/hd" "$CK_TIMEOUT" "${@:2}"; }

# ckr VERSION ARGS...: runc with the section's state root and the CRIU the
# shim uses.
ckr() { timeout "$CK_TIMEOUT" runc --root "$(ck_dir "$1")/runc-state" --criu "$HF_CRIU" "${@:2}"; }

# ck_timed COMMAND...: run COMMAND (its output into CK_OUT); CK_T0 and
# CK_T1 are the times just before and after it.
ck_timed() {
    local rc=0
    CK_T0="$EPOCHREALTIME"
    "$@" >"$CK_OUT" 2>&1 || rc=$?
    CK_T1="$EPOCHREALTIME"
    return "$rc"
}

ck_ms() { awk -v a="$CK_T0" -v b="$CK_T1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'; }

# ck_hd_pid VERSION: the section's holdfastd, if it runs.
ck_hd_pid() { daemon_pid "$(ck_dir "$1")/hd/holdfastd.pid" "$(ck_dir "$1")/hd"; }

# ck_hd_start VERSION: a private holdfastd on the version's containerd (own
# root, socket, namespace, journal folder, cgroup parent); false with the
# reason on stderr if it is not ready in time.
ck_hd_start() {
    local version="$1" c pid deadline
    c="$(ck_dir "$version")"
    hd_config "$c/hd" "$version" "$(ck_ns "$version")" "$(ck_cgroup "$version")"
    NO_COLOR=1 setsid "$BENCH_DIR/ours/holdfastd" --config "$c/hd/holdfastd.toml" >"$c/hd/holdfastd.log" 2>&1 </dev/null &
    pid=$!
    disown "$pid"
    printf '%s\n' "$pid" >"$c/hd/holdfastd.pid"
    deadline=$((SECONDS + 60))
    until grep -q 'start-up done; serving' "$c/hd/holdfastd.log" 2>/dev/null; do
        if ! hf_pid_alive "$pid" || ((SECONDS >= deadline)); then
            echo "holdfastd did not start: $(grep -v '\[core\]' "$c/hd/holdfastd.log" | last_line /dev/stdin)" >&2
            return 1
        fi
        sleep 0.02
    done
}

# ck_cleanup VERSION: stop the section's holdfastd (live restore: what still
# runs is killed by kill_version_tasks) and delete the raw runc containers.
ck_cleanup() {
    local version="$1" c pid id
    c="$(ck_dir "$version")"
    pid="$(ck_hd_pid "$version")"
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        hf_wait_gone "$pid" 30 || kill -9 "$pid" 2>/dev/null || true
    fi
    [[ -d "$c/runc-state" ]] || return 0
    for id in $(runc --root "$c/runc-state" list -q 2>/dev/null || true); do
        timeout 10 runc --root "$c/runc-state" delete -f "$id" >/dev/null 2>&1 || true
    done
}

# ck_error VERSION WHO MiB MESSAGE: remember the first failure of a size.
ck_error() {
    [[ -n "${SERR[$1|$2|checkpoint $3]:-}" ]] || SERR[$1|$2|checkpoint $3]="$4"
    hf_log "bench: checkpoint, $2 with $(ck_label "$3") on containerd $1: $4"
}

# ck_op WHO VERSION ID OP [FILE]: one step for holdfast (CLI) or raw runc.
# OPs: start, lr (a --leave-running checkpoint "lr"), rmlr, dump (the
# checkpoint "cp"; the container stops), restore (from "cp"), export FILE,
# import FILE, unimport, remove. For runc, ID's bundle is CK_BUNDLE.
ck_op() {
    local who="$1" version="$2" id="$3" op="$4" file="${5:-}" b
    b="$(ck_dir "$version")/runc/$id"
    if [[ "$who" == "$CK_OURS" ]]; then
        case "$op" in
            start) ckh "$version" run -d --name "$id" --rootfs "$(ck_rootfs ours)" -- \
                /bin/sh -c "$CK_SCRIPT" sh "$id" "$CK_MIB" "$CK_TICK" ;;
            lr) ckh "$version" checkpoint create --leave-running "$id" lr ;;
            rmlr) ckh "$version" checkpoint rm "$id" lr ;;
            dump) ckh "$version" checkpoint create "$id" cp ;;
            restore) ckh "$version" restore "$id" cp ;;
            export) ckh "$version" export "$id" cp -o "$file" ;;
            import) ckh "$version" import "$file" --name "$id-i" ;;
            unimport) ckh "$version" rm -f "$id-i" ;;
            remove) ckh "$version" rm -f "$id" ;;
        esac
    else
        case "$op" in
            start)
                mkdir -p "$b"
                jq --arg root "$(ck_rootfs runc)" --arg cg "$(ck_cgroup "$version")/$id" \
                    --arg script "$CK_SCRIPT" --arg id "$id" --arg mib "$CK_MIB" --arg tick "$CK_TICK" \
                    '.root = { path: $root, readonly: false } | .linux.cgroupsPath = $cg
                    | .process.args = ["/bin/sh", "-c", $script, "sh", $id, $mib, $tick]' \
                    "$(ck_dir "$version")/spec.json" >"$b/config.json" || return 1
                ckr "$version" run -d --bundle "$b" "$id" </dev/null
                ;;
            lr) ckr "$version" checkpoint --leave-running --image-path "$b/lr" --work-path "$b/lr-work" "$id" ;;
            rmlr) rm -rf "$b/lr" "$b/lr-work" ;;
            dump) ckr "$version" checkpoint --image-path "$b/cp" --work-path "$b/cp-work" "$id" ;;
            restore) ckr "$version" restore -d --bundle "$b" --image-path "$b/cp" --work-path "$b/rs-work" "$id" </dev/null ;;
            export) tar -C "$b/cp" -I "$CK_ZSTD" -cf "$file" . && sync "$file" ;;
            import) mkdir "$b/imported" && tar -C "$b/imported" -I "$CK_ZSTD" -xf "$file" ;;
            unimport) rm -rf "$b/imported" ;;
            remove)
                ckr "$version" delete -f "$id" || true
                rm -rf "$b"
                ;;
        esac
    fi
}

# ck_images WHO VERSION ID NAME: the image folder of checkpoint NAME.
ck_images() {
    if [[ "$1" == "$CK_OURS" ]]; then
        printf '%s/hd/root/checkpoints/%s/%s\n' "$(ck_dir "$2")" "$3" "$4"
    else
        printf '%s/runc/%s/%s\n' "$(ck_dir "$2")" "$3" "$4"
    fi
}

# ck_ticked_after FILE T: the last tick in FILE is later than T.
ck_ticked_after() { awk -v t="$2" '{ l = $1 } END { exit !(l > t) }' "$1" 2>/dev/null; }

# ck_frozen FILE T0 T1: the longest gap (ms) between consecutive ticks in
# FILE that overlaps [T0, T1].
ck_frozen() {
    awk -v a="$2" -v b="$3" 'NR > 1 && $1 > a && p < b && $1 - p > m { m = $1 - p }
        { p = $1 } END { printf "%.1f\n", m * 1000 }' "$1"
}

# ck_put TMP WHO MiB METRIC VALUE: one round's value.
ck_put() { printf '%s\n' "$5" >>"$1/$2-$3-$4"; }

# ck_run WHO VERSION MiB ROUND TMP: one container through every step; the
# first failing step ends it (and is remembered).
ck_run() {
    local who="$1" version="$2" mib="$3" r="$4" tmp="$5" id ticks img bytes f err=""
    CK_MIB="$mib"
    if [[ "$who" == "$CK_OURS" ]]; then id="ck-$mib-$r"; else id="hfb$RUN_ID-ck-$mib-$r"; fi
    ticks="$(ck_rootfs "$(short_ck "$who")")/bench/$id"
    f="$(ck_dir "$version")/x/$id.archive"
    mkdir -p "$(dirname "$f")"
    if ! ck_op "$who" "$version" "$id" start >"$CK_OUT" 2>&1; then
        err="start: $(last_line "$CK_OUT")"
    elif ! wait_for "$CK_TIMEOUT" test -e "$ticks.ready" || ! wait_for 10 test -s "$ticks.ticks"; then
        err="the container did not get ready (its ${mib} MiB touched) within ${CK_TIMEOUT} s"
    fi
    if [[ -z "$err" && "$who" == "$CK_OURS" && ! -s "$(ck_dir "$version")/spec.json" ]]; then
        # The spec holdfastd made: the raw runc container's, but for its
        # root, cgroup path and arguments.
        hf_ctr "$(dir_of "$version")" -n "$(ck_ns "$version")" c info --spec "$id" \
            >"$(ck_dir "$version")/spec.json" 2>/dev/null || rm -f "$(ck_dir "$version")/spec.json"
    fi
    sleep 0.3
    # A --leave-running checkpoint: its time, and the longest stop of the
    # ticks around it.
    if [[ -z "$err" ]]; then
        if ck_timed ck_op "$who" "$version" "$id" lr; then
            ck_put "$tmp" "$who" "$mib" lr "$(ck_ms)"
            if wait_for 10 ck_ticked_after "$ticks.ticks" "$CK_T1"; then
                ck_put "$tmp" "$who" "$mib" frozen "$(ck_frozen "$ticks.ticks" "$CK_T0" "$CK_T1")"
            else
                err="no tick within 10 s after the --leave-running checkpoint"
            fi
            ck_op "$who" "$version" "$id" rmlr >/dev/null 2>&1 || true
        else
            err="checkpoint --leave-running: $(last_line "$CK_OUT")"
        fi
    fi
    # The checkpoint that stops the container, its image, and the restore.
    if [[ -z "$err" ]]; then
        if ck_timed ck_op "$who" "$version" "$id" dump; then
            ck_put "$tmp" "$who" "$mib" dump "$(ck_ms)"
            img="$(ck_images "$who" "$version" "$id" cp)"
            bytes="$(du -sb "$img" | cut -f1)"
            ck_put "$tmp" "$who" "$mib" image "$bytes"
            if ((bytes < mib * 1048576)); then
                err="the image ($bytes bytes) is smaller than the ${mib} MiB touched: CRIU did not dump the memory"
            fi
        else
            err="checkpoint: $(last_line "$CK_OUT")"
        fi
    fi
    if [[ -z "$err" ]]; then
        if ck_timed ck_op "$who" "$version" "$id" restore; then
            ck_put "$tmp" "$who" "$mib" restore "$(ck_ms)"
            wait_for 10 ck_ticked_after "$ticks.ticks" "$CK_T1" || err="no tick within 10 s after the restore"
        else
            err="restore: $(last_line "$CK_OUT")"
        fi
    fi
    # Export and import of the checkpoint (not of ~0 MiB: too small to time).
    if [[ -z "$err" ]] && ((mib > 0)); then
        if ck_timed ck_op "$who" "$version" "$id" export "$f"; then
            bytes="$(stat -c %s "$f")"
            ck_put "$tmp" "$who" "$mib" archive "$bytes"
            ck_put "$tmp" "$who" "$mib" export "$(awk -v b="$bytes" -v a="$CK_T0" -v c="$CK_T1" 'BEGIN { printf "%.1f\n", b / 1e6 / (c - a) }')"
            if ck_timed ck_op "$who" "$version" "$id" import "$f"; then
                ck_put "$tmp" "$who" "$mib" import "$(awk -v b="$bytes" -v a="$CK_T0" -v c="$CK_T1" 'BEGIN { printf "%.1f\n", b / 1e6 / (c - a) }')"
            else
                err="import: $(last_line "$CK_OUT")"
            fi
            ck_op "$who" "$version" "$id" unimport >/dev/null 2>&1 || true
        else
            err="export: $(last_line "$CK_OUT")"
        fi
    fi
    rm -f "$f"
    ck_op "$who" "$version" "$id" remove >/dev/null 2>&1 || true
    rm -f "$ticks".*
    [[ -z "$err" ]] || ck_error "$version" "$who" "$mib" "$err"
}

short_ck() { if [[ "$1" == "$CK_OURS" ]]; then echo ours; else echo runc; fi; }

section_checkpoint() {
    local version="$1" tmp c mib r who d
    tmp="$(dir_of "$version")/ck-tmp"
    c="$(ck_dir "$version")"
    CK_OUT="$c/out"
    mkdir -p "$tmp" "$c/runc-state"
    ours_daemons
    for who in ours runc; do
        [[ -d "$(ck_rootfs "$who")" ]] || { hf_copy_rootfs "$(ck_rootfs "$who")" && mkdir -p "$(ck_rootfs "$who")/bench"; }
    done
    if [[ ! -x "$BENCH_DIR/ours/holdfastd" || ! -x "$BENCH_DIR/ours/holdfast" ]]; then
        for mib in "${CK_SIZES[@]}"; do ck_error "$version" "$CK_OURS" "$mib" "holdfastd or holdfast not built in $HOLDFAST_BIN_DIR (make build)"; done
        return 0
    fi
    if ! ck_hd_start "$version" 2>"$tmp/err"; then
        for mib in "${CK_SIZES[@]}"; do ck_error "$version" "$CK_OURS" "$mib" "$(cat "$tmp/err")"; done
        return 0
    fi
    for mib in "${CK_SIZES[@]}"; do
        for ((r = 1; r <= CK_ROUNDS; r++)); do
            hf_log "bench: containerd $version: checkpoint, $(ck_label "$mib") touched, round $r of $CK_ROUNDS"
            for who in "${CK_WHO[@]}"; do
                [[ -z "${SERR[$version|$who|checkpoint $mib]:-}" ]] || continue
                if [[ "$who" == "$CK_PEER" && ! -s "$c/spec.json" ]]; then
                    ck_error "$version" "$who" "$mib" "no spec: holdfast's container of this size did not start"
                    continue
                fi
                ck_run "$who" "$version" "$mib" "$r" "$tmp"
            done
        done
        for who in "${CK_WHO[@]}"; do
            for d in lr frozen dump image restore export import archive; do
                [[ -s "$tmp/$who-$mib-$d" ]] || continue
                R[$version|$who|ck${mib}_$d]="$(median <"$tmp/$who-$mib-$d")"
                R[$version|$who|ck${mib}_n]="$(wc -l <"$tmp/$who-$mib-$d")"
            done
        done
    done
    ck_cleanup "$version"
}

# ckratio METRIC: holdfast ÷ runc for version $V, or n/a.
ckratio() { ratio_of "$V" "$CK_OURS" "$CK_PEER" "$1"; }

# ckrow LABEL METRIC SCALE FORMAT: one row for version $V.
ckrow() {
    printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$V" "$CK_OURS" "$2" "$3" "$4")" \
        "$(cell "$V" "$CK_PEER" "$2" "$3" "$4")" "$(ckratio "$2")"
}

method_checkpoint() {
    cat <<EOF

### Checkpoint and restore through holdfast, against raw runc and CRIU

- holdfast: a private holdfastd (a copy of the built one; own root, socket,
  namespace, journal folder and cgroup parent; \`live_restore = true\`) on
  the bench's containerd of the version, driven by its CLI: \`holdfast run -d
  --rootfs <busybox folder>\`, \`holdfast checkpoint create [--leave-running]\`,
  \`holdfast restore\`, \`holdfast export\`, \`holdfast import\`. Under it:
  containerd, our shim, \`runc checkpoint\`/\`restore\`, CRIU.
- The peer, in the same run, alternately: \`runc --criu $HF_CRIU\` ($(runc --version 2>/dev/null | head -n 1),
  CRIU $("$HF_CRIU" --version 2>/dev/null | awk '/^Version/ { print $2 }')) with its own \`--root\`, on a bundle whose
  \`config.json\` is the OCI spec holdfastd made for its container (from
  \`ctr c info --spec\`), with only the root (a second copy of the same busybox
  folder), the cgroup path and the arguments changed: \`runc run -d\`,
  \`runc checkpoint [--leave-running] --image-path … --work-path …\`,
  \`runc restore -d --bundle …\`.
- The process (the same in both): \`/bin/sh -c\` a script that points its
  stdio at the container's \`/dev/null\`; for N MiB of touched memory, a
  busybox \`dd if=/dev/urandom bs=NM count=1 iflag=fullblock\` reads N MiB into one
  buffer (anonymous memory that CRIU dumps; random, so that zstd cannot
  shrink the archive) and then blocks writing it into a pipe that nobody
  reads; the shell appends \`\$EPOCHREALTIME\` to a ticks file in its
  rootfs every ${CK_TICK} s. Sizes (\`HOLDFAST_BENCH_CKPT_MIB\`): ${CK_SIZES[*]} MiB;
  the image size below shows that CRIU dumped the memory (a run whose
  image is smaller than N MiB is an error).
- One round per size and side: start the container and wait until the
  memory is touched, a \`--leave-running\` checkpoint (then removed), a
  checkpoint that stops the container, its restore, then (N > 0) export
  and import of that checkpoint; $CK_ROUNDS round(s)
  (\`HOLDFAST_BENCH_CKPT_ROUNDS\`), holdfast then runc; each number is the
  median over the rounds.
- Times: the wall time of the command (\`holdfast …\` answers once the
  dump is written, the task stopped and deleted and the checkpoint recorded,
  or once the restored task runs; \`runc …\` returns once CRIU is done).
  After each restore the ticks must go on (checked outside the timing).
- Frozen: the longest gap between two consecutive ticks that overlaps the
  \`--leave-running\` checkpoint's call (normal gaps are about
  $(awk -v t="$CK_TICK" 'BEGIN { printf "%g", t * 1000 }') ms plus a fork or two).
- Export: \`holdfast export NAME cp -o FILE\` (zstd level 3 over a tar, with
  sha256 of every file and a manifest; fsynced) against
  \`tar -I '$CK_ZSTD' -cf FILE -C <image folder> .\` then \`sync FILE\`;
  import: \`holdfast import FILE --name NAME-i\` (validated whole, the
  container and checkpoint made under a second name) against
  \`tar -I '$CK_ZSTD' -xf FILE\` into a new folder. MB/s = the archive's
  bytes ÷ the wall time.
EOF
}

render_checkpoint() {
    local mib n who msg l
    V="$1"
    n="${R[$V|$CK_OURS|ck${CK_SIZES[0]}_n]:-${R[$V|$CK_PEER|ck${CK_SIZES[0]}_n]:-0}}"
    printf '\n### Checkpoint and restore: holdfast against raw runc + CRIU, median of %s round(s)\n\n' "$n"
    echo "| touched memory | metric | holdfast | \`runc\` + CRIU | ratio holdfast÷runc |"
    echo "| --- | --- | --- | --- | --- |"
    for mib in "${CK_SIZES[@]}"; do
        l="$(ck_label "$mib")"
        ckrow "$l | checkpoint, the container stops (ms)" "ck${mib}_dump" 1 %.1f
        ckrow "$l | restore (ms)" "ck${mib}_restore" 1 %.1f
        ckrow "$l | checkpoint image (MiB)" "ck${mib}_image" 1048576 %.1f
        ckrow "$l | \`--leave-running\` checkpoint (ms)" "ck${mib}_lr" 1 %.1f
        ckrow "$l | … the container frozen: longest gap between its ticks (ms)" "ck${mib}_frozen" 1 %.1f
        ((mib > 0)) || continue
        ckrow "$l | export (holdfast: \`export\`; runc: \`tar\` + zstd) (MB/s)" "ck${mib}_export" 1 %.1f
        ckrow "$l | import (holdfast: \`import\`; runc: \`tar -x\`) (MB/s)" "ck${mib}_import" 1 %.1f
        ckrow "$l | archive (MiB)" "ck${mib}_archive" 1048576 %.1f
    done
    for mib in "${CK_SIZES[@]}"; do
        for who in "${CK_WHO[@]}"; do
            msg="${SERR[$V|$who|checkpoint $mib]:-}"
            [[ -n "$msg" ]] || continue
            # shellcheck disable=SC2016 # markdown backquotes
            printf '\n**%s, %s:** `%s`\n' "$who" "$(ck_label "$mib")" "$(md_code "$msg")"
        done
    done
    echo
    for mib in "${CK_SIZES[@]}"; do
        l="$(ck_label "$mib")"
        goal "checkpoint of $l at most 10 % slower than raw runc" "$(ckratio "ck${mib}_dump")" 1.10
        goal "restore of $l at most 10 % slower than raw runc" "$(ckratio "ck${mib}_restore")" 1.10
    done
}

# ---------------------------------------------------------------- section: cri
# containerd's CRI plugin driving a pod (integration/src/cri.rs, a private
# containerd with CRI per run), through holdfast-cri-bench (built with the
# workspace): the outage scenario per handler, and the shims' memory of one
# pod per handler.
CRI_SECS="${HOLDFAST_BENCH_CRI_SECS:-$(q 60 10)}"
CRI_ROUNDS="${HOLDFAST_BENCH_CRI_ROUNDS:-$(q 3 1)}"
CRI_POD_N="${HOLDFAST_BENCH_CRI_POD:-5}"
CRI_OUTAGE_HANDLERS=(holdfast runc)
CRI_MEM_HANDLERS=(holdfast holdfast-per-container runc)
# The numeric keys holdfast-cri-bench prints, per measurement.
CRI_OUTAGE_KEYS=(down written written_while_down max_stall logged lost duplicated out_of_order foreign)
CRI_MEM_KEYS=(shims rss_kib pss_kib private_kib anon_kib threads)

# cri_run VERSION WHAT HANDLER ARG TMP KEYS...: one holdfast-cri-bench run;
# appends each key's value to TMP/WHAT-HANDLER-KEY, or records the error.
cri_run() {
    local version="$1" what="$2" h="$3" arg="$4" tmp="$5" line kv k bench
    shift 5
    # The fixture runs our shim from the bench's snapshot of it.
    bench="$HOLDFAST_BIN_DIR/holdfast-cri-bench"
    if ! line="$(HOLDFAST_BIN_DIR="$(snapshot_dir "$version")" "$bench" \
        "$what" "$version" "$h" "$arg" 2>"$tmp/err")"; then
        SERR[$version|$h|cri $what]="$(tail -n 5 "$tmp/err")"
        return 0
    fi
    for kv in $line; do
        k="${kv%%=*}"
        [[ " $* " == *" $k "* ]] || continue
        echo "${kv#*=}" >>"$tmp/$what-$h-$k"
    done
}

section_cri() {
    local version="$1" tmp r h k
    tmp="$(dir_of "$version")/cri-tmp"
    mkdir -p "$tmp"
    if [[ ! -x "$HOLDFAST_BIN_DIR/holdfast-cri-bench" ]]; then
        for h in "${CRI_MEM_HANDLERS[@]}"; do
            SERR[$version|$h|cri outage]="holdfast-cri-bench not built in $HOLDFAST_BIN_DIR (make build)"
        done
        return 0
    fi
    for ((r = 1; r <= CRI_ROUNDS; r++)); do
        for h in "${CRI_OUTAGE_HANDLERS[@]}"; do
            hf_log "bench: containerd $version: CRI pod through a ${CRI_SECS} s containerd outage, handler $h, round $r of $CRI_ROUNDS"
            cri_run "$version" outage "$h" "$CRI_SECS" "$tmp" "${CRI_OUTAGE_KEYS[@]}"
        done
        for h in "${CRI_MEM_HANDLERS[@]}"; do
            hf_log "bench: containerd $version: CRI pod of $CRI_POD_N containers, handler $h, round $r of $CRI_ROUNDS"
            cri_run "$version" pod-memory "$h" "$CRI_POD_N" "$tmp" "${CRI_MEM_KEYS[@]}"
        done
    done
    for h in "${CRI_MEM_HANDLERS[@]}"; do
        for k in "${CRI_OUTAGE_KEYS[@]}"; do
            [[ -s "$tmp/outage-$h-$k" ]] || continue
            R[$version|$h|cri_$k]="$(median <"$tmp/outage-$h-$k")"
            R[$version|$h|cri_n]="$(wc -l <"$tmp/outage-$h-$k")"
        done
        for k in "${CRI_MEM_KEYS[@]}"; do
            [[ -s "$tmp/pod-memory-$h-$k" ]] || continue
            R[$version|$h|crimem_$k]="$(median <"$tmp/pod-memory-$h-$k")"
            R[$version|$h|crimem_n]="$(wc -l <"$tmp/pod-memory-$h-$k")"
        done
    done
    rm -rf "$tmp"
}

method_cri() {
    cat <<EOF

### Kubernetes pods through containerd's CRI plugin

- Each measurement starts its own private containerd of the version with
  the CRI plugin (the integration tests' fixture, \`integration/src/cri.rs\`:
  own root, state, sockets, CNI bridge network, pod log folders and cgroup
  parent; images built locally and imported), and a CRI client acting as
  kubelet: \`holdfast-cri-bench\` (\`integration/src/bin\`). Handlers:
  \`holdfast\` (our shim, the shipped \`contrib/cri\` snippet, a pod's tasks
  in one shim), \`holdfast-per-container\` (our shim with \`shim_per =
  "container"\`) and \`runc\` (\`io.containerd.runc.v2\`, the Go shim, which
  groups a pod's tasks in one shim).
- Outage: a pod's container runs a busybox shell that writes the numbers
  0, 1, 2, … one per line to stdout as fast as it can and appends its count
  and \`/proc/uptime\` to a progress file (in a host folder mounted at its
  \`/tmp\`) every 100 lines. Once it writes, containerd is killed with
  \`kill -9\`, kept down ${CRI_SECS} s and started again; then the writer is
  stopped, and the pod's CRI log file (\`<log_directory>/<name>/0.log\`) is
  read back once it holds every line or stops growing. Longest stall = the
  longest time between two progress records from the kill to the restart;
  lost / duplicated / out of order compare the log's stdout lines (a \`P\`
  record joined with the next) with the numbers written. ${CRI_ROUNDS} round(s)
  (\`HOLDFAST_BENCH_CRI_ROUNDS\`), medians.
- Pod memory: a pod of ${CRI_POD_N} app containers (\`sleep infinity\`) plus
  its sandbox, 3 s after the last start; the sums over every shim process
  serving the fixture's containerd of RSS, PSS, anonymous and private
  (Private_Clean + Private_Dirty) memory from \`smaps_rollup\`, and their
  threads. PSS is the figure to compare: one shim process alone maps its
  binary's pages, which then count as private, while six processes share
  them.
EOF
}

# crirow LABEL METRIC SCALE FORMAT HANDLERS...: one row for version $V.
crirow() {
    local label="$1" metric="$2" scale="$3" fmt="$4" h out
    shift 4
    out="| $label |"
    for h in "$@"; do out+=" $(cell "$V" "$h" "$metric" "$scale" "$fmt") |"; done
    printf '%s\n' "$out"
}

render_cri() {
    local h msg what
    V="$1"
    printf '\n### A pod through a %s s containerd outage (CRI), median of %s round(s)\n\n' \
        "$CRI_SECS" "${R[$V|holdfast|cri_n]:-${R[$V|runc|cri_n]:-0}}"
    echo "| | holdfast (\`holdfast\` handler) | Go shim (\`runc\` handler) |"
    echo "| --- | --- | --- |"
    crirow "containerd down (s)" cri_down 1 %.1f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "lines written in all" cri_written 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "… while containerd was down" cri_written_while_down 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "longest stall of the container while containerd was down (s)" cri_max_stall 1 %.2f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "lines in the CRI log" cri_logged 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "lines lost" cri_lost 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "lines duplicated" cri_duplicated 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    crirow "lines out of order" cri_out_of_order 1 %.0f "${CRI_OUTAGE_HANDLERS[@]}"
    printf '\n### Shim memory of a pod of %s containers plus its sandbox (CRI), median of %s round(s)\n\n' \
        "$CRI_POD_N" "${R[$V|holdfast|crimem_n]:-0}"
    echo "| | holdfast, one shim per pod | holdfast, one shim per container | Go shim |"
    echo "| --- | --- | --- | --- |"
    crirow "shim processes" crimem_shims 1 %.0f "${CRI_MEM_HANDLERS[@]}"
    crirow "PSS, all shims (MiB)" crimem_pss_kib 1024 %.2f "${CRI_MEM_HANDLERS[@]}"
    crirow "anonymous memory (heap, stacks), all shims (MiB)" crimem_anon_kib 1024 %.2f "${CRI_MEM_HANDLERS[@]}"
    crirow "private memory, all shims (MiB; a binary mapped by one process only counts as private)" crimem_private_kib 1024 %.2f "${CRI_MEM_HANDLERS[@]}"
    crirow "RSS, all shims (MiB)" crimem_rss_kib 1024 %.2f "${CRI_MEM_HANDLERS[@]}"
    crirow "threads, all shims" crimem_threads 1 %.0f "${CRI_MEM_HANDLERS[@]}"
    for h in "${CRI_MEM_HANDLERS[@]}"; do
        for what in outage pod-memory; do
            msg="${SERR[$V|$h|cri $what]:-}"
            [[ -n "$msg" ]] || continue
            # shellcheck disable=SC2016 # markdown backquotes
            printf '\n**%s, %s:** `%s`\n' "$h" "$what" "$(md_code "$msg")"
        done
    done
    echo
    goal "holdfast's pod shim PSS at most a quarter of the Go shim's" \
        "$(ratio_of "$V" holdfast runc crimem_pss_kib)" 0.25
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
- shims: ours \`$HF_SHIM_NAME\` (${SHIM_INFO:-not built}); Go \`containerd-shim-runc-v2\` from each containerd's own package$(manager_line)$(checkpoint_line)
- command: \`$(command_line)\`$( ((QUICK)) && echo " (quick mode: fewer rounds, smaller and shorter runs)")
- sections: ${SECTIONS[*]}

## Goals

- private memory per shim at most a quarter of the Go shim's (ratio ≤ 0.25)
- start latency no worse than the Go shim's (ratio ≤ 1, read with the noise of a shared 2-core machine in mind)
- log throughput at least the Go shim's (ratio ≥ 1; 0.95 allowed for noise)
- during a containerd outage: zero seconds blocked, zero lines lost$(checkpoint_goal)

## Method

- One private containerd per version (own root, state and sockets, CRI
  disabled), one namespace and one cgroup parent per run.
- Both shims run from copies of their binaries taken when the bench starts
  (first on that containerd's PATH, written back with \`sync\` so that no
  dirty page-cache page of a binary counts as a shim's private memory), so a
  rebuild during the run changes nothing and no process outside the bench
  shares their pages.
- Memory comes from \`/proc/<shim>/smaps_rollup\` (RSS, PSS, private =
  Private_Clean + Private_Dirty) and threads from \`/proc/<shim>/status\`;
  the shim is the parent of the task's init pid. MiB = 1024 KiB; MB = 10^6
  bytes, GB = 10^9 bytes.
- The machine is shared and noisy: read differences of a few percent as
  noise.
EOF
    for s in "${SECTIONS[@]}"; do
        if declare -F "method_$s" >/dev/null; then "method_$s"; fi
    done
    for version in "${VERSIONS[@]}"; do
        printf '\n## containerd %s (%s)\n\n' "$version" "$(containerd_version "$version")"
        for s in "${SECTIONS[@]}"; do "render_$s" "$version"; done
    done
}

# manager_line: the manager section's daemons, as a line of the header.
manager_line() {
    [[ " ${SECTIONS[*]} " == *" manager "* ]] || return 0
    printf '\n- manager: ours holdfastd (%s); peer Debian'"'"'s dockerd %s' \
        "$([[ -x "$BENCH_DIR/ours/holdfastd" ]] && "$BENCH_DIR/ours/holdfastd" --version | awk '{ print $2 }' || echo not built)" \
        "${MGR_PEER_VERSION:-(${MGR_PEER_MISSING:-not run})}"
}

# checkpoint_goal, checkpoint_line: the checkpoint section's goal and
# header line, when it ran.
checkpoint_goal() {
    [[ " ${SECTIONS[*]} " == *" checkpoint "* ]] || return 0
    # shellcheck disable=SC2016 # markdown backquotes
    printf '\n- checkpoint and restore through holdfast at most 10 %% slower than raw `runc checkpoint` / `runc restore` (ratio ≤ 1.10)'
}

checkpoint_line() {
    [[ " ${SECTIONS[*]} " == *" checkpoint "* ]] || return 0
    # shellcheck disable=SC2016 # markdown backquotes
    printf '\n- checkpoint: ours holdfastd (%s) through containerd, our shim, runc and CRIU; peer %s with `--criu %s` (CRIU %s)' \
        "$([[ -x "$BENCH_DIR/ours/holdfastd" ]] && "$BENCH_DIR/ours/holdfastd" --version | awk '{ print $2 }' || echo not built)" \
        "$(runc --version 2>/dev/null | head -n 1)" "$HF_CRIU" \
        "$("$HF_CRIU" --version 2>/dev/null | awk '/^Version/ { print $2 }')"
}

# command_line: how this report was made (the knobs that were set).
command_line() {
    local v val cmd="bash scripts/bench.sh"
    for v in $(compgen -e | grep '^HOLDFAST_BENCH_' | grep -v '^HOLDFAST_BENCH_OUT$' | sort -r || true); do
        val="${!v}"
        [[ "$val" != *[[:space:]]* ]] || val="'$val'"
        cmd="$v=$val $cmd"
    done
    [[ "$cmd" != "bash scripts/bench.sh" ]] || cmd="make bench"
    printf '%s\n' "$cmd"
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

# daemon_namespaces VERSION: the containerd namespaces of the daemons the
# run's sections start (holdfastd, dockerd): many containers each, and
# their daemons may be gone when the run is cleaned up.
daemon_namespaces() {
    if [[ " ${SECTIONS[*]} " == *" manager "* ]]; then mgr_namespaces "$1"; fi
    if [[ " ${SECTIONS[*]} " == *" checkpoint "* ]]; then ck_ns "$1"; fi
}

# version_cgroups VERSION: the folders (below every cgroup hierarchy's
# mount point) of the containers the sections ran on VERSION: ctr's
# <parent>/<v>-<id>, the daemons' parents hd<v> and dk<v>, and ck<v>.
version_cgroups() {
    local v="${1//./}" root d
    for root in /sys/fs/cgroup /sys/fs/cgroup/*; do
        for d in "$root$HF_CGROUP_PARENT/$v-"* "$root$HF_CGROUP_PARENT/hd$v" \
            "$root$HF_CGROUP_PARENT/dk$v" "$root$HF_CGROUP_PARENT/ck$v"; do
            [[ -d "$d" ]] && printf '%s\n' "$d"
        done
    done
    return 0
}

# kill_version_tasks VERSION: kill -9, directly, every process in the
# version's container cgroups (thawed first: an interrupted checkpoint may
# leave one frozen) and every shim serving the daemons' namespaces on its
# containerd. Removing tasks through ctr one by one is no way to clean up
# after an interrupted run: with dockerd gone, its Go shims hang on Delete
# (their FIFO reader is gone) until ctr's timeout, for hundreds of tasks.
kill_version_tasks() {
    local version="$1" dir try d pid ns pids args i
    local -A daemon_ns=()
    dir="$(dir_of "$version")"
    for ((try = 0; try < 5; try++)); do
        pids=()
        while IFS= read -r d; do
            [[ ! -f "$d/freezer.state" ]] || echo THAWED >"$d/freezer.state" 2>/dev/null || true
            [[ ! -f "$d/cgroup.freeze" ]] || echo 0 >"$d/cgroup.freeze" 2>/dev/null || true
            while read -r pid; do pids+=("$pid"); done 2>/dev/null <"$d/cgroup.procs" || true
        done < <(version_cgroups "$version" | xargs -r -I{} find {} -type d 2>/dev/null)
        ((${#pids[@]})) || break
        kill -9 "${pids[@]}" 2>/dev/null || true
        sleep 0.1
    done
    # Shims: their -namespace argument (read without a fork per shim: there
    # may be thousands).
    for ns in $(daemon_namespaces "$version"); do daemon_ns[$ns]=1; done
    for pid in $(hf_shim_pids "$dir"); do
        mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || continue
        for ((i = 0; i + 1 < ${#args[@]}; i++)); do
            [[ "${args[i]}" == -namespace ]] || continue
            [[ -z "${daemon_ns[${args[i + 1]}]:-}" ]] || kill -9 "$pid" 2>/dev/null || true
            break
        done
    done
}

# cleanup_version VERSION: everything the sections made on VERSION's
# containerd, and that containerd.
cleanup_version() {
    local ns
    mgr_cleanup "$1"
    ck_cleanup "$1"
    kill_version_tasks "$1"
    # The daemons' namespaces need no ctr calls now: their tasks are dead,
    # and containerd's records go with its folder; only runc's state of
    # them lives outside it.
    hf_cleanup "$(dir_of "$1")" "$(ns_of "$1")"
    for ns in $(daemon_namespaces "$1"); do rm -rf "/run/containerd/runc/$ns"; done
    # Deleting dockerd's tasks makes runc create its state folder again.
    rm -rf "$(mgr_exec_root "$1")"
}

cleanup_all() {
    local version t0="$EPOCHREALTIME"
    [[ -z "$INTERRUPTED" ]] || hf_log "bench: interrupted ($INTERRUPTED); cleaning up"
    for version in "${VERSIONS[@]}"; do cleanup_version "$version"; done
    hf_remove_cgroups "$HF_CGROUP_PARENT"
    # FIFOs a killed ctr left, and journals of our shim's default folder
    # (the bench's own journals are under BENCH_DIR).
    hf_remove_client_fifos "hfb$RUN_ID-*"
    for version in "${VERSIONS[@]}"; do
        rm -rf "/var/lib/holdfast/logs/$(ns_of "$version")"
    done
    rm -rf "$BENCH_DIR"
    [[ -z "$INTERRUPTED" ]] ||
        hf_log "bench: cleaned up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
}

# The signal that interrupted the run, if one did.
INTERRUPTED=""

main() {
    local version s rt status=0 start=$SECONDS
    SHIM_SRC="$HOLDFAST_BIN_DIR/$HF_SHIM_NAME"
    # A previous run killed hard may have left its folder behind.
    for version in "${VERSIONS[@]}"; do hf_cleanup "$(dir_of "$version")"; done
    rm -rf "$BENCH_DIR"
    # A signal's trap runs with the redirections of the command it cut
    # short (e.g. stderr into a scratch file): clean up with the run's own.
    # Without errexit: a step that fails (a file containerd removed in the
    # meantime) must not end the cleanup there.
    exec {BENCH_STDOUT}>&1 {BENCH_STDERR}>&2
    trap 'set +e; cleanup_all >&"$BENCH_STDOUT" 2>&"$BENCH_STDERR"' EXIT
    trap 'INTERRUPTED=SIGINT; exit 130' INT
    trap 'INTERRUPTED=SIGTERM; exit 143' TERM
    trap 'INTERRUPTED=SIGHUP; exit 129' HUP
    mkdir -p "$BENCH_DIR"
    hf_copy_rootfs "$BENCH_DIR/rootfs"
    mkdir -p "$BENCH_DIR/rootfs/bench"
    # The throughput writer's file: 65536 lines of 128 bytes (8 MiB).
    awk 'BEGIN { s = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        for (i = 1; i <= 65536; i++) printf "%08d %s %s\n", i, s, substr(s, 1, 55) }' \
        >"$BENCH_DIR/rootfs/bench/data"
    [[ "$(stat -c %s "$BENCH_DIR/rootfs/bench/data")" == "$TP_FILE_BYTES" ]] || hf_die "bad throughput data file"
    snapshot_ours

    for version in "${VERSIONS[@]}"; do
        # Both shims run from private copies made now: a rebuild of ours
        # during the run cannot change what is measured, and no process
        # outside the bench shares their pages (which would lower PSS).
        snapshot_shims "$version"
        # Write the fresh copies back: dirty page-cache pages of a mapped
        # binary would count as the shim's private memory.
        sync
        HOLDFAST_BIN_DIR="$(snapshot_dir "$version")" hf_containerd_start "$version" "$(dir_of "$version")"
        mkdir -p "$(dir_of "$version")/logs"
        for s in "${SECTIONS[@]}"; do "section_$s" "$version"; done
        cleanup_version "$version"
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
