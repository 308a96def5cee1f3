"""pyoptim.torch against torch.optim 2.13: small real models trained side by side (every
optimizer, two param groups, float64 and float32), random hyperparameter values, params without
grads, add_param_group, closures, hooks, named params, LR schedulers, 16-bit params against the
reference, pyoptim's own options, refusals, and `import pyoptim` without torch.

Helpers here are shared with the other tests/test_torch_*.py files."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, reference
from cases import FULL_CASES, Case

torch = pytest.importorskip("torch", reason="torch is not installed: pyoptim.torch needs it "
                                            "(pip install 'pyoptim[torch]'; CI installs 2.13.0)")
pt = pytest.importorskip("pyoptim.torch")
nn = torch.nn
# The models here are tiny: torch's intra-op threads only contend for the 2 cores CI has (the
# same forward and backward take 10-50x longer with 2 threads on a busy machine).
torch.set_num_threads(1)

needs_core = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")
# every test runs with pyoptim.torch's compiled reader of grads and with the Python checks that
# stand in where it cannot be built (conftest.py)
pytestmark = pytest.mark.usefixtures("grad_reader")

TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
               "adadelta": "Adadelta", "asgd": "ASGD", "rprop": "Rprop"}  # Lion: not in torch
STEPS = 30
# float64: the same operations to rounding (torch's for-loop orders a few of them differently);
# float32: torch's kernels contract some products into FMAs, and 30 steps of training feed the
# differences back through the gradients.
TOLERANCES = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}
# centered RMSprop divides by sqrt(square_avg - grad_avg**2): the subtraction cancels, and
# differences of an ulp in either term (torch's FMAs) come out 100x larger, more in float32
CENTERED = {torch.float64: dict(rtol=1e-7, atol=1e-10),
            torch.float32: dict(rtol=5e-3, atol=5e-4)}


class ConvNet(nn.Module):
    """A tiny conv net: conv, layer norm, two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.LayerNorm([3, 5, 5])
        self.fc1 = nn.Linear(75, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def make_model(dtype=torch.float32, seed=0, cls=ConvNet):
    torch.manual_seed(seed)
    return cls().to(dtype)


def make_data(dtype=torch.float32, seed=1, batch=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 2, 5, 5, generator=g).to(dtype),
            torch.randn(batch, 4, generator=g).to(dtype))


def loss_of(model, data):
    x, y = data
    return nn.functional.mse_loss(model(x), y)


def train_step(model, opt, data):
    opt.zero_grad()
    loss = loss_of(model, data)
    loss.backward()
    opt.step()
    return loss


def groups_of(model, case=None, lr=None):
    """Two param groups: conv, norm and fc1; fc2 with another lr (and weight decay)."""
    second = {}
    if case is not None:
        second["lr"] = case.hyperparameters["lr"] * 0.5
        if "weight_decay" in case.spec.defaults:
            second["weight_decay"] = 0.02
    first = [p for name, p in model.named_parameters() if not name.startswith("fc2")]
    return [{"params": first}, {"params": list(model.fc2.parameters()), **second}]


def kwargs_of(case):
    hp = dict(case.hyperparameters)
    if case.optimizer == "adagrad":
        hp["initial_accumulator_value"] = 0.1
    return hp


def _numpy(t):
    """The values as a NumPy array: float64 as they are, 16-bit ones widened to float32 (which
    holds them exactly; NumPy has no bfloat16 of its own)."""
    t = t.detach().cpu()
    return (t if t.dtype == torch.float64 else t.float()).numpy()


def assert_same_state(ours, theirs, params_ours, params_theirs, check_dtypes=True, context="",
                      **tolerance):
    """Params and every state entry of two optimizers over twin models, elementwise; context
    starts each failure's message."""
    for i, (p, q) in enumerate(zip(params_ours, params_theirs)):
        np.testing.assert_allclose(_numpy(p), _numpy(q), **tolerance,
                                   err_msg=f"{context}params[{i}]")
        mine, other = ours.state.get(p, {}), theirs.state.get(q, {})
        names = {k for k, v in other.items() if v is not None}
        assert set(mine) - {"step"} == names - {"step"}, f"{context}state names of params[{i}]"
        for name in names:
            got, want = mine[name], other[name]
            if name == "step":
                assert float(got) == float(want), f"{context}step of params[{i}]"
                continue
            assert got.dtype == want.dtype or not check_dtypes, f"{context}{name} of params[{i}]"
            np.testing.assert_allclose(_numpy(got), _numpy(want), **tolerance,
                                       err_msg=f"{context}{name} of params[{i}]")


def side_by_side(name, kwargs, dtype=torch.float32, steps=STEPS, groups=groups_of, seed=0,
                 cls=ConvNet):
    """Twin models trained by torch.optim.<name> and pyoptim.torch.<name>."""
    theirs_model, ours_model = make_model(dtype, seed, cls), make_model(dtype, seed, cls)
    theirs = getattr(torch.optim, name)(groups(theirs_model), **kwargs)
    ours = getattr(pt, name)(groups(ours_model), **kwargs)
    data = make_data(dtype)
    for _ in range(steps):
        train_step(theirs_model, theirs, data)
        train_step(ours_model, ours, data)
    return ours, ours_model, theirs, theirs_model


def _trajectory_cases():
    """Per optimizer: the defaults and every option on, without maximize in float32 (maximizing a
    loss diverges, and float32 rounding differences grow with it); with it in float64."""
    out = []
    for full in FULL_CASES:
        if full.optimizer not in TORCH_NAMES:
            continue
        default = Case(full.optimizer, {"lr": full.hyperparameters["lr"]})
        descent = Case(full.optimizer, {**full.hyperparameters, "maximize": False})
        out += [pytest.param(c, d, id=f"{d}-{c.id}") for c in (default, descent)
                for d in ("float64", "float32")]
        out.append(pytest.param(full, "float64", id=f"float64-{full.id}"))
    return out


@needs_core
@pytest.mark.parametrize("case, dtype", _trajectory_cases())
def test_training_matches_torch_optim(case, dtype):
    name = TORCH_NAMES[case.optimizer]
    dtype = getattr(torch, dtype)
    ours, ours_model, theirs, theirs_model = side_by_side(
        name, kwargs_of(case), dtype, groups=lambda m: groups_of(m, case))
    tolerance = TOLERANCES[dtype]
    if case.hyperparameters.get("centered"):
        tolerance = CENTERED[dtype]
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **tolerance)
    if name != "SGD":  # torch's SGD keeps no step count
        for p in ours_model.parameters():
            assert float(ours.state[p]["step"]) == STEPS


