// An experiment, not part of pyoptim: pyoptim.torch's per-step reads of its params' grads
// (Optimizer._grad_addresses in pyoptim/torch.py: eight torch accessors per param) done in C++,
// to see whether that is worth a second C++ entry point. The accessors are called through their
// descriptors (a getset descriptor's getter, a method descriptor called with the tensor), which for
// the exact types torch.Tensor and torch.nn.Parameter is what attribute access runs, without
// Python's attribute lookup and bound methods; only the CPython API, no torch header. ab.py times
// it against the Python loop, alone and inside steps. Build and run: bash bench/torch_grads/run.sh
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <vector>

namespace py = pybind11;

namespace pyoptim {
namespace {

class TensorGrads {
  // The order of the accessors argument, after the two types.
  enum Accessor { kGrad, kDataPtr, kDtype, kNumel, kIsContiguous, kIsNeg, kIsCpu, kAccessors };

 public:
  TensorGrads(py::list params, std::vector<std::uintptr_t> pointers, py::list dtypes,
              std::vector<std::int64_t> numels, const py::tuple& accessors)
      : params_(std::move(params)), pointers_(std::move(pointers)), dtypes_(std::move(dtypes)),
        numels_(std::move(numels)) {
    const std::size_t n = params_.size();
    if (pointers_.size() != n || dtypes_.size() != n || numels_.size() != n) {
      throw py::value_error("TensorGrads: params, pointers, dtypes and numels differ in length");
    }
    if (accessors.size() != 2 + kAccessors) {
      throw py::value_error("TensorGrads: accessors must be (Tensor type, Parameter type, grad, "
                            "data_ptr, dtype, numel, is_contiguous, is_neg, is_cpu)");
    }
    tensor_type_ = accessors[0];
    parameter_type_ = accessors[1];
    for (int k = 0; k < kAccessors; ++k) {
      accessors_[k] = accessors[2 + k];
      PyObject* a = accessors_[k].ptr();
      if (PyObject_TypeCheck(a, &PyGetSetDescr_Type)) {
        getters_[k] = Py_TYPE(a)->tp_descr_get;
      } else if (!PyObject_TypeCheck(a, &PyMethodDescr_Type)) {
        throw py::type_error("TensorGrads: accessors must be getset or method descriptors");
      }
    }
  }

  // (addresses, grads): the address of each param's grad (0: it has none) and the grads that own
  // that memory, or None when a param's memory moved or a grad is not a plain CPU tensor of its
  // param's dtype and size, C-contiguous, without a negative bit (the caller then takes the
  // general path, which views the grads one by one or refuses them by name).
  py::object operator()() const {
    try {
      return read_all();
    } catch (const NotPlain&) {
      return py::none();
    }
  }

 private:
  // Thrown by read() for a RuntimeError from torch (a sparse grad has no strides): not such a grad.
  struct NotPlain {};

  py::object read_all() const {
    const std::size_t n = params_.size();
    py::list addresses(n), grads;
    for (std::size_t i = 0; i < n; ++i) {
      PyObject* p = PyList_GET_ITEM(params_.ptr(), i);
      if (Py_TYPE(p) != type(tensor_type_) && Py_TYPE(p) != type(parameter_type_)) {
        return py::none();
      }
      if (read_address(kDataPtr, p) != pointers_[i]) return py::none();
      const py::object g = read(kGrad, p);
      std::uintptr_t address = 0;
      if (!g.is_none()) {
        PyObject* t = g.ptr();
        if (Py_TYPE(t) != type(tensor_type_) || read(kDtype, t).ptr() != dtypes_[i].ptr() ||
            read(kNumel, t).cast<std::int64_t>() != numels_[i] ||
            read(kIsContiguous, t).ptr() != Py_True || read(kIsNeg, t).ptr() != Py_False ||
            read(kIsCpu, t).ptr() != Py_True) {
          return py::none();
        }
        address = read_address(kDataPtr, t);
        grads.append(g);
      }
      PyList_SET_ITEM(addresses.ptr(), i, PyLong_FromSize_t(address));
    }
    return py::make_tuple(std::move(addresses), std::move(grads));
  }

  static PyTypeObject* type(const py::object& t) {
    return reinterpret_cast<PyTypeObject*>(t.ptr());
  }

  py::object read(Accessor k, PyObject* tensor) const {
    PyObject* a = accessors_[k].ptr();
    PyObject* result = getters_[k] != nullptr
                           ? getters_[k](a, tensor, reinterpret_cast<PyObject*>(Py_TYPE(tensor)))
                           : PyObject_Vectorcall(a, &tensor, 1, nullptr);
    if (result == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) throw py::error_already_set();
      PyErr_Clear();
      throw NotPlain{};
    }
    return py::reinterpret_steal<py::object>(result);
  }

  std::uintptr_t read_address(Accessor k, PyObject* tensor) const {
    return read(k, tensor).cast<std::uintptr_t>();
  }

  py::list params_;
  std::vector<std::uintptr_t> pointers_;
  py::list dtypes_;
  std::vector<std::int64_t> numels_;
  py::object tensor_type_, parameter_type_;
  std::array<py::object, kAccessors> accessors_;
  std::array<descrgetfunc, kAccessors> getters_{};  // set for getset descriptors, else a method
};

}  // namespace
}  // namespace pyoptim

PYBIND11_MODULE(reader, m) {
  using pyoptim::TensorGrads;
  py::class_<TensorGrads>(m, "TensorGrads", R"doc(Reads the grads of torch params in one call.

TensorGrads(params, pointers, dtypes, numels, accessors): params a list of torch tensors, each
with its data_ptr(), dtype and numel() when the optimizer was built; accessors (torch.Tensor,
torch.nn.Parameter, then the descriptors of grad, data_ptr, dtype, numel, is_contiguous, is_neg and
is_cpu that attribute access finds on both types). Calling it returns (addresses, grads), or None
when a param's memory moved or a grad is not a plain, C-contiguous CPU tensor of its param's
dtype and size without a negative bit.)doc")
      .def(py::init<py::list, std::vector<std::uintptr_t>, py::list, std::vector<std::int64_t>,
                    const py::tuple&>(),
           py::arg("params"), py::arg("pointers"), py::arg("dtypes"), py::arg("numels"),
           py::arg("accessors"))
      .def("__call__", &TensorGrads::operator());
}
