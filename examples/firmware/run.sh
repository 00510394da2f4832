#!/usr/bin/env bash
# Builds the pleas C API for thumbv7em-none-eabihf, compiles and links the firmware demo with
# arm-none-eabi-gcc and newlib (nano), prints the ELF's size and runs it under
# qemu-system-arm -M mps2-an386 with semihosting, within a timeout; then merges the same pair
# on the same images on the host with the `pleas` command and compares the accuracies
# (host_reference.py), and evaluates the CNN pair with `pleas eval` on the same test images.
# Exits with the firmware's status (0 when every check passed), or 1 when the host's
# accuracies differ from the device's at three decimals.
#
# Needs: rustup target thumbv7em-none-eabihf; Debian packages gcc-arm-none-eabi,
# libnewlib-arm-none-eabi, qemu-system-arm; a host C compiler and python3.
#
# Generated data go to $BUILD/generated (not committed): the two fashion MLPs, the two fashion
# CNNs (one parameter array each) and the merge and test images as headers of const arrays
# (they land in flash), and the buffers' sizes (mlp_plan.h, cnn_plan.h), planned by
# host/host_merge.c and host/cnn_sizes.c through the host build of the C API.
# Settings (environment):
#   BUDGETS      merge budgets run on the device, e.g. "1.0 1.2 2.0" (default 1.2)
#   RIDGE_TOWARD what the ridge pulls towards: average (default; the first layer is then a copy
#                of the permute-and-average weights, its exact fit) or zero (every layer is
#                solved, the first in sample space)
#   MERGE_ROWS   rows of x_match used as merge images (default ::8: 250, 25 per class)
#   TEST_ROWS    rows of x_test used as test images (default ::5: 2000)
#   PLEAS        command running the host CLI (default: target/release/pleas if built, else
#                cargo run --release -p pleas --); HOST_CHECK=0 skips the host comparison
#   CNN          1 (default): also evaluate the CNN pair on the device and compare with
#                `pleas eval`, and merge it on the device at CNN_BUDGETS and compare with the
#                host C API (bits of the merged parameters) and with `pleas merge` +
#                `pleas eval` (accuracies); 0: the MLP merge only
#   CNN_BUDGETS  budgets of the device's CNN merge (default "1.0 1.2")
#   CNN_MERGE_ROWS rows of x_match the CNN merge uses (default ::20: 100, 10 per class)
#   TIMEOUT      seconds for QEMU (default 300); FIRMWARE_SRCS extra C sources
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BUILD="${BUILD:-$here/build}"
TIMEOUT="${TIMEOUT:-300}"
BUDGETS="${BUDGETS:-1.2}"
RIDGE_TOWARD="${RIDGE_TOWARD:-average}"
case "$RIDGE_TOWARD" in
average) toward_c=PLEAS_MLP_RIDGE_TOWARD_AVERAGE ;;
zero) toward_c=PLEAS_MLP_RIDGE_TOWARD_ZERO ;;
*)
    echo "RIDGE_TOWARD must be average or zero, not '$RIDGE_TOWARD'" >&2
    exit 2
    ;;
esac
MERGE_ROWS="${MERGE_ROWS:-::8}"
CNN_BUDGETS="${CNN_BUDGETS:-1.0 1.2}"
CNN_MERGE_ROWS="${CNN_MERGE_ROWS:-::20}"
TEST_ROWS="${TEST_ROWS:-::5}"
HOST_CHECK="${HOST_CHECK:-1}"
CNN="${CNN:-1}"
case "$CNN" in
0 | 1) ;;
*)
    echo "CNN must be 0 or 1, not '$CNN'" >&2
    exit 2
    ;;
esac
gen="$BUILD/generated"
mkdir -p "$gen"

echo "== generated data (gen_data.py): weights, merge images x_match[$MERGE_ROWS], test images x_test[$TEST_ROWS]"
fx="$root/tests/fixtures/fashion"
specs=(a="$fx/mlp64_split/fashion_mlp_split_m0_s6.safetensors"
    b="$fx/mlp64_split/fashion_mlp_split_m1_s7.safetensors"
    "data=$fx/eval.safetensors:x_match[$MERGE_ROWS],x_test[$TEST_ROWS],y_test[$TEST_ROWS]")
