// The loop around the update rules: dtype dispatch, the segment table, threads and SIMD.
//
// A step updates a table of segments: one segment per parameter array, each with its gradient,
// its state buffers and a row of per-step scalars. The elements of all segments are split among
// the threads as one range, so a step over thousands of small arrays runs in one parallel
// region, and a single flat buffer is the table of one segment.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "rules.h"
#include "storage.h"
#include "sums.h"
#include "threads.h"

namespace pyoptim {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

template <class S>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<S, float>) return DType::kFloat32;
  if constexpr (std::is_same_v<S, double>) return DType::kFloat64;
  if constexpr (std::is_same_v<S, Half>) return DType::kFloat16;
  if constexpr (std::is_same_v<S, BFloat16>) return DType::kBFloat16;
}

struct DTypes {
  DType param, grad, state;
  bool operator==(const DTypes&) const = default;
};

template <class P, class G, class S>
struct Combination {
  using Param = P;
  using Grad = G;
  using State = S;
  static constexpr DTypes dtypes{dtype_of<P>(), dtype_of<G>(), dtype_of<S>()};
};

// The supported (param, grad, state) storage combinations: the grad is the param's type or
// float32, the state float32 or the param's type. The only list of them in C++.
using Combinations = std::tuple<
    Combination<float, float, float>,
    Combination<double, double, double>, Combination<double, double, float>,
    Combination<double, float, double>, Combination<double, float, float>,
    Combination<Half, Half, float>, Combination<Half, Half, Half>,
    Combination<Half, float, float>, Combination<Half, float, Half>,
    Combination<BFloat16, BFloat16, float>, Combination<BFloat16, BFloat16, BFloat16>,
    Combination<BFloat16, float, float>, Combination<BFloat16, float, BFloat16>>;

// Calls f.template operator()<C>() for the combination C that has these dtypes; false if none.
template <class F>
bool dispatch_dtypes(DTypes dtypes, F&& f) {
  return [&]<class... C>(std::type_identity<std::tuple<C...>>) {
    return ((dtypes == C::dtypes && (f.template operator()<C>(), true)) || ...);
  }(std::type_identity<Combinations>{});
}

// Calls f.template operator()<F>() with the runtime bit mask as a compile-time constant.
template <unsigned Count, class F>
void dispatch_flags(unsigned flags, F&& f) {
  [&]<unsigned... mask>(std::integer_sequence<unsigned, mask...>) {
    ((flags == mask && (f.template operator()<mask>(), true)) || ...);
  }(std::make_integer_sequence<unsigned, Count>{});
}

inline constexpr int kMaxStates = 3;

// Which form of rules.h's quotient the loops take for a rule that divides by a per-step scalar
// (Adam's bias correction): the division, or the FMA form (the same bits). kAuto takes the FMA
// form where the loops have FMA instructions: the x86-64-v4 and v3 clones (Adam fp32 in cache
// 0.80-0.90x the time on AVX-512; neutral with AVX2, 0.96-1.10x on Zen 4 and Zen 1:
// bench/quotient_form.py, bench/README.md). The baseline clone has none (std::fma would be a
// library call there, and division is faster). set_quotient_form exists for tests, which check
// both forms on any CPU, and for benchmarks.
enum class QuotientForm : int { kAuto, kDivision, kFusedMultiplyAdd };
inline std::atomic<QuotientForm> g_quotient_form{QuotientForm::kAuto};
inline void set_quotient_form(QuotientForm form) {
  g_quotient_form.store(form, std::memory_order_relaxed);
}

inline bool auto_quotient_fma() {
#if defined(PYOPTIM_CLONED)
  static const bool fma = __builtin_cpu_supports("x86-64-v3");
  return fma;
#elif defined(__FMA__) || defined(__aarch64__) || defined(_M_ARM64)
  return true;
#else
  return false;
#endif
}