# Values each hyperparameter is drawn from by test_random_hyperparameter_values_step_as_torch:
# the case table (tests/cases.py) turns each option on with one value; these add the values
# where a formula has an edge (a beta of 0, lerp's weight 1, ASGD averaging from the first step,
# Rprop's step size bounds), each optimizer's own knobs, and a spread of learning rates.
RANDOM_VALUES = {
    "SGD": dict(momentum=(0.0, 0.5, 0.9), dampening=(0.0, 0.1, 0.5), nesterov=(False, True)),
    "Adagrad": dict(lr_decay=(0.0, 1e-3, 0.1), initial_accumulator_value=(0.0, 0.1, 2.0),
                    eps=(1e-10, 1e-6)),
    "RMSprop": dict(alpha=(0.99, 0.9, 0.0), eps=(1e-8, 1e-3), momentum=(0.0, 0.9),
                    centered=(False, True)),
    "Adam": dict(betas=((0.9, 0.999), (0.0, 0.999), (0.9, 0.0), (0.5, 0.9)), eps=(1e-8, 1e-3),
                 amsgrad=(False, True), decoupled_weight_decay=(False, True)),
    "AdamW": dict(betas=((0.9, 0.999), (0.0, 0.999), (0.9, 0.0), (0.5, 0.9)), eps=(1e-8, 1e-3),
                  amsgrad=(False, True)),
    "Adamax": dict(betas=((0.9, 0.999), (0.0, 0.999), (0.9, 0.5)), eps=(1e-8, 1e-3)),
    "NAdam": dict(betas=((0.9, 0.999), (0.5, 0.9), (0.0, 0.999)), eps=(1e-8, 1e-3),
                  momentum_decay=(4e-3, 0.1), decoupled_weight_decay=(False, True)),
    "RAdam": dict(betas=((0.9, 0.999), (0.5, 0.9), (0.9, 0.5)), eps=(1e-8, 1e-3),
                  decoupled_weight_decay=(False, True)),
    "Adadelta": dict(rho=(0.9, 0.5, 0.0), eps=(1e-6, 1e-3)),
    "ASGD": dict(lambd=(1e-4, 0.1), alpha=(0.75, 0.5), t0=(1e6, 3.0, 0.0)),
    "Rprop": dict(etas=((0.5, 1.2), (0.3, 1.5)), step_sizes=((1e-6, 50.0), (1e-3, 0.01))),
}


@needs_core
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", sorted(RANDOM_VALUES))
def test_random_hyperparameter_values_step_as_torch(name, seed):
    """Hyperparameter values drawn at random (seeded) for float64 params of sizes that hit the
    SIMD tails, 7-12 steps of random gradients of mixed scales (some all zero): params and every
    state entry as torch.optim's for-loop gives them, to float64 rounding."""
    rng = np.random.default_rng([seed, sorted(RANDOM_VALUES).index(name)])
    kwargs = {key: values[rng.integers(len(values))]
              for key, values in RANDOM_VALUES[name].items()}
    if name == "SGD" and kwargs["nesterov"]:  # torch: Nesterov needs momentum, no dampening
        kwargs.update(momentum=0.9, dampening=0.0)
    if name != "Rprop":
        kwargs["weight_decay"] = float(rng.choice([0.0, 1e-2, 0.3]))
    kwargs["lr"] = 1.0 if name == "Adadelta" else float(10 ** rng.uniform(-4, -1))
    kwargs["maximize"] = bool(rng.integers(2))
    sizes = [int(n) for n in rng.choice([1, 7, 31, 100, 1000], size=rng.integers(1, 4))]
    start = [torch.from_numpy(rng.standard_normal(n)) for n in sizes]
    ours = [torch.nn.Parameter(x.clone()) for x in start]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    ours_opt = getattr(pt, name)(ours, **kwargs)
    theirs_opt = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    for _ in range(int(rng.integers(7, 13))):
        for p, q, n in zip(ours, theirs, sizes):
            g = torch.from_numpy(rng.standard_normal(n) * rng.choice([1.0, 1e-3, 10.0]))
            if rng.random() < 0.1:
                g.zero_()
            p.grad, q.grad = g.clone(), g.clone()
        ours_opt.step()
        theirs_opt.step()
    assert_same_state(ours_opt, theirs_opt, ours, theirs, context=f"{name}({kwargs}): ",
                      **TOLERANCES[torch.float64])


# pyoptim's own optimizers, not in torch.optim: name -> (hyperparameters, state names)
NOT_IN_TORCH = {"Lion": (dict(lr=1e-3, weight_decay=0.1), ("exp_avg",)),
                "Lamb": (dict(lr=1e-2, weight_decay=0.1), ("exp_avg", "exp_avg_sq"))}


@needs_core
@pytest.mark.parametrize("name", sorted(NOT_IN_TORCH))
def test_optimizers_not_in_torch_train_like_the_reference(name):
    """Lion and Lamb have no torch.optim counterpart: each step against pyoptim.reference, bit
    for bit, on the model's own gradients, with two param groups (Lamb: a trust ratio per
    tensor)."""
    kwargs, names = NOT_IN_TORCH[name]
    model = make_model(torch.float32)
    opt = getattr(pt, name)(groups_of(model), **kwargs)
    function = getattr(reference, name.lower())
    params = list(model.parameters())
    copies = [p.detach().numpy().copy() for p in params]
    states = [{n: np.zeros_like(c) for n in names} for c in copies]
    data = make_data()
    for t in range(1, STEPS + 1):
        train_step(model, opt, data)
        for c, s, p in zip(copies, states, params):
            function(c, p.grad.numpy(), **s, step=t, **kwargs)
    for i, (c, s, p) in enumerate(zip(copies, states, params)):
        np.testing.assert_array_equal(p.detach().numpy(), c, err_msg=f"params[{i}]")
        for n in names:
            np.testing.assert_array_equal(opt.state[p][n].numpy(), s[n], err_msg=f"{n} [{i}]")
        assert opt.state[p]["step"] == STEPS


# ---------------------------------------------------------------------------------------------
# the class


@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_signature_and_defaults_are_torchs(name):
    ours = inspect.signature(getattr(pt, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    for key, parameter in theirs.items():
        assert key in ours, key
        assert ours[key].default == parameter.default, key
        assert ours[key].kind == parameter.kind, key
    extra = set(ours) - set(theirs)
    assert extra <= {"state_dtype", "max_grad_norm", "clip_value", "skip_nonfinite", "backend",
                     "flat_grads"}
    assert all(ours[k].kind == inspect.Parameter.KEYWORD_ONLY for k in extra)


@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()) + sorted(NOT_IN_TORCH))
def test_each_class_is_an_instance_of_torchs_class_of_its_name(name):
    """Code that checks ``isinstance(opt, torch.optim.Adam)`` (to read betas, to pick a
    schedule or an offload) takes pyoptim.torch.Adam as torch's: each class derives from the
    torch.optim class of its name (AdamW also from Adam, as torch's). isinstance was False."""
    cls = getattr(pt, name)
    opt = cls([torch.nn.Parameter(torch.ones(3))])
    assert isinstance(opt, torch.optim.Optimizer)
    theirs = getattr(torch.optim, name, None)
    assert (theirs is not None) == (name in TORCH_NAMES.values())
    if theirs is not None:
        assert isinstance(opt, theirs)
        assert type(opt).step is pt.Optimizer.step  # pyoptim's step, not torch's
    others = [c for c in vars(torch.optim).values() if isinstance(c, type)
              and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
              and not (theirs is not None and issubclass(theirs, c))]
    assert not any(isinstance(opt, c) for c in others)


