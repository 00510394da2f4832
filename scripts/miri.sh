#!/usr/bin/env bash
# Miri over the no_std core (`pleas-core`): its unit tests and doctests, with the `alloc`
# layers, interpreted for undefined behaviour and arithmetic overflow.
#
#   scripts/miri.sh            the core's unit tests and doctests (~2-3 min), then the C API's
#                              Rust tests (capi/tests/capi.rs: every entry point's pointer and
#                              length checks, the crate with the project's `unsafe`; ~1.5 min);
#                              run by .ci/run
#   MIRI_FULL=1 scripts/miri.sh
#                              also a selection of the core's integration tests in tests/:
#                              GEMM, SYRK, the non-finite scans and views, with matrix
#                              dimensions shrunk under cfg(miri) (tests/src/matrices.rs) and
#                              PROPTEST_CASES=1 unless set
#
# pleas-core's own `unsafe` is confined to the x86-64 SIMD paths (`simd`, the AVX2/AVX-512
# micro-kernels); under Miri the CPU probe reports no AVX, so the portable path runs. What Miri
# checks is the `unsafe` of what it runs on: `wide`/`safe_arch` SIMD intrinsics, `bytemuck`
# casts, `heapless`, and libm. Problem sizes shrink under `cfg(miri)` (the tests say where): Miri
# interprets about a million times slower, ~0.05 s for one 20-column auction row scan.
#
# Knobs (environment):
# - MIRI_CPU (default x86-64-v3): the target CPU the code is built for, pinned so that the
#   run does not depend on the machine (Miri emulates the intrinsics). x86-64-v3 takes
#   `wide`'s AVX2/FMA code in the portable path; MIRI_CPU=x86-64 the SSE2 baseline that
#   release builds use. The same flags go to rustdoc, so doctests and the library agree on target
#   features (a doctest built without them calling AVX code is UB to Miri).
# - pleas-core's `soft-floats` feature builds libm with `force-soft-floats`: its x86 `sqrt` is
#   inline assembly, which Miri cannot run; the soft-float `sqrt` is correctly rounded too.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cpu="${MIRI_CPU:-x86-64-v3}"
export RUSTFLAGS="-C target-cpu=$cpu"
export RUSTDOCFLAGS="-C target-cpu=$cpu"
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
start=$(date +%s)
cargo +nightly miri test -p pleas-core --features alloc,soft-floats
# The C API converts caller pointers into slices: Miri checks each conversion the tests make
# (its test builds use soft-float libm through a dev-dependency).
(cd capi && cargo +nightly miri test --test capi)
if [ "${MIRI_FULL:-0}" = 1 ]; then
    # proptest reads its regression files: let the tests see the file system.
    PROPTEST_CASES="${PROPTEST_CASES:-1}" MIRIFLAGS="$MIRIFLAGS -Zmiri-disable-isolation" \
        cargo +nightly miri test -p pleas-tests --features pleas-core/soft-floats \
        --test gemm --test syrk --test finite --test view
fi
echo "miri: ok in $(( $(date +%s) - start )) s"