// Whether the loops take quotient's FMA form now.
inline bool loops_take_quotient_fma() {
  switch (g_quotient_form.load(std::memory_order_relaxed)) {
    case QuotientForm::kDivision: return false;
    case QuotientForm::kFusedMultiplyAdd: return true;
    default: return auto_quotient_fma();
  }
}

struct Segment {
  void* param;
  const void* grad;
  std::array<void*, kMaxStates> state;  // nullptr where a step does not touch the slot
  std::int64_t size;
  std::int64_t row;  // the row of per-step scalars this segment uses
};

// The gradient as every rule receives it: times grad_factor, then clamped to [-clip, clip].
// grad_factor is -1 for maximize and folds in the optimizer classes' loss-scale unscaling and
// global-norm clipping coefficient (pyoptim/_spec.py); the clamp is
// torch.nn.utils.clip_grad_value_ on the unscaled gradient. Without clip_value the bound is
// infinite and the clamp changes no value (NaN and infinities included): it always runs rather
// than doubling every instantiation for a flag, because it costs nothing measurable
// (bench/README.md). With the weight decay of rules.h's gradient_prologue, this is
// pyoptim.reference's _gradient.
template <class T>
inline T scaled_gradient(T grad, T grad_factor, T clip) {
  grad = grad_factor * grad;
  grad = grad < -clip ? -clip : grad;  // NaN passes, as in torch.clamp
  grad = clip < grad ? clip : grad;
  return grad;
}

// Whether a step writes state buffer k without reading it, and whether it does so for any.
template <class Rule, unsigned F>
constexpr bool write_only(int k) {
  return Rule::writes(F, k) && !Rule::reads(F, k);
}

template <class Rule, unsigned F>
constexpr bool has_write_only_state() {
  for (int k = 0; k < static_cast<int>(Rule::state_names.size()); ++k) {
    if (write_only<Rule, F>(k)) return true;
  }
  return false;
}