def _fork_steps(opt, params, grads):
    """Steps opt in a forked child process with these grads (one list per step)."""
    import multiprocessing

    def child():
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(120)
    assert process.exitcode == 0


@needs_core
def test_adagrad_share_memory_lets_forked_processes_update_one_state_as_torchs():
    """Hogwild training: params in shared memory, Adagrad.share_memory(), then processes forked
    that step. pyoptim.torch.Adagrad had no share_memory (and torch's, on opt.state's tensors,
    would move copies of the state): the parent saw the child's params move but not its sums.
    Twins after 2 steps here, then share_memory, then 3 steps in a forked child: params, sums
    and (each process's own) step counts as torch's; then 2 more steps here."""
    import sys

    if sys.platform != "linux":
        pytest.skip("fork: Linux")
    params = _twin_params(7, 5)
    for twin in params.values():
        for p in twin:
            p.data.share_memory_()
    ours, theirs = pt.Adagrad(params["ours"], lr=0.1), torch.optim.Adagrad(params["theirs"],
                                                                          lr=0.1)
    _step_twins(ours, theirs, params, 2)
    ours.share_memory()
    theirs.share_memory()
    assert all(ours.state[p]["sum"].is_shared() for p in params["ours"])
    gen = torch.Generator().manual_seed(5)
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params["ours"]]
             for _ in range(3)]
    _fork_steps(ours, params["ours"], grads)
    _fork_steps(theirs, params["theirs"], grads)
    assert_same_state(ours, theirs, params["ours"], params["theirs"], rtol=1e-12, atol=1e-15)
    assert float(ours.state[params["ours"][0]]["step"]) == 2
    _step_twins(ours, theirs, params, 2)


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_param_groups_and_defaults_look_like_torchs(name):
    ours = getattr(pt, name)([torch.zeros(3, requires_grad=True)])
    theirs = getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)])
    assert isinstance(ours, torch.optim.Optimizer)
    assert ours.defaults == theirs.defaults
    assert list(ours.param_groups[0]) == list(theirs.param_groups[0])
    for key, value in theirs.param_groups[0].items():
        if key != "params":
            assert ours.param_groups[0][key] == value, key


@needs_core
def test_positional_hyperparameters_as_torch_takes_them():
    p = torch.zeros(3, requires_grad=True)
    opt = pt.SGD([p], 0.1, 0.9)  # lr, momentum
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]) == (0.1, 0.9)
    with pytest.raises(TypeError):
        pt.SGD([p], 0.1, bogus=1)


@needs_core
def test_a_param_without_grad_is_left_alone_as_torch_does():
    """A frozen param (never a grad) and one whose grad is None every other step."""
    def groups(model):
        model.conv.bias.requires_grad_(False)
        return groups_of(model)

    theirs_model, ours_model = make_model(), make_model()
    theirs = torch.optim.Adam(groups(theirs_model), lr=0.01)
    ours = pt.Adam(groups(ours_model), lr=0.01)
    data = make_data()
    for t in range(10):
        for model, opt in ((theirs_model, theirs), (ours_model, ours)):
            opt.zero_grad()
            loss_of(model, data).backward()
            if t % 2:
                model.fc1.weight.grad = None
            opt.step()
    frozen = ours_model.conv.bias
    np.testing.assert_array_equal(frozen.detach().numpy(), make_model().conv.bias.detach().numpy())
    assert frozen not in ours.state and theirs_model.conv.bias not in theirs.state
    assert ours.state[ours_model.fc1.weight]["step"] == 5
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float32])


class _Spy:
    """Stands in for a _core.Plan and records which of its methods a step calls."""

    def __init__(self, plan):
        self.plan = plan
        self.calls = []

    def __getattr__(self, name):
        method = getattr(self.plan, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


@needs_core
def test_a_step_is_one_kernel_call_on_the_tensors_memory():
    """Zero-copy: the kernels update the params' memory and the state tensors are the kernels'
    buffers. A step over two param groups (two rows of scalars) and a frozen param is one call
    into C++ (Plan.run), with the grads by address; a non-contiguous grad takes the general
    path (a NumPy view of a contiguous copy) to the same result."""
    models = [make_model(), make_model()]
    for model in models:
        model.conv.bias.requires_grad_(False)
    opts = [pt.AdamW(groups_of(m, Case("adamw", {"lr": 0.01})), lr=0.01) for m in models]
    spies = []
    for opt in opts:
        runner = opt._engine._runner()
        runner.plan = _Spy(runner.plan)
        spies.append(runner.plan)
    data = make_data()
    for t in range(3):
        for k, (model, opt) in enumerate(zip(models, opts)):
            opt.zero_grad()
            loss_of(model, data).backward()
            if k == 1 and t == 2:  # the same values, another layout
                g = model.fc1.weight.grad
                model.fc1.weight.grad = g.t().contiguous().t()
                assert not model.fc1.weight.grad.is_contiguous()
            opt.step()
    assert spies[0].calls == ["set_grad_addresses", "run"] * 3
    assert spies[1].calls == ["set_grad_addresses", "run"] * 2 + ["set_grads", "run"]
    engine = opts[0]._engine
    for i, p in enumerate(models[0].parameters()):
        assert engine._views[i].ctypes.data == p.data_ptr()
        for name, tensor in opts[0].state.get(p, {}).items():
            if name != "step":
                assert tensor.data_ptr() == engine._buffers[i][name].ctypes.data, (i, name)
    assert models[0].conv.bias not in opts[0].state
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)


@needs_core
def test_a_cpu_step_runs_on_torchs_thread_count():
    """torch.set_num_threads governs a pyoptim.torch step, as it does torch.optim's: the kernel
    runs with torch.get_num_threads() threads whatever pyoptim.set_num_threads says, and
    pyoptim's own count is back after the step (also when the step raises)."""
    import pyoptim  # noqa: PLC0415

    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01)
    runner = opt._engine._runner()
    seen, fail = [], []

    class Recorder(_Spy):
        def __getattr__(self, name):
            if name == "run":
                seen.append(pyoptim.get_num_threads())
                if fail:
                    raise RuntimeError("the kernel failed")
            return super().__getattr__(name)

    runner.plan = Recorder(runner.plan)
    saved_pyoptim, saved_torch = pyoptim.get_num_threads(), torch.get_num_threads()
    try:
        pyoptim.set_num_threads(1)
        for threads in (3, 1, 2):
            torch.set_num_threads(threads)
            opt.zero_grad()
            loss_of(model, make_data()).backward()
            opt.step()
            assert pyoptim.get_num_threads() == 1
        assert seen == [3, 1, 2]
        torch.set_num_threads(3)
        fail.append(True)
        with pytest.raises(RuntimeError, match="the kernel failed"):
            opt.step()
        assert seen[-1] == 3
        assert pyoptim.get_num_threads() == 1
    finally:
        pyoptim.set_num_threads(saved_pyoptim)
        torch.set_num_threads(saved_torch)


