// pyoptim._core: checks every buffer, builds the segment table, releases the GIL and runs a step.
//
// Nothing here converts or copies an array: an in-place update applied to a copy would be lost.
// A buffer that does not fit (wrong type or dtype, not C-contiguous, read-only, wrong shape, or
// overlapping another argument) raises TypeError or ValueError naming the argument, before any
// element is written (the checks: arguments.cpp). No math lives here (rules.h), no loop
// (kernels.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "arguments.h"
#include "kernels.h"
#include "module.h"
#include "storage.h"
#include "threads.h"

namespace py = pybind11;

namespace pyoptim {
namespace {

// The names of one step's arguments: slot 0 is the params, 1 the grads, 2... the state buffers.
struct Names {
  const Optimizer& opt;
  std::size_t count;

  std::string operator()(int slot, std::size_t index) const {
    std::string base = slot == 0 ? "param" : slot == 1 ? "grad" : opt.state_names[slot - 2];
    return count == 1 ? base : base + "[" + std::to_string(index) + "]";
  }
  auto name(int slot, std::size_t index) const {
    return [this, slot, index] { return opt.name + ": " + (*this)(slot, index); };
  }
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
              py::handle states_obj, py::handle scalars_obj, py::handle rows_obj,
              py::handle clip_obj) {
  const Optimizer& opt = find_optimizer(name);
  const int num_states = static_cast<int>(opt.state_names.size());
  if (flags >= (1u << opt.flag_names.size())) {
    throw py::value_error(name + ": flags " + std::to_string(flags) + " out of range");
  }

  const std::vector<py::object> params = as_list(params_obj, name + ": params", -1);
  const std::size_t count = params.size();
  const std::vector<py::object> grads = as_list(grads_obj, name + ": grads", count);
  const std::vector<py::object> state_slots = as_list(states_obj, name + ": states", num_states);

  const ScalarTable table = scalar_table(opt, scalars_obj);
  const double* scalar_rows = table.data;
  const std::int64_t rows = table.rows;
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

  const Names names{opt, count};
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
  std::vector<Extent> extents;
  DTypes dtypes{};
  bool state_dtype_known = false;  // a step without state buffers counts as the param's dtype
  for (std::size_t i = 0; i < count; ++i) {
    if (i + kFetchAhead < count) {
      prefetch_object(params[i + kFetchAhead]);
      prefetch_object(grads[i + kFetchAhead]);
      for (int k = 0; k < num_states; ++k) {
        if (!states[k].empty()) prefetch_object(states[k][i + kFetchAhead]);
      }
    }
    if (i + kFetchAhead / 2 < count) {
      prefetch_shape(params[i + kFetchAhead / 2]);
      prefetch_shape(grads[i + kFetchAhead / 2]);
      for (int k = 0; k < num_states; ++k) {
        if (!states[k].empty()) prefetch_shape(states[k][i + kFetchAhead / 2]);
      }
    }
    const Buffer p = check_array(params[i], names.name(0, i), true);
    const auto param_name = [&names, i] { return names(0, i); };  // "param", unprefixed
    const Buffer g = check_array(grads[i], names.name(1, i), false, &p.shape, param_name);
    if (i == 0) dtypes = DTypes{p.dtype, g.dtype, p.dtype};
    if (p.dtype != dtypes.param || g.dtype != dtypes.grad) {
      throw py::type_error(names.name(p.dtype != dtypes.param ? 0 : 1, i)() +
                           " has a dtype different from the first; a step takes arrays of one "
                           "(param, grad, state) dtype combination");
    }
    Segment& seg = segments[i];
    seg.param = p.data;
    seg.grad = g.data;
    seg.state.fill(nullptr);
    seg.size = p.size;
    seg.row = row_of[i];
    if (p.nbytes > 0) extents.push_back(extent_of(p, 0, i));
    if (g.nbytes > 0) extents.push_back(extent_of(g, 1, i));
    for (int k = 0; k < num_states; ++k) {
      if (states[k].empty()) continue;
      const Buffer s = check_array(states[k][i], names.name(k + 2, i), true, &p.shape, param_name);
      if (!state_dtype_known) {
        dtypes.state = s.dtype;
        state_dtype_known = true;
      } else if (s.dtype != dtypes.state) {
        throw py::type_error(names.name(k + 2, i)() + " has dtype " + dtype_name(s.dtype) +
                             ", but the other state buffers are " + dtype_name(dtypes.state));
      }
      seg.state[k] = s.data;
      if (s.nbytes > 0) extents.push_back(extent_of(s, k + 2, i));
    }
  }
  check_no_overlap(extents, name + ": ", names);
  if (count == 0) return;
  if (!is_supported(dtypes)) throw py::type_error(unsupported_message(name + ": ", dtypes));

  double clip = 0.0;
  if (!clip_obj.is_none()) clip = clip_obj.cast<double>();
  py::gil_scoped_release release;
  opt.step(dtypes, flags, segments, scalar_rows, rows, clip_obj.is_none() ? nullptr : &clip);
}

template <class In, class Out>
void convert_elements(const Buffer& in, const Buffer& out) {
  const auto* src = static_cast<const In*>(in.data);
  auto* dst = static_cast<Out*>(out.data);
  for (std::int64_t i = 0; i < in.size; ++i) {
    if constexpr (std::is_same_v<In, float>) {
      dst[i] = store<Out>(src[i]);
    } else {
      dst[i] = load<float>(src[i]);
    }
  }
}

// Converts between float32 and float16/bfloat16 with the kernels' own conversions (for tests);
// blocks: through the block conversions the update loops use (float16: F16C where the CPU has
// it; bfloat16: LAMB's pieces) instead of the element routines.
void convert(const py::array& src, py::array& dst, bool blocks) {
  const Buffer in = check_array(src, [] { return std::string("convert: src"); }, false);
  const Buffer out = check_array(dst, [] { return std::string("convert: dst"); }, true);
  if (in.size != out.size) throw py::value_error("convert: arrays must be of equal size");
  const auto* floats_in = static_cast<const float*>(in.data);
  auto* floats_out = static_cast<float*>(out.data);
  if (blocks && in.dtype == DType::kFloat32 && out.dtype == DType::kFloat16) {
    narrow_to_halves(floats_in, static_cast<Half*>(out.data), in.size);
  } else if (blocks && in.dtype == DType::kFloat32 && out.dtype == DType::kBFloat16) {
    narrow_to_halves(floats_in, static_cast<BFloat16*>(out.data), in.size);
  } else if (blocks && in.dtype == DType::kFloat16 && out.dtype == DType::kFloat32) {
    widen_halves(static_cast<const Half*>(in.data), floats_out, in.size);
  } else if (blocks && in.dtype == DType::kBFloat16 && out.dtype == DType::kFloat32) {
    widen_halves(static_cast<const BFloat16*>(in.data), floats_out, in.size);
  } else if (blocks) {
    throw py::type_error("convert: blocks=True converts float32 <-> float16 or bfloat16");
  } else if (in.dtype == DType::kFloat32 && out.dtype == DType::kFloat16) {
    convert_elements<float, Half>(in, out);
  } else if (in.dtype == DType::kFloat32 && out.dtype == DType::kBFloat16) {
    convert_elements<float, BFloat16>(in, out);
  } else if (in.dtype == DType::kFloat16 && out.dtype == DType::kFloat32) {
    convert_elements<Half, float>(in, out);
  } else if (in.dtype == DType::kBFloat16 && out.dtype == DType::kFloat32) {
    convert_elements<BFloat16, float>(in, out);
  } else {
    throw py::type_error("convert: supports float32 <-> float16 and float32 <-> bfloat16");
  }
}

// _prefetch's argument, checked, never converted: a C-contiguous 1-D array of 64-bit unsigned
// integers (NumPy's type numbers 8 and 10, both 64-bit on LP64 Linux). Its data and length.
std::pair<const std::uint64_t*, std::int64_t> addresses_of(py::handle obj) {
  constexpr int kNpyULong = 8, kNpyULongLong = 10;
  if (py::isinstance<py::array>(obj)) {
    auto* proxy = py::detail::array_proxy(obj.ptr());
    const int num = py::detail::array_descriptor_proxy(proxy->descr)->type_num;
    if ((num == kNpyULong || num == kNpyULongLong) && sizeof(unsigned long) == 8 &&
        proxy->nd == 1 && (proxy->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) {
      return {static_cast<const std::uint64_t*>(static_cast<const void*>(proxy->data)),
              proxy->dimensions[0]};
    }
  }
  throw py::type_error("_prefetch: addresses must be a C-contiguous 1-D uint64 array");
}

}  // namespace

void bind_step(py::module_& m) {
  m.def("step", &run_step, py::arg("optimizer"), py::arg("flags"), py::arg("params"),
        py::arg("grads"), py::arg("states"), py::arg("scalars"), py::arg("rows") = py::none(),
        py::arg("clip_value") = py::none(),
        R"doc(One optimizer step over lists of arrays, updated in place.

optimizer: 'sgd', 'adagrad', 'rmsprop' or 'adam'.
flags: bit mask of the optimizer's flags (optimizers()[name]['flags'], bit k = flag k).
params, grads: lists of arrays; states: one entry per state name, a list of arrays or None.
scalars: the per-step scalars in optimizers()[name]['scalars'] order: a tuple of floats for all
params, or a float64 array (rows, fields).
rows: for each param, the row of scalars it uses (default: row 0, or row i if there is one per param).
clip_value: if given, each gradient element, after its multiplication by grad_factor, is clamped to
[-clip_value, clip_value].)doc");

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
    if (n > max_threads() && max_threads() > 1) {
      throw py::value_error("set_num_threads: n must be at most " + std::to_string(max_threads()) +
                            " (1024, or the number of processors where there are more), got " +
                            std::to_string(n));
    }
    if (n > 1 && forked_child()) {
      throw std::runtime_error(
          "set_num_threads: this process was forked after pyoptim was loaded, and OpenMP cannot "
          "start threads in a forked child once a parallel region ran before the fork (it would "
          "hang): pyoptim runs on one thread here. For threads in a child process, start it "
          "with multiprocessing's 'spawn' or 'forkserver' method");
    }
    set_num_threads(n);
  }, py::arg("n"), "Sets the number of threads a step uses.");
  m.def("_set_calling_thread_num_threads", [](int n) {
    if (n < 0) throw py::value_error("_set_calling_thread_num_threads: n must be at least 0, got " + std::to_string(n));
    set_calling_thread_num_threads(n);
  }, py::arg("n"),
        "The steps the calling thread starts use n threads (0: set_num_threads' count again); "
        "pyoptim.torch's steps use torch.get_num_threads() this way. get_num_threads() in this "
        "thread says n.");
  m.def("min_elements_per_thread", &min_elements_per_thread,
        "Below this many elements per thread a step runs on fewer threads (serially below twice it).");
  m.def("_set_min_elements_per_thread", [](std::int64_t n) {
    if (n < 1) throw py::value_error("_set_min_elements_per_thread: n must be at least 1");
    set_min_elements_per_thread(n);
  }, py::arg("n"), "For bench/threshold.py, which measures the default; not for tuning in use.");
  m.def("_set_quotient_form", [](const std::string& form) {
    if (form == "auto") {
      set_quotient_form(QuotientForm::kAuto);
    } else if (form == "division") {
      set_quotient_form(QuotientForm::kDivision);
    } else if (form == "fma") {
      set_quotient_form(QuotientForm::kFusedMultiplyAdd);
    } else {
      throw py::value_error("_set_quotient_form: form must be 'auto', 'division' or 'fma', got '" +
                            form + "'");
    }
  }, py::arg("form"),
        "How the loops divide by a per-step scalar (Adam's bias correction): 'division', 'fma' "
        "(rules.h's quotient: the same bits) or 'auto' (the default: where it pays on this CPU). "
        "For tests, which check both forms on any CPU, and benchmarks; not for tuning in use.");
  m.def("_quotient_form", [] {
    return std::string(loops_take_quotient_fma() ? "fma" : "division");
  }, "The form of division by a per-step scalar that the loops take now ('division' or 'fma').");
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
  m.def("_prefetch", [](py::handle addresses) {
    const auto [a, n] = addresses_of(addresses);
    for (std::int64_t i = 0; i < n; ++i) {
      __builtin_prefetch(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(a[i])));
    }
  }, py::arg("addresses"),
        "Fetches the cache lines at these addresses (a C-contiguous uint64 array) ahead of their "
        "use: a hint (pyoptim.torch: the torch metadata a step's checks read). It reads nothing "
        "and cannot fault, whatever the addresses.");
  m.def("_convert", &convert, py::arg("src"), py::arg("dst"), py::arg("blocks") = false,
        "Converts float32 <-> float16/bfloat16 with the kernels' conversions (for tests); "
        "blocks=True: float16 as the update loops convert it, a block at a time.");
  m.def("_halves_use_f16c", &halves_use_f16c,
        "Whether float16 blocks are converted with the CPU's F16C instructions.");
}

}  // namespace pyoptim

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyoptim's C++ kernels (OpenMP + SIMD). Use pyoptim.functional rather than this module.";
  pyoptim::bind_step(m);
  pyoptim::bind_plan(m);
  pyoptim::bind_reductions(m);
  pyoptim::bind_stream(m);
}
