#!/usr/bin/env bash
# Runs every fuzz target, one after the other (one libFuzzer process at a time), for SECONDS
# each (default 600) on its corpus, and prints libFuzzer's final stats line of each run.
# Logs go to fuzz/logs/TARGET.log; findings to fuzz/artifacts/TARGET/.
#
#   fuzz/run_all.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p logs
cargo +nightly fuzz build || exit 2
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    rm -f fuzz-0.log
    cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=60 -jobs=1 -workers=1 >"logs/$t.outer.log" 2>&1
    rc=$?
    # With -jobs, libFuzzer writes the run's own output to fuzz-0.log.
    [ -f fuzz-0.log ] && mv fuzz-0.log "logs/$t.log"
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$t.log" 2>/dev/null | tail -1)
    if [ $rc -ne 0 ] || grep -qE 'ERROR: libFuzzer|panicked at' "logs/$t.log" "logs/$t.outer.log"; then
        echo "$t: FINDING (exit $rc), see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        status=1
    fi
    echo "$t: ${stats:-no DONE line, see fuzz/logs/$t.log}"
done
exit $status
