// pyoptim._core.Plan: the params and state buffers of one optimizer, checked once, so that a step
// over thousands of arrays checks only its grads.
//
// The optimizer classes (pyoptim/_optimizer.py) build one Plan for all their host params. A step
// is three calls: set_grads(grads) checks the grads (each one as _core.step checks it, plus that
// no grad shares memory with a param, a state buffer or another grad), sum_of_squares() reduces
// them for clipping and the non-finite check, and run(flags, scalars, rows, clip_value) updates
// every param in as many kernel calls as there are (dtype combination, flags) pairs, usually one:
// one parallel region over all elements of all arrays (kernels.h). Nothing is written before every
// check of the step has passed. The params and state buffers are held (referenced) by the Plan;
// before each step it checks that they are still writeable and have not been reallocated.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arguments.h"
#include "kernels.h"
#include "module.h"
#include "reductions.h"

namespace py = pybind11;

namespace pyoptim {
namespace {

constexpr int kParamSlot = 0;
constexpr int kGradSlot = 1;  // slots 2... are the state buffers

class Plan {
  // The name of an argument, for error messages: "Adam: grads[3]".
  struct Namer {
    const Plan* plan;
    int slot;
    std::size_t index;
    bool prefixed;
    std::string operator()() const {
      return (prefixed ? plan->prefix() : std::string()) + plan->name(slot, index);
    }
  };

 public:
  Plan(std::string label, const std::string& optimizer, const py::sequence& params,
       const py::sequence& states, const std::vector<std::int64_t>& rows)
      : label_(std::move(label)), opt_(find_optimizer(optimizer)) {
    const std::size_t n = params.size();
    const std::size_t num_states = opt_.state_names.size();
    if (states.size() != num_states) {
      throw py::value_error(prefix() + "states must have " + std::to_string(num_states) +
                            " entries (" + join(opt_.state_names) + "), got " +
                            std::to_string(states.size()));
    }
    if (rows.size() != n) throw py::value_error(prefix() + "rows must have one entry per param");
    std::vector<py::object> slots(num_states);
    for (std::size_t k = 0; k < num_states; ++k) {
      slots[k] = states[k];
      if (!slots[k].is_none() && py::len(slots[k]) != n) {
        throw py::value_error(prefix() + opt_.state_names[k] + " must have one entry per param");
      }
    }
    params_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      Param& p = params_[i];
      if (rows[i] < 0) throw py::value_error(prefix() + "rows must be >= 0");
      p.row = rows[i];
      p.self.array = held(params[i], kParamSlot, i, p.self.buffer);
      p.dims.assign(p.self.buffer.shape.dims, p.self.buffer.shape.dims + p.self.buffer.shape.ndim);
      p.state_dtype = p.self.buffer.dtype;
      bool state_dtype_known = false;
      for (std::size_t k = 0; k < num_states; ++k) {
        p.state[k] = nullptr;
        if (slots[k].is_none()) continue;
        py::object item = slots[k][py::int_(i)];
        if (item.is_none()) continue;
        Held& s = p.states[k];
        s.array = held(item, static_cast<int>(k) + 2, i, s.buffer);
        p.state[k] = s.buffer.data;
        if (!state_dtype_known) {
          p.state_dtype = s.buffer.dtype;
          state_dtype_known = true;
        } else if (s.buffer.dtype != p.state_dtype) {
          throw py::type_error(name(static_cast<int>(k) + 2, i) + " has dtype " +
                               dtype_name(s.buffer.dtype) + ", but the other state buffers of " +
                               name(kParamSlot, i) + " are " + dtype_name(p.state_dtype));
        }
      }
      bool pairs = false;  // the (param, state) dtypes must form a combination with some grad
      for (const DTypes& c : supported_combinations()) {
        pairs |= c.param == p.self.buffer.dtype && c.state == p.state_dtype;
      }
      if (!pairs) {
        throw py::type_error(unsupported_message(
            prefix() + name(kParamSlot, i) + ": ",
            DTypes{p.self.buffer.dtype, p.self.buffer.dtype, p.state_dtype}));
      }
    }
    check_no_overlap(fixed_, prefix(), [this](int slot, std::size_t i) { return name(slot, i); });
  }

  std::size_t size() const { return params_.size(); }

