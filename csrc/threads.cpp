#include "threads.h"

#include <atomic>

namespace pyoptim {
namespace {

int default_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int> g_num_threads{default_threads()};
std::atomic<std::int64_t> g_min_elements_per_thread{kMinElementsPerThread};

}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_num_threads.store(std::max(1, n), std::memory_order_relaxed); }

std::int64_t min_elements_per_thread() {
  return g_min_elements_per_thread.load(std::memory_order_relaxed);
}

void set_min_elements_per_thread(std::int64_t n) {
  g_min_elements_per_thread.store(std::max<std::int64_t>(1, n), std::memory_order_relaxed);
}

}  // namespace pyoptim
