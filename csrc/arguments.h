// What the bound functions share about their arguments: the optimizers a step can run, the
// dtypes of arrays and the checks every in-place buffer passes (bindings.cpp, plan.cpp,
// reductions.cpp).
//
// Nothing here converts or copies an array: an in-place update applied to a copy would be lost.
// A buffer that does not fit (wrong type or dtype, not C-contiguous, read-only, wrong shape, or
// overlapping another argument) raises TypeError or ValueError naming the argument, before any
// element is written. Names are built only when a check fails, so that checking thousands of
// arrays per step stays cheap.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include "kernels.h"

namespace pyoptim {

const char* dtype_name(DType d);

constexpr std::int64_t itemsize_of(DType d) {
  return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : 2;
}

// The supported (param, grad, state) combinations, and as text for error messages:
// "(float32, float32, float32), (float64, float64 or float32, float64 or float32), ...".
const std::vector<DTypes>& supported_combinations();
bool is_supported(DTypes dtypes);
std::string supported_text();
std::string unsupported_message(const std::string& where, DTypes dtypes);

// What a step needs to know of an optimizer, taken from its rule.
struct Optimizer {
  std::string name;
  std::vector<std::string> state_names, flag_names, scalar_names;
  bool (*reads)(unsigned, int);
  bool (*writes)(unsigned, int);
  StepFunction step;
};

const Optimizer& find_optimizer(const std::string& name);
const std::vector<Optimizer>& optimizers();

// A step's per-step scalars: a tuple of floats (one row for every param), or a C-contiguous
// float64 array of shape (rows, fields). data points into the array, or into owned for a tuple.
struct ScalarTable {
  std::vector<double> owned;
  const double* data;
  std::int64_t rows;
};
ScalarTable scalar_table(const Optimizer& opt, pybind11::handle obj);

// The shape an array must have: its param's.
struct Shape {
  int ndim;
  const pybind11::ssize_t* dims;
};
std::string shape_text(Shape shape);
Shape shape_of(const pybind11::array& a);

// One array argument, after its checks.
struct Buffer {
  void* data;
  std::int64_t nbytes;
  std::int64_t size;
  DType dtype;
  Shape shape;
};

// What is wrong with an array argument, if anything.
enum class Problem { kNone, kNotArray, kDtype, kByteOrder, kNotContiguous, kReadOnly, kShape };

struct Inspected {
  Buffer buffer;
  Problem problem;
};

// Brings an array argument's object, then its shape, into the cache some arguments ahead of its
// check (_core.step over thousands of arrays: the checks of 2000 x 4 arrays moved in memory
// took 0.91x the time with the radix sort alone, 0.83-0.85x with this too, on the Intel Xeon;
// the Plan's check of 2000 grads gained nothing measurable from it and does without).
inline constexpr std::size_t kFetchAhead = 8;
inline void prefetch_object(pybind11::handle obj) { __builtin_prefetch(obj.ptr()); }
inline void prefetch_shape(pybind11::handle obj) {
  if (pybind11::isinstance<pybind11::array>(obj)) {
    __builtin_prefetch(pybind11::detail::array_proxy(obj.ptr())->dimensions);
  }
}

// The checks of check_array, without building any message.
Inspected inspect_array(pybind11::handle obj, bool written, const Shape* shape);

// Raises the TypeError or ValueError for an array that failed inspect_array.
[[noreturn]] void raise_problem(const Inspected& inspected, pybind11::handle obj,
                                const std::string& name, const Shape* shape,
                                const std::string& shape_owner);

// Checks one array: a NumPy array of a supported dtype, in native byte order, C-contiguous,
// writeable if written, of the given shape (that of the array shape_owner() names) if any.
// name() and shape_owner() are called only to build an error message.
template <class NameFn, class OwnerFn>
Buffer check_array(pybind11::handle obj, const NameFn& name, bool written, const Shape* shape,
                   const OwnerFn& shape_owner) {
  const Inspected inspected = inspect_array(obj, written, shape);
  if (inspected.problem != Problem::kNone) {
    raise_problem(inspected, obj, name(), shape, shape != nullptr ? shape_owner() : std::string());
  }
  return inspected.buffer;
}

// An array with no shape to match.
template <class NameFn>
Buffer check_array(pybind11::handle obj, const NameFn& name, bool written) {
  return check_array(obj, name, written, nullptr, [] { return std::string(); });
}

// The memory of one argument, for the overlap check; slot and index say which argument it is.
struct Extent {
  std::uintptr_t start, end;
  int slot;
  std::size_t index;
};
inline Extent extent_of(const Buffer& b, int slot, std::size_t index) {
  const auto start = reinterpret_cast<std::uintptr_t>(b.data);
  return Extent{start, start + static_cast<std::uintptr_t>(b.nbytes), slot, index};
}

// Sorts extents by start address: std::sort below kRadixSortMin extents, a radix sort above,
// where std::sort's mispredicted branches made it 3-4x slower (8000 extents in random order, as
// 2000 arrays moved in memory give: 300 us against 70-115 us on the Intel Xeon; 800: 6 us
// either way).
inline constexpr std::size_t kRadixSortMin = 1024;
void sort_by_start(std::vector<Extent>& extents);

// No two arguments may share memory: the kernel reads and writes through restrict pointers,
// and a param updated twice, or a state that is also a grad, is a bug in the caller. Sorts
// extents by address; the names come from name(slot, index). Extents of empty arrays are left
// out by the callers.
void check_no_overlap(std::vector<Extent>& extents, const std::string& prefix,
                      const std::function<std::string(int, std::size_t)>& name);

// The first pair of overlapping extents between two lists sorted by address, or nullptr.
std::pair<const Extent*, const Extent*> first_overlap(const std::vector<Extent>& a,
                                                      const std::vector<Extent>& b);

}  // namespace pyoptim
