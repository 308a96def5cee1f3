// float32 -> bfloat16 narrowing, AVX2 (the x86-64-v3 clone's instructions), one thread: the
// previous element routine against storage.h's float_to_bfloat16, checked to give the same bits
// for all 2^32 float32 patterns, then timed on 4096 elements in L1 (best of 7). Build and run:
//   g++ -O3 -std=c++20 -fopenmp-simd -ffp-contract=off -fno-math-errno -I csrc \
//       -o /tmp/bf16_rounding bench/bf16_rounding.cpp && /tmp/bf16_rounding
#include <chrono>
#include <cstdio>
#include <cstring>
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
__attribute__((target("arch=x86-64-v3"), noinline)) void narrow_a(const float* in, BFloat16* out, long n) {
#pragma omp simd
  for (long i = 0; i < n; ++i) out[i] = BFloat16{previous(in[i])};
}
__attribute__((target("arch=x86-64-v3"), noinline)) void narrow_b(const float* in, BFloat16* out, long n) {
#pragma omp simd
  for (long i = 0; i < n; ++i) out[i] = BFloat16{float_to_bfloat16(in[i])};
}
template <class F> double t(F f) {
  double best = 1e9;
  for (int r = 0; r < 7; ++r) {
    auto s = std::chrono::steady_clock::now();
    for (int k = 0; k < 20000; ++k) f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  return best;
}
int main() {
  const long n = 4096;
  std::vector<float> in(n); std::vector<BFloat16> a(n), b(n);
  for (long i = 0; i < n; ++i) in[i] = std::ldexp(std::sin(i * 1.37f) , (int)(i % 80) - 40);
  in[3] = NAN; in[5] = -NAN; in[7] = INFINITY; in[9] = -INFINITY;
  std::uint32_t bits = 0x7f800001u; std::memcpy(&in[11], &bits, 4); bits = 0xffc00001u; std::memcpy(&in[13], &bits, 4);
  narrow_a(in.data(), a.data(), n); narrow_b(in.data(), b.data(), n);
  std::printf("same: %d\n", std::memcmp(a.data(), b.data(), n * 2) == 0);
  // exhaustive check over all 2^32 bit patterns
  long bad = 0; std::vector<float> blk(1 << 16); std::vector<BFloat16> ba(1 << 16), bb(1 << 16);
  for (std::uint64_t hi = 0; hi < (1u << 16); ++hi) {
    for (std::uint32_t lo = 0; lo < (1u << 16); ++lo) { std::uint32_t v = (std::uint32_t)(hi << 16 | lo); std::memcpy(&blk[lo], &v, 4); }
    narrow_a(blk.data(), ba.data(), 1 << 16); narrow_b(blk.data(), bb.data(), 1 << 16);
    bad += std::memcmp(ba.data(), bb.data(), 1 << 17) != 0;
  }
  std::printf("exhaustive mismatched blocks: %ld\n", bad);
  for (int r = 0; r < 3; ++r) {
    double ta = t([&] { narrow_a(in.data(), a.data(), n); }), tb = t([&] { narrow_b(in.data(), b.data(), n); });
    std::printf("previous %.3f ns/element, storage.h %.3f ns/element\n", ta / 20000 / n * 1e9, tb / 20000 / n * 1e9);
  }
}
