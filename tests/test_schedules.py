"""Every schedule against torch.optim.lr_scheduler over a few hundred steps: sched(k) equals the
lr torch sets after k scheduler steps (to rounding: torch chains multiplications where pyoptim
evaluates the closed form), momentum cycling included; argument checks; ReduceLROnPlateau's
state."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pyoptim import schedules as S

torch = pytest.importorskip("torch", reason="torch is not installed: the schedules cannot be "
                                            "compared with torch.optim.lr_scheduler")
L = torch.optim.lr_scheduler

STEPS = 300
BASE = 0.1


def _torch_values(make, steps=STEPS, optimizer="SGD", metrics=None):
    """lr (and momentum or beta1) of torch's scheduler after k = 0..steps steps."""
    p = torch.nn.Parameter(torch.zeros(1))
    kwargs = {"momentum": 0.9} if optimizer == "SGD" else {}
    opt = getattr(torch.optim, optimizer)([p], lr=BASE, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecated step(0) of a child
        sched = make(opt)
        group = opt.param_groups[0]

        def momentum():
            return group["betas"][0] if "betas" in group else group.get("momentum")

        lrs, moms = [group["lr"]], [momentum()]
        for k in range(steps):
            opt.step()
            sched.step(*([metrics[k]] if metrics is not None else []))
            lrs.append(group["lr"])
            moms.append(momentum())
    return np.array(lrs, np.float64), moms


def _ours(schedule, steps=STEPS):
    return np.array([schedule(k) for k in range(steps + 1)], np.float64)


CASES = [
    ("StepLR", lambda o: L.StepLR(o, step_size=7, gamma=0.5),
     S.StepLR(BASE, step_size=7, gamma=0.5)),
    ("StepLR-1", lambda o: L.StepLR(o, 1, gamma=0.97), S.StepLR(BASE, 1, gamma=0.97)),
    ("MultiStepLR", lambda o: L.MultiStepLR(o, milestones=[30, 80, 80, 150], gamma=0.3),
     S.MultiStepLR(BASE, milestones=[80, 30, 80, 150], gamma=0.3)),
    ("ConstantLR", lambda o: L.ConstantLR(o, factor=0.25, total_iters=40),
     S.ConstantLR(BASE, factor=0.25, total_iters=40)),
    ("ConstantLR-defaults", lambda o: L.ConstantLR(o), S.ConstantLR(BASE)),
    ("LinearLR-warmup", lambda o: L.LinearLR(o, start_factor=0.01, total_iters=50),
     S.LinearLR(BASE, start_factor=0.01, total_iters=50)),
    ("LinearLR-decay", lambda o: L.LinearLR(o, 1.0, 0.1, total_iters=100),
     S.LinearLR(BASE, 1.0, 0.1, total_iters=100)),
    ("LinearLR-defaults", lambda o: L.LinearLR(o), S.LinearLR(BASE)),
    ("ExponentialLR", lambda o: L.ExponentialLR(o, gamma=0.98), S.ExponentialLR(BASE, 0.98)),
    ("PolynomialLR", lambda o: L.PolynomialLR(o, total_iters=120, power=2.0),
     S.PolynomialLR(BASE, total_iters=120, power=2.0)),
    ("PolynomialLR-defaults", lambda o: L.PolynomialLR(o), S.PolynomialLR(BASE)),
    ("CosineAnnealingLR", lambda o: L.CosineAnnealingLR(o, T_max=50, eta_min=0.001),
     S.CosineAnnealingLR(BASE, T_max=50, eta_min=0.001)),
    ("CosineAnnealingLR-long", lambda o: L.CosineAnnealingLR(o, T_max=400),
     S.CosineAnnealingLR(BASE, T_max=400)),
    ("WarmRestarts", lambda o: L.CosineAnnealingWarmRestarts(o, T_0=10),
     S.CosineAnnealingWarmRestarts(BASE, T_0=10)),
    ("WarmRestarts-mult", lambda o: L.CosineAnnealingWarmRestarts(o, 5, T_mult=2,
                                                                   eta_min=1e-3),
     S.CosineAnnealingWarmRestarts(BASE, 5, T_mult=2, eta_min=1e-3)),
    ("OneCycleLR", lambda o: L.OneCycleLR(o, max_lr=0.5, total_steps=STEPS),
     S.OneCycleLR(0.5, total_steps=STEPS)),
    ("OneCycleLR-linear-3phase",
     lambda o: L.OneCycleLR(o, max_lr=0.5, epochs=10, steps_per_epoch=31, pct_start=0.25,
                            anneal_strategy="linear", three_phase=True, div_factor=10.0),
     S.OneCycleLR(0.5, epochs=10, steps_per_epoch=31, pct_start=0.25, anneal_strategy="linear",
                  three_phase=True, div_factor=10.0)),
    ("CyclicLR", lambda o: L.CyclicLR(o, base_lr=0.001, max_lr=0.1, step_size_up=20),
     S.CyclicLR(0.001, 0.1, step_size_up=20)),
    ("CyclicLR-triangular2",
     lambda o: L.CyclicLR(o, 0.001, 0.1, step_size_up=20, step_size_down=35,
                          mode="triangular2"),
     S.CyclicLR(0.001, 0.1, step_size_up=20, step_size_down=35, mode="triangular2")),
    ("CyclicLR-exp_range",
     lambda o: L.CyclicLR(o, 0.001, 0.1, step_size_up=15, mode="exp_range", gamma=0.99),
     S.CyclicLR(0.001, 0.1, step_size_up=15, mode="exp_range", gamma=0.99)),
    ("CyclicLR-scale_fn",
     lambda o: L.CyclicLR(o, 0.001, 0.1, step_size_up=15, scale_fn=lambda x: 1 / (1 + x),
                          scale_mode="iterations", cycle_momentum=False),
     S.CyclicLR(0.001, 0.1, step_size_up=15, scale_fn=lambda x: 1 / (1 + x),
                scale_mode="iterations", cycle_momentum=False)),
    ("SequentialLR-warmup-cosine",
     lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=25),
                                  L.CosineAnnealingLR(o, T_max=250, eta_min=1e-4)],
                              milestones=[25]),
     S.SequentialLR([S.LinearLR(BASE, start_factor=0.1, total_iters=25),
                     S.CosineAnnealingLR(BASE, T_max=250, eta_min=1e-4)], milestones=[25])),
    ("SequentialLR-three",
     lambda o: L.SequentialLR(o, [L.ConstantLR(o, factor=0.5, total_iters=20),
                                  L.ExponentialLR(o, gamma=0.99), L.StepLR(o, 30, 0.5)],
                              milestones=[10, 60]),
     S.SequentialLR([S.ConstantLR(BASE, factor=0.5, total_iters=20), S.ExponentialLR(BASE, 0.99),
                     S.StepLR(BASE, 30, 0.5)], milestones=[10, 60])),
]


