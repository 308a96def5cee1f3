// Sums in a fixed order: the same result for any thread count and any SIMD width.
//
// An array is cut into blocks of kSumBlock elements; in a block, element i is added into partial
// sum i mod kSumLanes, in order (the lanes are an array in the source, so any vectorization
// computes exactly these partial sums); the lanes, then the blocks, are added pairwise (the sum
// of a list is the sum of its first half plus the sum of its second half, the first half having
// len / 2 elements). pyoptim.reference.sum_of_squares adds in this order too.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyoptim {

inline constexpr std::int64_t kSumBlock = std::int64_t{1} << 14;  // elements per block
inline constexpr int kSumLanes = 16;                              // partial sums per block

// The sum of v[0..n) by halving: the same tree for the same n, every time.
inline double pairwise_sum(const double* v, std::size_t n) {
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

// A block of one array: the unit of work of a thread in a sum.
struct SumBlock {
  std::size_t array;
  std::int64_t begin, size;
};

// The blocks of `count` arrays, array by array, kSumBlock elements each (the last one shorter);
// size_of(k) is the size of array k.
template <class SizeOf>
std::vector<SumBlock> sum_blocks(std::size_t count, const SizeOf& size_of) {
  std::vector<SumBlock> blocks;
  for (std::size_t k = 0; k < count; ++k) {
    const std::int64_t size = size_of(k);
    for (std::int64_t b = 0; b < size; b += kSumBlock) {
      blocks.push_back({k, b, std::min(kSumBlock, size - b)});
    }
  }
  return blocks;
}

}  // namespace pyoptim
