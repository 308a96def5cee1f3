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

}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_num_threads.store(std::max(1, n), std::memory_order_relaxed); }

}  // namespace pyoptim
