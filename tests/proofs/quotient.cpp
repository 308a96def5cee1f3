// Proof that rules.h's quotient (float32, fused multiply-add form) returns the correctly rounded
// x / c, the bits of IEEE division, over its domain. Built and run by tests/test_quotient.py.
//
// quotient computes, with y = RN(1/c) (Divisor) and one rounding per operation:
//   q = RN(x y),  r = RN(q c - x),  result = RN(q - r y).
// Scale x = a 2^i, c = b 2^j with a, b in [1, 2). Every step scales exactly by powers of two
// when nothing leaves the normal range (the domain in rules.h ensures it; r may be subnormal, but
// is then exact), so it suffices to take x = a, c = b. Then, by the bounds this program checks
// or that follow from them:
//   1. |y - 1/b| <= 2^-25 (checked below for every b).
//   2. |a/b - q| <= a |y - 1/b| + |a y - q| < 2^-24 + 2^-24 = 2^-23, so |q b - a| < 2^-22.
//   3. r is q b - a to within half its ulp: < 2^-47.
//   4. The exact q - r y differs from a/b by (q b - a)(y - 1/b) plus r's rounding error times y:
//      less than 2^-22 2^-25 + 2^-47 = 2^-46.
// So the result differs from RN(a/b) only if a rounding midpoint m of float32 lies within 2^-46
// of a/b. a/b is in (1/2, 2); a = A 2^-23, b = B 2^-23 with integers A, B in [2^23, 2^24).
//   In [1, 2):   m = M 2^-24, M odd in [2^24, 2^25): a - m b = (A 2^24 - M B) 2^-47.
//   In [1/2, 1): m = M 2^-25, M odd in [2^24, 2^25): a - m b = (A 2^25 - M B) 2^-48.
// With K the integer in parentheses, |a/b - m| = |a - m b| / b > |K| 2^-48 or |K| 2^-49, so a
// miss needs |K| < 4 or |K| < 8. K is never 0 (M B is odd times B, never A 2^s unless b is a
// power of two, where the division is exact). This program enumerates every (A, B, M) with
// 0 < |K| <= 16 (the solutions of M B = A 2^s - K, for each B and K) and checks quotient against
// the division on each. It also checks that the uncorrected q misses on many of them (so the
// enumeration reaches the hard cases), random scalings over the domain, and the special values.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "rules.h"

namespace {

constexpr unsigned kFma = pyoptim::kFusedMultiplyAdd;

bool same_bits(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y || (a != a && b != b);
}

}  // namespace

int main() {
  long failures = 0, cases = 0, uncorrected_misses = 0, reciprocal_misses = 0;
  const auto check = [&](float x, float c) {
    ++cases;
    const float expected = x / c;
    const float got = pyoptim::quotient<kFma>(x, pyoptim::Divisor<float>(c));
    if (!same_bits(got, expected)) {
      if (failures < 10) std::printf("MISS x=%a c=%a: %a, division %a\n", x, c, got, expected);
      ++failures;
    }
  };

  for (std::uint64_t B = 1u << 23; B < (1u << 24); ++B) {
    const float b = std::ldexp(static_cast<float>(B), -23);
    const pyoptim::Divisor<float> divisor(b);
    // 1: y = Y 2^-24 (y in (1/2, 1]); |y b - 1| <= b 2^-25 is |Y B - 2^47| <= B / 2
    using Wide = __int128;
    const auto Y = static_cast<std::int64_t>(std::ldexp(double{divisor.reciprocal}, 24));
    const Wide d = Wide{Y} * Wide{static_cast<std::int64_t>(B)} - (Wide{1} << 47);
    if (2 * (d < 0 ? -d : d) > Wide{static_cast<std::int64_t>(B)}) ++reciprocal_misses;

    const int t = __builtin_ctzll(B);  // B = 2^t B_odd
    const std::uint64_t odd = B >> t;
    std::uint64_t inverse = odd;  // odd^-1 mod 2^64, by Newton's iteration
    for (int i = 0; i < 6; ++i) inverse *= 2 - odd * inverse;
    for (int s = 24; s <= 25; ++s) {
      for (int K = -16; K <= 16; ++K) {
        if (K == 0 || K % (1 << t) != 0) continue;  // M B = A 2^s - K needs 2^t | K
        const int bits = s - t;
        // M odd = -(K / 2^t) / odd (mod 2^bits)
        const std::uint64_t M0 =
            (static_cast<std::uint64_t>(-(K / (1 << t))) * inverse) & ((1ull << bits) - 1);
        for (std::uint64_t M = M0; M < (1ull << 25); M += 1ull << bits) {
          if (M < (1ull << 24) || !(M & 1)) continue;
          const __int128 num = static_cast<__int128>(M) * B + K;
          const std::int64_t A = static_cast<std::int64_t>(num >> s);
          if ((num & ((static_cast<__int128>(1) << s) - 1)) != 0) {
            std::printf("enumeration error\n");
            return 2;
          }
          if (A < (1 << 23) || A >= (1 << 24)) continue;
          const float a = std::ldexp(static_cast<float>(A), -23);
          if (a * divisor.reciprocal != a / b) ++uncorrected_misses;
          check(a, b);
        }
      }
    }
  }
  const long near_midpoint = cases;

  // random significands at random exponents over the domain
  std::mt19937_64 random(20261122);
  for (int i = 0; i < 20'000'000; ++i) {
    const std::uint64_t u = random();
    const float a = std::ldexp(static_cast<float>((u & 0xffffff) | 0x800000), -23);
    const float b = std::ldexp(static_cast<float>(((u >> 24) & 0xffffff) | 0x800000), -23);
    const int i_exp = static_cast<int>((u >> 48) % 164) - 100;  // x in [2^-100, 2^64)
    const int j_exp = -static_cast<int>((u >> 56) % 27) - 1;    // c in [2^-27, 1)
    const float x = std::ldexp(a, i_exp) * ((u >> 63) ? -1.0f : 1.0f);
    check(x, std::ldexp(b, j_exp));
  }
  // the ends of the domain and the special values
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float c : {1.0f, 0.5f, 0x1.fffffep-1f, 0x1p-27f, 0x1.6a09e6p-27f, 0.0707f, 0.3f}) {
    for (float x : {0.0f, -0.0f, inf, -inf, nan, 0x1p-100f, 0x1.fffffep63f, 0x1p-75f, 1.0f,
                    std::sqrt(0x1p-149f), std::sqrt(std::numeric_limits<float>::max())}) {
      check(x, c);
    }
  }

  std::printf("%ld cases (%ld within |K| <= 16 of a midpoint; the uncorrected product misses %ld "
              "of those), %ld misses; reciprocals outside 2^-25: %ld\n",
              cases, near_midpoint, uncorrected_misses, failures, reciprocal_misses);
  const bool ok = failures == 0 && reciprocal_misses == 0 && uncorrected_misses > 0;
  std::printf(ok ? "PROVED\n" : "FAILED\n");
  return ok ? 0 : 1;
}