// The elementwise loop over n elements of one segment: widen, update, round back.
//
// The state values are separate locals, not an array: under `omp simd` GCC turns each local into
// a per-lane array, and an array of states would become a strided one that does not vectorize.
//
// The first elements, up to the param's first 64-byte boundary, run one at a time: a vector
// load or store that straddles two cache lines costs a second access, which made arrays from
// NumPy's allocator (16-byte aligned) up to 1.5x slower at DRAM sizes than 64-byte aligned ones
// (bench/README.md). Arrays from one allocator share their offset within a cache line, so
// aligning the param aligns them all. Each element gets the same rule either way: the results do
// not depend on where the arrays start.
template <class Rule, unsigned F, class P, class G, class S>
PYOPTIM_CLONES void update_range(P* __restrict param, const G* __restrict grad, S* const* state,
                                 std::int64_t n,
                                 const typename Rule::template Scalars<opmath_t<P>>* scalars,
                                 opmath_t<P> clip) {
  using T = opmath_t<P>;
  constexpr int K = static_cast<int>(Rule::state_names.size());
  static_assert(K >= 1 && K <= kMaxStates);
  const auto s = *scalars;
  S* const state0 = state[0];
  S* const state1 = K > 1 ? state[1] : nullptr;
  S* const state2 = K > 2 ? state[2] : nullptr;
  const auto update_at = [&](std::int64_t i) __attribute__((always_inline)) {
    T p = load<T>(param[i]);
    const T g = scaled_gradient(load<T>(grad[i]), s.grad_factor, clip);
    T s0 = T(0), s1 = T(0), s2 = T(0);
    if constexpr (Rule::reads(F, 0)) s0 = load<T>(state0[i]);
    if constexpr (K > 1 && Rule::reads(F, 1)) s1 = load<T>(state1[i]);
    if constexpr (K > 2 && Rule::reads(F, 2)) s2 = load<T>(state2[i]);
    if constexpr (K == 1) Rule::template update<F>(p, g, s0, s);
    if constexpr (K == 2) Rule::template update<F>(p, g, s0, s1, s);
    if constexpr (K == 3) Rule::template update<F>(p, g, s0, s1, s2, s);
    param[i] = store<P>(p);
    if constexpr (Rule::writes(F, 0)) state0[i] = store<S>(s0);
    if constexpr (K > 1 && Rule::writes(F, 1)) state1[i] = store<S>(s1);
    if constexpr (K > 2 && Rule::writes(F, 2)) state2[i] = store<S>(s2);
  };
  constexpr std::uintptr_t kLine = 64;
  const std::uintptr_t misaligned = reinterpret_cast<std::uintptr_t>(param) % kLine;
  const std::int64_t head =
      misaligned % sizeof(P) ? 0  // not element-aligned: no element boundary ever meets a line
                             : std::min<std::int64_t>(n, (kLine - misaligned) % kLine / sizeof(P));
  for (std::int64_t i = 0; i < head; ++i) update_at(i);
  if constexpr (has_write_only_state<Rule, F>()) {
    // A state buffer the step writes without reading (ASGD's ax when it does not average) is
    // fetched ahead of its stores, a block at a time: a stream of plain stores to lines the core
    // does not hold ran 1.14-1.19x slower than the same bytes read and written on the Intel
    // Xeon (bench/write_only.py, bench/README.md).
    constexpr std::int64_t kBlock = 4 * kLine / sizeof(S), kAhead = 16 * kBlock;
    for (std::int64_t start = head; start < n; start += kBlock) {
      const std::int64_t end = std::min(n, start + kBlock);
      for (int k = 0; k < K; ++k) {
        if (!write_only<Rule, F>(k)) continue;
        const auto line = reinterpret_cast<std::uintptr_t>(state[k] + start) + kAhead * sizeof(S);
        for (std::uintptr_t b = 0; b < kBlock * sizeof(S); b += kLine) {
          __builtin_prefetch(reinterpret_cast<const void*>(line + b), 1, 3);
        }
      }
#pragma omp simd
      for (std::int64_t i = start; i < end; ++i) update_at(i);
    }
  } else {
#pragma omp simd
    for (std::int64_t i = head; i < n; ++i) update_at(i);
  }
}

// Fetches the block of kHalfBlock 16-bit elements after the next one, from start, into the
// caches (a prefetch cannot fault past the end of the buffer).
template <class H>
inline void fetch_half_block_after_next(const H* buffer, std::int64_t start) {
  static_assert(sizeof(H) == 2);
  const std::uintptr_t ahead =
      reinterpret_cast<std::uintptr_t>(buffer + start) + 2 * kHalfBlock * sizeof(H);
  for (std::uintptr_t b = 0; b < kHalfBlock * sizeof(H); b += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(ahead + b));
  }
}

