// Storage types of the buffers and their conversion to the type the math runs in.
//
// float and double are stored as themselves. float16 and bfloat16 are stored as 16-bit patterns
// and computed in float ("opmath", as in PyTorch): load widens exactly, store rounds to nearest
// even, as NumPy's and ml_dtypes' astype do. The conversions are written with integer and plain
// float operations only, without branches, so that they vectorize under every instruction set.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>

// Forced inlining for what the element loops call on every element. GCC left float_to_half out
// of line in the float16 Adam and RMSprop loops, and a call in the loop kept it from vectorizing
// them: 13-15x slower than bfloat16 (bench/README.md, "float16 conversions").
#if defined(__GNUC__) || defined(__clang__)
#define PYOPTIM_INLINE inline __attribute__((always_inline))
#else
#define PYOPTIM_INLINE inline
#endif

// The SIMD loops are compiled for AVX-512, AVX2 and baseline x86-64 and the best one the CPU runs
// is picked when the module loads (GCC function multi-versioning), so that a portable build runs
// at native speed (bench/README.md). Elsewhere it is compiled once, for the build's target.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__) && \
    defined(__GLIBC__) && !defined(PYOPTIM_NO_CLONES)
#define PYOPTIM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define PYOPTIM_CLONED 1
#else
#define PYOPTIM_CLONES
#endif

namespace pyoptim {

struct Half {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};

template <class S>
struct OpmathOf {
  using type = S;
};
template <>
struct OpmathOf<Half> {
  using type = float;
};
template <>
struct OpmathOf<BFloat16> {
  using type = float;
};
// The type an element stored as S is computed in.
template <class S>
using opmath_t = typename OpmathOf<S>::type;

PYOPTIM_INLINE float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t magnitude = h & 0x7fffu;
  // exponent and mantissa moved into a float's place; multiplying by 2^112 rebiases the exponent
  // (15 -> 127) and normalizes subnormals, exactly
  const std::uint32_t scaled =
      std::bit_cast<std::uint32_t>(std::bit_cast<float>(magnitude << 13) * 0x1p112f);
  // infinity and NaN: the exponent becomes all ones
  const std::uint32_t special = magnitude >= 0x7c00u ? 0x7f800000u : 0u;
  return std::bit_cast<float>(sign | scaled | special);
}

PYOPTIM_INLINE std::uint16_t float_to_half(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t magnitude = x & 0x7fffffffu;
  // |f|'s float exponent, at least that of 2^-14 (the half subnormals share it)
  const std::uint32_t exponent = std::max(magnitude >> 23, 113u);
  // a float 2^13 times larger, whose ulp is the half ulp at that exponent: the addition rounds |f|
  // to a half to nearest even, and the sum's low bits count |f| in half ulps
  const float magic = std::bit_cast<float>((exponent + 13u) << 23);
  const std::uint32_t ulps = std::bit_cast<std::uint32_t>(std::bit_cast<float>(magnitude) + magic) -
                             std::bit_cast<std::uint32_t>(magic);
  // half exponent and mantissa (a carry out of the mantissa moves into the exponent)
  const std::uint32_t h = ((exponent - 113u) << 10) + ulps;
  // 65520 and above give infinity; NaN stays a (quiet) NaN. No branch on a float result, so
  // that GCC if-converts and vectorizes the loop around it.
  return static_cast<std::uint16_t>(sign | std::min(h, 0x7c00u) |
                                    (magnitude > 0x7f800000u ? 0x0200u : 0u));
}

PYOPTIM_INLINE float bfloat16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// To nearest even; a NaN stays a NaN, made quiet. Selected in 32 bits and shifted once: GCC then
// packs the high halves without masking them, and the float compare finds NaN in one
// instruction (an integer test of the magnitude takes three). That took narrowing from 0.49 to
// 0.33 ns per element on an AMD EPYC (Zen 1, AVX2), the same bits for all 2^32 floats
// (bench/README.md, "bfloat16 rounding").
PYOPTIM_INLINE std::uint16_t float_to_bfloat16(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t y = f != f ? x | 0x00400000u : x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(y >> 16);
}

// Widen a stored element to the compute type T.
template <class T, class S>
PYOPTIM_INLINE T load(S x) {
  if constexpr (std::is_same_v<S, Half>) {
    return static_cast<T>(half_to_float(x.bits));
  } else if constexpr (std::is_same_v<S, BFloat16>) {
    return static_cast<T>(bfloat16_to_float(x.bits));
  } else {
    return static_cast<T>(x);
  }
}

// Round a computed value to the storage type S (to nearest even).
template <class S, class T>
PYOPTIM_INLINE S store(T x) {
  if constexpr (std::is_same_v<S, Half>) {
    static_assert(std::is_same_v<T, float>, "16-bit values are computed in float");
    return Half{float_to_half(x)};
  } else if constexpr (std::is_same_v<S, BFloat16>) {
    static_assert(std::is_same_v<T, float>, "16-bit values are computed in float");
    return BFloat16{float_to_bfloat16(x)};
  } else {
    return static_cast<S>(x);
  }
}

// n float16 values widened to float, and n floats rounded to float16, as half_to_float and
// float_to_half do one at a time, with the CPU's F16C instructions where it has them
// (csrc/halves.cpp). The update loops take these for float16 params, a block at a time.
// Loops convert kHalfBlock elements at a time (their float scratch stays in L1).
inline constexpr std::int64_t kHalfBlock = 512;
void widen_halves(const Half* in, float* out, std::int64_t n);
void narrow_to_halves(const float* in, Half* out, std::int64_t n);
// Whether those use F16C on this CPU.
bool halves_use_f16c();
// The same for bfloat16, as bfloat16_to_float and float_to_bfloat16 do one at a time (integer
// operations, which each SIMD clone vectorizes).
void widen_halves(const BFloat16* in, float* out, std::int64_t n);
void narrow_to_halves(const float* in, BFloat16* out, std::int64_t n);

}  // namespace pyoptim