def _twins_stepped_alike(alter, steps=3):
    """Two identical models, each with a pyoptim.torch Adam, trained side by side on the same
    data; alter(k, t, model) changes twin k's grads before its step t. Checks that both end
    with the same params and state, bit for bit; returns the optimizers."""
    models = [make_model(), make_model()]
    opts = [pt.Adam(m.parameters(), lr=0.01) for m in models]
    data = make_data()
    for t in range(steps):
        for k, (model, opt) in enumerate(zip(models, opts)):
            opt.zero_grad()
            loss_of(model, data).backward()
            alter(k, t, model)
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)
        for name, tensor in opts[0].state.get(p, {}).items():
            assert torch.equal(tensor, opts[1].state[q][name]), name
    return opts


# a grad with backward's values, stored otherwise
RESTORED = {
    "negative bit": lambda g: torch._neg_view(g.neg()),  # memory: -g; values: g
    "strided": lambda g: g.t().contiguous().t(),
}


@needs_core
@pytest.mark.parametrize("stored", sorted(RESTORED))
def test_a_grad_stored_otherwise_steps_as_its_values(stored):
    """While every param has a grad (the step checks them all at once), one whose memory is not
    its values as they are (negated: its negative bit set; not contiguous) steps as the plain
    grad does, bit for bit, and the others are still read by address."""
    def alter(k, t, model):
        if k == 1:
            g = model.fc1.weight.grad
            model.fc1.weight.grad = RESTORED[stored](g)
            assert torch.equal(model.fc1.weight.grad, g)

    _twins_stepped_alike(alter)


@needs_core
@pytest.mark.parametrize("others", ["all with grads", "one without"])
def test_a_lazy_zero_grad_steps_as_zeros(others):
    """A lazy zero tensor as a .grad (no memory: address 0, which for a grad by address would
    mean no grad) steps as a grad of zeros does, as in torch.optim: the moments decay and the
    step count moves on."""
    def alter(k, t, model):
        if others == "one without":
            model.conv.bias.grad = None
        if t > 0:
            shape = model.fc1.weight.shape
            model.fc1.weight.grad = torch.zeros(shape) if k == 0 else \
                torch._efficientzerotensor(shape)

    opts = _twins_stepped_alike(alter)
    assert opts[1].state[opts[1].param_groups[0]["params"][4]]["step"] == 3


# a grad whose size or dtype changed under its param (torch's .grad setter checks both; these
# do not go through it)
CHANGED = {
    "resize_": (lambda g: g.resize_(g.numel() - 1), ValueError,
                r"grads\[4\] has shape \(1199,\), but params\[4\] has shape \(16, 75\)"),
    ".data of another dtype": (lambda g: setattr(g, "data", g.data.double()), TypeError,
                               r"grads\[4\]: unsupported dtypes \(param float32, grad float64"),
}


@needs_core
@pytest.mark.parametrize("change", sorted(CHANGED))
@pytest.mark.parametrize("others", ["all with grads", "one without"])
def test_a_grad_whose_size_or_dtype_changed_is_refused(change, others):
    """One grad that now has fewer elements than its param (read by address, the kernel would
    read past its end) or another dtype is refused by name, and nothing changes: while every
    other param has its grad (the step checks all at once) and while one has none (one at a
    time)."""
    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01)
    data = make_data()
    train_step(model, opt, data)
    opt.zero_grad()
    loss_of(model, data).backward()
    if others == "one without":
        model.conv.bias.grad = None
    alter, error, message = CHANGED[change]
    alter(model.fc1.weight.grad)
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    with pytest.raises(error, match=message):
        opt.step()
    for p, before, saved in zip(model.parameters(), params, state):
        assert torch.equal(p, before)
        for name, tensor in opt.state[p].items():
            assert torch.equal(tensor, saved[name]), name


@needs_core
def test_a_step_without_any_grad_changes_nothing():
    model = make_model()
    opt = pt.Adam(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert len(opt.state) == 0 and opt.state_dict()["state"] == {}


def _twin_params(*sizes):
    """float64 params of these sizes, one list for pyoptim.torch and one for torch.optim."""
    return {who: [torch.nn.Parameter(torch.linspace(-1, 1 + i, n, dtype=torch.float64))
                  for i, n in enumerate(sizes)] for who in ("ours", "theirs")}


def _step_twins(ours, theirs, params, steps, has_grad=lambda t, i: True, before=lambda t: None,
                schedules=()):
    """steps steps of twin optimizers with the same random grads (param i has one at step t
    where has_grad(t, i)), before(t) ahead of each, every param and state entry compared after
    each step."""
    gen = torch.Generator().manual_seed(3)
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) if has_grad(t, i)
                 else None for i, p in enumerate(params["ours"])]
        for opt_params in params.values():
            for p, g in zip(opt_params, grads):
                p.grad = None if g is None else g.clone()
        before(t)
        ours.step()
        theirs.step()
        for schedule in schedules:
            schedule.step()
        assert_same_state(ours, theirs, params["ours"], params["theirs"], rtol=1e-12,
                          atol=1e-15, context=f"step {t + 1}: ")


@pytest.mark.parametrize("name", ["ASGD", "Rprop"])
@pytest.mark.parametrize("change", ["lr set before the first step", "warmup schedule"])
def test_state_started_from_the_lr_is_started_at_a_params_first_step(name, change):
    """torch starts ASGD's eta and Rprop's step_size at a param's first step, from its group's
    lr then: an lr set after the optimizer is built, or a warmup schedule, starts them (they
    were started from the constructor's lr). One param gets its first grad two steps later,
    at another lr. float64, 9 steps, every state entry compared."""
    params = _twin_params(7, 5)
    ours = getattr(pt, name)(params["ours"], lr=0.1)
    theirs = getattr(torch.optim, name)(params["theirs"], lr=0.1)
    schedules = []
    for opt in (ours, theirs):
        if change == "warmup schedule":
            schedules.append(torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (k + 1) / 4))
        else:
            opt.param_groups[0]["lr"] = 0.003
    _step_twins(ours, theirs, params, 9, has_grad=lambda t, i: i == 0 or t >= 2,
                schedules=schedules)


@pytest.mark.parametrize(("name", "kwargs", "edit"), [
    ("AdamW", {"lr": 1e-3}, "LinearLR decay to 0"),  # its recursion ends at lr = -3e-20
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "momentum set to 0"),
])
def test_values_set_after_construction_step_as_torch_steps_with_them(name, kwargs, edit):
    """torch.optim checks hyperparameter values in its constructor and add_param_group, and
    steps with whatever a scheduler or the user set since: a LinearLR decay to 0 whose last
    lr rounds to -3e-20, a nesterov group's momentum set to 0. pyoptim.torch refused them at the
    step (training stopped); it steps as torch does. float64, 14 steps."""
    params = _twin_params(9)
    ours = getattr(pt, name)(params["ours"], **kwargs)
    theirs = getattr(torch.optim, name)(params["theirs"], **kwargs)
    schedules = [torch.optim.lr_scheduler.LinearLR(opt, end_factor=0.0, total_iters=10)
                 for opt in (ours, theirs) if edit == "LinearLR decay to 0"]

    def momentum_off(t):
        if edit == "momentum set to 0" and t == 5:
            for opt in (ours, theirs):
                opt.param_groups[0]["momentum"] = 0.0

    _step_twins(ours, theirs, params, 14, before=momentum_off, schedules=schedules)
    if schedules:
        assert ours.param_groups[0]["lr"] < 0  # the case this covers: torch's rounding
    with pytest.raises(ValueError, match="Invalid learning rate|invalid lr"):
        getattr(pt, name)(params["ours"], **{**kwargs, "lr": -1e-3})  # still refused here


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSprop", "ASGD",
                                  "Rprop", "Adadelta", "Adamax"])