// float16 params: the loop runs on float blocks. Their elements (and a float16 grad's and state
// buffers') are widened a block at a time into float scratch, body(param, grad, state, len)
// updates the block, and what it wrote is rounded back. GCC does not vectorize float16
// conversions, so inside update_range they take the integer routines of storage.h; a block at
// a time they take the CPU's F16C instructions (widen_halves, narrow_to_halves). Adam with
// float16 params ran 1.2-1.3x slower than with bfloat16 params element by element, and now as
// fast (bench/README.md, "float16 conversions"). The float loop computes what update_range computes
// on the widened values, so the results are the same bits. read / written: which state buffers
// the body reads and writes (a buffer it only writes is not widened).
template <int K, class G, class S, class Body>
void in_float_blocks(Half* param, const G* grad, S* const* state, std::int64_t n,
                     const std::array<bool, kMaxStates>& read,
                     const std::array<bool, kMaxStates>& written, const Body& body) {
  static_assert(std::is_same_v<G, Half> || std::is_same_v<G, float>);
  static_assert(std::is_same_v<S, Half> || std::is_same_v<S, float>);
  constexpr bool kHalfGrad = std::is_same_v<G, Half>, kHalfState = std::is_same_v<S, Half>;
  alignas(64) float p[kHalfBlock];
  alignas(64) float g[kHalfGrad ? kHalfBlock : 1];
  alignas(64) float s[kHalfState ? std::max(K, 1) : 1][kHalfState ? kHalfBlock : 1];
  // Each float16 buffer is read a block at a time, one buffer after the other, where the loop
  // of update_range reads all of them at once: the block after next of each is fetched ahead,
  // so that its DRAM latency overlaps the work on this one. (A float buffer is read by the float
  // loop as update_range reads it.)
  for (std::int64_t start = 0; start < n; start += kHalfBlock) {
    const std::int64_t len = std::min(kHalfBlock, n - start);
    fetch_half_block_after_next(param, start);
    if constexpr (kHalfGrad) fetch_half_block_after_next(grad, start);
    if constexpr (kHalfState) {
      for (int k = 0; k < K; ++k) {
        if (state[k] != nullptr && read[k]) fetch_half_block_after_next(state[k], start);
      }
    }
    widen_halves(param + start, p, len);
    const float* grad_block;
    if constexpr (kHalfGrad) {
      widen_halves(grad + start, g, len);
      grad_block = g;
    } else {
      grad_block = grad + start;
    }
    float* state_block[kMaxStates] = {};
    for (int k = 0; k < K; ++k) {
      if (state[k] == nullptr) continue;
      if constexpr (kHalfState) {
        if (read[k]) widen_halves(state[k] + start, s[k], len);
        state_block[k] = s[k];
      } else {
        state_block[k] = state[k] + start;
      }
    }
    body(p, grad_block, state_block, len);
    narrow_to_halves(p, param + start, len);
    if constexpr (kHalfState) {
      for (int k = 0; k < K; ++k) {
        if (state[k] != nullptr && written[k]) narrow_to_halves(s[k], state[k] + start, len);
      }
    }
  }
}

// The per-step scalars: float64 rows from the host, cast once to the compute type T.
template <class Rule, class T>
std::vector<typename Rule::template Scalars<T>> cast_rows(const double* rows_data, std::int64_t rows) {
  constexpr std::int64_t fields = Rule::scalar_names.size();
  std::vector<typename Rule::template Scalars<T>> scalars;
  scalars.reserve(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    scalars.push_back(Rule::template cast_scalars<T>(rows_data + r * fields));
  }
  return scalars;
}

// Splits the elements of all segments among the threads as one range, and calls
// body(segment index, lo, hi) for each piece [lo, hi) of a segment that a thread gets.
template <class Body>
void for_each_segment_range(const std::vector<Segment>& segments, const Body& body) {
  std::vector<std::int64_t> offsets(segments.size() + 1, 0);
  for (std::size_t k = 0; k < segments.size(); ++k) offsets[k + 1] = offsets[k] + segments[k].size;
  parallel_for(offsets.back(), [&](std::int64_t begin, std::int64_t end) {
    std::size_t k = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
    for (; k < segments.size() && offsets[k] < end; ++k) {
      const std::int64_t lo = std::max(begin, offsets[k]) - offsets[k];
      const std::int64_t hi = std::min(end, offsets[k + 1]) - offsets[k];
      if (hi > lo) body(k, lo, hi);
    }
  });
}

