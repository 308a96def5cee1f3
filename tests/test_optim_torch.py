"""The optimizer classes against torch.optim 2.13: trajectories with two param groups for every
option combination, param-group layout and defaults, torch tensors, hyperparameter changes
between steps, None grads, schedules (momentum cycling included)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyoptim
from cases import CASES
from test_optim import (CLASSES, STEPS, _class_kwargs, _grads, _groups, _params, _second_group,
                        needs_core)

TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
               "adadelta": "Adadelta", "asgd": "ASGD", "rprop": "Rprop"}  # Lion: not in torch
IN_TORCH = [c for c in CASES if c.optimizer in TORCH_NAMES]

torch = pytest.importorskip("torch", reason="torch is not installed: the classes cannot be "
                                            "compared with torch.optim (CI installs torch==2.13.0)")


def _torch_run(case, params0, grads_per_step, dtype, **extra):
    tdtype = getattr(torch, np.dtype(dtype).name)
    tparams = [torch.nn.Parameter(torch.tensor(p, dtype=tdtype)) for p in params0]
    groups = [{"params": tparams[:2]}, {"params": tparams[2:], **_second_group(case)}]
    opt = getattr(torch.optim, TORCH_NAMES[case.optimizer])(groups, **_class_kwargs(case),
                                                             **extra)
    for grads in grads_per_step:
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(g, dtype=tdtype)
        opt.step()
    return opt, tparams


@needs_core
@pytest.mark.parametrize("case", IN_TORCH, ids=lambda c: c.id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trajectory_matches_torch_with_two_param_groups(case, dtype):
    rng = np.random.default_rng(1)
    params = _params(rng, dtype)
    params0 = [p.copy() for p in params]
    grads_per_step = [_grads(rng, params, t) for t in range(STEPS)]
    opt = CLASSES[case.optimizer](_groups(params, case), **_class_kwargs(case))
    for grads in grads_per_step:
        assert opt.step(grads) is True
    topt, tparams = _torch_run(case, params0, grads_per_step, dtype)
    # float64: the same operations to rounding; float32: torch's vectorized lerp may use FMA
    rtol, atol = (1e-13, 1e-15) if dtype == "float64" else (2e-6, 1e-5)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"params[{i}]")
        tstate = topt.state[tp]
        names = {k for k in tstate if k != "step" and tstate[k] is not None}
        assert names == set(opt.state[i]) - {"step"}
        for name in names:
            np.testing.assert_allclose(opt.state[i][name], tstate[name].numpy(), rtol=rtol,
                                       atol=atol, err_msg=f"{name} of params[{i}]")
        if "step" in tstate:
            assert opt.state[i]["step"] == int(tstate["step"]) == STEPS


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES))
def test_param_groups_look_like_torch(name):
    p = np.zeros(3, np.float32)
    ours = CLASSES[name]([p]).param_groups[0]
    theirs = getattr(torch.optim, TORCH_NAMES[name])([torch.zeros(3, requires_grad=True)])
    assert list(ours) == list(theirs.param_groups[0])  # the same keys in the same order
    for key, value in theirs.param_groups[0].items():
        if key != "params":
            assert ours[key] == value, key


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES))
def test_defaults_are_torchs(name):
    import inspect

    ours = inspect.signature(CLASSES[name]).parameters
    theirs = inspect.signature(getattr(torch.optim, TORCH_NAMES[name])).parameters
    for key, parameter in theirs.items():
        assert key in ours, key
        assert ours[key].default == parameter.default, key
        assert ours[key].kind == parameter.kind, key


@needs_core
def test_torch_tensors_as_params_and_grads_are_updated_in_place():
    rng = np.random.default_rng(2)
    t = torch.tensor(rng.standard_normal(10), dtype=torch.float32)
    b = torch.tensor(rng.standard_normal(4), dtype=torch.bfloat16)
    ref_t, ref_b = t.clone(), torch.nn.Parameter(b.clone())
    ref_t = torch.nn.Parameter(ref_t)
    opt = pyoptim.Adam([t, b], lr=0.01)
    topt = torch.optim.Adam([ref_t, ref_b], lr=0.01)
    for _ in range(3):
        g = [torch.randn(10), torch.randn(4).to(torch.bfloat16)]
        opt.step(g)
        ref_t.grad, ref_b.grad = g[0].clone(), g[1].clone()
        topt.step()
    np.testing.assert_allclose(t.numpy(), ref_t.detach().numpy(), rtol=2e-6, atol=1e-6)
    # bfloat16: pyoptim keeps float32 state (torch: bfloat16), so only close
    np.testing.assert_allclose(b.float().numpy(), ref_b.detach().float().numpy(), rtol=2e-2)
    assert opt.state[1]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("move", ["data", "set_", "module.double()"])
def test_a_torch_param_whose_memory_was_replaced_is_refused_and_nothing_changes(move):
    """The optimizer writes the memory a torch param had when it was built. Where the tensor
    was given other memory since (.data, set_(), module.double()), a step would update memory
    the tensor no longer has and report success: refused by name, before anything is written
    (the NumPy param beside it, the state, the step count)."""
    layer = torch.nn.Linear(3, 2, bias=False)
    a = np.ones(5, np.float32)
    opt = pyoptim.Adam([a, layer.weight], lr=0.1)
    grads = [np.ones(5, np.float32), torch.ones(2, 3)]
    opt.step(grads)
    if move == "data":
        layer.weight.data = torch.zeros(2, 3)
    elif move == "set_":
        with torch.no_grad():
            layer.weight.set_(torch.zeros(2, 3))
    else:
        layer.double()
    before = (a.copy(), layer.weight.detach().clone(), opt.state[0]["exp_avg"].copy())
    for g in (torch.ones(2, 3), torch.ones(2, 3, dtype=layer.weight.dtype)):
        with pytest.raises(RuntimeError, match=r"Adam: params\[1\] no longer has the memory "
                                               r"this optimizer was built with"):
            opt.step([np.ones(5, np.float32), g])
    np.testing.assert_array_equal(a, before[0])
    assert torch.equal(layer.weight.detach(), before[1])
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], before[2])
    assert opt.state[0]["step"] == opt.state[1]["step"] == 1


@needs_core
def test_a_step_moves_the_version_counter_of_the_torch_tensors_it_wrote():
    """autograd does not see pyoptim write a tensor's memory: the step moves the version counter
    of every torch param it updated (as torch's in-place ops do), not of one it left alone (no
    grad), nor of a grad, nor anything in a step skip_nonfinite skips; NumPy params mix in."""
    t, u, a = torch.ones(10), torch.ones(4), np.ones(3, np.float32)
    opt = pyoptim.Adam([t, u, a], lr=0.01, skip_nonfinite=True)
    grads = [torch.ones(10), None, np.ones(3, np.float32)]
    opt.step(grads)
    assert (t._version, u._version, grads[0]._version) == (1, 0, 0)
    opt.step([torch.ones(10), torch.ones(4), np.ones(3, np.float32)])
    assert (t._version, u._version) == (2, 1)
    assert opt.step([torch.full((10,), np.nan), torch.ones(4), np.ones(3, np.float32)]) is False
    assert (t._version, u._version) == (2, 1)


@needs_core
def test_changing_a_group_hyperparameter_between_steps_takes_effect():
    """As with torch: param_groups[i][key] = value; a newly needed state buffer is allocated."""
    p = np.ones(4, np.float32)
    ref = p.copy()
    opt = pyoptim.SGD([p], lr=0.1)
    tp = torch.nn.Parameter(torch.tensor(ref))
    topt = torch.optim.SGD([tp], lr=0.1)
    rng = np.random.default_rng(8)
    for t in range(6):
        if t == 2:
            for o in (opt, topt):
                o.param_groups[0]["momentum"] = 0.9
                o.param_groups[0]["lr"] = 0.05
        g = rng.standard_normal(4).astype(np.float32)
        opt.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6)
    assert "momentum_buffer" in opt.state[0]


@needs_core
def test_none_grad_leaves_a_param_and_its_step_count_alone():
    rng = np.random.default_rng(9)
    params = _params(rng, np.float32)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    opt = pyoptim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.03}], lr=0.01)
    topt = torch.optim.Adam([{"params": tparams[:2]}, {"params": tparams[2:], "lr": 0.03}],
                            lr=0.01)
    for t in range(6):
        grads = _grads(rng, params, t)
        if t % 2:
            grads[1] = None
        if t == 3:
            grads[3] = None
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.tensor(g)
        topt.step()
    for i, (p, tp) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=2e-6, atol=1e-6)
        assert opt.state[i]["step"] == int(topt.state[tp]["step"])
    assert [opt.state[i]["step"] for i in range(4)] == [6, 3, 6, 5]


@needs_core
def test_lr_schedule_in_the_optimizer_matches_torch_scheduler():
    rng = np.random.default_rng(11)
    p = rng.standard_normal(6)
    tp = torch.nn.Parameter(torch.tensor(p.copy()))
    sched = pyoptim.schedules.SequentialLR(
        [pyoptim.schedules.LinearLR(0.1, start_factor=0.1, total_iters=5),
         pyoptim.schedules.CosineAnnealingLR(0.1, T_max=20, eta_min=0.001)], milestones=[5])
    opt = pyoptim.SGD([p], lr=sched, momentum=0.9)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tsched = torch.optim.lr_scheduler.SequentialLR(topt, [
            torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.1, total_iters=5),
            torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=20, eta_min=0.001)],
            milestones=[5])
        for _ in range(30):
            assert opt.get_lr()[0] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
            g = rng.standard_normal(6)
            opt.step([g])
            tp.grad = torch.tensor(g)
            topt.step()
            tsched.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12)
    assert opt.state_dict()["pyoptim"]["step_count"] == 30


@needs_core
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_one_cycle_cycles_momentum_or_beta1_like_torch(name):
    rng = np.random.default_rng(12)
    p = rng.standard_normal(5)
    tp = torch.nn.Parameter(torch.tensor(p.copy()))
    kwargs = {"momentum": 0.9} if name != "Adam" else {}
    opt = getattr(pyoptim, name)(
        [p], lr=pyoptim.schedules.OneCycleLR(0.05, total_steps=40), **kwargs)
    topt = getattr(torch.optim, name)([tp], lr=0.05, **kwargs)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.05, total_steps=40)
    for _ in range(40):
        g = rng.standard_normal(5)
        opt.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-11, atol=1e-14)

