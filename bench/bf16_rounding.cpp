// float32 -> bfloat16 narrowing, AVX2 (the x86-64-v3 clone's instructions), one thread: the
// previous element routine against storage.h's float_to_bfloat16, checked to give the same bits
// for all 2^32 float32 patterns, element by element, then timed on 4096 elements in L1 (best of 7). Build and run:
//   g++ -O3 -std=c++20 -fopenmp-simd -ffp-contract=off -fno-math-errno -I csrc -o /tmp/b bench/bf16_rounding.cpp
//   /tmp/b
// (exits 1 if any pattern rounds differently)
#include <chrono>
#include <cstdio>
#include <vector>
#include <cmath>
#include <bit>
#include "storage.h"
using namespace pyoptim;
// float_to_bfloat16 before 2026-12-05: the NaN test on the integer magnitude, a 16-bit select
inline std::uint16_t previous(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const bool nan = (x & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(nan ? ((x >> 16) | 0x0040u) : rounded);
}
__attribute__((target("arch=x86-64-v3"), noinline)) void narrow_previous(const float* in,
                                                                        BFloat16* out, long n) {
#pragma omp simd
  for (long i = 0; i < n; ++i) out[i] = BFloat16{previous(in[i])};
}
__attribute__((target("arch=x86-64-v3"), noinline)) void narrow_storage(const float* in,
                                                                       BFloat16* out, long n) {
#pragma omp simd
  for (long i = 0; i < n; ++i) out[i] = BFloat16{float_to_bfloat16(in[i])};
}
// seconds for 20000 calls of f, the best of 7
template <class F> double seconds(F f) {
  double best = 1e9;
  for (int r = 0; r < 7; ++r) {
    const auto s = std::chrono::steady_clock::now();
    for (int k = 0; k < 20000; ++k) f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  return best;
}
int main() {
  // every float32 bit pattern, 2^16 at a time (NaNs, infinities, subnormals, ties included)
  constexpr long kChunk = 1L << 16;
  long mismatches = 0;
  std::vector<float> in(kChunk);
  std::vector<BFloat16> a(kChunk), b(kChunk);
  for (std::uint32_t hi = 0; hi < (1u << 16); ++hi) {
    for (std::uint32_t lo = 0; lo < kChunk; ++lo) in[lo] = std::bit_cast<float>(hi << 16 | lo);
    narrow_previous(in.data(), a.data(), kChunk);
    narrow_storage(in.data(), b.data(), kChunk);
    for (long i = 0; i < kChunk; ++i) mismatches += a[i].bits != b[i].bits;
  }
  std::printf("float32 patterns rounded differently: %ld of 2^32\n", mismatches);
  if (mismatches != 0) return 1;
  const long n = 4096;  // in L1
  for (long i = 0; i < n; ++i) in[i] = std::ldexp(std::sin(i * 1.37f), int(i % 80) - 40);
  for (int r = 0; r < 3; ++r) {
    const double before = seconds([&] { narrow_previous(in.data(), a.data(), n); });
    const double now = seconds([&] { narrow_storage(in.data(), b.data(), n); });
    std::printf("previous %.3f ns/element, storage.h %.3f ns/element\n", before / 20000 / n * 1e9,
                now / 20000 / n * 1e9);
  }
  return 0;
}
