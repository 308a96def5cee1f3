#include "threads.h"

#include <atomic>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace pyoptim {
namespace {

// A process forked after this module was loaded: OpenMP (libgomp) cannot start threads there
// once any parallel region ran before the fork (pyoptim's or another library's, torch's: they
// share one thread pool), and whether one did is not known. Such a child runs every step on one
// thread (results are the same for any thread count).
std::atomic<bool> g_forked{false};

void on_fork_child() { g_forked.store(true, std::memory_order_relaxed); }

#if defined(__unix__) || defined(__APPLE__)
[[maybe_unused]] const bool g_fork_handler = [] { return pthread_atfork(nullptr, nullptr, &on_fork_child) == 0; }();
#endif

int default_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int> g_num_threads{default_threads()};
std::atomic<std::int64_t> g_min_elements_per_thread{kMinElementsPerThread};

// The calling thread's own count (set_calling_thread_num_threads), 0 where it has none.
thread_local int t_num_threads = 0;

}  // namespace

int num_threads() {
  if (forked_child()) return 1;
  return t_num_threads > 0 ? t_num_threads : g_num_threads.load(std::memory_order_relaxed);
}

void set_calling_thread_num_threads(int n) { t_num_threads = std::max(0, n); }

int max_threads() {
#ifdef _OPENMP
  static const int bound = std::max(1024, omp_get_num_procs());
  return bound;
#else
  return 1;
#endif
}

bool forked_child() { return g_forked.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_num_threads.store(std::max(1, n), std::memory_order_relaxed); }

std::int64_t min_elements_per_thread() {
  return g_min_elements_per_thread.load(std::memory_order_relaxed);
}

void set_min_elements_per_thread(std::int64_t n) {
  g_min_elements_per_thread.store(std::max<std::int64_t>(1, n), std::memory_order_relaxed);
}

}  // namespace pyoptim
