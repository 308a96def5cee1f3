// pyoptim's own Adam loop (kernels.h, update_range, as the module runs it: AVX-512 clone on this
// CPU, grad clamp, alignment head) with sqrt(v) / c2 as a division and as rules.h's quotient
// (the FMA form), for float32 and bfloat16 params with float32 state. Both forms are checked to
// give the same bits, then timed interleaved, one thread, median of 9 rounds, ns per element.
// This is what decides which params get the FMA form (kernels.h, run_segments). Build and run:
//   bash bench/divider/run.sh
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels.h"

using pyoptim::Adam;

template <unsigned F, class P>
double ns_per_element(P* p, const P* g, float* m, float* v, long n, const Adam::Scalars<float>& s) {
  float* state[3] = {m, v, nullptr};
  const long steps = std::max(1L, 30'000'000L / n);
  const float clip = INFINITY;
  const auto step = [&] { pyoptim::update_range<Adam, F, P, P, float>(p, g, state, n, &s, clip); };
  for (int k = 0; k < 2; ++k) step();  // warm up
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < steps; ++k) step();
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  return seconds.count() / steps / n * 1e9;
}

template <class P>
bool compare(const char* label) {
  // grad_factor, weight_decay, decay_factor, one_minus_beta1, beta2, one_minus_beta2,
  // step_size, bias_correction2_sqrt, eps: the order of pyoptim/_spec.py
  const double adam[] = {1.0, 0.0, 1.0, 0.1, 0.999, 0.001, 1e-3, 0.0707, 1e-8};
  const auto s = Adam::cast_scalars<float>(adam);
  for (int e : {16, 20, 24}) {
    const long n = 1L << e;
    std::vector<P> p[2], g(n);
    std::vector<float> m[2], v[2];
    for (long i = 0; i < n; ++i) g[i] = pyoptim::store<P>(0.01f * (i % 13 - 6.5f));
    std::vector<double> t[2];
    for (int round = 0; round < 9; ++round) {
      for (int k = 0; k < 2; ++k) {
        p[k].assign(n, pyoptim::store<P>(1.0f));
        m[k].assign(n, 0.0f);
        v[k].assign(n, 1e-4f);
      }
      t[0].push_back(ns_per_element<0u>(p[0].data(), g.data(), m[0].data(), v[0].data(), n, s));
      t[1].push_back(ns_per_element<pyoptim::kFusedMultiplyAdd>(p[1].data(), g.data(), m[1].data(),
                                                                v[1].data(), n, s));
      if (std::memcmp(p[0].data(), p[1].data(), n * sizeof(P)) != 0 ||
          std::memcmp(v[0].data(), v[1].data(), n * sizeof(float)) != 0) {
        std::printf("the two forms differ\n");
        return false;
      }
    }
    for (auto& x : t) std::sort(x.begin(), x.end());
    std::printf("%-5s 2^%-3d %9.3f %9.3f  %.2f\n", label, e, t[0][4], t[1][4], t[1][4] / t[0][4]);
  }
  return true;
}

int main() {
  std::printf("ns/element, one thread, median of 9 interleaved rounds\n");
  std::printf("%-5s %-5s %9s %9s  %s\n", "param", "size", "division", "quotient",
              "quotient/division");
  return compare<float>("fp32") && compare<pyoptim::BFloat16>("bf16") ? 0 : 1;
}