template <class Rule, unsigned F, class C>
void run_segments(const std::vector<Segment>& segments, const double* scalar_rows,
                  std::int64_t rows, double clip_value) {
  using P = typename C::Param;
  using G = typename C::Grad;
  using S = typename C::State;
  using T = opmath_t<P>;
  constexpr int K = static_cast<int>(Rule::state_names.size());
  const auto scalars = cast_rows<Rule, T>(scalar_rows, rows);
  const T clip = static_cast<T>(clip_value);
  // A rule that divides by a per-step scalar gets the flag for quotient's FMA form where it pays:
  // float32 params (Adam in cache: 0.8-0.9x the time; measured in bench/README.md), and float16
  // params, whose loop runs on float blocks. With bfloat16 params the loop is busy converting,
  // and the three FMA-unit operations that replace the division made it slower (1.1-1.2x).
  constexpr bool kMayFuse =
      Rule::has_divisor && (std::is_same_v<P, float> || std::is_same_v<P, Half>);
  const bool fuse = kMayFuse && loops_take_quotient_fma();
  for_each_segment_range(segments, [&](std::size_t k, std::int64_t lo, std::int64_t hi) {
    const Segment& seg = segments[k];
    S* state[K];
    for (int j = 0; j < K; ++j) {
      state[j] = seg.state[j] ? static_cast<S*>(seg.state[j]) + lo : nullptr;
    }
    const auto run = [&]<unsigned Flags>() {
      if constexpr (std::is_same_v<P, Half>) {
        std::array<bool, kMaxStates> read{}, written{};
        for (int j = 0; j < K; ++j) {
          read[j] = Rule::reads(Flags, j);
          written[j] = Rule::writes(Flags, j);
        }
        in_float_blocks<K>(static_cast<P*>(seg.param) + lo, static_cast<const G*>(seg.grad) + lo,
                           state, hi - lo, read, written,
                           [&](float* p, const float* g, float* const* s, std::int64_t len) {
                             update_range<Rule, Flags, float, float, float>(
                                 p, g, s, len, &scalars[seg.row], clip);
                           });
      } else {
        update_range<Rule, Flags, P, G, S>(static_cast<P*>(seg.param) + lo,
                                           static_cast<const G*>(seg.grad) + lo, state, hi - lo,
                                           &scalars[seg.row], clip);
      }
    };
    if constexpr (kMayFuse) {
      if (fuse) return run.template operator()<F | kFusedMultiplyAdd>();
    }
    run.template operator()<F>();
  });
}

// Optimizers whose update is scaled, per param array, by a trust ratio ||p|| / ||u|| (LAMB):
// Rule::kTrustRatio, two passes. Pass 1, a block at a time, updates the state
// (Rule::moments) and sums the squares of the param and of the update direction u
// (Rule::direction, from the state as stored) into fixed lanes (sums.h: the order of
// reference.sum_of_squares, so the norms are the same for any thread count). Then, per array,
// ratio = ||p|| / ||u||, 1 where either is 0. Pass 2 recomputes u from the stored state and
// applies Rule::apply(p, u, ratio). Traffic: pass 1 reads p, g and the state and writes the
// state; pass 2 reads p and the state and writes p. Element i of a block adds to lane
// i % kSumLanes, so a block may be run in pieces whose lengths are multiples of kSumLanes, the
// lanes going on from piece to piece: 16-bit params are (in_half_pieces). Part: all of pass 1,
// or one of its parts, the moments (updated and stored) or the sums of the direction taken from
// them as stored; 16-bit state is rounded between the two (run_trust_ratio).
enum class Pass1 { kAll, kMoments, kSums };

