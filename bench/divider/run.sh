#!/usr/bin/env bash
# Builds bench/divider/divider.cpp with pyoptim's flags (no contraction, no fast-math) for the
# AVX-512 and AVX2 levels pyoptim's kernels are cloned for, and runs both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
for arch in x86-64-v4 x86-64-v3; do
  g++ -O3 -std=c++20 -fopenmp-simd -ffp-contract=off -fno-math-errno -march=$arch -I "$here/../../csrc" \
      -o "$out/divider-$arch" "$here/divider.cpp"
  echo "== $arch"
  "$out/divider-$arch"
done
rm -rf "$out"