  // Checks the grads of a step (an array or None per param) and holds them for the next run().
  // convert(grad, index), if given, is called for a grad that is not a NumPy array and returns a
  // NumPy view of it (pyoptim._arrays.host_view). Returns the number of grads given (not None).
  std::size_t set_grads(const py::handle& grads_obj, const py::object& convert) {
    if (!py::isinstance<py::list>(grads_obj) && !py::isinstance<py::tuple>(grads_obj)) {
      throw py::type_error(prefix() + "grads must be a list of arrays, one per param");
    }
    const auto grads = py::reinterpret_borrow<py::sequence>(grads_obj);
    begin_grads(grads.size());
    std::vector<py::object> held_grads(params_.size());
    std::size_t given = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      py::object g = grads[i];
      if (g.is_none()) continue;
      ++given;
      if (!convert.is_none() && !py::isinstance<py::array>(g)) g = convert(g, i);
      const Shape shape{static_cast<int>(p.dims.size()), p.dims.data()};
      accept_grad(i, check_array(g, namer(kGradSlot, i), false, &shape,
                                 namer(kParamSlot, i, false)));
      held_grads[i] = std::move(g);
    }
    finish_grads(std::move(held_grads));
    return given;
  }

  // As set_grads, for grads given by address (0: none): grad i is a C-contiguous buffer of param
  // i's shape and dtype, which the caller has checked and keeps alive until run() returns
  // (pyoptim.torch reads the addresses off torch tensors). What an address allows is checked
  // again: its alignment, and that no grad shares memory with a param, a state or another grad.
  std::size_t set_grad_addresses(const std::vector<std::uintptr_t>& addresses) {
    return take_grad_addresses(addresses.data(), addresses.size());
  }

  // The same from a uint64 array (pyoptim.torch's compiled reader writes one), without making a
  // Python int of each address.
  std::size_t set_grad_address_array(
      const py::array_t<std::uint64_t, py::array::c_style>& addresses) {
    static_assert(sizeof(std::uint64_t) == sizeof(std::uintptr_t), "addresses are 64-bit");
    if (addresses.ndim() != 1) throw py::value_error(prefix() + "addresses must be 1-D");
    return take_grad_addresses(reinterpret_cast<const std::uintptr_t*>(addresses.data()),
                               static_cast<std::size_t>(addresses.shape(0)));
  }

  // The sum of squares of the held grads and whether all are finite (reductions.h).
  py::tuple grad_sum_of_squares() {
    require_grads();
    std::vector<Span> spans;
    spans.reserve(params_.size());
    for (const Param& p : params_) {
      if (p.grad != nullptr) spans.push_back({p.grad, p.self.buffer.size, p.grad_dtype});
    }
    SumOfSquares result;
    {
      py::gil_scoped_release release;
      result = sum_of_squares(spans);
    }
    return py::make_tuple(result.sum, result.finite);
  }

  void clear_grads() {
    grads_.clear();
    has_grads_ = false;
  }

