// Times the variants of run.sh side by side: each repetition runs every variant once on the same
// buffers (round robin), and the median time per element is reported with its ratio to baseline.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using Kernel = void (*)(void*, const void*, void* const*, std::int64_t, const double*);
#define DECLARE(k) \
  extern "C" void k##_baseline(void*, const void*, void* const*, std::int64_t, const double*); \
  extern "C" void k##_avx2(void*, const void*, void* const*, std::int64_t, const double*);     \
  extern "C" void k##_avx512(void*, const void*, void* const*, std::int64_t, const double*);
DECLARE(adam_f32)
DECLARE(adam_bf16)
DECLARE(sgd_f32)
DECLARE(rmsprop_f32)

struct Case {
  const char* name;
  Kernel variants[3];
  int param_bytes, state_bytes;
  std::vector<double> scalars;
};

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 30;
  // grad_factor, weight_decay, ... (csrc/rules.h order); values of a mid-training step
  std::vector<Case> cases = {
      {"adam fp32", {adam_f32_baseline, adam_f32_avx2, adam_f32_avx512}, 4, 4,
       {1, 0, 1, 0.1, 0.999, 0.001, 0.0012, 0.1, 1e-8}},
      {"adam bf16/fp32 state", {adam_bf16_baseline, adam_bf16_avx2, adam_bf16_avx512}, 2, 4,
       {1, 0, 1, 0.1, 0.999, 0.001, 0.0012, 0.1, 1e-8}},
      {"sgd momentum fp32", {sgd_f32_baseline, sgd_f32_avx2, sgd_f32_avx512}, 4, 4,
       {1, 0, 0.9, 1, 0.01}},
      {"rmsprop centered+mom fp32", {rmsprop_f32_baseline, rmsprop_f32_avx2, rmsprop_f32_avx512},
       4, 4, {1, 0, 0.99, 0.01, 1e-8, 0.9, 0.01}},
  };
  const char* names[3] = {"baseline x86-64", "x86-64-v3 (AVX2)", "x86-64-v4 (AVX-512)"};
  std::printf("%-28s %10s %18s %18s %18s\n", "kernel (1 thread)", "elements", names[0], names[1],
              names[2]);
  for (const Case& c : cases) {
    for (std::int64_t n : {std::int64_t{1} << 20, std::int64_t{1} << 24}) {
      std::vector<unsigned char> p(n * c.param_bytes), g(n * c.param_bytes);
      std::vector<std::vector<unsigned char>> st(3, std::vector<unsigned char>(n * c.state_bytes));
      // gradients of ordinary magnitude (denormals would time the CPU's slow path instead)
      for (std::int64_t i = 0; i < n; ++i) {
        const float value = 0.001f * static_cast<float>(i % 1999 - 999);
        std::uint32_t bits;
        std::memcpy(&bits, &value, 4);
        if (c.param_bytes == 4) std::memcpy(&g[i * 4], &bits, 4);
        else { const std::uint16_t top = bits >> 16; std::memcpy(&g[i * 2], &top, 2); }
      }
      std::memset(p.data(), 0, p.size());
      void* states[3] = {st[0].data(), st[1].data(), st[2].data()};
      std::vector<double> times[3];
      for (int r = 0; r < reps + 3; ++r) {
        for (int v = 0; v < 3; ++v) {
          const auto start = std::chrono::steady_clock::now();
          c.variants[v](p.data(), g.data(), states, n, c.scalars.data());
          const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (r >= 3) times[v].push_back(dt / n * 1e9);
        }
      }
      std::printf("%-28s %10lld", c.name, static_cast<long long>(n));
      double base = 0;
      for (int v = 0; v < 3; ++v) {
        std::sort(times[v].begin(), times[v].end());
        const double median = times[v][times[v].size() / 2];
        if (v == 0) base = median;
        std::printf("   %6.3f ns (%4.2fx)", median, base / median);
      }
      std::printf("\n");
    }
  }
}
