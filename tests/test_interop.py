"""Host arrays from anywhere are updated in place, zero-copy: NumPy views, PyTorch CPU tensors,
buffer-protocol objects, __array_interface__ and __dlpack__ objects."""

from __future__ import annotations

import array

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import functional, reference

BACKENDS = [b for b in ("cpu", "numpy") if b in pyoptim.available_backends()]


def expected_adam(p, grads, state_dtype=None, **hp):
    """The reference trajectory on private NumPy copies."""
    p = np.array(p, copy=True)
    m = np.zeros(p.shape, state_dtype or p.dtype)
    v = np.zeros(p.shape, state_dtype or p.dtype)
    for t, g in enumerate(grads, 1):
        reference.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, **hp)
    return p, m, v


def grads_for(shape, dtype, steps=7):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_numpy_view_into_a_larger_buffer_is_updated_in_place(backend):
    buffer = np.arange(3000, dtype=np.float32) / 3000
    outside = buffer.copy()
    p = buffer[1000:2000].reshape(10, 100)  # a contiguous view, not at the start
    grads = grads_for((10, 100), np.float32)
    want_p, want_m, want_v = expected_adam(p, grads, lr=1e-2)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=1e-2, backend=backend)
    np.testing.assert_array_equal(buffer[1000:2000].reshape(10, 100), want_p)
    np.testing.assert_array_equal(buffer[:1000], outside[:1000])
    np.testing.assert_array_equal(buffer[2000:], outside[2000:])
    np.testing.assert_array_equal(m, want_m)
    np.testing.assert_array_equal(v, want_v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffer_protocol_objects_are_updated_in_place(backend):
    p = array.array("f", [0.5] * 100)
    m, v = array.array("f", [0.0] * 100), bytearray(400)  # a bytearray is viewed as uint8...
    with pytest.raises(TypeError, match=r"exp_avg_sq has dtype uint8"):
        functional.adam(p, np.ones(100, np.float32), exp_avg=m, exp_avg_sq=v, step=1,
                        backend=backend)
    v = array.array("f", [0.0] * 100)  # ...an array('f') as float32
    functional.adam(p, np.ones(100, np.float32), exp_avg=m, exp_avg_sq=v, step=1, lr=0.1,
                    backend=backend)
    want, _, _ = expected_adam(np.full(100, 0.5, np.float32), [np.ones(100, np.float32)], lr=0.1)
    np.testing.assert_array_equal(np.frombuffer(p, np.float32), want)


class ArrayInterfaceOnly:
    """An object that shares a NumPy array's memory through __array_interface__ alone."""

    def __init__(self, base):
        self.base = base
        self.__array_interface__ = base.__array_interface__


class DLPackOnly:
    """An object that shares a NumPy array's memory through __dlpack__ alone."""

    def __init__(self, base):
        self.base = base

    def __dlpack__(self, **kwargs):
        return self.base.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.base.__dlpack_device__()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wrap", [ArrayInterfaceOnly, DLPackOnly])
def test_interface_objects_are_updated_in_place(backend, wrap):
    base = np.full(100, 0.5, np.float32)
    m, v = np.zeros(100, np.float32), np.zeros(100, np.float32)
    functional.adam(wrap(base), np.ones(100, np.float32), exp_avg=wrap(m), exp_avg_sq=v, step=1,
                    lr=0.1, backend=backend)
    want_p, want_m, _ = expected_adam(np.full(100, 0.5, np.float32), [np.ones(100, np.float32)],
                                      lr=0.1)
    np.testing.assert_array_equal(base, want_p)
    np.testing.assert_array_equal(m, want_m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_interface_object_is_refused(backend):
    base = np.full(100, 0.5, np.float32)
    base.flags.writeable = False
    with pytest.raises(ValueError, match=r"param is read-only"):
        functional.sgd(ArrayInterfaceOnly(base), np.ones(100, np.float32), step=1,
                       backend=backend)


# ---------------------------------------------------------------------------------------------
# PyTorch CPU tensors

torch = pytest.importorskip("torch", reason="torch is not installed")


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_float32_tensors_are_updated_in_place(backend):
    p = torch.linspace(-1, 1, 1000)
    m, v = torch.zeros(1000), torch.zeros(1000)
    data_ptr = p.data_ptr()
    grads = grads_for(1000, np.float32)
    want_p, want_m, want_v = expected_adam(p.numpy(), grads, lr=1e-2, weight_decay=0.1)
    for t, g in enumerate(grads, 1):
        functional.adam(p, torch.from_numpy(g), exp_avg=m, exp_avg_sq=v, step=t, lr=1e-2,
                        weight_decay=0.1, backend=backend)
    assert p.data_ptr() == data_ptr
    np.testing.assert_array_equal(p.numpy(), want_p)
    np.testing.assert_array_equal(m.numpy(), want_m)
    np.testing.assert_array_equal(v.numpy(), want_v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_torch_parameter_that_requires_grad_is_updated_in_place(backend):
    layer = torch.nn.Linear(8, 4)
    p = layer.weight
    before = p.detach().clone().numpy()
    g = np.ones((4, 8), np.float32)
    functional.sgd(p, g, step=1, lr=0.5, backend=backend)
    np.testing.assert_array_equal(layer.weight.detach().numpy(),
                                  before - np.float32(0.5) * g)
    assert p.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_bfloat16_params_with_float32_state_are_updated_in_place(backend):
    p = torch.linspace(-1, 1, 1000, dtype=torch.bfloat16)
    m, v = torch.zeros(1000), torch.zeros(1000)
    grads = grads_for(1000, ml_dtypes.bfloat16)
    p_numpy = p.view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
    want_p, want_m, want_v = expected_adam(p_numpy, grads, state_dtype=np.float32, lr=1e-2)
    for t, g in enumerate(grads, 1):
        tg = torch.from_numpy(g.view(np.int16)).view(torch.bfloat16)
        functional.adam(p, tg, exp_avg=m, exp_avg_sq=v, step=t, lr=1e-2, backend=backend)
    got = p.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(got.astype(np.float32), want_p.astype(np.float32))
    np.testing.assert_array_equal(m.numpy(), want_m)
    np.testing.assert_array_equal(v.numpy(), want_v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_contiguous_torch_tensor_is_refused(backend):
    p = torch.zeros(10, 20).t()
    before = p.clone()
    with pytest.raises(ValueError, match=r"param is not C-contiguous"):
        functional.sgd(p, torch.ones(20, 10), step=1, backend=backend)
    assert torch.equal(p, before)


# lazy tensors whose memory is not their values
LAZY = {"negative bit": (lambda t: torch._neg_view(t), "with its negative bit set"),
        "zero tensor": (lambda t: torch._efficientzerotensor(t.shape), "without memory")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["param", "grad", "exp_avg"])
@pytest.mark.parametrize("lazy", sorted(LAZY))
def test_a_lazy_torch_tensor_is_refused(backend, which, lazy):
    """DLPack hands over a tensor's memory. A negated view holds the opposite of its values
    there (a grad of -1 would step as +1); a lazy zero tensor has none (address 0). Refused by
    name; nothing changes."""
    arrays = {"param": torch.linspace(-1, 1, 7), "grad": torch.ones(7),
              "exp_avg": torch.full((7,), 0.5), "exp_avg_sq": torch.full((7,), 0.25)}
    make, message = LAZY[lazy]
    arrays[which] = make(arrays[which])
    before = {name: t.clone() for name, t in arrays.items()}
    with pytest.raises(TypeError, match=rf"{which}: a PyTorch tensor {message}"):
        functional.adam(arrays["param"], arrays["grad"], exp_avg=arrays["exp_avg"],
                        exp_avg_sq=arrays["exp_avg_sq"], step=1, lr=0.1, backend=backend)
    for name, t in arrays.items():
        assert torch.equal(t, before[name]), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["param", "grad"])
@pytest.mark.parametrize("layout", ["sparse", "mkldnn"])
def test_a_torch_tensor_of_another_layout_is_refused(backend, which, layout):
    arrays = {"param": torch.linspace(-1, 1, 7), "grad": torch.ones(7)}
    before = arrays["param"].clone()
    arrays[which] = arrays[which].to_sparse() if layout == "sparse" else arrays[which].to_mkldnn()
    with pytest.raises(TypeError, match=rf"{which}: a PyTorch tensor of layout torch._?{layout}"):
        functional.sgd(arrays["param"], arrays["grad"], step=1, lr=0.1, backend=backend)
    if which == "grad":
        assert torch.equal(arrays["param"], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_moves_the_version_counter_of_the_torch_tensors_it_wrote(backend):
    """autograd does not see pyoptim write a tensor's memory: a step moves the version counter
    of the param and the state it wrote (NAdam's mu_product included), as torch's in-place ops
    do, and not the grad's, so a backward through a graph that saved the param before the step
    raises instead of using the new values."""
    p = torch.ones(5, requires_grad=True)
    saved = (p * p).sum()  # saves p for its backward
    arrays = {"exp_avg": torch.zeros(5), "exp_avg_sq": torch.zeros(5),
              "mu_product": torch.ones((), dtype=torch.float32)}
    g = torch.ones(5)
    functional.nadam(p, g, **arrays, step=1, backend=backend)
    assert p._version == 1 and g._version == 0
    assert all(t._version == 1 for t in arrays.values())
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


class TensorOfOurOwn(torch.Tensor):
    """A torch.Tensor subclass defined outside torch, as libraries and users define them."""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_torch_tensor_subclass_defined_outside_torch_is_handled_as_a_tensor(backend, dtype):
    """A subclass takes the tensor path wherever it is defined: its memory is written in place
    (bfloat16 included, which DLPack alone cannot hand to NumPy, and a param that requires
    grad, which DLPack refuses to export), its version counter moves, and a negated view is
    refused by name rather than stepped with the opposite sign."""
    torch_dtype = getattr(torch, dtype)
    p = torch.linspace(-1, 1, 7, dtype=torch_dtype).as_subclass(TensorOfOurOwn)
    p.requires_grad_(True)
    g = torch.linspace(2, 3, 7, dtype=torch_dtype).as_subclass(TensorOfOurOwn)
    numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    want = p.detach().float().numpy().astype(numpy_dtype)
    reference.sgd(want, g.float().numpy().astype(numpy_dtype), step=1, lr=0.5)
    address = p.data_ptr()
    functional.sgd(p, g, step=1, lr=0.5, backend=backend)
    assert p.data_ptr() == address and p._version == 1
    np.testing.assert_array_equal(p.detach().float().numpy(), want.astype(np.float32))

    negated = torch._neg_view(torch.ones(7, dtype=torch_dtype)).as_subclass(TensorOfOurOwn)
    before = p.detach().clone()
    with pytest.raises(TypeError, match="grad: a PyTorch tensor with its negative bit set"):
        functional.sgd(p, negated, step=1, lr=0.5, backend=backend)
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_and_numpy_arrays_mix_on_the_host(backend):
    p = torch.ones(100, dtype=torch.float64)
    functional.sgd(p, np.ones(100), step=1, lr=0.25, backend=backend)
    assert (p == 0.75).all()
