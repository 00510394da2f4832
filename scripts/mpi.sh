#!/usr/bin/env bash
# The multi-process merge over MPI (`pleas` built with `--features mpi`), as CI runs it:
#
# 1. clippy over `pleas` with the feature (in target/, sharing what the workspace's clippy
#    checked), and a release build of it in target/mpi;
# 2. the bundled 784-64-64 MLP pair merged at budget 1.2 by one plain process (no mpirun) and
#    by `mpirun -n 1`, `-n 2` and `-n 3`: every merged.safetensors must be byte-identical to
#    the plain one;
# 3. rank 1 of 3 told to fail (PLEAS_MPI_TEST_FAIL_RANK=1, at its 2nd agreement: the matching
#    statistics): the job must exit with 2 and leave no OUT_DIR;
# 4. rank 1 of 2 killed in the middle of a ResNet-20 merge (after the first least-squares
#    pass): with SIGTERM the rank reports itself as failed and the job exits with 2; with
#    SIGKILL OpenMPI's mpirun kills the other rank and exits with the killed rank's status,
#    137 (128 + 9), which is what that check accepts (no process can turn a SIGKILL into
#    exit 2); OUT_DIR must not exist after either.
#
# Needs mpirun/mpicc (Debian: openmpi-bin, libopenmpi-dev) and libclang (libclang-dev) for
# the `mpi` crate's bindings. Runs as root in CI, hence OMPI_ALLOW_RUN_AS_ROOT.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cargo clippy -q -p pleas --all-targets --features mpi -- -D warnings
CARGO_TARGET_DIR=target/mpi cargo build -q --release -p pleas --features mpi
pleas="$PWD/target/mpi/release/pleas"

tmp=$(mktemp -d /tmp/pleas-mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=tests/fixtures/fashion
mlp=("$fx/mlp64_split/fashion_mlp_split_m0_s6.safetensors"
    "$fx/mlp64_split/fashion_mlp_split_m1_s7.safetensors"
    --data "$fx/eval.safetensors" --budget 1.2 --threads 1 --quiet)
mpirun=(mpirun --oversubscribe)

t0=$SECONDS
"$pleas" merge "${mlp[@]}" -o "$tmp/plain"
echo "plain: $((SECONDS - t0)) s"
for k in 1 2 3; do
    t0=$SECONDS
    "${mpirun[@]}" -n "$k" "$pleas" merge "${mlp[@]}" -o "$tmp/n$k"
    cmp "$tmp/plain/merged.safetensors" "$tmp/n$k/merged.safetensors"
    grep -q "\"ranks\": $k," "$tmp/n$k/report.json"
    echo "mpirun -n $k: merged.safetensors byte-identical to the plain run ($((SECONDS - t0)) s)"
done

# No OUT_DIR at all after a failed job (the merge creates it only when writing).
no_out_dir() {
    if [ -e "$1" ]; then
        echo "a failed MPI merge left $1:"
        ls -la "$1"
        exit 1
    fi
}

status=0
PLEAS_MPI_TEST_FAIL_RANK=1 "${mpirun[@]}" -n 3 "$pleas" merge "${mlp[@]}" -o "$tmp/fail" \
    2>"$tmp/fail.err" || status=$?
if [ "$status" -ne 2 ] || ! grep -q "error: rank 1 of 3 failed: .*PLEAS_MPI_TEST_FAIL_RANK" "$tmp/fail.err"; then
    echo "a failing rank: expected exit 2 and rank 1's error, got exit $status:"
    cat "$tmp/fail.err"
    exit 1
fi
no_out_dir "$tmp/fail"
echo "a failing rank: exit 2, $(grep -c '^error:' "$tmp/fail.err") error line, no OUT_DIR"

rn20=("$fx/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors"
    "$fx/rn20w1_split/fashion_resnet20_w1_split_m1_s3.safetensors"
    --data "$fx/eval.safetensors" --budget 1.2 --threads 1 --json)

# kill_rank SIGNAL NAME: a 2-rank ResNet-20 merge whose rank 1 gets SIGNAL after rank 0 has
# reported its first least-squares pass; sets $status to mpirun's exit status.
kill_rank() {
    local sig=$1 name=$2
    "${mpirun[@]}" -n 2 "$pleas" merge "${rn20[@]}" -o "$tmp/$name" >"$tmp/$name.out" \
        2>"$tmp/$name.err" &
    local launcher=$!
    # Rank 0 prints one JSON event per finished pass.
    for _ in $(seq 1200); do
        grep -q '"done":1,.*"event":"step","stage":"least squares"' "$tmp/$name.out" && break
        kill -0 "$launcher" 2>/dev/null || break
        sleep 0.1
    done
    local victim="" p
    for p in $(pgrep -P "$launcher"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then
            victim=$p
        fi
    done
    if [ -z "$victim" ]; then
        echo "no rank 1 to kill (the merge ended early?)"
        cat "$tmp/$name.out" "$tmp/$name.err"
        exit 1
    fi
    kill "-$sig" "$victim"
    status=0
    wait "$launcher" || status=$?
    if grep -q '"event":"done"' "$tmp/$name.out"; then
        echo "a rank killed with $sig: the merge finished anyway"
        exit 1
    fi
    no_out_dir "$tmp/$name"
}

# A rank stopped by SIGTERM (what `kill`, a batch system or an OOM killer's first try send) is
# a failed rank: the job exits with 2 and says which rank stopped.
kill_rank TERM term
if [ "$status" -ne 2 ] || ! grep -q "error: rank 1 of 2 stopped by SIGTERM" "$tmp/term.err"; then
    echo "a rank stopped by SIGTERM: expected exit 2 and rank 1's error line, got exit $status:"
    cat "$tmp/term.out" "$tmp/term.err"
    exit 1
fi
echo "a rank killed with SIGTERM mid-merge: exit 2, rank 1 named, no OUT_DIR"

# SIGKILL cannot be caught: mpirun kills the other rank and exits with the killed rank's
# status, 137 (128 + 9).
kill_rank KILL killed
if [ "$status" -ne 137 ]; then
    echo "a rank killed with SIGKILL: expected mpirun's exit 137, got exit $status:"
    cat "$tmp/killed.out" "$tmp/killed.err"
    exit 1
fi
echo "a rank killed with SIGKILL mid-merge: mpirun exit 137, no OUT_DIR"
