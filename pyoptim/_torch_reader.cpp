// pyoptim.torch's reader of the grads of a list of torch params: what pyoptim/torch.py's
// Optimizer._grad_addresses checks with one Python call per tensor and attribute (about 55 ns
// each, some 100 us a step for a model of 200 tensors), read here from the tensors' C++ objects.
//
// Built once per torch version at first use by pyoptim/_torch_reader.py, against the headers of
// the torch installed (the layout of torch's C++ objects is its own, version to version): it is
// not part of pyoptim's wheel, which does not depend on torch. Only the Python C API and
// torch's tensor accessors are used; nothing here does math.
//
// Reader(params, out): params a tuple of torch tensors of exactly torch.Tensor or
// torch.nn.Parameter (whose .grad is the C++ grad: no __torch_function__ of a subclass);
// out a writable uint64 array of as many elements, which holds the grads' addresses after read().
// The params' addresses, dtypes, numels and layouts are taken when the reader is made.
//   read() -> bool: True when every param still has its memory and every grad is absent (its
//     address: 0) or a dense CPU tensor of its param's dtype and numel without a negative bit,
//     with memory, contiguous (or, for a param laid out otherwise, as channels_last, with the
//     param's strides: its elements lie in the param's order); the grads are then held (their
//     memory lives) until release().
//     False otherwise, or while grads are held: the caller then reads them its slow way, which
//     names what is wrong. Never raises for a tensor it cannot describe (that is a False).
//   mark_written(): after the step wrote them, moves on the autograd version counters of the
//     params that had a grad (increment_version's work).
//   release(): lets go of the held grads.

#include <Python.h>

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#ifndef PYOPTIM_MODULE
#error "PYOPTIM_MODULE (the module's name) must be defined"
#endif
#define PYOPTIM_CONCAT2(a, b) a##b
#define PYOPTIM_CONCAT(a, b) PYOPTIM_CONCAT2(a, b)
#define PYOPTIM_STRING2(a) #a
#define PYOPTIM_STRING(a) PYOPTIM_STRING2(a)

