"""The optimizer classes on GPU arrays (the CUDA backend, or Numba's simulator): the same
trajectories as on the host within the CUDA tolerance (clipping, loss-scale unscaling and the
non-finite skip included), state on the device, checkpoints through the host. Skipped where the
CUDA backend is not available (harness.BACKENDS has no "cuda" entry, or
pyoptim.available_backends() lacks it)."""

from __future__ import annotations

import numpy as np
import pytest

import pyoptim
from pyoptim import _memory
from cases import CASES, FULL_CASES
from harness import BACKENDS, assert_close, skip_if_pending
from test_optim import CLASSES, _class_kwargs, _grads, _groups, _params


def _cuda_backend():
    if "cuda" not in pyoptim.available_backends() or "cuda" not in BACKENDS:
        pytest.skip("the CUDA backend is not available here")
    return BACKENDS["cuda"]


@pytest.mark.parametrize("case", [c for c in CASES if not c.hyperparameters.get("maximize")],
                         ids=lambda c: c.id)
def test_gpu_params_follow_the_host_trajectory(case):
    cuda = _cuda_backend()
    skip_if_pending("cuda", case.spec.kernel)
    rng = np.random.default_rng(0)
    host = _params(rng, np.float32, shapes=[(7, 5), (31,), (1,), (300,)])
    device = [cuda.to_device(p) for p in host]
    cls = CLASSES[case.optimizer]
    on_host = cls(_groups(host, case), **_class_kwargs(case))
    on_device = cls(_groups(device, case), **_class_kwargs(case))
    for t in range(5):
        grads = _grads(rng, host, t)
        on_host.step(grads)
        on_device.step([cuda.to_device(g) for g in grads])
    tolerance = cuda.tolerance("float32", "float32")
    for i, (h, d) in enumerate(zip(host, device)):
        assert_close(cuda.to_host(d), h, tolerance, f"params[{i}]")
        for name in on_host.state[i]:
            if name == "step":
                assert on_device.state[i]["step"] == on_host.state[i]["step"]
            elif name in on_host._spec.host_states:
                assert_close(on_device.state[i][name], on_host.state[i][name], (0, 0), name)
            else:
                assert_close(cuda.to_host(on_device.state[i][name]), on_host.state[i][name],
                             tolerance, name)


def test_gpu_state_lives_on_the_device_and_checkpoints_through_the_host(tmp_path):
    cuda = _cuda_backend()
    p = cuda.to_device(np.ones(10, np.float32))
    opt = pyoptim.Adam([p], lr=0.1)
    assert _memory.library(opt.state[0]["exp_avg"]) == _memory.library(p)
    opt.step([cuda.to_device(np.full(10, 0.5, np.float32))])
    sd = opt.state_dict()
    assert isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    opt.save(tmp_path / "gpu.npz")
    other = pyoptim.Adam([cuda.to_device(np.ones(10, np.float32))], lr=0.1)
    other.load(tmp_path / "gpu.npz")
    np.testing.assert_array_equal(_memory.to_host(other.state[0]["exp_avg_sq"]),
                                  sd["state"][0]["exp_avg_sq"])


@pytest.mark.parametrize("case", [c for c in FULL_CASES if c.optimizer in ("sgd", "adam", "lamb")],
                         ids=lambda c: c.id)
@pytest.mark.parametrize("options", [{"max_grad_norm": 0.5}, {"clip_value": 0.3},
                                     {"skip_nonfinite": True}], ids=str)
