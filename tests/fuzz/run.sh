#!/bin/sh
# Runs the libFuzzer harnesses `make fuzz` built: run.sh BUILD RUNS [NAME...]
#
# For each harness (every BUILD/fuzz/NAME, or the NAMEs given): writes its
# seeds with its own encoders (RLHF_FUZZ_SEEDS, see tests/fuzz/fuzz.h) into
# BUILD/fuzz-seeds/NAME, then runs RUNS inputs over the working corpus
# BUILD/fuzz-corpus/NAME (kept between runs, grows), the seeds and the
# committed corpus tests/fuzz/corpus/NAME if any, with tests/fuzz/NAME.dict
# as a dictionary if present. A crash, leak, UB report, timeout or
# out-of-memory is a finding: its input is saved in BUILD/fuzz-findings/NAME/
# (emptied when the harness runs again: copy it out), replayed once with the
# harness's logs visible, and the run fails.
#
# Prints per harness the inputs executed, exec/s, libFuzzer's coverage
# figures (cov: edges, ft: features), the corpus size and the findings, and
# writes the same as tab-separated lines to BUILD/fuzz-report.tsv.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD RUNS [NAME...]" >&2
    exit 2
fi
build="$1"
runs="$2"
shift 2
cd "$(dirname "$0")/../.."

if [ $# -gt 0 ]; then
    names="$*"
else
    names="$(cd "$build/fuzz" && ls)"
fi

# Stack traces with file and line when llvm-symbolizer is on the PATH.
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export UBSAN_OPTIONS

report="$build/fuzz-report.tsv"
printf 'harness\tinputs\texec_per_s\tcov\tft\tcorpus\tfindings\tseconds\n' >"$report"
n_harness=0
n_findings=0
failed=""
for name in $names; do
    bin="$build/fuzz/$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz: no harness '$name' in $build/fuzz" >&2
        exit 2
    fi
    seeds="$build/fuzz-seeds/$name"
    corpus="$build/fuzz-corpus/$name"
    findings="$build/fuzz-findings/$name"
    log="$build/fuzz-logs/$name.log"
    rm -rf "$seeds" "$findings" # an earlier run's findings: replayed from the log, or copied out
    mkdir -p "$corpus" "$findings" "$(dirname "$log")" "$(dirname "$seeds")"
    RLHF_FUZZ_SEEDS="$seeds" "$bin" >/dev/null
    dirs="$corpus $seeds"
    if [ -d "tests/fuzz/corpus/$name" ]; then
        dirs="$dirs tests/fuzz/corpus/$name"
    fi
    dict=""
    if [ -f "tests/fuzz/$name.dict" ]; then
        dict="-dict=tests/fuzz/$name.dict"
    fi
    t0="$(date +%s.%N)"
    rc=0
    # -close_fd_mask=2: the library's log lines (every refused input is
    # logged) stay out of the run; libFuzzer and the sanitizers keep
    # reporting on their own copy of stderr.
    # shellcheck disable=SC2086
    "$bin" -runs="$runs" -timeout=20 -print_final_stats=1 -close_fd_mask=2 \
        -artifact_prefix="$findings/" $dict $dirs >"$log" 2>&1 || rc=$?
    t1="$(date +%s.%N)"
    found="$(ls "$findings" | wc -l)"
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        found=1 # a failure that left no input behind is still a finding
    fi
    inputs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    # libFuzzer's own average is in whole seconds (0 for a short run): from the wall time.
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    eps="$(awk -v n="${inputs:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')"
    # The last status line: "#N DONE cov: C ft: F corp: K/Sb ..."
    status="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    cov="$(echo "$status" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')"
    ft="$(echo "$status" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')"
    corp="$(echo "$status" | sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')"
    printf 'fuzz: %-16s %9s inputs  %6s exec/s  cov %5s  ft %6s  corpus %-12s %d finding(s)  %ss\n' \
        "$name" "${inputs:-?}" "$eps" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found" "$secs"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n' "$name" "${inputs:-}" "$eps" "${cov:-}" \
        "${ft:-}" "${corp:-}" "$found" "$secs" >>"$report"
    n_harness=$((n_harness + 1))
    if [ "$found" -gt 0 ]; then
        n_findings=$((n_findings + found))
        failed="$failed $name"
        echo "fuzz: $name: libFuzzer's report ($log):"
        grep -v -E '^#[0-9]+|^INFO:' "$log" | tail -n 60
        for f in "$findings"/*; do
            [ -f "$f" ] || continue
            echo "fuzz: $name: replaying $f with the logs visible:"
            "$bin" "$f" 2>&1 | tail -n 40 || true
            break
        done
    fi
done
echo "fuzz: $n_harness harnesses, $n_findings findings"
if [ "$n_findings" -gt 0 ]; then
    echo "fuzz: findings in:$failed (inputs in $build/fuzz-findings/)" >&2
    exit 1
fi
