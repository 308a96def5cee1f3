#include "arguments.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <bit>
#include <utility>

namespace py = pybind11;

namespace pyoptim {
namespace {

// NumPy's type numbers for the builtin dtypes (part of NumPy's stable ABI).
constexpr int kNpyFloat = 11;
constexpr int kNpyDouble = 12;
constexpr int kNpyHalf = 23;
constexpr int kNpyUserDef = 256;  // NumPy's first number for a user-defined dtype
// ml_dtypes.bfloat16 is a user-defined dtype: its number is known once ml_dtypes is imported.
// pyoptim does not import it (its import is slower than pyoptim's own): a bfloat16 array exists
// only once its caller did, so the number is looked up in sys.modules when an array of an unknown
// user-defined dtype comes (-1 until ml_dtypes is there).
int g_bfloat16_num = -1;

bool is_bfloat16(int num) {
  if (num < kNpyUserDef) return false;
  if (g_bfloat16_num < 0) {
    const py::dict modules = py::module_::import("sys").attr("modules");
    if (modules.contains("ml_dtypes")) {
      g_bfloat16_num = py::dtype::from_args(modules["ml_dtypes"].attr("bfloat16")).num();
    }
  }
  return num == g_bfloat16_num;
}

template <class Rule>
Optimizer describe() {
  return Optimizer{Rule::name,
                   {Rule::state_names.begin(), Rule::state_names.end()},
                   {Rule::flag_names.begin(), Rule::flag_names.end()},
                   {Rule::scalar_names.begin(), Rule::scalar_names.end()},
                   [](unsigned f, int k) { return Rule::reads(f, k); },
                   [](unsigned f, int k) { return Rule::writes(f, k); },
                   &step<Rule>};
}

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

const std::vector<DTypes>& supported_combinations() {
  static const std::vector<DTypes> combinations =
      []<class... C>(std::type_identity<std::tuple<C...>>) {
        return std::vector<DTypes>{C::dtypes...};
      }(std::type_identity<Combinations>{});
  return combinations;
}

bool is_supported(DTypes dtypes) {
  const auto& all = supported_combinations();
  return std::find(all.begin(), all.end(), dtypes) != all.end();
}

std::string supported_text() {
  std::string text;
  std::vector<DType> params;
  for (const DTypes& c : supported_combinations()) {
    if (std::find(params.begin(), params.end(), c.param) == params.end()) params.push_back(c.param);
  }
  for (DType p : params) {
    std::vector<DType> grads, states;
    for (const DTypes& c : supported_combinations()) {
      if (c.param != p) continue;
      if (std::find(grads.begin(), grads.end(), c.grad) == grads.end()) grads.push_back(c.grad);
      if (std::find(states.begin(), states.end(), c.state) == states.end()) {
        states.push_back(c.state);
      }
    }
    auto join = [](const std::vector<DType>& ds) {
      std::string s;
      for (std::size_t i = 0; i < ds.size(); ++i) {
        s += (i ? " or " : "") + std::string(dtype_name(ds[i]));
      }
      return s;
    };
    text += (text.empty() ? "(" : ", (") + std::string(dtype_name(p)) + ", " + join(grads) + ", " +
            join(states) + ")";
  }
  return text;
}

std::string unsupported_message(const std::string& where, DTypes dtypes) {
  return where + "unsupported dtypes (param " + dtype_name(dtypes.param) + ", grad " +
         dtype_name(dtypes.grad) + ", state " + dtype_name(dtypes.state) +
         "); supported (param, grad, state): " + supported_text();
}

const std::vector<Optimizer>& optimizers() {
  static const std::vector<Optimizer> table{
      describe<Sgd>(),    describe<Adagrad>(),  describe<Rmsprop>(), describe<Adam>(),
      describe<Adamax>(), describe<Nadam>(),    describe<Radam>(),   describe<Adadelta>(),
      describe<Asgd>(),   describe<Rprop>(),    describe<Lion>(),     describe<Lamb>()};
  return table;
}

const Optimizer& find_optimizer(const std::string& name) {
  for (const Optimizer& o : optimizers()) {
    if (o.name == name) return o;
  }
  throw py::value_error("unknown optimizer '" + name + "'");
}

ScalarTable scalar_table(const Optimizer& opt, py::handle obj) {
  const std::size_t fields = opt.scalar_names.size();
  ScalarTable table;
  if (py::isinstance<py::tuple>(obj)) {
    table.owned = obj.cast<std::vector<double>>();
    if (table.owned.size() != fields) {
      throw py::value_error(opt.name + ": scalars must have " + std::to_string(fields) + " values");
    }
    table.data = table.owned.data();
    table.rows = 1;
    return table;
  }
  if (py::isinstance<py::array>(obj)) {
    const auto a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().num() == kNpyDouble && (a.flags() & py::array::c_style) && a.ndim() == 2 &&
        a.shape(1) == static_cast<py::ssize_t>(fields)) {
      table.data = static_cast<const double*>(a.data());
      table.rows = a.shape(0);
      return table;
    }
  }
  throw py::value_error(opt.name + ": scalars must be a tuple of " + std::to_string(fields) +
                        " floats or a float64 array of shape (rows, " + std::to_string(fields) +
                        ")");
}

std::string shape_text(Shape shape) {
  std::string s = "(";
  for (int d = 0; d < shape.ndim; ++d) s += (d ? ", " : "") + std::to_string(shape.dims[d]);
  return s + (shape.ndim == 1 ? ",)" : ")");
}

Shape shape_of(const py::array& a) {
  return Shape{static_cast<int>(a.ndim()), a.shape()};
}

Inspected inspect_array(py::handle obj, bool written, const Shape* shape) {
  Inspected out{Buffer{}, Problem::kNone};
  if (!py::isinstance<py::array>(obj)) {
    out.problem = Problem::kNotArray;
    return out;
  }
  auto* proxy = py::detail::array_proxy(obj.ptr());
  const auto* descr = py::detail::array_descriptor_proxy(proxy->descr);
  const int num = descr->type_num;  // read off the array: no dtype object is made
  DType dtype;
  if (num == kNpyFloat) {
    dtype = DType::kFloat32;
  } else if (num == kNpyDouble) {
    dtype = DType::kFloat64;
  } else if (num == kNpyHalf) {
    dtype = DType::kFloat16;
  } else if (is_bfloat16(num)) {
    dtype = DType::kBFloat16;
  } else {
    out.problem = Problem::kDtype;
    return out;
  }
  const Shape own{proxy->nd, proxy->dimensions};
  std::int64_t size = 1;
  for (int d = 0; d < own.ndim; ++d) size *= own.dims[d];
  out.buffer = Buffer{proxy->data, size * itemsize_of(dtype), size, dtype, own};
  const int flags = proxy->flags;
  if (descr->byteorder == '>') {
    out.problem = Problem::kByteOrder;
  } else if (!(flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) {
    out.problem = Problem::kNotContiguous;
  } else if (written && !(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) {
    out.problem = Problem::kReadOnly;
  } else if (shape != nullptr && (own.ndim != shape->ndim ||
                                  !std::equal(own.dims, own.dims + own.ndim, shape->dims))) {
    out.problem = Problem::kShape;
  }
  return out;
}

void raise_problem(const Inspected& inspected, py::handle obj, const std::string& name,
                   const Shape* shape, const std::string& shape_owner) {
  switch (inspected.problem) {
    case Problem::kNotArray:
      throw py::type_error(name + " must be an array, got " +
                           std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    case Problem::kDtype:
      throw py::type_error(name + " has dtype " +
                           std::string(py::str(py::reinterpret_borrow<py::array>(obj).dtype())) +
                           "; supported dtypes are float32, float64, float16 and bfloat16");
    case Problem::kByteOrder:
      throw py::type_error(name + " is big-endian; pass an array in native byte order");
    case Problem::kNotContiguous:
      throw py::value_error(name +
                            " is not C-contiguous; pass a contiguous array (an update applied to "
                            "a contiguous copy would not reach this one)");
    case Problem::kReadOnly:
      throw py::value_error(name + " is read-only; it is updated in place");
    case Problem::kShape:
      throw py::value_error(name + " has shape " + shape_text(inspected.buffer.shape) + ", but " +
                            shape_owner + " has shape " + shape_text(*shape));
    case Problem::kNone:
      break;
  }
  throw py::value_error(name + ": internal error (no problem to raise)");
}

void sort_by_start(std::vector<Extent>& extents) {
  auto by_start = [](const Extent& x, const Extent& y) { return x.start < y.start; };
  if (std::is_sorted(extents.begin(), extents.end(), by_start)) return;
  if (extents.size() < kRadixSortMin) {
    std::sort(extents.begin(), extents.end(), by_start);
    return;
  }
  // Least significant digit first, a byte at a time, over the bits in which the starts differ
  // (stable, so each pass keeps the order of the last); a pass whose byte is the same for all
  // extents moves nothing.
  std::uintptr_t low = extents[0].start, high = extents[0].start;
  for (const Extent& e : extents) {
    low = std::min(low, e.start);
    high = std::max(high, e.start);
  }
  const int bits = std::bit_width(high - low);
  std::vector<Extent> other(extents.size());
  for (int shift = 0; shift < bits; shift += 8) {
    const auto digit = [low, shift](const Extent& e) { return ((e.start - low) >> shift) & 0xff; };
    std::array<std::size_t, 256> first{};
    for (const Extent& e : extents) ++first[digit(e)];
    if (first[digit(extents[0])] == extents.size()) continue;
    std::size_t sum = 0;
    for (std::size_t& f : first) sum += std::exchange(f, sum);
    for (const Extent& e : extents) other[first[digit(e)]++] = e;
    extents.swap(other);
  }
}

void check_no_overlap(std::vector<Extent>& extents, const std::string& prefix,
                      const std::function<std::string(int, std::size_t)>& name) {
  sort_by_start(extents);
  for (std::size_t i = 1; i < extents.size(); ++i) {
    const Extent& a = extents[i - 1];
    const Extent& b = extents[i];
    if (b.start < a.end) {
      throw py::value_error(prefix + name(a.slot, a.index) + " and " + name(b.slot, b.index) +
                            " share memory; every param, grad and state buffer must be distinct");
    }
  }
}

std::pair<const Extent*, const Extent*> first_overlap(const std::vector<Extent>& a,
                                                      const std::vector<Extent>& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i].end <= b[j].start) {
      ++i;
    } else if (b[j].end <= a[i].start) {
      ++j;
    } else {
      return {&a[i], &b[j]};
    }
  }
  return {nullptr, nullptr};
}

}  // namespace pyoptim