python3 "$here/gen_data.py" "$gen/mlp64_split.h" "${specs[@]}"
python3 "$here/gen_data.py" --shapes-only "$gen/mlp64_split_shapes.h" "${specs[@]}"
# The CNN pair: each model's parameters joined into one array, in the layer order of
# src/cnn_graph.h (batch-norm as gamma, beta, running mean, running variance).
cnn_params="params=conv1.weight+bn1.weight+bn1.bias+bn1.running_mean+bn1.running_var"
cnn_params+="+conv2.weight+bn2.weight+bn2.bias+bn2.running_mean+bn2.running_var"
cnn_params+="+conv3.weight+bn3.weight+bn3.bias+bn3.running_mean+bn3.running_var"
cnn_params+="+head.weight+head.bias"
python3 "$here/gen_data.py" "$gen/cnn_split.h" \
    a="$fx/cnn_split/fashion_cnn_split_m0_s8.safetensors:$cnn_params" \
    b="$fx/cnn_split/fashion_cnn_split_m1_s9.safetensors:$cnn_params" \
    "cnn=$fx/eval.safetensors:x_match[$CNN_MERGE_ROWS]"

echo "== merge buffers planned on the host (budgets: $BUDGETS; ridge towards $RIDGE_TOWARD)"
(cd "$root/capi" && cargo build -q)
gcc -std=c11 -O1 -Wall -Wextra -Werror -I"$root/capi/include" -I"$here/src" -I"$gen" \
    -DMERGE_RIDGE_TOWARD="$toward_c" \
    "$here/host/host_merge.c" "$root/capi/target/debug/libpleas_capi.a" -lpthread -ldl -lm \
    -o "$BUILD/host_merge"
# shellcheck disable=SC2086 # one argument per budget
"$BUILD/host_merge" sizes $BUDGETS >"$gen/mlp_plan.h"
grep "^#define MLP_" "$gen/mlp_plan.h"
gcc -std=c11 -O1 -Wall -Wextra -Werror -I"$root/capi/include" -I"$here/src" -I"$gen" \
    "$here/host/cnn_sizes.c" "$root/capi/target/debug/libpleas_capi.a" -lpthread -ldl -lm \
    -o "$BUILD/cnn_sizes"
# shellcheck disable=SC2086 # one argument per budget
"$BUILD/cnn_sizes" sizes $CNN_BUDGETS >"$gen/cnn_plan.h"
grep "^#define CNN_" "$gen/cnn_plan.h"

echo "== staticlib (thumbv7em-none-eabihf, release)"
(cd "$root/capi" && cargo build --release --target thumbv7em-none-eabihf -q)
lib="$root/capi/target/thumbv7em-none-eabihf/release/libpleas_capi.a"

echo "== compile and link"
cpu=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16)
# -ffp-contract=off: no fused multiply-adds, so the evaluation rounds as the host does.
cflags=(-std=c11 -O2 -g -Wall -Wextra -Werror -ffunction-sections -fdata-sections
    -ffp-contract=off -I"$root/capi/include" -I"$here/src" -I"$gen"
    -DMERGE_BUDGETS="$(echo "$BUDGETS" | tr -s ' ' ',')" -DMERGE_RIDGE_TOWARD="$toward_c"
    -DCNN_DEMO="$CNN" -DCNN_MERGE_BUDGETS="$(echo "$CNN_BUDGETS" | tr -s ' ' ',')")
