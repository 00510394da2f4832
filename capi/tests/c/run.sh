#!/usr/bin/env bash
# Builds the host static library of pleas-capi and runs the C test against include/pleas.h;
# also compiles the header alone as C99, C11 and (if g++ is there) C++.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q
out=target/c-test
mkdir -p "$out"
flags=(-Wall -Wextra -Werror -pedantic -Iinclude)
for std in c99 c11; do
    echo '#include "pleas.h"' | gcc -std=$std "${flags[@]}" -x c -fsyntax-only -
done
if command -v g++ >/dev/null; then
    echo '#include "pleas.h"' | g++ -std=c++11 "${flags[@]}" -x c++ -fsyntax-only -
fi
gcc -std=c99 "${flags[@]}" -o "$out/test_pleas" tests/c/test_pleas.c \
    target/debug/libpleas_capi.a -lpthread -ldl -lm
"$out/test_pleas"
