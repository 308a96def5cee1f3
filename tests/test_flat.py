"""Flat parameter buffers: layout, alignment, views sharing the buffer's memory, a gradient buffer
of the same layout, copies in, PyTorch on the views, and a model updated by one kernel call."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu
from pyoptim.flat import FlatBuffer

SHAPES = [(3, 5), (7,), (), (2, 3, 4), (0,), (1,)]


def _address(a):
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("align", [None, 2 * 8, 256])
def test_views_tile_one_aligned_buffer(dtype, align):
    kwargs = {} if align is None else {"align": align}
    flat = FlatBuffer(SHAPES, dtype, **kwargs)
    align = 64 if align is None else align
    itemsize = np.dtype(dtype).itemsize
    assert flat.buffer.ndim == 1 and flat.buffer.dtype == np.dtype(dtype)
    assert flat.buffer.flags.c_contiguous and flat.buffer.flags.writeable
    assert _address(flat.buffer) % align == 0
    assert len(flat) == len(SHAPES) and [v.shape for v in flat] == SHAPES
    end = 0
    for view, offset, shape in zip(flat.views, flat.offsets, SHAPES):
        assert np.shares_memory(view, flat.buffer) or view.size == 0
        assert view.flags.c_contiguous
        assert offset >= end and (offset * itemsize) % align == 0
        if view.size:  # NumPy gives an empty slice the address of its base
            assert _address(view) == _address(flat.buffer) + offset * itemsize
        end = offset + int(np.prod(shape))
    assert flat.buffer.size == end
    assert not flat.buffer.any()
    # writing a view writes the buffer, and only there
    flat.views[3][...] = 1
    assert flat.buffer.astype(np.float32).sum() == 24
    assert flat.buffer[flat.offsets[3]:flat.offsets[3] + 24].astype(np.float32).min() == 1


def test_zeros_like_has_the_same_offsets_in_another_dtype():
    params = FlatBuffer(SHAPES, ml_dtypes.bfloat16)
    grads = params.zeros_like(np.float32)
    assert grads.dtype == np.float32 and grads.offsets == params.offsets
    assert grads.buffer.shape == params.buffer.shape
    assert not np.shares_memory(grads.buffer, params.buffer)


def test_from_arrays_copies_values():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in SHAPES]
    flat = FlatBuffer.from_arrays(arrays, np.float32)
    for view, a in zip(flat, arrays):
        np.testing.assert_array_equal(view, a.astype(np.float32))
    arrays[0][0, 0] = 99
    assert flat[0][0, 0] != 99
    assert FlatBuffer.from_arrays(arrays).dtype == np.float64


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="align"):
        FlatBuffer([(3,)], np.float32, align=6)
    with pytest.raises(ValueError, match="align"):
        FlatBuffer([(3,)], np.float32, align=0)
    with pytest.raises(ValueError, match="shape"):
        FlatBuffer([(3, -1)], np.float32)
    with pytest.raises(ValueError, match="device"):
        FlatBuffer([(3,)], np.float32, device="tpu")
    with pytest.raises(ValueError, match="no arrays"):
        FlatBuffer.from_arrays([])


@pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")
def test_a_model_on_flat_buffers_is_one_kernel_call_and_matches_per_tensor_steps():
    rng = np.random.default_rng(1)
    shapes = [(16, 8), (8,), (4, 16), (4,)]
    params = FlatBuffer(shapes, np.float32)
    for v in params:
        v[...] = rng.standard_normal(v.shape)
    grads = params.zeros_like()
    tensors = [v.copy() for v in params]
    flat_opt = pyoptim.AdamW(params, lr=0.01, max_grad_norm=1.0)
    per_tensor = pyoptim.AdamW(tensors, lr=0.01, max_grad_norm=1.0)
    assert len(flat_opt.state) == 1 and flat_opt.state[0]["exp_avg"].shape == params.buffer.shape
    for _ in range(5):
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        flat_opt.step(grads)
        per_tensor.step([g.copy() for g in grads])
        assert flat_opt.last_grad_norm == pytest.approx(per_tensor.last_grad_norm, rel=1e-14)
    for v, t in zip(params, tensors):
        np.testing.assert_allclose(v, t, rtol=1e-6, atol=1e-7)
    # the gaps between views are still zero
    mask = np.ones(params.buffer.size, bool)
    for offset, shape in zip(params.offsets, shapes):
        mask[offset:offset + int(np.prod(shape))] = False
    assert not params.buffer[mask].any()


def test_torch_tensors_share_the_views_memory():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    flat = FlatBuffer([(2, 3), (4,)], np.float32)
    tensors = [torch.from_numpy(v) for v in flat]
    tensors[1].add_(2.0)
    np.testing.assert_array_equal(flat[1], np.full(4, 2.0, np.float32))
    model = torch.nn.Linear(3, 2)
    flat = FlatBuffer([p.shape for p in model.parameters()], np.float32)
    for view, p in zip(flat, model.parameters()):
        view[...] = p.detach().numpy()
        p.data = torch.from_numpy(view)
    model.weight.data.mul_(0)
    assert not flat[0].any()
