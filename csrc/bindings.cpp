// pyoptim._core: checks every buffer, builds the segment table, releases the GIL and runs a step.
//
// Nothing here converts or copies an array: an in-place update applied to a copy would be lost.
// A buffer that does not fit (wrong type or dtype, not C-contiguous, read-only, wrong shape, or
// overlapping another argument) raises TypeError or ValueError naming the argument, before any
// element is written. No math lives here (rules.h), no loop (kernels.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels.h"
#include "module.h"
#include "storage.h"
#include "threads.h"

namespace py = pybind11;

namespace pyoptim {
namespace {

// NumPy's type numbers for the builtin dtypes (part of NumPy's stable ABI).
constexpr int kNpyFloat = 11;
constexpr int kNpyDouble = 12;
constexpr int kNpyHalf = 23;
// ml_dtypes.bfloat16 is a user-defined dtype: its number is known once ml_dtypes is imported.
int g_bfloat16_num = -1;

int type_num(py::handle array) {
  return py::detail::array_descriptor_proxy(py::detail::array_proxy(array.ptr())->descr)->type_num;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

std::vector<DTypes> supported_combinations() {
  return []<class... C>(std::type_identity<std::tuple<C...>>) {
    return std::vector<DTypes>{C::dtypes...};
  }(std::type_identity<Combinations>{});
}

// "(float32, float32, float32), (float64, float64 or float32, float64 or float32), ..."
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
      if (std::find(states.begin(), states.end(), c.state) == states.end()) states.push_back(c.state);
    }
    auto join = [](const std::vector<DType>& ds) {
      std::string s;
      for (std::size_t i = 0; i < ds.size(); ++i) s += (i ? " or " : "") + std::string(dtype_name(ds[i]));
      return s;
    };
    text += (text.empty() ? "(" : ", (") + std::string(dtype_name(p)) + ", " + join(grads) + ", " +
            join(states) + ")";
  }
  return text;
}

// What a step needs to know of an optimizer, taken from its rule.
struct Optimizer {
  std::string name;
  std::vector<std::string> state_names, flag_names, scalar_names;
  bool (*reads)(unsigned, int);
  bool (*writes)(unsigned, int);
  bool (*step)(DTypes, unsigned, const std::vector<Segment>&, const double*, std::int64_t);
};

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

const std::vector<Optimizer>& optimizers() {
  static const std::vector<Optimizer> table{
      describe<Sgd>(),    describe<Adagrad>(),  describe<Rmsprop>(), describe<Adam>(),
      describe<Adamax>(), describe<Nadam>(),    describe<Radam>(),   describe<Adadelta>(),
      describe<Asgd>(),   describe<Rprop>(),    describe<Lion>()};
  return table;
}

const Optimizer& find_optimizer(const std::string& name) {
  for (const Optimizer& o : optimizers()) {
    if (o.name == name) return o;
  }
  throw py::value_error("unknown optimizer '" + name + "'");
}

// One array argument, after its checks.
struct Buffer {
  void* data;
  std::int64_t nbytes;
  DType dtype;
};

// The arguments of one step: slot 0 is the params, 1 the grads, 2... the state buffers.
class Arguments {
 public:
  Arguments(const Optimizer& opt, std::size_t count) : opt_(opt), count_(count) {}

  std::string name(int slot, std::size_t index) const {
    std::string base = slot == 0 ? "param" : slot == 1 ? "grad" : opt_.state_names[slot - 2];
    return count_ == 1 ? base : base + "[" + std::to_string(index) + "]";
  }

  std::string where(int slot, std::size_t index) const {
    return opt_.name + ": " + name(slot, index);
  }

