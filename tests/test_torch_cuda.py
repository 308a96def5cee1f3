"""pyoptim.torch with CUDA tensors: the CUDA backend updates them in place. These need a GPU and a
CUDA build of torch: Numba's simulator cannot stand in, since torch has no simulated CUDA
tensors (the CUDA backend itself is tested on the simulator in test_cuda.py and
test_optim_cuda.py)."""

from __future__ import annotations

import copy

import pytest

from harness import cuda_simulated
from pyoptim import _cuda
from test_torch_optim import (STEPS, TOLERANCES, TORCH_NAMES, assert_same_state, groups_of,
                              loss_of, make_data, make_model, pt, torch, train_step)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _cuda.installed() and not cuda_simulated()),
    reason="needs a GPU, a CUDA build of torch and numba-cuda (torch's CUDA tensors cannot run "
           "on Numba's CUDA simulator)")


def _on_gpu(model, data):
    return model.cuda(), tuple(d.cuda() for d in data)


@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_cuda_training_matches_torch_optim(name):
    (theirs_model, data), (ours_model, _) = (_on_gpu(make_model(), make_data()),
                                             _on_gpu(make_model(), make_data()))
    theirs = getattr(torch.optim, name)(groups_of(theirs_model), lr=0.01)
    ours = getattr(pt, name)(groups_of(ours_model), lr=0.01)
    for _ in range(STEPS):
        train_step(theirs_model, theirs, data)
        train_step(ours_model, ours, data)
    torch.cuda.synchronize()
    for p in ours_model.parameters():
        assert all(v.device == p.device for v in ours.state[p].values() if v.ndim)
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float32])


def test_cuda_grad_scaler_skips_an_overflowing_step():
    model, data = _on_gpu(make_model(), make_data())
    opt = pt.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    for t in range(3):
        opt.zero_grad()
        scaler.scale(loss_of(model, data)).backward()
        if t == 2:
            before = [p.detach().clone() for p in model.parameters()]
            state = copy.deepcopy(opt.state_dict())
            model.fc1.weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    for index, entry in state["state"].items():
        for key, value in entry.items():
            assert torch.equal(opt.state_dict()["state"][index][key], value)


def test_cuda_checkpoint_round_trip_keeps_state_on_the_gpu():
    model, data = _on_gpu(make_model(), make_data())
    opt = pt.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        train_step(model, opt, data)
    fresh = pt.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in model.parameters():
        assert fresh.state[p]["exp_avg"].device == p.device
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
