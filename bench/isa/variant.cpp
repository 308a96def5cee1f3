// One instruction-set variant of pyoptim's SIMD loop (csrc/kernels.h), compiled by run.sh once per
// -march level inside its own namespace, so that driver.cpp can time the variants side by side.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PYOPTIM_NO_CLONES
namespace VARIANT {
#include "../../csrc/kernels.h"
}

#define NAME2(a, b) a##_##b
#define NAME(a, b) NAME2(a, b)

namespace {
template <class Rule, unsigned F, class P, class G, class S>
void run(void* p, const void* g, void* const* st, std::int64_t n, const double* scalars) {
  using T = VARIANT::pyoptim::opmath_t<P>;
  const auto s = Rule::template cast_scalars<T>(scalars);
  S* states[3] = {static_cast<S*>(st[0]), static_cast<S*>(st[1]), static_cast<S*>(st[2])};
  VARIANT::pyoptim::update_range<Rule, F, P, G, S>(
      static_cast<P*>(p), static_cast<const G*>(g), states, n, &s,
      std::numeric_limits<T>::infinity());
}
}  // namespace

using namespace VARIANT::pyoptim;
// The kernels timed: Adam fp32, Adam bf16 params with fp32 state, SGD momentum fp32, centered
// RMSprop with momentum fp32.
extern "C" void NAME(adam_f32, VARIANT)(void* p, const void* g, void* const* st, std::int64_t n,
                                        const double* s) {
  run<Adam, 0u, float, float, float>(p, g, st, n, s);
}
extern "C" void NAME(adam_bf16, VARIANT)(void* p, const void* g, void* const* st, std::int64_t n,
                                         const double* s) {
  run<Adam, 0u, BFloat16, BFloat16, float>(p, g, st, n, s);
}
extern "C" void NAME(sgd_f32, VARIANT)(void* p, const void* g, void* const* st, std::int64_t n,
                                       const double* s) {
  run<Sgd, Sgd::kMomentum, float, float, float>(p, g, st, n, s);
}
extern "C" void NAME(rmsprop_f32, VARIANT)(void* p, const void* g, void* const* st, std::int64_t n,
                                           const double* s) {
  run<Rmsprop, Rmsprop::kCentered | Rmsprop::kMomentum, float, float, float>(p, g, st, n, s);
}
