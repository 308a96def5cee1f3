#!/usr/bin/env bash
# Builds bench/divider/divider.cpp with pyoptim's flags (no contraction, no fast-math) for the
# AVX-512 and AVX2 levels pyoptim's kernels are cloned for, and runs both; then
# bench/divider/loop.cpp, pyoptim's loop itself (its clones chosen at run time, as in the module).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
flags=(-O3 -std=c++20 -fopenmp-simd -ffp-contract=off -fno-math-errno -I "$here/../../csrc")
for arch in x86-64-v4 x86-64-v3; do
  # a level this CPU lacks would die of an illegal instruction: skipped
  if [ "$arch" = x86-64-v4 ] && ! grep -qw avx512f /proc/cpuinfo; then
    echo "== $arch: skipped (no AVX-512 on this CPU)"
    continue
  fi
  g++ "${flags[@]}" -march=$arch -o "$out/divider-$arch" "$here/divider.cpp"
  echo "== $arch"
  "$out/divider-$arch"
done
g++ "${flags[@]}" -o "$out/loop" "$here/loop.cpp"
echo "== pyoptim's loop"
"$out/loop"
rm -rf "$out"