@pytest.mark.parametrize("how", ["opt.state.clear()", "del opt.state[p]"])
def test_deleting_state_entries_starts_those_params_afresh_as_torch(name, how):
    """How torch.optim users reset an optimizer: opt.state.clear(), or del opt.state[p] for one
    param. The next step starts those params afresh (step 1, initial state), the others go on,
    and state_dict() saves what the kernels use. pyoptim.torch kept stepping with the deleted
    state and saved none of it. float64, 4 + 4 steps; one grad read from a defaultdict entry
    (which adds an empty one) changes nothing."""
    kwargs = {"SGD": {"momentum": 0.9, "lr": 0.1}}.get(name, {})
    params = _twin_params(7, 5, 3)
    ours = getattr(pt, name)(params["ours"], **kwargs)
    theirs = getattr(torch.optim, name)(params["theirs"], **kwargs)

    def delete(t):
        if t != 4:
            return
        for opt, opt_params in ((ours, params["ours"]), (theirs, params["theirs"])):
            if how == "opt.state.clear()":
                opt.state.clear()
            else:
                del opt.state[opt_params[0]]
                assert opt.state[opt_params[2]] == {}  # adds an empty entry

    _step_twins(ours, theirs, params, 8, has_grad=lambda t, i: i < 2 or t >= 5, before=delete)
    saved, theirs_saved = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert sorted(saved) == sorted(theirs_saved) == [0, 1, 2]
    for i in saved:
        assert float(saved[i].get("step", 0)) == float(theirs_saved[i].get("step", 0)), i


def _edit_state(opt, params, edit):
    """One of the writes to opt.state that torch.optim users make (test below)."""
    state = opt.state
    if edit == "exp_avg assigned":
        state[params[0]]["exp_avg"] = torch.full_like(params[0], 0.25)
    elif edit == "exp_avg_sq written through a view, then assigned":
        state[params[1]]["exp_avg_sq"][1:3] = 4.0
        state[params[0]]["exp_avg_sq"] = state[params[0]]["exp_avg_sq"] * 3
    elif edit == "step written in place":
        state[params[0]]["step"].fill_(100)
    elif edit == "step assigned":
        state[params[1]]["step"] = torch.tensor(40.0)
    elif edit == "mu_product assigned":
        state[params[0]]["mu_product"] = torch.tensor(0.5)
    elif edit == "eta assigned":
        state[params[1]]["eta"] = torch.tensor(0.02)
    elif edit == "momentum_buffer assigned":
        state[params[0]]["momentum_buffer"] = -torch.ones_like(params[0])
    elif edit == "sum assigned":
        state[params[1]]["sum"] = torch.linspace(0, 1, params[1].numel(), dtype=torch.float64)
    elif edit == "every entry rebuilt as a library moves state to a device":
        for p, entry in list(state.items()):  # lightning's _optimizer_to_device
            state[p] = type(entry)({k: v.to("cpu") if isinstance(v, torch.Tensor) else v
                                    for k, v in entry.items()})
    elif edit == "key of your own added":
        state[params[0]]["note"] = torch.tensor(1.0)
    elif edit == "whole entry replaced":
        state[params[0]] = {k: v if k == "step" else v * 2 for k, v in state[params[0]].items()}
    else:
        raise AssertionError(edit)


@pytest.mark.parametrize(("name", "kwargs", "edit"), [
    ("Adam", {}, "exp_avg assigned"),
    ("AdamW", {"amsgrad": True}, "exp_avg_sq written through a view, then assigned"),
    ("Adam", {}, "step written in place"),
    ("RAdam", {}, "step assigned"),
    ("NAdam", {}, "mu_product assigned"),
    ("ASGD", {}, "eta assigned"),
    ("SGD", {"momentum": 0.9, "lr": 0.1}, "momentum_buffer assigned"),
    ("Adagrad", {}, "sum assigned"),
    ("Adam", {}, "whole entry replaced"),
    ("SGD", {"lr": 0.1}, "key of your own added"),  # torch's SGD without momentum: no state
    ("NAdam", {}, "every entry rebuilt as a library moves state to a device"),
])
def test_what_is_written_to_opt_state_counts_from_the_next_step_as_in_torch(name, kwargs, edit):
    """torch.optim steps with its state entries as they are at each step: a tensor assigned to
    one, a step count written in place or assigned, torch's scalar states. pyoptim.torch's
    entries shared memory with its state, but an assigned tensor or step was ignored (the run
    went on from the old values). float64, edited after 3 steps, 8 steps, every state entry
    compared after each; each param keeps one entry dict, as in torch."""
    params = _twin_params(7, 5)
    ours = getattr(pt, name)(params["ours"], **kwargs)
    theirs = getattr(torch.optim, name)(params["theirs"], **kwargs)
    entries = {}

    def edit_at_3(t):
        if t == 3:
            _edit_state(ours, params["ours"], edit)
            _edit_state(theirs, params["theirs"], edit)
        if t == 2:
            entries.update({id(p): ours.state.get(p) for p in params["ours"]})

    _step_twins(ours, theirs, params, 8, before=edit_at_3)
    assert len(ours.state) == len(theirs.state)
    replaced = {id(params["ours"][0])} if edit == "whole entry replaced" else \
        {id(p) for p in params["ours"]} if edit.startswith("every entry") else set()
    for p in params["ours"]:
        if entries[id(p)] is not None:
            assert (ours.state[p] is entries[id(p)]) == (id(p) not in replaced)


