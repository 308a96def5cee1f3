#include "reductions.h"

#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "arguments.h"
#include "module.h"
#include "storage.h"
#include "threads.h"

namespace py = pybind11;

namespace pyoptim {
namespace {

// Elements per block: a block is the unit of work of a thread.
constexpr std::int64_t kBlock = std::int64_t{1} << 14;
// Partial sums per block; element i of a block goes to lane i mod kLanes.
constexpr int kLanes = 16;

// The sum of v[0..n) by halving: the same tree for the same n, every time.
double pairwise_sum(const double* v, std::size_t n) {
  if (n == 0) return 0.0;
  if (n == 1) return v[0];
  const std::size_t half = n / 2;
  return pairwise_sum(v, half) + pairwise_sum(v + half, n - half);
}

// pairwise_sum for a length known at compile time: the same tree, unrolled.
template <std::size_t N>
inline double pairwise_sum_fixed(const double* v) {
  if constexpr (N == 1) {
    return v[0];
  } else {
    return pairwise_sum_fixed<N / 2>(v) + pairwise_sum_fixed<N - N / 2>(v + N / 2);
  }
}

// The sum of squares of x[0..n), n <= kBlock. The lanes are an array in the source, so any
// vectorization of the inner loop computes exactly these partial sums.
template <class G>
PYOPTIM_CLONES double block_sum_of_squares(const G* __restrict x, std::int64_t n) {
  double lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double v = load<double>(x[i + j]);
      lanes[j] += v * v;
    }
  }
  for (int j = 0; i + j < n; ++j) {
    const double v = load<double>(x[i + j]);
    lanes[j] += v * v;
  }
  return pairwise_sum_fixed<kLanes>(lanes);
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
  struct Block {
    std::size_t span;
    std::int64_t begin, size;
  };
  std::vector<Block> blocks;
  std::int64_t total = 0;
  for (std::size_t k = 0; k < spans.size(); ++k) {
    for (std::int64_t b = 0; b < spans[k].size; b += kBlock) {
      blocks.push_back({k, b, std::min(kBlock, spans[k].size - b)});
    }
    total += spans[k].size;
  }
  std::vector<double> sums(blocks.size());
  const auto count = static_cast<std::int64_t>(blocks.size());
  const int threads = static_cast<int>(
      std::min<std::int64_t>({num_threads(), total / min_elements_per_thread(), count}));
  if (threads <= 1) {
    for (std::int64_t b = 0; b < count; ++b) {
      sums[b] = block_sum(spans[blocks[b].span], blocks[b].begin, blocks[b].size);
    }
  } else {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t b = 0; b < count; ++b) {
      sums[b] = block_sum(spans[blocks[b].span], blocks[b].begin, blocks[b].size);
    }
  }
  SumOfSquares result{pairwise_sum(sums.data(), sums.size()), true};
  // A NaN or infinite element makes its block's sum NaN or infinite. A block of 16- or 32-bit
  // values cannot overflow in float64; one of float64 values can, so its elements are looked at.
  if (!std::isfinite(result.sum)) {
    for (std::int64_t b = 0; b < count && result.finite; ++b) {
      if (std::isfinite(sums[b])) continue;
      const Span& span = spans[blocks[b].span];
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
