#!/usr/bin/env bash
# Is runtime instruction-set dispatch worth it? Builds pyoptim's SIMD loop (csrc/kernels.h) for
# baseline x86-64, x86-64-v3 (AVX2) and x86-64-v4 (AVX-512) with the project's flags, and times
# the three side by side on one thread. Usage: bash bench/isa/run.sh [repetitions]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
flags="-O3 -std=c++20 -fopenmp-simd -ffp-contract=off -fno-math-errno"
for v in baseline:x86-64 avx2:x86-64-v3 avx512:x86-64-v4; do
  g++ $flags -march=${v#*:} -DVARIANT=${v%%:*} -c "$here/variant.cpp" -o "$out/${v%%:*}.o" &
done
wait
g++ $flags "$here/driver.cpp" "$out"/*.o -o "$out/driver"
"$out/driver" "${1:-30}"