def test_entries_rebuilt_with_the_same_tensors_cost_no_copy_of_the_state(monkeypatch):
    """Libraries rebuild every entry to move state to a device (lightning's
    _optimizer_to_device: ``opt.state[p] = type(entry)(...)``, the same tensors on the CPU).
    The next step takes that without reloading the whole state through a copy (a model's
    state twice in memory), which only a param that lost its state needs."""
    params = _twin_params(7, 5)["ours"]
    opt = pt.Adam(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    reloads = []
    monkeypatch.setattr(opt._engine, "load_state_dict", lambda saved: reloads.append(saved))
    for p, entry in list(opt.state.items()):
        opt.state[p] = type(entry)({k: v.to("cpu") for k, v in entry.items()})
    opt.step()
    assert reloads == [] and float(opt.state[params[0]]["step"]) == 2
    opt.state[params[1]] = {}
    opt.step()
    assert len(reloads) == 1 and sorted(reloads[0]["state"]) == [0]


def test_adagrads_state_is_there_from_the_start_as_torchs():
    """torch.optim.Adagrad makes its state in its constructor (step 0, sum at
    initial_accumulator_value): its opt.state and state_dict() have an entry per param before
    any step. pyoptim.torch.Adagrad showed none. Twins: the state before any step, then each
    checkpoint taken then loaded into the other class, 4 steps."""
    params = _twin_params(7, 5)
    ours = pt.Adagrad(params["ours"], initial_accumulator_value=0.5)
    theirs = torch.optim.Adagrad(params["theirs"], initial_accumulator_value=0.5)
    assert len(ours.state) == len(theirs.state) == 2
    assert_same_state(ours, theirs, params["ours"], params["theirs"], rtol=0, atol=0)
    saved = {"ours": ours.state_dict(), "theirs": theirs.state_dict()}
    assert sorted(saved["ours"]["state"]) == sorted(saved["theirs"]["state"]) == [0, 1]
    ours.load_state_dict(copy.deepcopy(saved["theirs"]))
    theirs.load_state_dict(copy.deepcopy(saved["ours"]))
    _step_twins(ours, theirs, params, 4)


def test_keys_of_your_own_stay_in_opt_state_as_in_torch():
    """Keys a user (or a library) puts in an opt.state entry stay there, as in torch.optim:
    across steps, a param group added later, a param's first step, and a state_dict() round
    trip. pyoptim.torch dropped them whenever opt.state was rebuilt, and refused them on load.
    An entry copied or pickled is a plain dict, and copying one copies nothing else."""
    params = _twin_params(7, 5)["ours"]
    opt = pt.Adam(params[:1])
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    opt.state[params[0]]["note"] = 7
    opt.state[params[1]]["seen"] = 1  # a param not in the optimizer yet
    opt.step()
    opt.add_param_group({"params": params[1:]})
    params[1].grad = torch.ones_like(params[1])
    opt.step()
    assert opt.state[params[0]]["note"] == 7 and opt.state[params[1]]["seen"] == 1
    assert float(opt.state[params[1]]["step"]) == 1
    copied = copy.deepcopy(opt.state[params[0]])
    assert type(copied) is dict and copied["note"] == 7
    assert copied["exp_avg"] is not opt.state[params[0]]["exp_avg"]
    assert torch.equal(copied["exp_avg"], opt.state[params[0]]["exp_avg"])
    fresh = pt.Adam([{"params": params[:1]}, {"params": params[1:]}])
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[params[0]]["note"] == 7 and fresh.state[params[1]]["seen"] == 1
    assert torch.equal(fresh.state[params[1]]["exp_avg"], opt.state[params[1]]["exp_avg"])
    with pytest.raises(pyoptim.CheckpointError, match="does not keep"):
        saved = opt.state_dict()
        saved["state"][0]["momentum_buffer"] = saved["state"][0]["exp_avg"]
        fresh.load_state_dict(saved)  # another optimizer's state is no key of your own


@pytest.mark.parametrize(("key", "value", "error", "match"), [
    ("exp_avg", lambda p: torch.zeros(p.shape, dtype=torch.float32), TypeError,
     r"opt.state\[param 1\]\['exp_avg'\] is a torch.float32 tensor"),
    ("exp_avg", lambda p: torch.zeros(p.numel() + 1, dtype=torch.float64), ValueError,
     r"opt.state\[param 1\]\['exp_avg'\] has shape \(6,\)"),
    ("exp_avg", lambda p: [0.0] * p.numel(), TypeError, r"\['exp_avg'\] must be a tensor"),
    ("step", torch.tensor(0.0), ValueError, r"\['step'\]: a step count of 0"),
    ("step", torch.tensor(2.5), ValueError, r"\['step'\] must be a whole number"),
    ("step", "two", TypeError, r"\['step'\] must be a number"),
    ("mu_product", torch.tensor(0.5, dtype=torch.float64), TypeError,
     r"\['mu_product'\] is a torch.float64 tensor; torch's scalar states are torch.float32"),
])
def test_a_refused_state_edit_names_the_entry_and_changes_nothing(key, value, error, match):
    """What pyoptim.torch cannot take from opt.state is refused at the next step (and by
    state_dict()) with an error that names the entry: another dtype (state is never cast),
    another shape, a step of 0 or not whole. Nothing changes, not even another param's valid
    edit; the step goes on once the entry is set right."""
    params = _twin_params(7, 5)["ours"]
    opt = (pt.NAdam if key == "mu_product" else pt.Adam)(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = ([p.detach().clone() for p in params], opt._engine.state_dict())
    good = opt.state[params[1]][key]
    opt.state[params[0]]["exp_avg"] = torch.full_like(params[0], 3.0)  # valid, and seen first
    opt.state[params[1]][key] = value(params[1]) if callable(value) else value
    for call in (opt.step, opt.state_dict):
        with pytest.raises(error, match=match):
            call()
    after = ([p.detach().clone() for p in params], opt._engine.state_dict())
    for p, q in zip(before[0], after[0]):
        assert torch.equal(p, q)
    for i in range(2):
        for k, v in before[1]["state"][i].items():
            np.testing.assert_array_equal(after[1]["state"][i][k], v, err_msg=f"{i} {k}")
    opt.state[params[1]][key] = good
    opt.step()
    assert float(opt.state[params[1]]["step"]) == 2
    assert float(opt.state[params[0]]["exp_avg"][0]) == pytest.approx(0.9 * 3.0 + 0.1)


@pytest.fixture
def float64_default():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("name", ["NAdam", "ASGD", "Adam"])
def test_scalar_state_under_a_float64_default_dtype_is_torchs(name, float64_default):
    """Under torch.set_default_dtype(torch.float64) torch keeps its scalar state (step,
    NAdam's mu_product, ASGD's eta and mu) in float64: so does pyoptim.torch, whose float32
    copies made NAdam and ASGD drift from torch's float64 trajectory by 1e-8 and refused
    torch's checkpoints. 12 steps, every state entry and its dtype compared; checkpoints load
    both ways."""
    params = _twin_params(7, 5)
    kwargs = {"ASGD": {"t0": 3}}.get(name, {})
    ours = getattr(pt, name)(params["ours"], **kwargs)
    theirs = getattr(torch.optim, name)(params["theirs"], **kwargs)
    _step_twins(ours, theirs, params, 12)
    assert ours.state[params["ours"][0]]["step"].dtype == torch.float64
    for loaded, saved in ((getattr(pt, name)(params["ours"], **kwargs), theirs),
                          (getattr(torch.optim, name)(params["theirs"], **kwargs), ours)):
        loaded.load_state_dict(copy.deepcopy(saved.state_dict()))
        for p, q in zip(loaded.state, saved.state):
            for key, value in saved.state[q].items():
                got = loaded.state[p][key]
                assert got.dtype == value.dtype and torch.equal(got, value), key


@pytest.mark.parametrize("edit", ["append", "pop", "item", "replace the list", "+="])
def test_editing_a_groups_params_list_is_refused_and_nothing_changes(edit):
    """torch.optim updates whatever a group's "params" lists at the step; this optimizer's
    params are fixed when added, and it went on updating its own (a removed param trained, an
    added one not): the step is refused by name instead."""
    a, b, c = (nn.Parameter(torch.full((2,), float(i))) for i in range(3))
    opt = pt.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=1.0)
    for p in (a, b, c):
        p.grad = torch.ones(2)
    opt.step()
    params = opt.param_groups[1]["params"]
    if edit == "append":
        params.append(c)
    elif edit == "pop":
        params.pop()
    elif edit == "item":
        params[0] = c
    elif edit == "+=":
        opt.param_groups[1]["params"] += [c]
    else:
        opt.param_groups[1]["params"] = [c]
    before = [p.detach().clone() for p in (a, b, c)]
    with pytest.raises(RuntimeError, match=r"SGD: param_groups\[1\]\['params'\] was changed"):
        opt.step()
    assert all(torch.equal(p.detach(), q) for p, q in zip((a, b, c), before))


@needs_core
def test_add_param_group_later_as_torch_does():
    """Unfreezing a layer mid-training: fc2 joins as a second group after 5 steps."""
    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    data = make_data(torch.float64)
    rest = lambda m: [p for n, p in m.named_parameters() if not n.startswith("fc2")]  # noqa: E731
    theirs = torch.optim.RMSprop(rest(theirs_model), lr=0.01, momentum=0.5)
    ours = pt.RMSprop(rest(ours_model), lr=0.01, momentum=0.5)
    for t in range(12):
        if t == 5:
            for model, opt in ((theirs_model, theirs), (ours_model, ours)):
                opt.add_param_group({"params": list(model.fc2.parameters()), "lr": 0.003,
                                     "centered": True, "tag": "head"})
        train_step(theirs_model, theirs, data)
        train_step(ours_model, ours, data)
    assert ours.param_groups[1]["tag"] == "head" and ours.param_groups[1]["centered"] is True
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])
    with pytest.raises(ValueError, match="more than one parameter group"):
        ours.add_param_group({"params": [ours_model.fc2.bias]})
    assert len(ours.param_groups) == 2


