// How much of Adam's time in cache is its divisions: a loop over pyoptim's Adam rule
// (csrc/rules.h, fp32, no weight decay; torch's rounding), and the same loop with fewer divider
// operations:
//   exact     Adam::update with sqrt(v) / c2 as a division: 2 div + 1 sqrt per element
//   fused     Adam::update as pyoptim runs it on CPUs with FMA: sqrt(v) / c2 by rules.h's
//             quotient (same bits, no division instruction): 1 div + 1 sqrt
//   recip     sqrt(v) * (1/c2) + eps, then (step_size * m) / denom  1 div + 1 sqrt (DeepSpeed-like;
//             other bits)
//   nodiv     v * (1/c2) + eps, then (step_size * m) * denom        0 div, same bytes (wrong math,
//             for the bound only)
//   newton    fused, with (step_size * m) / denom on the FMA units: the hardware reciprocal
//             estimate, two Newton-Raphson steps and one correction by the remainder (0 div +
//             1 sqrt; not proved to give the division's bits: for the speed only)
// One thread, arrays 64-byte aligned, sizes in L1/L2, L2, L3 (2^20: 16 MB, the cell of the
// "Adam fp32 at 2^20" target) and DRAM; rounds interleaved, median of each. Build and run:
//   bash bench/divider/run.sh
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <immintrin.h>

#include "rules.h"

using Scalars = pyoptim::Adam::Scalars<float>;

enum class Variant { kExact, kFused, kRecip, kNoDiv, kNewton };

template <Variant V>
__attribute__((noinline)) void step(float* __restrict p, const float* __restrict g,
                                    float* __restrict m, float* __restrict v, long n,
                                    Scalars s) {
#pragma omp simd
  for (long i = 0; i < n; ++i) {
    const float grad = g[i];
    if constexpr (V == Variant::kExact || V == Variant::kFused) {
      constexpr unsigned F = V == Variant::kFused ? pyoptim::kFusedMultiplyAdd : 0u;
      float pi = p[i], mi = m[i], vi = v[i], unused = 0.0f;
      pyoptim::Adam::update<F>(pi, grad, mi, vi, unused, s);
      p[i] = pi;
      m[i] = mi;
      v[i] = vi;
    } else {  // the rule's moments (lerp with a weight below 0.5), then fewer divisions
      const float mi = m[i] + s.one_minus_beta1 * (grad - m[i]);
      const float vi = v[i] * s.beta2 + s.one_minus_beta2 * grad * grad;
      const float inv_c2 = s.bias_correction2_sqrt.reciprocal;
      float update;
      if constexpr (V == Variant::kRecip) {
        update = s.step_size * mi / (std::sqrt(vi) * inv_c2 + s.eps);
      } else {
        update = s.step_size * mi * (vi * inv_c2 + s.eps);
      }
      p[i] = p[i] - update;
      m[i] = mi;
      v[i] = vi;
    }
  }
}

