"""pyoptim.torch with torch.amp.GradScaler: the loss scale is folded into the update, a step whose
scaled gradients overflowed changes nothing, and training matches torch.optim under the same
scaler (which unscales the gradients itself and skips the step)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pyoptim import reference
from test_torch_optim import (NOT_IN_TORCH, TOLERANCES, TORCH_NAMES, assert_same_state,
                              groups_of, loss_of, make_data, make_model, needs_core, nn, pt,
                              torch)

# with pyoptim.torch's compiled reader of grads and with the Python checks (conftest.py)
pytestmark = pytest.mark.usefixtures("grad_reader")

OVERFLOWS = (3, 7)  # steps whose gradients get an infinity


def _scaled_step(model, opt, scaler, data, t, unscale_and_clip=False):
    opt.zero_grad()
    scaler.scale(loss_of(model, data)).backward()
    if t in OVERFLOWS:
        model.fc1.weight.grad[1, 2] = float("inf")
    if unscale_and_clip:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    scaler.step(opt)
    scaler.update()


def _scaler():
    return torch.amp.GradScaler("cpu", init_scale=2.0**10)


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
@pytest.mark.parametrize("unscale_and_clip", [False, True], ids=["folded", "unscale_-clip"])
def test_training_under_a_grad_scaler_matches_torch_optim(name, unscale_and_clip):
    """torch.optim: the scaler unscales the gradients and skips overflowing steps itself;
    pyoptim.torch: it hands over grad_scale and found_inf (with unscale_ first: found_inf only)."""
    models = [make_model(), make_model()]
    theirs = getattr(torch.optim, name)(groups_of(models[0]), lr=0.01)
    ours = getattr(pt, name)(groups_of(models[1]), lr=0.01)
    scalers = [_scaler(), _scaler()]
    data = make_data()
    for t in range(12):
        for model, opt, scaler in zip(models, (theirs, ours), scalers):
            _scaled_step(model, opt, scaler, data, t, unscale_and_clip)
    assert scalers[0].get_scale() == scalers[1].get_scale() == 2.0**8
    assert_same_state(ours, theirs, list(models[1].parameters()), list(models[0].parameters()),
                      **TOLERANCES[torch.float32])
    if name != "SGD":
        assert ours.state[models[1].fc2.bias]["step"] == 12 - len(OVERFLOWS)


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()) + sorted(NOT_IN_TORCH))
def test_an_overflowing_step_changes_nothing(name):
    model = make_model()
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    opt = getattr(pt, name)(groups_of(model), lr=0.01, **kwargs)
    scaler = _scaler()
    data = make_data()
    for t in range(2):
        _scaled_step(model, opt, scaler, data, t)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    _scaled_step(model, opt, scaler, data, OVERFLOWS[0])
    assert scaler.get_scale() == 2.0**9
    for i, (p, q) in enumerate(zip(model.parameters(), params)):
        assert torch.equal(p, q), f"params[{i}]"
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert list(after["state"]) == list(state["state"])
    for index, entry in state["state"].items():
        assert list(after["state"][index]) == list(entry)
        for key, value in entry.items():
            assert torch.equal(after["state"][index][key], value), (index, key)


@needs_core
def test_grad_scale_and_found_inf_as_keywords():
    """step(grad_scale=s) equals a step on the gradients divided by s (s a power of two: exact);
    found_inf nonzero skips the step."""
    models = [make_model(), make_model()]
    opts = [pt.Adam(models[0].parameters(), lr=0.01), pt.Adam(models[1].parameters(), lr=0.01)]
    data = make_data()
    for t in range(4):
        for model in models:
            model.zero_grad()
        loss_of(models[0], data).backward()
        (loss_of(models[1], data) * 64).backward()
        opts[0].step()
        opts[1].step(grad_scale=torch.tensor(64.0), found_inf=torch.tensor(0.0))
        before = [p.detach().clone() for p in models[1].parameters()]
        opts[1].step(grad_scale=torch.tensor(64.0), found_inf=torch.tensor(1.0))
        assert all(torch.equal(p, b) for p, b in zip(models[1].parameters(), before))
    assert_same_state(opts[1], opts[0], list(models[1].parameters()),
                      list(models[0].parameters()), rtol=2e-6, atol=1e-7)


@needs_core
def test_float16_params_unscaled_inside_the_update_like_the_reference():
    """float16 params and gradients of a scaled loss: the kernel multiplies each gradient by
    1/scale in float32 (torch.optim would unscale the float16 gradients in float16 first)."""
    model = make_model(torch.float16)
    opt = pt.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    params = list(model.parameters())
    copies = [p.detach().numpy().copy() for p in params]
    states = [(np.zeros(c.shape, np.float32), np.zeros(c.shape, np.float32)) for c in copies]
    data = make_data(torch.float16)
    for t in range(1, 6):
        opt.zero_grad()
        scaler.scale(loss_of(model, data)).backward()
        grads = [p.grad.numpy().copy() for p in params]
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        for c, g, (m, v) in zip(copies, grads, states):
            reference.adam(c, g, exp_avg=m, exp_avg_sq=v, step=t, lr=0.01, grad_factor=1 / scale)
    for i, (c, (m, v), p) in enumerate(zip(copies, states, params)):
        np.testing.assert_array_equal(p.detach().numpy(), c, err_msg=f"params[{i}]")
        np.testing.assert_array_equal(opt.state[p]["exp_avg"].numpy(), m, err_msg=f"m [{i}]")
        np.testing.assert_array_equal(opt.state[p]["exp_avg_sq"].numpy(), v, err_msg=f"v [{i}]")