@needs_core
def test_closure_returns_the_loss_and_steps_like_torch():
    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    theirs = torch.optim.SGD(theirs_model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    ours = pt.SGD(ours_model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    data = make_data(torch.float64)

    def closure_of(model, opt):
        def closure():
            opt.zero_grad()
            loss = loss_of(model, data)
            loss.backward()
            return loss
        return closure

    for _ in range(10):
        loss_theirs = theirs.step(closure_of(theirs_model, theirs))
        loss_ours = ours.step(closure_of(ours_model, ours))
        assert loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-12)
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])


@needs_core
def test_zero_grad_and_step_hooks_are_torchs():
    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    train_step(model, opt, make_data())
    assert calls == ["pre", "post"]
    loss_of(model, make_data()).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def _hook_log(opt, log, tag):
    """Registers a global and an instance pre- and post-hook that record what they are given."""
    def record(kind):
        def hook(o, args, kwargs):
            assert o is opt
            log.append((tag, kind, len(args), sorted(kwargs)))
        return hook
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)

    return [register_optimizer_step_pre_hook(record("global pre")),
            opt.register_step_pre_hook(record("pre")),
            opt.register_step_post_hook(record("post")),
            register_optimizer_step_post_hook(record("global post"))]


@needs_core
def test_step_hooks_run_as_torchs_do():
    """Global and per-optimizer step hooks run in torch's order with torch's arguments (pyoptim
    wraps the step itself, more cheaply: pyoptim/torch.py, _hooked_step); a pre-hook's new
    (args, kwargs) reach the step; a subclass's own step runs the hooks once."""
    class Subclass(pt.Adam):
        def step(self, closure=None, **kwargs):
            return super().step(closure, **kwargs)

    for ours_class in (pt.Adam, Subclass):
        logs = {}
        for tag, cls in (("torch", torch.optim.Adam), ("ours", ours_class)):
            model = make_model()
            opt = cls(model.parameters(), lr=0.01)
            logs[tag] = []
            handles = _hook_log(opt, logs[tag], "")
            try:
                train_step(model, opt, make_data())
                loss_of(model, make_data()).backward()
                opt.step(closure=None)
            finally:
                for h in handles:
                    h.remove()
        assert logs["ours"] == logs["torch"]
        assert [kind for _, kind, _, _ in logs["ours"][:4]] == ["global pre", "pre", "post",
                                                                 "global post"]

    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01)
    seen = []

    def closure():
        seen.append("closure")
        opt.zero_grad()
        loss = loss_of(model, make_data())
        loss.backward()
        return loss

    handle = opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": closure}))
    loss = opt.step()
    assert seen == ["closure"] and loss is not None
    handle.remove()
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: "not a pair")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()
    handle.remove()


@needs_core
def test_the_profiler_sees_the_step_as_torchs():
    """Under torch.profiler the step is the same event as torch's optimizers' (name and scope,
    so the same category in a trace)."""
    events = {}
    for tag, cls in (("torch", torch.optim.Adam), ("ours", pt.Adam)):
        model = make_model()
        opt = cls(model.parameters(), lr=0.01)
        loss_of(model, make_data()).backward()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
        events[tag] = [(e.name, e.scope) for e in prof.events()
                       if e.name.startswith("Optimizer.step#")]
    assert events["ours"] == events["torch"] == [("Optimizer.step#Adam.step",
                                                  events["torch"][0][1])]


@needs_core
def test_named_parameters_keep_their_names_as_torchs_do():
    model = make_model()
    opt = pt.AdamW(model.named_parameters(), lr=0.01)
    names = [n for n, _ in model.named_parameters()]
    assert opt.param_groups[0]["param_names"] == names
    train_step(model, opt, make_data())
    assert opt.state_dict()["param_groups"][0]["param_names"] == names
    assert opt.state_dict()["param_groups"][0]["params"] == list(range(len(names)))


# ---------------------------------------------------------------------------------------------
# LR schedulers


def _schedulers(opt, which):
    s = torch.optim.lr_scheduler
    if which == "step":
        return s.StepLR(opt, step_size=4, gamma=0.5)
    if which == "warmup-cosine":
        return s.SequentialLR(opt, [s.LinearLR(opt, start_factor=0.1, total_iters=5),
                                    s.CosineAnnealingLR(opt, T_max=25, eta_min=1e-4)],
                              milestones=[5])
    if which == "one-cycle":  # also cycles Adam's beta1 (a new betas tuple in the group)
        return s.OneCycleLR(opt, max_lr=0.02, total_steps=STEPS)
    return s.ReduceLROnPlateau(opt, factor=0.5, patience=1)


