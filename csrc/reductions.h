// Deterministic reductions over many arrays: the global sum of squares behind gradient-norm
// clipping, and whether every element is finite.
//
// The sum does not depend on the thread count or the instruction set: each array is cut into
// fixed blocks, each block is summed in float64 into a fixed number of lanes (element i into lane
// i mod kLanes, whatever the SIMD width), the lanes and then the blocks are added pairwise in a
// fixed tree. Threads only decide who sums which block.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "kernels.h"

namespace pyoptim {

// One array to reduce: its elements, their count and dtype.
struct Span {
  const void* data;
  std::int64_t size;
  DType dtype;
};

struct SumOfSquares {
  double sum;   // the sum of the squares of all elements, in float64
  bool finite;  // no element is NaN or infinite
};

// Runs without the GIL.
SumOfSquares sum_of_squares(const std::vector<Span>& spans);

}  // namespace pyoptim