def test_clipping_and_the_non_finite_skip_follow_the_host(case, options):
    """max_grad_norm (the global norm on the GPU, in the C++ backend's order), clip_value (the
    clamp in the kernels) and skip_nonfinite, with grad_scale: the host class's trajectory, norms
    and step results, to the bit."""
    cuda = _cuda_backend()
    rng = np.random.default_rng(3)
    host = _params(rng, np.float32, shapes=[(7, 5), (31,), (1,), (300,)])
    device = [cuda.to_device(p) for p in host]
    cls = CLASSES[case.optimizer]
    kwargs = dict(_class_kwargs(case), **options)
    on_host = cls(_groups(host, case), **kwargs)
    on_device = cls(_groups(device, case), **kwargs)
    for t in range(8):
        grads = _grads(rng, host, t)
        if t in (0, 3) and options.get("skip_nonfinite"):
            grads[t % 4][-1] = np.inf if t else np.nan
        scale = 2.0 ** (t % 4) * 1.3
        scaled = [g * np.float32(scale) for g in grads]
        applied = on_host.step(scaled, grad_scale=scale)
        assert on_device.step([cuda.to_device(g) for g in scaled], grad_scale=scale) is applied
        assert applied is not (options.get("skip_nonfinite", False) and t in (0, 3))
        if on_host.last_grad_norm is None:  # clip_value alone needs no norm
            assert on_device.last_grad_norm is None
        else:
            assert_close(on_device.last_grad_norm, on_host.last_grad_norm, (0, 0), "norm")
    if options.get("max_grad_norm"):
        assert on_host.last_grad_norm > 0.5  # the clipping did clip
    tolerance = cuda.tolerance("float32", "float32")
    for i, (h, d) in enumerate(zip(host, device)):
        assert_close(cuda.to_host(d), h, tolerance, f"params[{i}]")
        assert on_device.state[i]["step"] == on_host.state[i]["step"]
        for name in on_host.state[i]:
            if name != "step":
                assert_close(cuda.to_host(on_device.state[i][name]), on_host.state[i][name],
                             tolerance, name)


def test_a_refused_gpu_grad_changes_nothing():
    cuda = _cuda_backend()
    p = cuda.to_device(np.ones(8, np.float32))
    opt = pyoptim.Adam([p], lr=0.1, max_grad_norm=1.0)
    strided = cuda.to_device(np.ones(16, np.float32))[::2]
    with pytest.raises(ValueError, match=r"grads\[0\] is not C-contiguous"):
        opt.step([strided])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype int32"):
        opt.step([cuda.to_device(np.ones(8, np.int32))])
    assert opt.state[0]["step"] == 0 and opt.last_grad_norm is None
    np.testing.assert_array_equal(cuda.to_host(p), np.ones(8, np.float32))
    assert opt.step([cuda.to_device(np.full(8, 0.5, np.float32))]) is True
    assert opt.last_grad_norm == pytest.approx(0.5 * 8 ** 0.5, rel=1e-15)


def test_host_and_gpu_params_do_not_mix():
    cuda = _cuda_backend()
    with pytest.raises(TypeError, match="all be host arrays or all GPU arrays"):
        pyoptim.SGD([np.ones(3, np.float32), cuda.to_device(np.ones(3, np.float32))])


def test_a_flat_gpu_buffer_is_one_param():
    cuda = _cuda_backend()
    shapes = [(3, 4), (5,), (2, 2, 2)]
    params = pyoptim.flat.FlatBuffer(shapes, np.float32, device="cuda")
    grads = params.zeros_like()
    assert _memory.library(params.buffer) == "numba"
    rng = np.random.default_rng(1)
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for view, value in zip(params.views, start):
        _memory.copy_from_host(view, value)
    host = pyoptim.flat.FlatBuffer.from_arrays(start)
    host_grads = host.zeros_like()
    on_device = pyoptim.AdamW(params, lr=0.01)
    on_host = pyoptim.AdamW(host, lr=0.01)
    for _ in range(3):
        for view, hview in zip(grads.views, host_grads.views):
            value = rng.standard_normal(hview.shape).astype(np.float32)
            hview[...] = value
            _memory.copy_from_host(view, value)
        on_device.step(grads)
        on_host.step(host_grads)
    assert_close(cuda.to_host(params.buffer), host.buffer, cuda.tolerance("float32", "float32"),
                 "flat buffer")