namespace {

struct Expected {
  std::uintptr_t address;  // the param's memory
  std::int64_t numel;
  c10::ScalarType dtype;
  std::vector<std::int64_t> strides;  // empty for a contiguous param, else its strides
};

struct Reader {
  PyObject_HEAD
  PyObject* params;  // a tuple, owned
  PyObject* out;     // the array written, owned (its buffer is held in view)
  Py_buffer view;
  std::vector<Expected>* expected;
  std::vector<at::Tensor>* held;
};

// Hints to fetch [p, p + bytes) into the caches; a hint never faults.
void prefetch(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (std::size_t at = 0; at < bytes; at += 64) __builtin_prefetch(c + at);
}

// Param i of the tuple.
const at::Tensor& param(PyObject* params, Py_ssize_t i) {
  return THPVariable_Unpack(PyTuple_GET_ITEM(params, i));
}

// The TensorImpl of param i's grad, or nullptr: where read() will find it, for fetching only
// (at::Tensor::grad() reads the same member, after checks that are not needed for a hint).
const c10::TensorImpl* grad_impl(PyObject* params, Py_ssize_t i) {
  const auto* meta = torch::autograd::impl::get_autograd_meta(param(params, i));
  return meta != nullptr && meta->grad_.defined() ? meta->grad_.unsafeGetTensorImpl() : nullptr;
}

// The C++ objects read() walks, fetched a level at a time for every param before it walks them:
// a step starts with the caches full of the last step's megabytes, and walking param after param
// waits on memory at each of its five levels (Python object, TensorImpl, storage and autograd
// metadata, the grad's TensorImpl, its storage): 52 us for gpt-tiny's 196 params against 4.5 us
// warm. Level by level, the fetches of all params overlap.
void fetch_ahead(PyObject* params) {
  const Py_ssize_t n = PyTuple_GET_SIZE(params);
  for (Py_ssize_t i = 0; i < n; ++i) prefetch(PyTuple_GET_ITEM(params, i), sizeof(THPVariable));
  for (Py_ssize_t i = 0; i < n; ++i) {
    prefetch(param(params, i).unsafeGetTensorImpl(), sizeof(c10::TensorImpl));
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& p = param(params, i);
    prefetch(p.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl(),
             sizeof(c10::StorageImpl));
    const auto* meta = torch::autograd::impl::get_autograd_meta(p);
    if (meta != nullptr) prefetch(meta, sizeof(*meta));
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (const auto* g = grad_impl(params, i)) prefetch(g, sizeof(c10::TensorImpl));
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (const auto* g = grad_impl(params, i)) {
      prefetch(g->unsafe_storage().unsafeGetStorageImpl(), sizeof(c10::StorageImpl));
    }
  }
}

// A grad laid out as its param is: contiguous, or with the strides of a param laid out
// otherwise (whose elements, dense, then lie in the same order in both).
bool in_param_order(const at::Tensor& g, const Expected& e) {
  if (e.strides.empty()) return g.is_contiguous();
  const auto strides = g.strides();
  return strides.size() == e.strides.size() &&
         std::equal(strides.begin(), strides.end(), e.strides.begin());
}

bool grad_is_plain(const at::Tensor& g, const Expected& e) {
  return g.layout() == c10::kStrided && g.device().is_cpu() && g.scalar_type() == e.dtype &&
         g.numel() == e.numel && in_param_order(g, e) && !g.is_neg() && g.has_storage();
}

// read()'s walk: false at the first param or grad the Python checks would decline (or that
// torch cannot describe this way: no storage, a wrapper subclass), with grads held before it.
bool read_all(Reader* self) {
  auto* out = static_cast<std::uint64_t*>(self->view.buf);
  const Py_ssize_t n = PyTuple_GET_SIZE(self->params);
  try {
    fetch_ahead(self->params);
    for (Py_ssize_t i = 0; i < n; ++i) {
      const at::Tensor& p = param(self->params, i);
      const Expected& e = (*self->expected)[static_cast<std::size_t>(i)];
      if (!p.has_storage() || reinterpret_cast<std::uintptr_t>(p.data_ptr()) != e.address) {
        return false;
      }
      const at::Tensor& g = p.grad();
      if (!g.defined()) {
        out[i] = 0;
        continue;
      }
      if (!grad_is_plain(g, e)) return false;
      const auto address = reinterpret_cast<std::uintptr_t>(g.data_ptr());
      if (address == 0) return false;  // a lazy zero grad, without memory yet
      out[i] = address;
      self->held->push_back(g);
    }
  } catch (...) {
    return false;
  }
  return true;
}

PyObject* reader_read(Reader* self, PyObject*) {
  if (!self->held->empty()) Py_RETURN_FALSE;  // another step holds them: the slow way says why
  if (read_all(self)) Py_RETURN_TRUE;
  self->held->clear();
  Py_RETURN_FALSE;
}

// After a step has written the params of the last read() that had a grad: moves their autograd
// version counters on, as torch.autograd.graph.increment_version does (not those of inference
// tensors, which have none).
PyObject* reader_mark_written(Reader* self, PyObject*) {
  const auto* out = static_cast<const std::uint64_t*>(self->view.buf);
  const Py_ssize_t n = PyTuple_GET_SIZE(self->params);
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (out[i] == 0) continue;
      const at::Tensor& p = param(self->params, i);
      if (!p.is_inference()) torch::autograd::impl::bump_version(p);
    }
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* reader_release(Reader* self, PyObject*) {
  self->held->clear();
  Py_RETURN_NONE;
}

void reader_dealloc(Reader* self) {
  delete self->held;
  delete self->expected;
  if (self->out != nullptr) PyBuffer_Release(&self->view);
  Py_XDECREF(self->out);
  Py_XDECREF(self->params);
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

int reader_init(Reader* self, PyObject* args, PyObject* kwargs) {
  static const char* names[] = {"params", "out", nullptr};
  PyObject* params = nullptr;
  PyObject* out = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O", const_cast<char**>(names), &PyTuple_Type,
                                   &params, &out)) {
    return -1;
  }
  if (self->params != nullptr) {
    PyErr_SetString(PyExc_TypeError, "a Reader is made once");
    return -1;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(params);
  auto expected = std::vector<Expected>();
  expected.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyTuple_GET_ITEM(params, i);
    if (!THPVariable_CheckExact(item)) {  // torch.Tensor or torch.nn.Parameter, no subclass
      PyErr_Format(PyExc_TypeError, "params[%zd] is not a torch.Tensor or torch.nn.Parameter", i);
      return -1;
    }
    const at::Tensor& p = THPVariable_Unpack(item);
    try {
      std::vector<std::int64_t> strides;
      if (!p.is_contiguous()) strides.assign(p.strides().begin(), p.strides().end());
      expected.push_back({reinterpret_cast<std::uintptr_t>(p.data_ptr()), p.numel(),
                          p.scalar_type(), std::move(strides)});
    } catch (...) {
      PyErr_Format(PyExc_TypeError, "params[%zd] has no memory to read", i);
      return -1;
    }
  }
  if (PyObject_GetBuffer(out, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) !=
      0) {
    return -1;
  }
  if (self->view.itemsize != 8 || self->view.len != n * 8 || self->view.format == nullptr ||
      (self->view.format[0] != 'Q' && self->view.format[0] != 'L') || self->view.format[1] != 0) {
    PyBuffer_Release(&self->view);
    PyErr_SetString(PyExc_TypeError, "out must be a writable uint64 array of one element per param");
    return -1;
  }
  try {
    self->expected = new std::vector<Expected>(std::move(expected));
    self->held = new std::vector<at::Tensor>();
    self->held->reserve(static_cast<std::size_t>(n));
  } catch (const std::bad_alloc&) {
    PyBuffer_Release(&self->view);
    PyErr_NoMemory();
    return -1;
  }
  Py_INCREF(params);
  self->params = params;
  Py_INCREF(out);
  self->out = out;
  return 0;
}