@needs_core
@pytest.mark.parametrize("which", ["step", "warmup-cosine", "one-cycle", "plateau"])
def test_torch_lr_schedulers_drive_the_optimizer(which):
    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    theirs = torch.optim.Adam(groups_of(theirs_model), lr=0.01)
    ours = pt.Adam(groups_of(ours_model), lr=0.01)
    data = make_data(torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own scheduler warnings (e.g. SequentialLR)
        scheds = [_schedulers(theirs, which), _schedulers(ours, which)]
        lrs = []
        for t in range(STEPS):
            train_step(theirs_model, theirs, data)
            train_step(ours_model, ours, data)
            for sched in scheds:
                sched.step(1.0) if which == "plateau" else sched.step()  # a plateau: no progress
            assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
            assert [g["betas"] for g in ours.param_groups] == \
                [g["betas"] for g in theirs.param_groups]
            lrs.append(ours.param_groups[0]["lr"])
    assert len(set(lrs)) > 2  # the schedule moved
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])


# ---------------------------------------------------------------------------------------------
# 16-bit params


@needs_core
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("state_dtype", [None, "param"])
def test_16bit_params_train_like_the_reference(dtype, state_dtype):
    """16-bit params, float32 state by default (or the param's dtype): each step against
    pyoptim.reference.adamw on the model's own gradients, bit for bit."""
    model = make_model(dtype)
    kwargs = dict(lr=0.01, weight_decay=0.1)
    opt = pt.AdamW(model.parameters(), **kwargs,
                   state_dtype=None if state_dtype is None else dtype)
    params = list(model.parameters())
    np_dtype = np.float32 if state_dtype is None else pt._numpy_dtype(dtype)
    copies = [pt._host_grad(p.detach(), i).copy() for i, p in enumerate(params)]
    states = [(np.zeros(c.shape, np_dtype), np.zeros(c.shape, np_dtype)) for c in copies]
    data = make_data(dtype)
    for t in range(1, 11):
        train_step(model, opt, data)
        for i, (c, (m, v), p) in enumerate(zip(copies, states, params)):
            reference.adamw(c, pt._host_grad(p.grad, i), exp_avg=m, exp_avg_sq=v, step=t,
                            **kwargs)
    for i, (c, (m, v), p) in enumerate(zip(copies, states, params)):
        assert p.dtype == dtype
        np.testing.assert_array_equal(pt._host_grad(p.detach(), i), c, err_msg=f"params[{i}]")
        for name, want in (("exp_avg", m), ("exp_avg_sq", v)):
            got = opt.state[p][name]
            assert got.dtype == (torch.float32 if state_dtype is None else dtype)
            np.testing.assert_array_equal(pt._host_grad(got, i), want, err_msg=f"{name} [{i}]")


# ---------------------------------------------------------------------------------------------
# pyoptim's options through pyoptim.torch


@needs_core
def test_max_grad_norm_equals_clip_grad_norm_then_the_step():
    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    theirs = torch.optim.Adam(theirs_model.parameters(), lr=0.01)
    ours = pt.Adam(ours_model.parameters(), lr=0.01, max_grad_norm=0.5)
    data = make_data(torch.float64)
    for _ in range(10):
        theirs.zero_grad()
        loss_of(theirs_model, data).backward()
        nn.utils.clip_grad_norm_(theirs_model.parameters(), 0.5)
        theirs.step()
        train_step(ours_model, ours, data)
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])
    grads = [p.grad.clone() for p in ours_model.parameters()]
    assert ours._engine.last_grad_norm == pytest.approx(
        float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))), rel=1e-12)


@needs_core
def test_skip_nonfinite_leaves_everything_alone():
    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01, skip_nonfinite=True)
    data = make_data()
    train_step(model, opt, data)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    loss_of(model, data).backward()
    model.fc1.weight.grad[2, 3] = float("nan")
    opt.step()
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    for i, entry in opt.state_dict()["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, state[i][name]), (i, name)


# ---------------------------------------------------------------------------------------------
# refusals


@needs_core
def test_replaced_param_memory_is_refused():
    model = make_model()
    opt = pt.Adam(model.parameters())
    loss_of(model, make_data()).backward()
    model.fc1.weight.data = model.fc1.weight.data.clone()
    with pytest.raises(RuntimeError, match=r"params\[4\] no longer has the memory"):
        opt.step()


@needs_core
def test_refusals_name_what_is_wrong():
    p = nn.Parameter(torch.ones(4))
    with pytest.raises(TypeError, match="lr"):
        pt.Adam([p], lr=torch.tensor(0.01))
    with pytest.raises(ValueError, match="differentiable"):
        pt.Adam([p], differentiable=True)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        pt.Adam([np.ones(3, np.float32)])
    with pytest.raises(ValueError, match="empty parameter list"):
        pt.Adam([])
    with pytest.raises(ValueError, match="non-leaf"):
        pt.Adam([p * 2])
    with pytest.raises(TypeError, match="dtype"):
        pt.SGD([nn.Parameter(torch.ones(3, dtype=torch.complex64))])
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['momentum'\]"):
        pt.Adam([{"params": [p], "momentum": 0.9}])  # another optimizer's: torch ignores it
    opt = pt.Adagrad([p])
    p.grad = torch.ones(4).to_sparse()
    with pytest.raises(TypeError, match="dense gradients only"):
        opt.step()
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(opt)


@pytest.mark.parametrize("name", [
    name for name in sorted(TORCH_NAMES.values())
    if {"foreach", "fused"} <= set(inspect.signature(getattr(torch.optim, name)).parameters)])
def test_foreach_and_fused_both_true_is_refused_as_torch_refuses_it(name):
    """Where torch's constructor takes both flags, both True raises torch's RuntimeError."""
    outcomes = []
    for cls in (getattr(torch.optim, name), getattr(pt, name)):
        with pytest.raises(RuntimeError) as raised:
            cls([nn.Parameter(torch.ones(4))], foreach=True, fused=True)
        outcomes.append(str(raised.value))
    assert outcomes[0] == outcomes[1]
    getattr(pt, name)([nn.Parameter(torch.ones(4))], foreach=False, fused=True)


def test_bfloat16_state_by_name_before_ml_dtypes_is_imported(tmp_path):
    """state_dtype='bfloat16' (or torch.bfloat16) in a process where nothing imported ml_dtypes
    yet: pyoptim imports it where bfloat16 is asked for, pyoptim.torch included."""
    code = ("import sys, torch, pyoptim.torch as pt; "
            "assert 'ml_dtypes' not in sys.modules; "
            "p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16)); "
            "p.grad = torch.ones(4, dtype=torch.bfloat16); "
            "opt = pt.Adam([p], state_dtype='bfloat16'); opt.step(); "
            "assert opt.state[p]['exp_avg'].dtype == torch.bfloat16, opt.state[p]['exp_avg']; "
            "opt = pt.Adam([p], state_dtype=torch.bfloat16); opt.step(); "
            "assert opt.state[p]['exp_avg_sq'].dtype == torch.bfloat16")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=tmp_path)  # the installed pyoptim, not the checkout's


def test_import_pyoptim_does_not_import_torch(tmp_path):
    code = ("import sys, pyoptim, pyoptim.optim, pyoptim.functional, pyoptim.flat; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "import pyoptim.torch; assert 'torch' in sys.modules; "
            "import torch; assert pyoptim.torch.torch is torch")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=tmp_path)  # the installed pyoptim, not the checkout's
