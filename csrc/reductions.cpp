#include "reductions.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "arguments.h"
#include "module.h"
#include "storage.h"
#include "sums.h"
#include "threads.h"

namespace py = pybind11;

namespace pyoptim {
namespace {

// Adds the squares of x[0..n) to the lanes, x[i] to lane i % kSumLanes. The lanes are an array
// in the source, so any vectorization of the inner loop computes exactly these partial sums.
template <class X>
PYOPTIM_CLONES void add_squares(const X* __restrict x, std::int64_t n, double (&sums)[kSumLanes]) {
  double lanes[kSumLanes];
  for (int j = 0; j < kSumLanes; ++j) lanes[j] = sums[j];
  std::int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    for (int j = 0; j < kSumLanes; ++j) {
      const double v = load<double>(x[i + j]);
      lanes[j] += v * v;
    }
  }
  for (int j = 0; i + j < n; ++j) {
    const double v = load<double>(x[i + j]);
    lanes[j] += v * v;
  }
  for (int j = 0; j < kSumLanes; ++j) sums[j] = lanes[j];
}

// float16 is widened a piece at a time with F16C (widen_halves; GCC does not vectorize the
// conversion element by element); a piece is a multiple of the lanes, so the lanes go on from
// piece to piece and the sum is the same bits.
static_assert(kHalfBlock % kSumLanes == 0);

// The sum of squares of x[0..n), n <= kSumBlock.
template <class G>
double block_sum_of_squares(const G* x, std::int64_t n) {
  double lanes[kSumLanes] = {};
  if constexpr (std::is_same_v<G, Half>) {
    alignas(64) float piece[kHalfBlock];
    for (std::int64_t start = 0; start < n; start += kHalfBlock) {
      const std::int64_t len = std::min(kHalfBlock, n - start);
      widen_halves(x + start, piece, len);
      add_squares(piece, len, lanes);
    }
  } else {
    add_squares(x, n, lanes);
  }
  return pairwise_sum_fixed<kSumLanes>(lanes);
}

template <class G>
double block_sum_as(const Span& span, std::int64_t begin, std::int64_t n) {
  return block_sum_of_squares(static_cast<const G*>(span.data) + begin, n);
}

double block_sum(const Span& span, std::int64_t begin, std::int64_t n) {
  switch (span.dtype) {
    case DType::kFloat32: return block_sum_as<float>(span, begin, n);
    case DType::kFloat64: return block_sum_as<double>(span, begin, n);
    case DType::kFloat16: return block_sum_as<Half>(span, begin, n);
    case DType::kBFloat16: return block_sum_as<BFloat16>(span, begin, n);
  }
  return 0.0;
}

// Whether a float64 array holds a NaN or an infinity (its squares can overflow while it is
// finite, so the sum alone does not tell).
bool all_finite(const double* x, std::int64_t n) {
  bool finite = true;
  for (std::int64_t i = 0; i < n; ++i) finite &= std::isfinite(x[i]);
  return finite;
}

}  // namespace

SumOfSquares sum_of_squares(const std::vector<Span>& spans) {
  const std::vector<SumBlock> blocks =
      sum_blocks(spans.size(), [&](std::size_t k) { return spans[k].size; });
  std::int64_t total = 0;
  for (const Span& span : spans) total += span.size;
  std::vector<double> sums(blocks.size());
  parallel_for_blocks(static_cast<std::int64_t>(blocks.size()), total, [&](std::int64_t b) {
    sums[b] = block_sum(spans[blocks[b].array], blocks[b].begin, blocks[b].size);
  });
  const auto count = static_cast<std::int64_t>(blocks.size());
  SumOfSquares result{pairwise_sum(sums.data(), sums.size()), true};
  // A NaN or infinite element makes its block's sum NaN or infinite. A block of 16- or 32-bit
  // values cannot overflow in float64; one of float64 values can, so its elements are looked at.
  if (!std::isfinite(result.sum)) {
    for (std::int64_t b = 0; b < count && result.finite; ++b) {
      if (std::isfinite(sums[b])) continue;
      const Span& span = spans[blocks[b].array];
      result.finite = span.dtype == DType::kFloat64 && !std::isnan(sums[b]) &&
                      all_finite(static_cast<const double*>(span.data) + blocks[b].begin,
                                 blocks[b].size);
    }
  }
  return result;
}

void bind_reductions(py::module_& m) {
  m.def(
      "sum_of_squares",
      [](const py::sequence& arrays) {
        std::vector<Span> spans;
        std::vector<py::object> keep;
        spans.reserve(arrays.size());
        for (std::size_t i = 0; i < arrays.size(); ++i) {
          py::object item = arrays[i];
          const Buffer b = check_array(
              item, [i] { return "sum_of_squares: arrays[" + std::to_string(i) + "]"; }, false);
          spans.push_back({b.data, b.size, b.dtype});
          keep.push_back(std::move(item));
        }
        SumOfSquares result;
        {
          py::gil_scoped_release release;
          result = sum_of_squares(spans);
        }
        return py::make_tuple(result.sum, result.finite);
      },
      py::arg("arrays"),
      R"doc(The sum of the squares of all elements of a list of arrays, in float64, and whether all
are finite: (sum, finite). The result is the same for any thread count and instruction set (fixed
blocks, fixed lanes, pairwise sums).)doc");
}

}  // namespace pyoptim
