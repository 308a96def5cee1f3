// float16 converted a block at a time (storage.h: widen_halves, narrow_to_halves). GCC does not
// vectorize float16 conversions, so element by element, inside the update loops, they take the
// portable integer routines of storage.h; a block at a time they take the CPU's F16C
// instructions where it has them (every x86-64-v3 CPU), picked once, when first used. Both give
// the same bits: the hardware rounds to nearest even as the routines do (tests/test_build.py
// checks every float16 and the rounding cases against NumPy, both ways).
#include <cstdint>
#include <cstring>

#include "storage.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define PYOPTIM_F16C_PATH 1
#endif

namespace pyoptim {
namespace {

void widen_portable(const Half* in, float* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i].bits);
}

void narrow_portable(const float* in, Half* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = Half{float_to_half(in[i])};
}

#ifdef PYOPTIM_F16C_PATH
// Eight elements per instruction; the last n % 8 through a zero-padded vector of eight. (Every
// CPU with AVX-512 has F16C.)
__attribute__((target("avx,f16c"))) void widen_f16c(const Half* in, float* out, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  if (i < n) {
    std::uint16_t h[8] = {};
    float f[8];
    std::memcpy(h, in + i, (n - i) * sizeof(Half));
    _mm256_storeu_ps(f, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))));
    std::memcpy(out + i, f, (n - i) * sizeof(float));
  }
}

__attribute__((target("avx,f16c"))) void narrow_f16c(const float* in, Half* out, std::int64_t n) {
  constexpr int kNearestEven = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), kNearestEven);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  if (i < n) {
    float f[8] = {};
    std::uint16_t h[8];
    std::memcpy(f, in + i, (n - i) * sizeof(float));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(_mm256_loadu_ps(f), kNearestEven));
    std::memcpy(out + i, h, (n - i) * sizeof(Half));
  }
}

// The same, sixteen elements per instruction.
__attribute__((target("avx512f"))) void widen_avx512(const Half* in, float* out, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i));
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(h));
  }
  if (i < n) widen_f16c(in + i, out + i, n - i);
}

__attribute__((target("avx512f"))) void narrow_avx512(const float* in, Half* out, std::int64_t n) {
  constexpr int kNearestEven = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(in + i), kNearestEven);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), h);
  }
  if (i < n) narrow_f16c(in + i, out + i, n - i);
}
#endif

struct HalfConverters {
  void (*widen)(const Half*, float*, std::int64_t) = widen_portable;
  void (*narrow)(const float*, Half*, std::int64_t) = narrow_portable;
  bool f16c = false;
};

const HalfConverters& converters() {
  static const HalfConverters chosen = [] {
    HalfConverters c;
#ifdef PYOPTIM_F16C_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
      c = {widen_avx512, narrow_avx512, true};
    } else if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) {
      c = {widen_f16c, narrow_f16c, true};
    }
#endif
    return c;
  }();
  return chosen;
}

}  // namespace

void widen_halves(const Half* in, float* out, std::int64_t n) { converters().widen(in, out, n); }

void narrow_to_halves(const float* in, Half* out, std::int64_t n) {
  converters().narrow(in, out, n);
}

bool halves_use_f16c() { return converters().f16c; }

// bfloat16, a block at a time for LAMB's pieces (kernels.h, in_half_pieces): the element routines
// of storage.h, which vectorize, in the SIMD clones of these loops.
PYOPTIM_CLONES void widen_halves(const BFloat16* in, float* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = bfloat16_to_float(in[i].bits);
}

PYOPTIM_CLONES void narrow_to_halves(const float* in, BFloat16* out, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = BFloat16{float_to_bfloat16(in[i])};
}

}  // namespace pyoptim
