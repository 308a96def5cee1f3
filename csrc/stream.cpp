// The roofline of `pyoptim bench`: a STREAM-like pass with the memory traffic of an optimizer step.
//
// An optimizer step reads its param, its grad and its k state buffers and writes the param and the
// state buffers back in place. StreamPass moves exactly these bytes, with the same dtypes, the same
// loop (SIMD clones, the thread split of threads.h) and next to no arithmetic: every element
// written becomes the mean of the element's inputs. Its speed is the most an optimizer with this
// byte pattern can reach on this machine, at this size; the benchmark reports each step's
// percentage of it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
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

// The pass over n elements: K state buffers of type S beside a param P and a grad G.
template <int K, class P, class G, class S>
PYOPTIM_CLONES void stream_range(P* __restrict param, const G* __restrict grad, S* const* state,
                                 std::int64_t n) {
  using T = opmath_t<P>;
  const T scale = T(1) / T(K + 2);
  S* const state0 = K > 0 ? state[0] : nullptr;
  S* const state1 = K > 1 ? state[1] : nullptr;
  S* const state2 = K > 2 ? state[2] : nullptr;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    T sum = load<T>(param[i]) + load<T>(grad[i]);
    if constexpr (K > 0) sum = sum + load<T>(state0[i]);
    if constexpr (K > 1) sum = sum + load<T>(state1[i]);
    if constexpr (K > 2) sum = sum + load<T>(state2[i]);
    const T mean = sum * scale;
    param[i] = store<P>(mean);
    if constexpr (K > 0) state0[i] = store<S>(mean);
    if constexpr (K > 1) state1[i] = store<S>(mean);
    if constexpr (K > 2) state2[i] = store<S>(mean);
  }
}

template <int K, class C>
void stream_all(void* param, const void* grad, void* const* state, std::int64_t n) {
  using P = typename C::Param;
  using G = typename C::Grad;
  using S = typename C::State;
  parallel_for(n, [&](std::int64_t begin, std::int64_t end) {
    S* states[kMaxStates];
    for (int j = 0; j < kMaxStates; ++j) {
      states[j] = j < K ? static_cast<S*>(state[j]) + begin : nullptr;
    }
    if constexpr (std::is_same_v<P, Half>) {  // as the update loops run float16 (kernels.h)
      std::array<bool, kMaxStates> all{};
      all.fill(true);
      in_float_blocks<K>(static_cast<P*>(param) + begin, static_cast<const G*>(grad) + begin,
                         states, end - begin, all, all,
                         [](float* p, const float* g, float* const* s, std::int64_t len) {
                           stream_range<K, float, float, float>(p, g, s, len);
                         });
    } else {
      stream_range<K, P, G, S>(static_cast<P*>(param) + begin,
                               static_cast<const G*>(grad) + begin, states, end - begin);
    }
  });
}

DType dtype_from_name(const std::string& name, const std::string& what) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float64") return DType::kFloat64;
  if (name == "float16") return DType::kFloat16;
  if (name == "bfloat16") return DType::kBFloat16;
  throw py::type_error("StreamPass: " + what + " has dtype " + name +
                       "; supported dtypes are float32, float64, float16 and bfloat16");
}