template <class Rule, unsigned F, Pass1 Part, class P, class G, class S>
PYOPTIM_CLONES void trust_ratio_moments(const P* __restrict param, const G* __restrict grad,
                                        S* __restrict exp_avg, S* __restrict exp_avg_sq,
                                        std::int64_t n,
                                        const typename Rule::template Scalars<opmath_t<P>>* scalars,
                                        opmath_t<P> clip, double (&lanes)[2][kSumLanes]) {
  using T = opmath_t<P>;
  const auto s = *scalars;
  // the caller's lanes go on in local arrays (which the loop may keep in registers)
  double lanes_param[kSumLanes], lanes_update[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) {
    lanes_param[j] = lanes[0][j];
    lanes_update[j] = lanes[1][j];
  }
  const auto element = [&](std::int64_t i, int lane) __attribute__((always_inline)) {
    T m = load<T>(exp_avg[i]);
    T v = load<T>(exp_avg_sq[i]);
    if constexpr (Part != Pass1::kSums) {
      Rule::template moments<F>(scaled_gradient(load<T>(grad[i]), s.grad_factor, clip), m, v, s);
      exp_avg[i] = store<S>(m);
      exp_avg_sq[i] = store<S>(v);
    }
    if constexpr (Part != Pass1::kMoments) {
      // the direction from the moments as stored (rounded to S), as pass 2 sees them
      const T p = load<T>(param[i]);
      const T u = Rule::template direction<F>(p, load<T>(store<S>(m)), load<T>(store<S>(v)), s);
      lanes_param[lane] += static_cast<double>(p) * static_cast<double>(p);
      lanes_update[lane] += static_cast<double>(u) * static_cast<double>(u);
    }
  };
  std::int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    // the lanes are independent: one vector of them at a time, each summed in its own order
#pragma omp simd
    for (int j = 0; j < kSumLanes; ++j) element(i + j, j);
  }
  for (int j = 0; i + j < n; ++j) element(i + j, j);
  for (int j = 0; j < kSumLanes; ++j) {
    lanes[0][j] = lanes_param[j];
    lanes[1][j] = lanes_update[j];
  }
}

template <class Rule, unsigned F, class P, class S>
PYOPTIM_CLONES void trust_ratio_apply(P* __restrict param, const S* __restrict exp_avg,
                                      const S* __restrict exp_avg_sq, std::int64_t n,
                                      const typename Rule::template Scalars<opmath_t<P>>* scalars,
                                      opmath_t<P> ratio) {
  using T = opmath_t<P>;
  const auto s = *scalars;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T p = load<T>(param[i]);
    const T u = Rule::template direction<F>(p, load<T>(exp_avg[i]), load<T>(exp_avg_sq[i]), s);
    param[i] = store<P>(Rule::apply(p, u, ratio, s));
  }
}

// float16 or bfloat16 params (H), for the two passes, over pieces of kHalfBlock elements: each
// H buffer (the param, an H grad, H state) widened into L1 scratch (float16 with F16C, as
// in_float_blocks does for the one-pass optimizers; bfloat16 by a vectorized shift: the same
// values, so the same bits), a float32 grad or state passed at its place in memory. Pass 2
// (kApply; grad nullptr): fn(p, g, m, v, len), then the param is rounded back. Pass 1:
// fn(p, g, m, v, len, stored), where stored() writes the piece's H state back, rounded, and
// reads it again, so that m and v then hold the state as stored (a float32 state is in memory
// already: nothing to do); fn calls it once it has updated them. The piece after next of each H
// buffer is fetched ahead. Element by element, in the loops of trust_ratio_moments and
// trust_ratio_apply, LAMB with bfloat16 params took 1.2-1.35x the time (bench/README.md).
template <bool kApply, class H, class G, class S, class Fn>
void in_half_pieces(const H* param, const G* grad, S* exp_avg, S* exp_avg_sq, std::int64_t n,
                    const Fn& fn) {
  static_assert(kHalfBlock % kSumLanes == 0);
  constexpr bool kHalfGrad = std::is_same_v<G, H>;
  constexpr bool kHalfState = std::is_same_v<std::remove_const_t<S>, H>;
  alignas(64) float p[kHalfBlock];
  alignas(64) float g[kHalfGrad ? kHalfBlock : 1];
  alignas(64) float m[kHalfState ? kHalfBlock : 1];
  alignas(64) float v[kHalfState ? kHalfBlock : 1];
  for (std::int64_t start = 0; start < n; start += kHalfBlock) {
    const std::int64_t len = std::min(kHalfBlock, n - start);
    fetch_half_block_after_next(param, start);
    widen_halves(param + start, p, len);
    const float* grad_piece = nullptr;
    if constexpr (kHalfGrad) {
      fetch_half_block_after_next(grad, start);
      widen_halves(grad + start, g, len);
      grad_piece = g;
    } else if (grad != nullptr) {
      grad_piece = grad + start;
    }
    const auto state_pieces = [&]() {
      if constexpr (kHalfState) {
        fetch_half_block_after_next(exp_avg, start);
        fetch_half_block_after_next(exp_avg_sq, start);
        widen_halves(exp_avg + start, m, len);
        widen_halves(exp_avg_sq + start, v, len);
        return std::pair{m, v};
      } else {
        return std::pair{exp_avg + start, exp_avg_sq + start};
      }
    };
    const auto [m_piece, v_piece] = state_pieces();
    if constexpr (kApply) {
      fn(p, grad_piece, m_piece, v_piece, len);
      narrow_to_halves(p, const_cast<H*>(param) + start, len);
    } else {
      const auto stored = [&]() {
        if constexpr (kHalfState) {
          narrow_to_halves(m, exp_avg + start, len);
          narrow_to_halves(v, exp_avg_sq + start, len);
          widen_halves(exp_avg + start, m, len);
          widen_halves(exp_avg_sq + start, v, len);
        }
      };
      fn(p, grad_piece, m_piece, v_piece, len, stored);
    }
  }
}