  // Checks one array: a NumPy array of a supported dtype, C-contiguous, writeable if written,
  // with the shape of its param. Records its memory for the overlap check.
  Buffer check(py::handle obj, int slot, std::size_t index, bool written, const py::array* shape_of) {
    if (!py::isinstance<py::array>(obj)) {
      throw py::type_error(where(slot, index) + " must be an array, got " +
                           std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    const auto a = py::reinterpret_borrow<py::array>(obj);
    const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr);
    const int num = descr->type_num;  // read off the array: no dtype object is made
    DType dtype;
    if (num == kNpyFloat) {
      dtype = DType::kFloat32;
    } else if (num == kNpyDouble) {
      dtype = DType::kFloat64;
    } else if (num == kNpyHalf) {
      dtype = DType::kFloat16;
    } else if (num == g_bfloat16_num && g_bfloat16_num >= 0) {
      dtype = DType::kBFloat16;
    } else {
      throw py::type_error(where(slot, index) + " has dtype " + std::string(py::str(a.dtype())) +
                           "; supported dtypes are float32, float64, float16 and bfloat16");
    }
    if (descr->byteorder == '>') {
      throw py::type_error(where(slot, index) + " is big-endian; pass an array in native byte order");
    }
    if (!(a.flags() & py::array::c_style)) {
      throw py::value_error(where(slot, index) +
                            " is not C-contiguous; pass a contiguous array (an update applied to a "
                            "contiguous copy would not reach this one)");
    }
    if (written && !a.writeable()) {
      throw py::value_error(where(slot, index) + " is read-only; it is updated in place");
    }
    if (shape_of != nullptr &&
        (a.ndim() != shape_of->ndim() ||
         !std::equal(a.shape(), a.shape() + a.ndim(), shape_of->shape()))) {
      throw py::value_error(where(slot, index) + " has shape " + shape_text(a) + ", but " +
                            name(0, index) + " has shape " + shape_text(*shape_of));
    }
    const std::int64_t nbytes = static_cast<std::int64_t>(a.nbytes());
    if (nbytes > 0) {
      const auto start = reinterpret_cast<std::uintptr_t>(a.data());
      extents_.push_back({start, start + static_cast<std::uintptr_t>(nbytes), slot, index});
    }
    return Buffer{const_cast<void*>(a.data()), nbytes, dtype};
  }

  // No two arguments may share memory: the kernel reads and writes through restrict pointers,
  // and a param updated twice, or a state that is also a grad, is a bug in the caller.
  void check_no_overlap() {
    auto by_start = [](const Extent& x, const Extent& y) { return x.start < y.start; };
    if (!std::is_sorted(extents_.begin(), extents_.end(), by_start)) {
      std::sort(extents_.begin(), extents_.end(), by_start);
    }
    for (std::size_t i = 1; i < extents_.size(); ++i) {
      const Extent& a = extents_[i - 1];
      const Extent& b = extents_[i];
      if (b.start < a.end) {
        throw py::value_error(opt_.name + ": " + name(a.slot, a.index) + " and " +
                              name(b.slot, b.index) +
                              " share memory; every param, grad and state buffer must be distinct");
      }
    }
  }

 private:
  struct Extent {
    std::uintptr_t start, end;
    int slot;
    std::size_t index;
  };

  static std::string shape_text(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
  }

  const Optimizer& opt_;
  std::size_t count_;
  std::vector<Extent> extents_;
};

std::vector<py::object> as_list(py::handle obj, const std::string& what, std::size_t count) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj)) {
    throw py::type_error(what + " must be a list of arrays");
  }
  auto seq = py::reinterpret_borrow<py::sequence>(obj);
  if (count != static_cast<std::size_t>(-1) && seq.size() != count) {
    throw py::value_error(what + " has " + std::to_string(seq.size()) + " arrays, expected " +
                          std::to_string(count) + " (one per param)");
  }
  std::vector<py::object> items;
  items.reserve(seq.size());
  for (auto item : seq) items.push_back(py::reinterpret_borrow<py::object>(item));
  return items;
}