@pytest.mark.parametrize(("name", "make", "schedule"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name, make, schedule):
    theirs, moms = _torch_values(make)
    ours = _ours(schedule)
    # torch multiplies step by step (rounding grows with k); pyoptim's closed form does not
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-16)  # measured: <= 2e-15
    if schedule.cycles_momentum:
        np.testing.assert_allclose([schedule.momentum(k) for k in range(STEPS + 1)], moms,
                                   rtol=1e-12)
    else:
        assert schedule.momentum(0) is None


@pytest.mark.parametrize("schedule", [
    S.OneCycleLR(0.5, total_steps=100), S.CyclicLR(0.001, 0.1, step_size_up=10)],
    ids=["OneCycleLR", "CyclicLR"])
def test_beta1_cycles_like_torch_with_adam(schedule):
    if isinstance(schedule, S.OneCycleLR):
        def make(o):
            return L.OneCycleLR(o, max_lr=0.5, total_steps=100)
    else:
        def make(o):
            return L.CyclicLR(o, 0.001, 0.1, step_size_up=10)
    theirs, moms = _torch_values(make, steps=100, optimizer="Adam")
    np.testing.assert_allclose(_ours(schedule, 100), theirs, rtol=1e-12)
    np.testing.assert_allclose([schedule.momentum(k) for k in range(101)], moms, rtol=1e-12)


def test_one_cycle_refuses_steps_past_the_end_like_torch():
    sched = S.OneCycleLR(0.1, total_steps=10)
    sched(10)
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        sched(11)