srcs=("$here"/src/*.c ${FIRMWARE_SRCS:-})
elf="$BUILD/pleas-demo.elf"
# The Cortex-M4F has no double-precision FPU: f64 arithmetic, which the merge's sums and
# solves use, is done in software. Rust's compiler-builtins brings portable routines for it;
# libgcc's hand-written Thumb-2 ones run the merge twice as fast (both round correctly: the
# results are the same). Undefined-symbol options make the linker take them from libgcc before
# it reads the staticlib.
softfp=()
for f in dadd dsub drsub dmul ddiv f2d d2f i2d ui2d d2iz d2uiz dcmpeq dcmplt dcmple dcmpge \
    dcmpgt dcmpun; do
    softfp+=(-Wl,-u,__aeabi_$f)
done
# --no-warn-execstack: Debian's newlib objects carry no .note.GNU-stack, and an executable
# stack means nothing on a Cortex-M.
arm-none-eabi-gcc "${cpu[@]}" "${cflags[@]}" "${srcs[@]}" "${softfp[@]}" -lgcc "$lib" \
    --specs=nano.specs -u _printf_float -nostartfiles \
    -T "$here/mps2_an386.ld" -Wl,--gc-sections -Wl,-Map="$BUILD/pleas-demo.map" -lm \
    -Wl,--no-warn-execstack \
    -o "$elf"
arm-none-eabi-size "$elf"
# Flash: code, weights and images (.text) and .data's initial values. RAM: .data, .bss (the
# merge's buffers) and the stack reserve; the linker script fails the link beyond 1 MiB, and
# what is left between .bss and the stack is the heap.
stack=$((16#$(arm-none-eabi-nm "$elf" | awk '$3 == "_stack_size" { print $1 }')))
arm-none-eabi-size -A "$elf" | awk -v stack="$stack" '
    $1 == ".isr_vector" || $1 == ".text" || $1 == ".ARM.exidx" { flash += $2 }
    $1 == ".data" { flash += $2; ram += $2 }
    $1 == ".bss" { ram += $2 }
    END {
        printf "flash %d B; RAM: .data + .bss %d B + stack reserve %d B = %d B of 1048576\n",
            flash, ram, stack, ram + stack
    }'

echo "== run (qemu-system-arm -M mps2-an386, timeout ${TIMEOUT}s)"
set +e
timeout "$TIMEOUT" qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$elf" 2>&1 | tee "$BUILD/output.txt"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 124 ]; then
    echo "firmware: TIMEOUT after ${TIMEOUT}s" >&2
elif [ "$status" -ne 0 ]; then
    echo "firmware: exit status $status" >&2
elif ! grep -q "^firmware: [0-9]* passed, 0 failed$" "$BUILD/output.txt"; then
    echo "firmware: exit status 0 but no clean summary line" >&2
    status=1
fi
if [ "$status" -eq 0 ] && [ "$HOST_CHECK" != 0 ]; then
    echo "== the same merge by the host build of the C API (bits of the merged weights)"
    # shellcheck disable=SC2086 # one argument per budget
    "$BUILD/host_merge" merge $BUDGETS | tee "$BUILD/host_merge.txt"
    # Informational: a different build may round differently in the last bits (DESIGN.md).
    if diff <(grep "^merged budget" "$BUILD/output.txt") "$BUILD/host_merge.txt" >/dev/null; then
        echo "device and host C API: the same merged weights, bit for bit"
    else
        echo "device and host C API: merged weights differ in their bits (see above)"
    fi
    if [ "$CNN" = 1 ]; then
        echo "== the same CNN merge by the host build of the C API (bits of the merged parameters)"
        # shellcheck disable=SC2086 # one argument per budget
        "$BUILD/cnn_sizes" merge $CNN_BUDGETS | tee "$BUILD/cnn_host_merge.txt"
        if diff <(grep "^cnn merged budget" "$BUILD/output.txt") "$BUILD/cnn_host_merge.txt"; then
            echo "device and host C API: the same merged CNN parameters, bit for bit"
        else
            echo "device and host C API: the merged CNN parameters DIFFER (see above)" >&2
            status=1
        fi
    fi
    echo "== the same merge on the host (pleas merge, pleas eval) against the device"
    host_args=(--budgets "$BUDGETS" --ridge-toward "$RIDGE_TOWARD" --merge-rows "$MERGE_ROWS"
        --test-rows "$TEST_ROWS"
        --out "$BUILD/host" --compare "$BUILD/output.txt")
    if [ "$CNN" = 1 ]; then
        host_args+=(--cnn --cnn-budgets "$CNN_BUDGETS" --cnn-merge-rows "$CNN_MERGE_ROWS")
    fi
    if [ -n "${PLEAS:-}" ]; then host_args+=(--pleas "$PLEAS"); fi
    python3 "$here/host_reference.py" "${host_args[@]}" || status=1
fi
exit "$status"