void run_step(const std::string& name, unsigned flags, py::handle params_obj, py::handle grads_obj,
              py::handle states_obj, py::handle scalars_obj, py::handle rows_obj) {
  const Optimizer& opt = find_optimizer(name);
  const int num_states = static_cast<int>(opt.state_names.size());
  if (flags >= (1u << opt.flag_names.size())) {
    throw py::value_error(name + ": flags " + std::to_string(flags) + " out of range");
  }

  const std::vector<py::object> params = as_list(params_obj, name + ": params", -1);
  const std::size_t count = params.size();
  const std::vector<py::object> grads = as_list(grads_obj, name + ": grads", count);
  const std::vector<py::object> state_slots = as_list(states_obj, name + ": states", num_states);

  // per-step scalars: a tuple of floats (one row for every param), or a float64 array with one
  // row per group of params
  const std::size_t fields = opt.scalar_names.size();
  std::vector<double> one_row;
  const double* scalar_rows = nullptr;
  std::int64_t rows = 1;
  if (py::isinstance<py::tuple>(scalars_obj)) {
    one_row = scalars_obj.cast<std::vector<double>>();
    if (one_row.size() != fields) {
      throw py::value_error(name + ": scalars must have " + std::to_string(fields) + " values");
    }
    scalar_rows = one_row.data();
  } else if (py::isinstance<py::array>(scalars_obj) && type_num(scalars_obj) == kNpyDouble &&
             (py::reinterpret_borrow<py::array>(scalars_obj).flags() & py::array::c_style) &&
             py::reinterpret_borrow<py::array>(scalars_obj).ndim() == 2 &&
             py::reinterpret_borrow<py::array>(scalars_obj).shape(1) ==
                 static_cast<py::ssize_t>(fields)) {
    const auto table = py::reinterpret_borrow<py::array>(scalars_obj);
    rows = table.shape(0);
    scalar_rows = static_cast<const double*>(table.data());
  } else {
    throw py::value_error(name + ": scalars must be a tuple of " + std::to_string(fields) +
                          " floats or a float64 array of shape (rows, " + std::to_string(fields) +
                          ")");
  }
  std::vector<std::int64_t> row_of(count, 0);
  if (!rows_obj.is_none()) {
    const std::vector<std::int64_t> given = rows_obj.cast<std::vector<std::int64_t>>();
    if (given.size() != count) throw py::value_error(name + ": rows must have one entry per param");
    for (std::size_t i = 0; i < count; ++i) {
      if (given[i] < 0 || given[i] >= rows) throw py::value_error(name + ": row out of range");
      row_of[i] = given[i];
    }
  } else if (rows == static_cast<std::int64_t>(count)) {
    for (std::size_t i = 0; i < count; ++i) row_of[i] = static_cast<std::int64_t>(i);
  } else if (rows != 1) {
    throw py::value_error(name + ": scalars must have one row, or one row per param");
  }

  Arguments args(opt, count);
  std::vector<std::vector<py::object>> states(num_states);
  for (int k = 0; k < num_states; ++k) {
    if (!(opt.reads(flags, k) || opt.writes(flags, k))) continue;
    if (state_slots[k].is_none()) {
      throw py::value_error(name + ": " + opt.state_names[k] +
                            " is required by these options but was not given");
    }
    states[k] = as_list(state_slots[k], name + ": " + opt.state_names[k], count);
  }

  std::vector<Segment> segments(count);
  DTypes dtypes{};
  bool state_dtype_known = false;  // a step without state buffers counts as the param's dtype
  for (std::size_t i = 0; i < count; ++i) {
    const auto param = py::reinterpret_borrow<py::array>(params[i]);
    const Buffer p = args.check(params[i], 0, i, true, nullptr);
    const Buffer g = args.check(grads[i], 1, i, false, &param);
    if (i == 0) dtypes = DTypes{p.dtype, g.dtype, p.dtype};
    if (p.dtype != dtypes.param || g.dtype != dtypes.grad) {
      throw py::type_error(args.where(p.dtype != dtypes.param ? 0 : 1, i) +
                           " has a dtype different from the first; a step takes arrays of one "
                           "(param, grad, state) dtype combination");
    }
    Segment& seg = segments[i];
    seg.param = p.data;
    seg.grad = g.data;
    seg.state.fill(nullptr);
    seg.size = param.size();
    seg.row = row_of[i];
    for (int k = 0; k < num_states; ++k) {
      if (states[k].empty()) continue;
      const Buffer s = args.check(states[k][i], k + 2, i, true, &param);
      if (!state_dtype_known) {
        dtypes.state = s.dtype;
        state_dtype_known = true;
      } else if (s.dtype != dtypes.state) {
        throw py::type_error(args.where(k + 2, i) + " has dtype " + dtype_name(s.dtype) +
                             ", but the other state buffers are " + dtype_name(dtypes.state));
      }
      seg.state[k] = s.data;
    }
  }
  args.check_no_overlap();
  if (count == 0) return;

  const auto supported = supported_combinations();
  if (std::find(supported.begin(), supported.end(), dtypes) == supported.end()) {
    throw py::type_error(name + ": unsupported dtypes (param " + dtype_name(dtypes.param) +
                         ", grad " + dtype_name(dtypes.grad) + ", state " +
                         dtype_name(dtypes.state) + "); supported (param, grad, state): " +
                         supported_text());
  }

  py::gil_scoped_release release;
  opt.step(dtypes, flags, segments, scalar_rows, rows);
}

