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

#include "rules.h"

using Scalars = pyoptim::Adam::Scalars<float>;

enum class Variant { kExact, kFused, kRecip, kNoDiv };

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
  std::printf("Gelem/s, one thread, median of 7 interleaved rounds\n");
  std::printf("%-8s %10s %10s %10s %10s  %s\n", "size", "exact", "fused", "recip", "nodiv",
              "fused/exact");
  for (int e : {12, 16, 20, 24}) {
    const long n = 1L << e;
    float* a[4];
    for (auto& x : a) x = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    std::vector<double> t[4];
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
    }
    double med[4];
    for (int k = 0; k < 4; ++k) {
      std::sort(t[k].begin(), t[k].end());
      med[k] = n / t[k][3] / 1e9;
    }
    std::printf("2^%-6d %10.2f %10.2f %10.2f %10.2f  %.2f\n", e, med[0], med[1], med[2], med[3],
                med[1] / med[0]);
    for (auto& x : a) std::free(x);
  }
}
