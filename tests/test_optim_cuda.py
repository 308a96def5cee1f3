"""The optimizer classes on GPU arrays (the CUDA backend, or Numba's simulator): the same
trajectories as on the host within the CUDA tolerance, state on the device, checkpoints through
the host, and the options the CUDA path refuses. Skipped where the CUDA backend is not available
(harness.BACKENDS has no "cuda" entry, or pyoptim.available_backends() lacks it)."""

from __future__ import annotations

import numpy as np
import pytest

import pyoptim
from pyoptim import _memory
from cases import CASES
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


@pytest.mark.parametrize("option", [{"max_grad_norm": 1.0}, {"clip_value": 1.0},
                                    {"skip_nonfinite": True}], ids=str)
def test_options_without_a_gpu_path_are_refused_at_construction(option):
    cuda = _cuda_backend()
    with pytest.raises(NotImplementedError, match="not supported for GPU params"):
        pyoptim.Adam([cuda.to_device(np.ones(4, np.float32))], **option)


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
