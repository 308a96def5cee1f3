// Threading: how many threads a step uses and how a range of elements is split among them.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyoptim {

// The thread count of pyoptim's parallel regions: set_num_threads(n), by default OpenMP's
// (OMP_NUM_THREADS when set, else the number of cores).
int num_threads();
void set_num_threads(int n);
// The steps this OS thread starts use n threads instead (0: set_num_threads' count again):
// pyoptim.torch's steps follow torch's intra-op thread count this way, as torch.optim's do.
void set_calling_thread_num_threads(int n);

// The most threads a parallel region starts: max(1024, the processors this process may run
// on). set_num_threads refuses more; a count that comes from elsewhere (OMP_NUM_THREADS, torch's
// through set_calling_thread_num_threads) is capped at it. libgomp starts a team of n threads
// with n entries on the caller's stack and exits the process when it cannot create one: tens of
// thousands crash it, and more threads than processors never make a step faster.
int max_threads();

// Whether this process was forked after pyoptim was loaded: its steps then run on one thread,
// and num_threads() is 1 (threads.cpp).
bool forked_child();

// Each thread gets at least this many elements: below twice it a step runs serially, because
// starting a parallel region costs more than the elements save. The default is measured by
// bench/threshold.py (bench/README.md); set_min_elements_per_thread exists for that measurement.
inline constexpr std::int64_t kMinElementsPerThread = std::int64_t{1} << 13;
std::int64_t min_elements_per_thread();
void set_min_elements_per_thread(std::int64_t n);

// Thread ranges begin at multiples of this many elements, so that two threads never write into
// the same cache line of a buffer.
inline constexpr std::int64_t kGrain = 64;

// Calls body(begin, end) on contiguous ranges that cover [0, n), one range per thread. The split
// only decides who computes an element, never how: results do not depend on the thread count.
template <class Body>
void parallel_for(std::int64_t n, const Body& body) {
  const std::int64_t wanted =
      std::min<std::int64_t>({num_threads(), n / min_elements_per_thread(), max_threads()});
  if (wanted <= 1) {
    body(std::int64_t{0}, n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(wanted))
  {
    const std::int64_t threads = omp_get_num_threads();
    const std::int64_t chunk = ((n + threads - 1) / threads + kGrain - 1) / kGrain * kGrain;
    const std::int64_t begin = std::min(n, chunk * omp_get_thread_num());
    const std::int64_t end = std::min(n, begin + chunk);
    if (begin < end) body(begin, end);
  }
#else
  body(std::int64_t{0}, n);
#endif
}

// Calls body(b) for b in [0, count): whole blocks of work, split among the threads (statically,
// in order). total_elements decides, as in parallel_for, whether more threads pay.
template <class Body>
void parallel_for_blocks(std::int64_t count, std::int64_t total_elements, const Body& body) {
  const std::int64_t threads = std::min<std::int64_t>(
      {num_threads(), total_elements / min_elements_per_thread(), count, max_threads()});
  if (threads <= 1) {
    for (std::int64_t b = 0; b < count; ++b) body(b);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
  for (std::int64_t b = 0; b < count; ++b) body(b);
#else
  for (std::int64_t b = 0; b < count; ++b) body(b);
#endif
}

}  // namespace pyoptim