// The pass, set up once (checks, pointers) so that run() costs no more than the loop.
class StreamPass {
 public:
  StreamPass(const py::object& param, const py::object& grad, const std::vector<py::object>& states) {
    if (states.size() > static_cast<std::size_t>(kMaxStates)) {
      throw py::value_error("StreamPass: at most " + std::to_string(kMaxStates) +
                            " state buffers, got " + std::to_string(states.size()));
    }
    std::vector<py::object> given{param, grad};
    given.insert(given.end(), states.begin(), states.end());
    for (const py::object& obj : given) {
      if (!py::isinstance<py::array>(obj)) throw py::type_error("StreamPass: expected NumPy arrays");
      arrays_.push_back(py::reinterpret_borrow<py::array>(obj));
    }
    size_ = arrays_[0].size();
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> extents;
    for (std::size_t k = 0; k < arrays_.size(); ++k) {
      const py::array& a = arrays_[k];
      const std::string what = k == 0 ? "param" : k == 1 ? "grad" : "state[" + std::to_string(k - 2) + "]";
      const DType dtype = dtype_from_name(py::str(a.dtype()), what);
      if (!(a.flags() & py::array::c_style)) throw py::value_error("StreamPass: " + what + " is not C-contiguous");
      if (k != 1 && !a.writeable()) throw py::value_error("StreamPass: " + what + " is read-only");
      if (a.size() != size_) throw py::value_error("StreamPass: " + what + " has another size than param");
      if (k == 0) dtypes_.param = dtype;
      if (k == 1) dtypes_.grad = dtype;
      if (k == 2) dtypes_.state = dtype;
      if (k > 2 && dtype != dtypes_.state) throw py::type_error("StreamPass: state buffers of different dtypes");
      const auto start = reinterpret_cast<std::uintptr_t>(a.data());
      if (a.nbytes() > 0) extents.emplace_back(start, start + a.nbytes());
      bytes_per_element_ += (k == 1 ? 1 : 2) * a.itemsize();
    }
    if (states.empty()) dtypes_.state = dtypes_.param;
    std::sort(extents.begin(), extents.end());
    for (std::size_t i = 1; i < extents.size(); ++i) {
      if (extents[i].first < extents[i - 1].second) throw py::value_error("StreamPass: buffers share memory");
    }
    if (!dispatch_dtypes(dtypes_, []<class C>() {})) {
      throw py::type_error("StreamPass: unsupported (param, grad, state) dtype combination");
    }
    param_ = const_cast<void*>(arrays_[0].data());
    grad_ = arrays_[1].data();
    for (std::size_t k = 2; k < arrays_.size(); ++k) state_[k - 2] = const_cast<void*>(arrays_[k].data());
  }

  void run() const {
    const int k = static_cast<int>(arrays_.size()) - 2;
    py::gil_scoped_release release;
    dispatch_dtypes(dtypes_, [&]<class C>() {
      switch (k) {
        case 0: stream_all<0, C>(param_, grad_, state_.data(), size_); break;
        case 1: stream_all<1, C>(param_, grad_, state_.data(), size_); break;
        case 2: stream_all<2, C>(param_, grad_, state_.data(), size_); break;
        case 3: stream_all<3, C>(param_, grad_, state_.data(), size_); break;
      }
    });
  }

  std::int64_t bytes_per_element() const { return bytes_per_element_; }
  std::int64_t size() const { return size_; }

 private:
  std::vector<py::array> arrays_;  // kept alive while the pass exists
  DTypes dtypes_{};
  std::int64_t size_ = 0;
  std::int64_t bytes_per_element_ = 0;
  void* param_ = nullptr;
  const void* grad_ = nullptr;
  std::array<void*, kMaxStates> state_{};
};

}  // namespace

void bind_stream(py::module_& m) {
  py::class_<StreamPass>(m, "StreamPass", R"doc(A STREAM-like pass with an optimizer step's memory traffic.

StreamPass(param, grad, states) reads param, grad and every state buffer and writes param and the
state buffers in place (each element becomes the mean of its inputs): the bytes an optimizer step
with these dtypes moves, with next to no arithmetic. run() makes one pass, on
pyoptim.get_num_threads() threads. The benchmark's roofline (pyoptim bench).)doc")
      .def(py::init<const py::object&, const py::object&, const std::vector<py::object>&>(),
           py::arg("param"), py::arg("grad"), py::arg("states"))
      .def("run", &StreamPass::run, "One pass over every element.")
      .def_property_readonly("bytes_per_element", &StreamPass::bytes_per_element,
                             "Bytes read plus bytes written per element.")
      .def_property_readonly("size", &StreamPass::size, "Elements per buffer.");
}

}  // namespace pyoptim