// newton: the fused variant's operations, with the last division as a Newton-Raphson reciprocal
// and a remainder correction, a vector at a time (n a multiple of the vector width)
#if defined(__AVX512F__)
using Vec = __m512;
constexpr long kLanes = 16;
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Vec x) { _mm512_storeu_ps(p, x); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }     // a b + c
inline Vec fnma(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }   // c - a b
inline Vec sqrt(Vec a) { return _mm512_sqrt_ps(a); }
inline Vec reciprocal_estimate(Vec a) { return _mm512_rcp14_ps(a); }
#else
using Vec = __m256;
constexpr long kLanes = 8;
inline Vec set1(float x) { return _mm256_set1_ps(x); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Vec x) { _mm256_storeu_ps(p, x); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec fnma(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
inline Vec sqrt(Vec a) { return _mm256_sqrt_ps(a); }
inline Vec reciprocal_estimate(Vec a) { return _mm256_rcp_ps(a); }
#endif

template <>
__attribute__((noinline)) void step<Variant::kNewton>(float* __restrict p,
                                                     const float* __restrict g,
                                                     float* __restrict m, float* __restrict v,
                                                     long n, Scalars s) {
  const Vec one_minus_beta1 = set1(s.one_minus_beta1), beta2 = set1(s.beta2),
            one_minus_beta2 = set1(s.one_minus_beta2), step_size = set1(s.step_size),
            c2 = set1(s.bias_correction2_sqrt.value),
            inv_c2 = set1(s.bias_correction2_sqrt.reciprocal), eps = set1(s.eps), one = set1(1.0f);
  for (long i = 0; i < n; i += kLanes) {
    const Vec grad = load(g + i);
    Vec mi = load(m + i), vi = load(v + i);
    mi = add(mi, mul(one_minus_beta1, sub(grad, mi)));
    vi = add(mul(vi, beta2), mul(mul(one_minus_beta2, grad), grad));
    const Vec x = sqrt(vi);
    const Vec q = mul(x, inv_c2);
    const Vec denom = add(fnma(sub(mul(q, c2), x), inv_c2, q), eps);  // (the FMA form's cost)
    const Vec a = mul(step_size, mi);
    Vec y = reciprocal_estimate(denom);
    y = fma(fnma(denom, y, one), y, y);
    y = fma(fnma(denom, y, one), y, y);
    const Vec q0 = mul(a, y);
    const Vec update = fma(fnma(denom, q0, a), y, q0);
    store(p + i, sub(load(p + i), update));
    store(m + i, mi);
    store(v + i, vi);
  }
}

template <Variant V>
double seconds_per_step(float* p, float* g, float* m, float* v, long n, const Scalars& s) {
  const long steps = std::max(1L, 50'000'000L / n);
  for (long k = 0; k < 2; ++k) step<V>(p, g, m, v, n, s);  // warm up
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < steps; ++k) step<V>(p, g, m, v, n, s);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / steps;
}

int main() {
  // grad_factor, weight_decay, decay_factor, one_minus_beta1, beta2, one_minus_beta2,
  // step_size, bias_correction2_sqrt, eps: the order of pyoptim/_spec.py
  const double adam[] = {1.0, 0.0, 1.0, 0.1, 0.999, 0.001, 1e-3, 0.0707, 1e-8};
  const Scalars s = pyoptim::Adam::cast_scalars<float>(adam);
  {  // validation: the fused variant computes the exact variant's bits (7 steps, 2^16 elements)
    const long n = 1L << 16;
    std::vector<float> exact[4], fused[4];
    for (int k = 0; k < 4; ++k) exact[k].resize(n);
    for (long i = 0; i < n; ++i) {
      exact[0][i] = 1.0f + i % 7;
      exact[1][i] = 1e-3f * (static_cast<float>((i * 2654435761u) % 2001) - 1000.0f);
      exact[2][i] = 0.0f;
      exact[3][i] = 1e-6f * (i % 101);
    }
    for (int k = 0; k < 4; ++k) fused[k] = exact[k];
    for (int t = 0; t < 7; ++t) {
      auto& e = exact;
      auto& f = fused;
      step<Variant::kExact>(e[0].data(), e[1].data(), e[2].data(), e[3].data(), n, s);
      step<Variant::kFused>(f[0].data(), f[1].data(), f[2].data(), f[3].data(), n, s);
    }
    for (int k : {0, 2, 3}) {
      if (std::memcmp(exact[k].data(), fused[k].data(), n * sizeof(float)) != 0) {
        std::printf("fused and exact differ\n");
        return 1;
      }
    }
  }
  {  // newton, for information: how many params it leaves otherwise than exact (7 steps, 2^16)
    const long n = 1L << 16;
    std::vector<float> exact[4], newton[4];
    for (int k = 0; k < 4; ++k) exact[k].resize(n);
    for (long i = 0; i < n; ++i) {
      exact[0][i] = 1.0f + i % 7;
      exact[1][i] = 1e-3f * (static_cast<float>((i * 2654435761u) % 2001) - 1000.0f);
      exact[2][i] = 0.0f;
      exact[3][i] = 1e-6f * (i % 101);
    }
    for (int k = 0; k < 4; ++k) newton[k] = exact[k];
    long differ = 0;
    for (int t = 0; t < 7; ++t) {
      auto& e = exact;
      auto& w = newton;
      step<Variant::kExact>(e[0].data(), e[1].data(), e[2].data(), e[3].data(), n, s);
      step<Variant::kNewton>(w[0].data(), w[1].data(), w[2].data(), w[3].data(), n, s);
      for (long i = 0; i < n; ++i) {
        differ += std::memcmp(&e[0][i], &w[0][i], sizeof(float)) != 0;
        w[0][i] = e[0][i];  // each step from the same params
      }
    }
    std::printf("newton: %ld of %ld param updates differ from exact's bits\n", differ, 7 * n);
  }
  std::printf("Gelem/s, one thread, median of 7 interleaved rounds\n");
  std::printf("%-8s %10s %10s %10s %10s %10s  %s\n", "size", "exact", "fused", "recip", "nodiv",
              "newton", "fused/exact");
  for (int e : {12, 16, 20, 24}) {
    const long n = 1L << e;
    float* a[4];
    for (auto& x : a) x = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    std::vector<double> t[5];
    for (int round = 0; round < 7; ++round) {
      // fresh values every round: no denormals build up over the steps
      for (long i = 0; i < n; ++i) {
        a[0][i] = 1.0f + i % 7;
        a[1][i] = 0.01f * (i % 13 - 6.5f);
        a[2][i] = 0.0f;
        a[3][i] = 1e-4f;
      }
      t[0].push_back(seconds_per_step<Variant::kExact>(a[0], a[1], a[2], a[3], n, s));
      t[1].push_back(seconds_per_step<Variant::kFused>(a[0], a[1], a[2], a[3], n, s));
      t[2].push_back(seconds_per_step<Variant::kRecip>(a[0], a[1], a[2], a[3], n, s));
      t[3].push_back(seconds_per_step<Variant::kNoDiv>(a[0], a[1], a[2], a[3], n, s));
      t[4].push_back(seconds_per_step<Variant::kNewton>(a[0], a[1], a[2], a[3], n, s));
    }
    double med[5];
    for (int k = 0; k < 5; ++k) {
      std::sort(t[k].begin(), t[k].end());
      med[k] = n / t[k][3] / 1e9;
    }
    std::printf("2^%-6d %10.2f %10.2f %10.2f %10.2f %10.2f  %.2f\n", e, med[0], med[1], med[2],
                med[3], med[4], med[1] / med[0]);
    for (auto& x : a) std::free(x);
  }
}