// Converts between float32 and float16/bfloat16 with the kernels' own conversions (for tests).
void convert(const py::array& src, py::array& dst) {
  if (src.size() != dst.size() || !(src.flags() & py::array::c_style) ||
      !(dst.flags() & py::array::c_style) || !dst.writeable()) {
    throw py::value_error("convert: arrays must be C-contiguous, of equal size, dst writeable");
  }
  const int s = type_num(src);
  const int d = type_num(dst);
  const py::ssize_t n = src.size();
  if (s == kNpyFloat && d == kNpyHalf) {
    auto* in = static_cast<const float*>(src.data());
    auto* out = static_cast<Half*>(dst.mutable_data());
    for (py::ssize_t i = 0; i < n; ++i) out[i] = store<Half>(in[i]);
  } else if (s == kNpyFloat && d == g_bfloat16_num) {
    auto* in = static_cast<const float*>(src.data());
    auto* out = static_cast<BFloat16*>(dst.mutable_data());
    for (py::ssize_t i = 0; i < n; ++i) out[i] = store<BFloat16>(in[i]);
  } else if (s == kNpyHalf && d == kNpyFloat) {
    auto* in = static_cast<const Half*>(src.data());
    auto* out = static_cast<float*>(dst.mutable_data());
    for (py::ssize_t i = 0; i < n; ++i) out[i] = load<float>(in[i]);
  } else if (s == g_bfloat16_num && d == kNpyFloat) {
    auto* in = static_cast<const BFloat16*>(src.data());
    auto* out = static_cast<float*>(dst.mutable_data());
    for (py::ssize_t i = 0; i < n; ++i) out[i] = load<float>(in[i]);
  } else {
    throw py::type_error("convert: supports float32 <-> float16 and float32 <-> bfloat16");
  }
}

}  // namespace

void bind_step(py::module_& m) {
  try {
    g_bfloat16_num = py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")).num();
  } catch (const py::error_already_set&) {
    g_bfloat16_num = -1;  // without ml_dtypes there are no bfloat16 arrays to update
  }

  m.def("step", &run_step, py::arg("optimizer"), py::arg("flags"), py::arg("params"),
        py::arg("grads"), py::arg("states"), py::arg("scalars"), py::arg("rows") = py::none(),
        R"doc(One optimizer step over lists of arrays, updated in place.

optimizer: 'sgd', 'adagrad', 'rmsprop' or 'adam'.
flags: bit mask of the optimizer's flags (optimizers()[name]['flags'], bit k = flag k).
params, grads: lists of arrays; states: one entry per state name, a list of arrays or None.
scalars: the per-step scalars in optimizers()[name]['scalars'] order: a tuple of floats for all
params, or a float64 array (rows, fields).
rows: for each param, the row of scalars it uses (default: row 0, or row i if there is one per param).)doc");

  m.def("optimizers", [] {
    py::dict out;
    for (const Optimizer& o : optimizers()) {
      py::dict d;
      d["states"] = o.state_names;
      d["flags"] = o.flag_names;
      d["scalars"] = o.scalar_names;
      out[py::str(o.name)] = d;
    }
    return out;
  }, "The optimizers this module runs: their state, flag and scalar names, in kernel order.");

  m.def("supported_dtypes", [] {
    std::vector<std::tuple<std::string, std::string, std::string>> out;
    for (const DTypes& c : supported_combinations()) {
      out.emplace_back(dtype_name(c.param), dtype_name(c.grad), dtype_name(c.state));
    }
    return out;
  }, "The supported (param, grad, state) dtype combinations.");

  m.def("get_num_threads", &num_threads, "The number of threads a step uses.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be at least 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"), "Sets the number of threads a step uses.");
  m.def("min_elements_per_thread", &min_elements_per_thread,
        "Below this many elements per thread a step runs on fewer threads (serially below twice it).");
  m.def("_set_min_elements_per_thread", [](std::int64_t n) {
    if (n < 1) throw py::value_error("_set_min_elements_per_thread: n must be at least 1");
    set_min_elements_per_thread(n);
  }, py::arg("n"), "For bench/threshold.py, which measures the default; not for tuning in use.");
  m.def("simd_target", [] {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return std::string("x86-64-v4 (AVX-512)");
    if (__builtin_cpu_supports("x86-64-v3")) return std::string("x86-64-v3 (AVX2)");
    return std::string("x86-64 baseline (SSE2)");
#else
    return std::string("build target");
#endif
  }, "The instruction set the SIMD loops run with on this CPU.");
  m.def("_convert", &convert, py::arg("src"), py::arg("dst"),
        "Converts float32 <-> float16/bfloat16 with the kernels' conversions (for tests).");
}

}  // namespace pyoptim

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyoptim's C++ kernels (OpenMP + SIMD). Use pyoptim.functional rather than this module.";
  pyoptim::bind_step(m);
  pyoptim::bind_stream(m);
}