template <class Rule, unsigned F, class C>
void run_trust_ratio(const std::vector<Segment>& segments, const double* scalar_rows,
                     std::int64_t rows, double clip_value) {
  using P = typename C::Param;
  using G = typename C::Grad;
  using S = typename C::State;
  using T = opmath_t<P>;
  const auto scalars = cast_rows<Rule, T>(scalar_rows, rows);
  const T clip = static_cast<T>(clip_value);
  constexpr bool kHalfPieces = std::is_same_v<P, Half> || std::is_same_v<P, BFloat16>;

  const std::vector<SumBlock> blocks =
      sum_blocks(segments.size(), [&](std::size_t k) { return segments[k].size; });
  std::int64_t total = 0;
  for (const Segment& seg : segments) total += seg.size;
  std::vector<std::array<double, 2>> sums(blocks.size());
  parallel_for_blocks(static_cast<std::int64_t>(blocks.size()), total, [&](std::int64_t b) {
    const SumBlock& block = blocks[b];
    const Segment& seg = segments[block.array];
    const P* param = static_cast<const P*>(seg.param) + block.begin;
    const G* grad = static_cast<const G*>(seg.grad) + block.begin;
    S* exp_avg = static_cast<S*>(seg.state[0]) + block.begin;
    S* exp_avg_sq = static_cast<S*>(seg.state[1]) + block.begin;
    double lanes[2][kSumLanes] = {};
    if constexpr (kHalfPieces) {
      in_half_pieces<false>(
          param, grad, exp_avg, exp_avg_sq, block.size,
          [&](float* p, const float* g, float* m, float* v, std::int64_t len,
              const auto& stored) {
            const auto part = [&]<Pass1 Part>() {
              trust_ratio_moments<Rule, F, Part, float, float, float>(p, g, m, v, len,
                                                                      &scalars[seg.row], clip,
                                                                      lanes);
            };
            if constexpr (std::is_same_v<S, P>) {
              // the direction from the moments as stored, rounded to P (by stored(); float16
              // rounded inside the loop, by the integer routines, took 4x the time)
              part.template operator()<Pass1::kMoments>();
              stored();
              part.template operator()<Pass1::kSums>();
            } else {
              part.template operator()<Pass1::kAll>();  // the state stored as computed
            }
          });
    } else {
      trust_ratio_moments<Rule, F, Pass1::kAll, P, G, S>(param, grad, exp_avg, exp_avg_sq,
                                                         block.size, &scalars[seg.row], clip,
                                                         lanes);
    }
    sums[b] = {pairwise_sum_fixed<kSumLanes>(lanes[0]), pairwise_sum_fixed<kSumLanes>(lanes[1])};
  });

  // per array: the blocks' sums added pairwise, then the ratio (float64, cast once)
  std::vector<T> ratios(segments.size(), T(1));
  std::vector<double> param_sums, update_sums;
  for (std::size_t b = 0; b < blocks.size();) {
    const std::size_t k = blocks[b].array;
    param_sums.clear();
    update_sums.clear();
    for (; b < blocks.size() && blocks[b].array == k; ++b) {
      param_sums.push_back(sums[b][0]);
      update_sums.push_back(sums[b][1]);
    }
    const double param_norm = std::sqrt(pairwise_sum(param_sums.data(), param_sums.size()));
    const double update_norm = std::sqrt(pairwise_sum(update_sums.data(), update_sums.size()));
    ratios[k] = static_cast<T>(param_norm == 0 || update_norm == 0 ? 1.0
                                                                   : param_norm / update_norm);
  }

  for_each_segment_range(segments, [&](std::size_t k, std::int64_t lo, std::int64_t hi) {
    const Segment& seg = segments[k];
    P* param = static_cast<P*>(seg.param) + lo;
    const S* exp_avg = static_cast<const S*>(seg.state[0]) + lo;
    const S* exp_avg_sq = static_cast<const S*>(seg.state[1]) + lo;
    if constexpr (kHalfPieces) {
      in_half_pieces<true>(param, static_cast<const float*>(nullptr), exp_avg, exp_avg_sq, hi - lo,
                           [&](float* p, const float*, const float* m, const float* v,
                               std::int64_t len) {
                             trust_ratio_apply<Rule, F, float, float>(p, m, v, len,
                                                                      &scalars[seg.row], ratios[k]);
                           });
    } else {
      trust_ratio_apply<Rule, F, P, S>(param, exp_avg, exp_avg_sq, hi - lo, &scalars[seg.row],
                                       ratios[k]);
    }
  });
}

