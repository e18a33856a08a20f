#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for DURATION each (issue 16, docs/hardening.md
# "Fuzzing"), two at a time, and prints per target: executions, coverage (cov
# and ft as libFuzzer reports them) and crashes.
#
#   tools/fuzz.sh 10m            # every target 10 minutes
#   tools/fuzz.sh 30s wire torch # only these targets
#   JOBS=1 tools/fuzz.sh 1h      # one at a time
#
# Needs a nightly toolchain and cargo-fuzz; it installs neither. A target that
# crashes is restarted for the rest of its time (its crash files counted), so
# every target gets its full time. Seeds: fuzz/corpus/TARGET (committed, read
# only); what the fuzzer adds goes to fuzz/target/corpus/TARGET and crash
# files to fuzz/artifacts/TARGET/.
set -euo pipefail

usage() {
    echo "usage: tools/fuzz.sh DURATION [TARGET...]   (DURATION: 90, 90s, 10m, 1h)" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
case "$1" in
    *[0-9]h) secs=$(( ${1%h} * 3600 )) ;;
    *[0-9]m) secs=$(( ${1%m} * 60 )) ;;
    *[0-9]s) secs=${1%s} ;;
    *[0-9]) secs=$1 ;;
    *) usage ;;
esac
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || usage
shift

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! command -v rustup >/dev/null; then
    echo "fuzz.sh: rustup is missing (https://rustup.rs), then: rustup toolchain install nightly" >&2
    exit 1
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; install it with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 1
fi

all=$(cargo +nightly fuzz list)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no target $t (targets: $(echo $all))" >&2; exit 2; }
done

# No sanitizer: the code under test is safe Rust, so what the fuzzer looks for
# is a panic (overflow checks are on: cargo fuzz builds with debug assertions),
# an abort or a hang; AddressSanitizer would halve the executions for nothing.
echo "building ${#targets[@]} targets (cargo +nightly fuzz build -s none)..." >&2
cargo +nightly fuzz build -s none >&2
bin="$root/fuzz/target/x86_64-unknown-linux-gnu/release"

logs="$root/fuzz/target/logs"
mkdir -p "$logs"

# One target for `secs` seconds, restarted after a crash; writes its summary
# line to $logs/TARGET.summary.
run_target() {
    local t=$1 start end left runs=0 execs=0 cov=- ft=- corp=-
    local work="$root/fuzz/target/corpus/$t" art="$root/fuzz/artifacts/$t"
    mkdir -p "$work" "$art" "$root/fuzz/corpus/$t"
    local marker="$logs/$t.start"
    : >"$logs/$t.log"
    touch "$marker"
    start=$(date +%s)
    end=$(( start + secs ))
    while left=$(( end - $(date +%s) )); (( left > 0 && runs < 50 )); do
        runs=$(( runs + 1 ))
        "$bin/$t" "$work" "$root/fuzz/corpus/$t" -max_total_time="$left" -timeout=60 \
            -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" \
            >"$logs/$t.run" 2>&1 || true
        cat "$logs/$t.run" >>"$logs/$t.log"
        # Executions of this run: from the final stats, or the last status line.
        local n
        n=$(tac "$logs/$t.run" | grep -m1 -oE 'stat::number_of_executed_units: [0-9]+|^#[0-9]+' |
            grep -oE '[0-9]+$' || true)
        execs=$(( execs + ${n:-0} ))
    done
    local last
    last=$(grep -E '^#[0-9]+.*cov: ' "$logs/$t.log" | tail -1 || true)
    [[ -n $last ]] && {
        cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
        ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
        corp=$(grep -oE 'corp: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    }
    local crashes
    crashes=$(find "$art" -type f -newer "$marker" | wc -l)
    printf '%-11s %7s %5s %12s %7s %8s %7s %8s\n' "$t" "$(( $(date +%s) - start ))s" "$runs" \
        "$execs" "$cov" "$ft" "$corp" "$crashes" >"$logs/$t.summary"
}

jobs_max=${JOBS:-2}
echo "fuzzing ${#targets[@]} targets for ${secs}s each, $jobs_max at a time; logs in $logs" >&2
for t in "${targets[@]}"; do
    while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n || true; done
    run_target "$t" &
done
wait
rm -rf /dev/shm/edgebone-fuzz-* 2>/dev/null || true

printf '%-11s %7s %5s %12s %7s %8s %7s %8s\n' target time runs executions cov ft corpus crashes
status=0
for t in "${targets[@]}"; do
    cat "$logs/$t.summary"
    [[ $(awk '{print $8}' "$logs/$t.summary") == 0 ]] || status=1
done
(( status == 0 )) || echo "crash files: fuzz/artifacts/TARGET/ (replay: fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE)" >&2
exit $status