  // Updates every param that has a held grad, then lets go of the grads. flags: the kernel flag
  // mask of each row of scalars; rows: the row of each param, if not the Plan's.
  void run(const std::vector<unsigned>& flags, const py::handle& scalars,
           const std::optional<std::vector<std::int64_t>>& rows, std::optional<double> clip_value) {
    require_grads();
    struct Release {  // the grads are let go of whatever happens
      Plan* plan;
      ~Release() {
        plan->grads_.clear();
        plan->has_grads_ = false;
      }
    } release_grads{this};
    const ScalarTable table = scalar_table(opt_, scalars);
    if (flags.size() != static_cast<std::size_t>(table.rows)) {
      throw py::value_error(prefix() + "flags must have one entry per row of scalars");
    }
    for (unsigned f : flags) {
      if (f >= (1u << opt_.flag_names.size())) {
        throw py::value_error(prefix() + "flags " + std::to_string(f) + " out of range");
      }
    }
    if (rows && rows->size() != params_.size()) {
      throw py::value_error(prefix() + "rows must have one entry per param");
    }
    for (Bucket& bucket : buckets_) bucket.segments.clear();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Param& p = params_[i];
      if (p.grad == nullptr) continue;
      const std::int64_t row = rows ? (*rows)[i] : p.row;
      if (row < 0 || row >= table.rows) {
        throw py::value_error(prefix() + "the row of " + name(kParamSlot, i) + " is out of range");
      }
      const unsigned f = flags[row];
      for (std::size_t k = 0; k < opt_.state_names.size(); ++k) {
        const int slot = static_cast<int>(k);
        if ((opt_.reads(f, slot) || opt_.writes(f, slot)) && p.state[k] == nullptr) {
          throw py::value_error(prefix() + name(slot + 2, i) +
                                " is required by these options but was not given");
        }
      }
      const DTypes dtypes{p.self.buffer.dtype, p.grad_dtype, p.state_dtype};
      bucket(dtypes, f).segments.push_back(
          Segment{p.self.buffer.data, p.grad, p.state, p.self.buffer.size, row});
    }
    double clip = clip_value.value_or(0.0);
    busy_ = true;
    {
      py::gil_scoped_release release;
      for (const Bucket& b : buckets_) {
        if (!b.segments.empty()) {
          opt_.step(b.dtypes, b.flags, b.segments, table.data, table.rows,
                    clip_value ? &clip : nullptr);
        }
      }
    }
    busy_ = false;
  }

 private:
  struct Held {
    py::object array;
    Buffer buffer{};
  };
  struct Param {
    Held self;
    std::vector<py::ssize_t> dims;
    std::array<Held, kMaxStates> states;
    std::array<void*, kMaxStates> state{};
    DType state_dtype{};
    std::int64_t row = 0;
    const void* grad = nullptr;
    DType grad_dtype{};
  };
  struct Bucket {
    DTypes dtypes;
    unsigned flags;
    std::vector<Segment> segments;
  };

  std::string prefix() const { return label_ + ": "; }

  std::string name(int slot, std::size_t i) const {
    const std::string index = "[" + std::to_string(i) + "]";
    if (slot == kParamSlot) return "params" + index;
    if (slot == kGradSlot) return "grads" + index;
    return "state '" + opt_.state_names[slot - 2] + "' of params" + index;
  }

  Namer namer(int slot, std::size_t i, bool prefixed = true) const {
    return Namer{this, slot, i, prefixed};
  }

  static std::string join(const std::vector<std::string>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
    return s;
  }

  // Checks a param or state buffer once, keeps a reference to it and records its memory.
  py::object held(py::object obj, int slot, std::size_t i, Buffer& buffer) {
    const Shape* shape = nullptr;
    Shape param_shape{};
    if (slot != kParamSlot) {
      param_shape = Shape{static_cast<int>(params_[i].dims.size()), params_[i].dims.data()};
      shape = &param_shape;
    }
    buffer = check_array(obj, namer(slot, i), true, shape, namer(kParamSlot, i, false));
    if (buffer.nbytes > 0) fixed_.push_back(extent_of(buffer, slot, i));
    return obj;
  }

  // The held arrays are still writeable and still where they were (a NumPy array can be made
  // read-only, or resized with refcheck=False, after the optimizer was built).
  void recheck_held() const {
    auto recheck = [this](const Held& h, int slot, std::size_t i) {
      auto* proxy = py::detail::array_proxy(h.array.ptr());
      if (!(proxy->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) {
        throw py::value_error(prefix() + name(slot, i) + " is read-only; it is updated in place");
      }
      if (proxy->data != h.buffer.data) {
        throw py::value_error(prefix() + name(slot, i) +
                              " was reallocated after the optimizer was built");
      }
    };
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Param& p = params_[i];
      recheck(p.self, kParamSlot, i);
      for (std::size_t k = 0; k < opt_.state_names.size(); ++k) {
        if (p.state[k] != nullptr) recheck(p.states[k], static_cast<int>(k) + 2, i);
      }
    }
  }

  // set_grad_addresses' work, for either form of the addresses.
  std::size_t take_grad_addresses(const std::uintptr_t* addresses, std::size_t count) {
    begin_grads(count);
    std::size_t given = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (addresses[i] == 0) continue;
      ++given;
      const Buffer& param = params_[i].self.buffer;
      if (addresses[i] % static_cast<std::uintptr_t>(itemsize_of(param.dtype)) != 0) {
        throw py::value_error(prefix() + name(kGradSlot, i) + " is not aligned to its dtype");
      }
      accept_grad(i, Buffer{reinterpret_cast<void*>(addresses[i]), param.nbytes, param.size,
                            param.dtype, param.shape});
    }
    finish_grads(std::vector<py::object>(params_.size()));
    return given;
  }

  // The start of set_grads / set_grad_addresses: one grad per param; none held yet.
  void begin_grads(std::size_t count) {
    if (busy_) throw py::value_error(prefix() + "a step is already running in another thread");
    grads_.clear();
    has_grads_ = false;
    if (count != params_.size()) {
      throw py::value_error(prefix() + "got " + std::to_string(count) + " grads for " +
                            std::to_string(params_.size()) +
                            " params; pass one grad per param, in order");
    }
    recheck_held();
    grad_extents_.clear();
    for (Param& p : params_) p.grad = nullptr;
  }

  // Takes the checked buffer of grad i, if its dtypes form a supported combination.
  void accept_grad(std::size_t i, const Buffer& b) {
    Param& p = params_[i];
    const DTypes dtypes{p.self.buffer.dtype, b.dtype, p.state_dtype};
    if (!is_supported(dtypes)) {
      throw py::type_error(unsupported_message(prefix() + name(kGradSlot, i) + ": ", dtypes));
    }
    p.grad = b.data;
    p.grad_dtype = b.dtype;
    if (b.nbytes > 0) grad_extents_.push_back(extent_of(b, kGradSlot, i));
  }

  // The end: no grad shares memory with another, a param or a state buffer; then they are held.
  void finish_grads(std::vector<py::object> held_grads) {
    auto names = [this](int slot, std::size_t i) { return name(slot, i); };
    check_no_overlap(grad_extents_, prefix(), names);
    const auto [a, b] = first_overlap(grad_extents_, fixed_);
    if (a != nullptr) {
      throw py::value_error(prefix() + name(a->slot, a->index) + " and " +
                            name(b->slot, b->index) +
                            " share memory; every param, grad and state buffer must be distinct");
    }
    grads_ = std::move(held_grads);
    has_grads_ = true;
  }

  void require_grads() const {
    if (!has_grads_) throw py::value_error(prefix() + "set_grads() must come before this call");
  }

  Bucket& bucket(DTypes dtypes, unsigned flags) {
    for (Bucket& b : buckets_) {
      if (b.dtypes == dtypes && b.flags == flags) return b;
    }
    buckets_.push_back(Bucket{dtypes, flags, {}});
    return buckets_.back();
  }

  std::string label_;
  const Optimizer& opt_;
  std::vector<Param> params_;
  std::vector<Extent> fixed_;  // params and state buffers, sorted by address
  std::vector<Extent> grad_extents_;
  std::vector<py::object> grads_;
  std::vector<Bucket> buckets_;
  bool has_grads_ = false;
  bool busy_ = false;
};

}  // namespace

