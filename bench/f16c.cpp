// The F16C conversions' throughput on this CPU, with 256-bit and 512-bit vectors: float16 widened
// to float and float rounded to float16, over 512 elements in L1 (the blocks of csrc/halves.cpp),
// best of 50 runs of 2000 passes, in ns per element. csrc/halves.cpp picks the 512-bit forms where
// the CPU has AVX-512; bench/README.md ("float16 conversions") says what this measured.
//
//   g++ -O2 -o /tmp/f16c bench/f16c.cpp && /tmp/f16c
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr std::int64_t kN = 512;

__attribute__((target("avx,f16c"), noinline)) void widen8(const std::uint16_t* in, float* out) {
  for (std::int64_t i = 0; i < kN; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
}

__attribute__((target("avx512f"), noinline)) void widen16(const std::uint16_t* in, float* out) {
  for (std::int64_t i = 0; i < kN; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i))));
  }
}

__attribute__((target("avx,f16c"), noinline)) void narrow8(const float* in, std::uint16_t* out) {
  for (std::int64_t i = 0; i < kN; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), 8));
  }
}

__attribute__((target("avx512f"), noinline)) void narrow16(const float* in, std::uint16_t* out) {
  for (std::int64_t i = 0; i < kN; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(in + i), 8));
  }
}

template <class F>
double ns_per_element(F f) {
  double best = 1e9;
  for (int r = 0; r < 50; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int k = 0; k < 2000; ++k) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = s < best ? s : best;
  }
  return best / 2000 / kN * 1e9;
}

}  // namespace

int main() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("f16c")) {
    std::printf("this CPU lacks AVX-512F or F16C\n");
    return 1;
  }
  std::vector<std::uint16_t> halves(kN, 0x3c00);
  std::vector<float> floats(kN, 1.5f);
  std::printf("widen  256-bit %.4f ns/element\n", ns_per_element([&] { widen8(halves.data(), floats.data()); }));
  std::printf("widen  512-bit %.4f ns/element\n", ns_per_element([&] { widen16(halves.data(), floats.data()); }));
  std::printf("narrow 256-bit %.4f ns/element\n", ns_per_element([&] { narrow8(floats.data(), halves.data()); }));
  std::printf("narrow 512-bit %.4f ns/element\n", ns_per_element([&] { narrow16(floats.data(), halves.data()); }));
  return 0;
}