// One step of Rule over a table of segments that share dtypes and flags. The caller has checked
// the buffers (bindings.cpp, plan.cpp). clip_value: the gradient clamp bound, nullptr for none.
// Returns false for an unsupported dtype combination.
template <class Rule>
bool step(DTypes dtypes, unsigned flags, const std::vector<Segment>& segments,
          const double* scalar_rows, std::int64_t rows, const double* clip_value) {
  return dispatch_dtypes(dtypes, [&]<class C>() {
    dispatch_flags<1u << Rule::flag_names.size()>(flags, [&]<unsigned F>() {
      const double clip = clip_value ? *clip_value : std::numeric_limits<double>::infinity();
      if constexpr (requires { Rule::kTrustRatio; }) {
        run_trust_ratio<Rule, F, C>(segments, scalar_rows, rows, clip);
      } else {
        run_segments<Rule, F, C>(segments, scalar_rows, rows, clip);
      }
    });
  });
}

using StepFunction = bool (*)(DTypes, unsigned, const std::vector<Segment>&, const double*,
                              std::int64_t, const double*);

#define PYOPTIM_DECLARE_STEP(Rule)                                                               \
  extern template bool step<Rule>(DTypes, unsigned, const std::vector<Segment>&, const double*, \
                                  std::int64_t, const double*);
#define PYOPTIM_DEFINE_STEP(Rule)                                                         \
  template bool step<Rule>(DTypes, unsigned, const std::vector<Segment>&, const double*, \
                           std::int64_t, const double*);

PYOPTIM_DECLARE_STEP(Sgd)
PYOPTIM_DECLARE_STEP(Adagrad)
PYOPTIM_DECLARE_STEP(Rmsprop)
PYOPTIM_DECLARE_STEP(Adam)
PYOPTIM_DECLARE_STEP(Adamax)
PYOPTIM_DECLARE_STEP(Nadam)
PYOPTIM_DECLARE_STEP(Radam)
PYOPTIM_DECLARE_STEP(Adadelta)
PYOPTIM_DECLARE_STEP(Asgd)
PYOPTIM_DECLARE_STEP(Rprop)
PYOPTIM_DECLARE_STEP(Lion)
PYOPTIM_DECLARE_STEP(Lamb)

}  // namespace pyoptim