void bind_plan(py::module_& m) {
  py::class_<Plan>(m, "Plan", R"doc(The params and state buffers of one optimizer, checked once.

Plan(label, optimizer, params, states, rows): label prefixes error messages; optimizer is a
kernel name ('sgd', 'adagrad', 'rmsprop', 'adam'); params a list of arrays; states one entry per
state name of the optimizer (optimizers()[name]['states']), each None or a list with an array or
None per param; rows the default row of scalars of each param.

A step: set_grads(grads), optionally grad_sum_of_squares(), then run(flags, scalars, rows=None,
clip_value=None), as _core.step does for lists of arrays.)doc")
      .def(py::init<std::string, const std::string&, const py::sequence&, const py::sequence&,
                    const std::vector<std::int64_t>&>(),
           py::arg("label"), py::arg("optimizer"), py::arg("params"), py::arg("states"),
           py::arg("rows"))
      .def("__len__", &Plan::size)
      .def("set_grads", &Plan::set_grads, py::arg("grads"), py::arg("convert") = py::none(),
           "Checks one grad (an array, or None to leave the param out) per param and holds them; "
           "returns how many are not None. convert(grad, index) views a non-NumPy grad as NumPy.")
      .def("set_grad_addresses", &Plan::set_grad_address_array,
           py::arg("addresses").noconvert())
      .def("set_grad_addresses", &Plan::set_grad_addresses, py::arg("addresses"),
           "As set_grads, for grads given by address (0: none), each a C-contiguous buffer of its "
           "param's shape and dtype that the caller has checked and keeps alive until run().")
      .def("grad_sum_of_squares", &Plan::grad_sum_of_squares,
           "(sum of squares in float64, all finite) of the held grads; deterministic.")
      .def("clear_grads", &Plan::clear_grads, "Lets go of the held grads without a step.")
      .def("run", &Plan::run, py::arg("flags"), py::arg("scalars"), py::arg("rows") = py::none(),
           py::arg("clip_value") = py::none(),
           "Updates the params that have a held grad, then lets go of the grads.");
}

}  // namespace pyoptim
