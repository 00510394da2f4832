#!/usr/bin/env bash
# Builds the pleas C API for thumbv7em-none-eabihf, compiles and links the firmware demo with
# arm-none-eabi-gcc and newlib (nano), prints the ELF's size and runs it under
# qemu-system-arm -M mps2-an386 with semihosting, within a timeout. Exits with the firmware's
# status (0 when every check passed).
#
# Needs: rustup target thumbv7em-none-eabihf; Debian packages gcc-arm-none-eabi,
# libnewlib-arm-none-eabi, qemu-system-arm.
#
# Generated data (model weights, samples) go to $BUILD/generated as headers of const arrays
# (they land in flash); that directory is on the include path. Extra sources: FIRMWARE_SRCS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BUILD="${BUILD:-$here/build}"
TIMEOUT="${TIMEOUT:-60}"
mkdir -p "$BUILD/generated"

echo "== staticlib (thumbv7em-none-eabihf, release)"
(cd "$root/capi" && cargo build --release --target thumbv7em-none-eabihf -q)
lib="$root/capi/target/thumbv7em-none-eabihf/release/libpleas_capi.a"

echo "== compile and link"
cpu=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16)
cflags=(-std=c11 -O2 -g -Wall -Wextra -Werror -ffunction-sections -fdata-sections
    -I"$root/capi/include" -I"$here/src" -I"$BUILD/generated")
srcs=("$here"/src/*.c ${FIRMWARE_SRCS:-})
elf="$BUILD/pleas-demo.elf"
# --no-warn-execstack: Debian's newlib objects carry no .note.GNU-stack, and an executable
# stack means nothing on a Cortex-M.
arm-none-eabi-gcc "${cpu[@]}" "${cflags[@]}" "${srcs[@]}" "$lib" \
    --specs=nano.specs -u _printf_float -nostartfiles \
    -T "$here/mps2_an386.ld" -Wl,--gc-sections -Wl,-Map="$BUILD/pleas-demo.map" -lm \
    -Wl,--no-warn-execstack \
    -o "$elf"
arm-none-eabi-size "$elf"

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
exit "$status"
