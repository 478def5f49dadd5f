#!/bin/sh
# Runs one libFuzzer target for a bounded time from its seed corpus.
#
#   fuzz/run.sh BUILD/fuzz_NAME SECONDS [extra libFuzzer flags]
#
# The seed corpus is fuzz/NAME/corpus (read only); what the run finds that
# is new goes to BUILD/fuzz-out/NAME/corpus, a crashing input to
# BUILD/fuzz-out/NAME/ (crash-*, leak-*, timeout-*): rerun it with
# `BUILD/fuzz_NAME FILE`. Exits non-zero on any finding (libFuzzer's own
# exit code). The last lines printed are the run's statistics:
# stat::number_of_executed_units is the number of executions.
set -eu
bin=$1
secs=$2
shift 2
name=$(basename "$bin")
name=${name#fuzz_}
src=${QRUX_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
out=$(dirname "$bin")/fuzz-out/$name
mkdir -p "$out/corpus"
# Leaks are findings too; 2 GB RSS and 10 s per input are findings.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$out/corpus" "$src/fuzz/$name/corpus"