@pytest.mark.parametrize("kwargs", [
    {"mode": "min"}, {"mode": "max"}, {"mode": "min", "threshold_mode": "abs", "threshold": 0.5},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.5},
    {"patience": 2, "cooldown": 3, "factor": 0.5, "min_lr": 0.02}, {"patience": 0, "eps": 0.05}])
def test_reduce_on_plateau_matches_torch(kwargs):
    rng = np.random.default_rng(0)
    # noisy plateaus: improves for a while, stalls, improves again
    metrics = np.concatenate([np.linspace(10, 5, 20), np.full(30, 5.0), np.linspace(5, 2, 30),
                              2 + rng.random(120)]).tolist()
    if kwargs.get("mode") == "max":
        metrics = [-m for m in metrics]
    theirs, _ = _torch_values(lambda o: L.ReduceLROnPlateau(o, **kwargs), steps=len(metrics),
                              metrics=metrics)
    ours = S.ReduceLROnPlateau(BASE, **kwargs)
    values = [ours(0)]
    for m in metrics:
        ours.step(m)
        values.append(ours(123))  # the current lr, whatever k
    np.testing.assert_allclose(values, theirs, rtol=1e-15)
    assert len(set(values)) > 1  # the metric sequence does reduce the lr


def test_reduce_on_plateau_state_round_trip():
    a = S.ReduceLROnPlateau(1.0, patience=1)
    for m in (3, 3, 3, 3, 2):
        a.step(m)
    b = S.ReduceLROnPlateau(1.0, patience=1)
    b.load_state_dict(a.state_dict())
    for m in (2, 2, 2):
        assert a.step(m) == b.step(m)
    with pytest.raises(ValueError, match="keys"):
        b.load_state_dict({"lr": 1.0})


def test_closed_form_schedules_have_no_state():
    sched = S.CosineAnnealingLR(1.0, T_max=10)
    assert sched.state_dict() == {}
    sched.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        sched.load_state_dict({"last_epoch": 3})


@pytest.mark.parametrize(("make", "error", "pattern"), [
    (lambda: S.StepLR(-0.1, 3), ValueError, "base_lr"),
    (lambda: S.StepLR(0.1, 0), ValueError, "step_size"),
    (lambda: S.ConstantLR(0.1, factor=1.5), ValueError, "between 0 and 1"),
    (lambda: S.LinearLR(0.1, start_factor=0), ValueError, "greater than 0"),
    (lambda: S.CosineAnnealingWarmRestarts(0.1, T_0=0), ValueError, "T_0"),
    (lambda: S.CosineAnnealingWarmRestarts(0.1, T_0=5, T_mult=0), ValueError, "T_mult"),
    (lambda: S.OneCycleLR(0.1), ValueError, "total_steps"),
    (lambda: S.OneCycleLR(0.1, total_steps=10, pct_start=2.0), ValueError, "pct_start"),
    (lambda: S.OneCycleLR(0.1, total_steps=10, anneal_strategy="cubic"), ValueError, "anneal"),
    (lambda: S.CyclicLR(0.1, 1.0, mode="square"), ValueError, "mode"),
    (lambda: S.SequentialLR([S.ExponentialLR(0.1, 0.9)], milestones=[3]), ValueError,
     "one milestone fewer"),
    (lambda: S.SequentialLR([S.ReduceLROnPlateau(0.1), S.ExponentialLR(0.1, 0.9)], [3]),
     TypeError, "closed-form"),
    (lambda: S.ReduceLROnPlateau(0.1, factor=1.0), ValueError, "Factor"),
    (lambda: S.ReduceLROnPlateau(0.1, mode="up"), ValueError, "mode"),
    (lambda: S.ExponentialLR(0.1, gamma="0.9"), TypeError, "gamma"),
])
def test_bad_arguments_are_refused(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_a_schedule_takes_integer_steps_from_zero():
    sched = S.ExponentialLR(1.0, 0.5)
    assert sched(np.int64(2)) == 0.25
    with pytest.raises(ValueError, match="k >= 0"):
        sched(-1)
    with pytest.raises(TypeError, match="integer"):
        sched(1.5)
    assert math.isclose(S.CosineAnnealingLR(1.0, 10)(5), 0.5)