PyMethodDef reader_methods[] = {
    {"read", reinterpret_cast<PyCFunction>(reader_read), METH_NOARGS,
     "Writes the grads' addresses to out and holds the grads: True; False where the slow way "
     "must look (see the source's header)."},
    {"mark_written", reinterpret_cast<PyCFunction>(reader_mark_written), METH_NOARGS,
     "Moves on the autograd version counters of the params the last read() found a grad for."},
    {"release", reinterpret_cast<PyCFunction>(reader_release), METH_NOARGS,
     "Lets go of the held grads."},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject reader_type = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, PYOPTIM_STRING(PYOPTIM_MODULE),
                          "pyoptim.torch's reader of torch grads (built against this torch).", -1,
                          nullptr};

}  // namespace

PyMODINIT_FUNC PYOPTIM_CONCAT(PyInit_, PYOPTIM_MODULE)() {
  reader_type.tp_name = PYOPTIM_STRING(PYOPTIM_MODULE) ".Reader";
  reader_type.tp_basicsize = sizeof(Reader);
  reader_type.tp_flags = Py_TPFLAGS_DEFAULT;
  reader_type.tp_doc = "Reads the grads of a tuple of torch params (see the source's header).";
  reader_type.tp_new = PyType_GenericNew;
  reader_type.tp_init = reinterpret_cast<initproc>(reader_init);
  reader_type.tp_dealloc = reinterpret_cast<destructor>(reader_dealloc);
  reader_type.tp_methods = reader_methods;
  if (PyType_Ready(&reader_type) < 0) return nullptr;
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  Py_INCREF(&reader_type);
  if (PyModule_AddObject(module, "Reader", reinterpret_cast<PyObject*>(&reader_type)) < 0) {
    Py_DECREF(&reader_type);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
