"""The reference itself: hand-derived values, equivalences between variants, and torch.optim.

The reference is the specification every backend is tested against, so it is checked on its own:
against values derived by hand from the equations in its docstrings (computed here in float64
with Python floats), against identities that must hold between variants, and against torch.optim
(2.13, the single-tensor path that torch uses on CPU) over several steps, state included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyoptim import reference
from cases import CASES

F64 = dict(compute_dtype=np.float64)


def arrays(*values):
    return [np.array(v, dtype=np.float64) for v in values]


# ---------------------------------------------------------------------------------------------
# Hand-derived values: a few steps of each optimizer worked out with Python floats.


def test_sgd_plain_and_weight_decay():
    p, g = arrays([1.0, -2.0], [0.5, 0.25])
    reference.sgd(p, g, step=1, lr=0.1, weight_decay=0.2)
    expected = [1.0 - 0.1 * (0.5 + 0.2 * 1.0), -2.0 - 0.1 * (0.25 + 0.2 * -2.0)]
    np.testing.assert_array_equal(p, expected)


def test_sgd_momentum_dampening_three_steps():
    lr, mu, tau = 0.1, 0.9, 0.25
    p, b = arrays([1.0], [np.nan])
    grads = [0.5, -1.0, 2.0]
    hand_p, hand_b = 1.0, None
    for t, g in enumerate(grads, 1):
        reference.sgd(p, np.array([g]), momentum_buffer=b, step=t, lr=lr, momentum=mu,
                      dampening=tau)
        hand_b = g if t == 1 else mu * hand_b + (1 - tau) * g
        hand_p = hand_p - lr * hand_b
        assert b[0] == hand_b and p[0] == hand_p


def test_sgd_nesterov():
    lr, mu = 0.1, 0.9
    p, b = arrays([1.0], [0.0])
    hand_p, hand_b = 1.0, None
    for t, g in enumerate([0.5, -1.0, 2.0], 1):
        reference.sgd(p, np.array([g]), momentum_buffer=b, step=t, lr=lr, momentum=mu,
                      nesterov=True)
        hand_b = g if t == 1 else mu * hand_b + g
        hand_p = hand_p - lr * (g + mu * hand_b)
        assert p[0] == hand_p


def test_adagrad_with_lr_decay():
    lr, decay, eps = 0.1, 0.5, 1e-10
    p, s = arrays([1.0], [0.1])
    hand_p, hand_s = 1.0, 0.1
    for t, g in enumerate([0.5, -1.0, 2.0], 1):
        reference.adagrad(p, np.array([g]), sum=s, step=t, lr=lr, lr_decay=decay)
        hand_s = hand_s + g * g
        hand_p = hand_p - (lr / (1 + (t - 1) * decay)) * g / (math.sqrt(hand_s) + eps)
        assert s[0] == hand_s and p[0] == hand_p


def test_rmsprop_first_step():
    lr, alpha, eps = 0.01, 0.99, 1e-8
    p, v = arrays([1.0, 1.0], [0.0, 0.0])
    g = np.array([0.5, -2.0])
    reference.rmsprop(p, g, square_avg=v, step=1, lr=lr, alpha=alpha)
    for i in range(2):
        expected_v = (1 - alpha) * g[i] * g[i]
        assert v[i] == expected_v
        assert p[i] == 1.0 - lr * g[i] / (math.sqrt(expected_v) + eps)


def test_rmsprop_centered_momentum_two_steps():
    lr, alpha, eps, mu = 0.01, 0.9, 1e-8, 0.5
    p, v, b, m = arrays([1.0], [0.0], [0.0], [0.0])
    hand = dict(p=1.0, v=0.0, b=0.0, m=0.0)
    for t, g in enumerate([0.5, -1.0], 1):
        reference.rmsprop(p, np.array([g]), square_avg=v, momentum_buffer=b, grad_avg=m, step=t,
                          lr=lr, alpha=alpha, momentum=mu, centered=True)
        hand["v"] = alpha * hand["v"] + (1 - alpha) * g * g
        hand["m"] = hand["m"] + (1 - alpha) * (g - hand["m"])
        d = math.sqrt(hand["v"] - hand["m"] ** 2) + eps
        hand["b"] = mu * hand["b"] + g / d
        hand["p"] = hand["p"] - lr * hand["b"]
        for name, arr in dict(p=p, v=v, b=b, m=m).items():
            assert arr[0] == pytest.approx(hand[name], rel=1e-15, abs=0), name


def test_adam_first_step_is_a_signed_step_of_size_lr():
    """m_hat = g and v_hat = g^2 after one step, so the update is lr * g / (|g| + eps)."""
    g = np.array([0.5, -2.0, 1e-3])
    p, m, v = arrays([1.0, 1.0, 1.0], [0, 0, 0], [0, 0, 0])
    reference.adam(p, g, exp_avg=m, exp_avg_sq=v, step=1, lr=0.1)
    np.testing.assert_allclose(p, 1.0 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-15)
    np.testing.assert_array_equal(m, 0.0 + (1 - 0.9) * (g - 0.0))
    np.testing.assert_array_equal(v, 0.0 * 0.999 + (1 - 0.999) * g * g)


def test_adam_bias_corrections_over_steps():
    beta1, beta2, lr, eps = 0.8, 0.9, 0.1, 1e-8
    p, m, v = arrays([1.0], [0.0], [0.0])
    hand = dict(p=1.0, m=0.0, v=0.0)
    for t, g in enumerate([0.5, -1.0, 2.0, 0.25], 1):
        reference.adam(p, np.array([g]), exp_avg=m, exp_avg_sq=v, step=t, lr=lr,
                       betas=(beta1, beta2))
        hand["m"] = beta1 * hand["m"] + (1 - beta1) * g
        hand["v"] = beta2 * hand["v"] + (1 - beta2) * g * g
        m_hat = hand["m"] / (1 - beta1**t)
        v_hat = hand["v"] / (1 - beta2**t)
        hand["p"] = hand["p"] - lr * m_hat / (math.sqrt(v_hat) + eps)
        for name, arr in dict(p=p, m=m, v=v).items():
            assert arr[0] == pytest.approx(hand[name], rel=1e-14), name


def test_adamw_decays_the_param_before_the_step():
    lr, wd = 0.1, 0.5
    p, m, v = arrays([2.0], [0.0], [0.0])
    reference.adamw(p, np.array([1.0]), exp_avg=m, exp_avg_sq=v, step=1, lr=lr, weight_decay=wd)
    assert p[0] == pytest.approx(2.0 * (1 - lr * wd) - lr * 1.0 / (1.0 + 1e-8), rel=1e-15)


# ---------------------------------------------------------------------------------------------
# Equivalences between variants (bit for bit, in float32, over several steps)


def _run(fn, n_steps=8, states=("exp_avg", "exp_avg_sq"), grads=None, **hp):
    rng = np.random.default_rng(7)
    p = rng.standard_normal(100).astype(np.float32)
    st = {name: np.zeros(100, np.float32) for name in states}
    for t in range(1, n_steps + 1):
        g = rng.standard_normal(100).astype(np.float32) if grads is None else grads(t)
        fn(p, g, **st, step=t, **hp)
    return p, st


def test_adamw_without_weight_decay_is_adam():
    a = _run(reference.adam)
    b = _run(reference.adamw, weight_decay=0.0)
    np.testing.assert_array_equal(a[0], b[0])


def test_adam_with_decoupled_weight_decay_is_adamw():
    a = _run(reference.adam, weight_decay=0.1, decoupled_weight_decay=True)
    b = _run(reference.adamw, weight_decay=0.1)
    np.testing.assert_array_equal(a[0], b[0])
    for name in a[1]:
        np.testing.assert_array_equal(a[1][name], b[1][name])


@pytest.mark.parametrize("case", [c for c in CASES if not c.hyperparameters.get("maximize")],
                         ids=lambda c: c.id)
def test_maximize_is_descent_on_the_negated_gradient(case):
    rng = np.random.default_rng(3)
    fn = getattr(reference, case.optimizer)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(7)]
    results = []
    for maximize, sign in ((False, -1), (True, 1)):
        p = np.linspace(-1, 1, 50, dtype=np.float32)
        initial = {"sum": 0.1, "step_size": case.hyperparameters["lr"]}
        st = {name: np.full(50, initial.get(name, 0.0), np.float32) for name in case.states()}
        st.update(case.initial_host())
        for t, g in enumerate(grads, 1):
            fn(p, sign * g, **st, step=t, **{**case.hyperparameters, "maximize": maximize})
        results.append((p, st))
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_amsgrad_equals_adam_while_the_second_moment_grows():
    grads = lambda t: np.full(100, 2.0**t, np.float32)  # noqa: E731: v grows every step
    a = _run(reference.adam, grads=grads)
    b = _run(reference.adam, grads=grads, amsgrad=True,
             states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(b[1]["max_exp_avg_sq"], b[1]["exp_avg_sq"])


def test_amsgrad_keeps_the_running_maximum():
    grads = lambda t: np.full(100, 2.0**-t, np.float32)  # noqa: E731: v shrinks
    _, st = _run(reference.adam, grads=grads, amsgrad=True,
                 states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
    assert (st["max_exp_avg_sq"] > st["exp_avg_sq"]).all()


def test_adam_with_beta1_zero_uses_the_large_weight_lerp_exactly():
    """beta1 = 0: the lerp weight is 1, torch's second formula gives m = g exactly."""
    _, st = _run(reference.adam, betas=(0.0, 0.999), n_steps=1,
                 grads=lambda t: np.linspace(-3, 3, 100, dtype=np.float32))
    np.testing.assert_array_equal(st["exp_avg"], np.linspace(-3, 3, 100, dtype=np.float32))


def test_sgd_momentum_buffer_is_not_read_on_the_first_step():
    p = np.ones(10, np.float32)
    b = np.full(10, np.nan, np.float32)
    reference.sgd(p, np.ones(10, np.float32), momentum_buffer=b, step=1, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(b, 1.0)
    np.testing.assert_array_equal(p, np.float32(1) - np.float32(0.1))


def test_compute_dtype_float64_is_more_accurate_for_float32_params():
    """The float64 mode is an accuracy oracle: float32 results stay within a few ulps of it."""
    rng = np.random.default_rng(5)
    p32 = rng.standard_normal(1000).astype(np.float32)
    p64 = p32.copy()
    m32, v32, m64, v64 = (np.zeros(1000, np.float32) for _ in range(4))
    for t in range(1, 8):
        g = rng.standard_normal(1000).astype(np.float32)
        reference.adam(p32, g, exp_avg=m32, exp_avg_sq=v32, step=t, lr=1e-3)
        reference.adam(p64, g, exp_avg=m64, exp_avg_sq=v64, step=t, lr=1e-3, **F64)
    np.testing.assert_allclose(p32, p64, rtol=4 * np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------------------------
# torch.optim: the reference follows it (float64 and float32), state names included

torch = pytest.importorskip("torch", reason="torch is not installed: the reference is then "
                            "checked against hand-derived values only")

TORCH_CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
                 "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
                 "adadelta": "Adadelta", "asgd": "ASGD", "rprop": "Rprop"}
IN_TORCH = [c for c in CASES if c.optimizer in TORCH_CLASSES]


def _torch_trajectory(case, dtype, steps=10, n=257):
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) * 2.0 ** (t % 3 - 1) for t in range(steps)]
    hp = dict(case.hyperparameters)
    torch_hp = dict(hp)
    if case.optimizer == "adagrad":
        torch_hp["initial_accumulator_value"] = 0.1
    tp = torch.tensor(p0, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    opt = getattr(torch.optim, TORCH_CLASSES[case.optimizer])([tp], **torch_hp)
    p = p0.astype(dtype)
    initial = {"sum": 0.1, "step_size": hp["lr"]}
    st = {name: np.full(n, initial.get(name, 0.0), dtype) for name in case.states()}
    st.update(case.initial_host())
    fn = getattr(reference, case.optimizer)
    for t, g in enumerate(grads, 1):
        tp.grad = torch.tensor(g.astype(dtype))
        opt.step()
        fn(p, g.astype(dtype), **st, step=t, **hp)
    torch_state = {k: np.asarray(v) for k, v in opt.state[tp].items() if k != "step"}
    return p, st, tp.detach().numpy(), torch_state


@pytest.mark.parametrize("case", IN_TORCH, ids=lambda c: c.id)
def test_follows_torch_in_float64(case):
    p, st, tp, tst = _torch_trajectory(case, np.float64)
    assert set(st) == set(tst), "state names differ from torch's"
    np.testing.assert_allclose(p, tp, rtol=1e-13, atol=1e-15)
    for name in st:
        np.testing.assert_allclose(st[name], tst[name], rtol=1e-13, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("case", IN_TORCH, ids=lambda c: c.id)
def test_follows_torch_in_float32(case):
    """To rounding: torch's vectorized lerp uses FMA where the reference rounds twice. Centered
    RMSprop's sqrt(v - m*m) cancels, which magnifies those roundings: hence the absolute term, a
    few float32 ulps of the params' magnitude (1 to 10) after ten steps."""
    p, st, tp, tst = _torch_trajectory(case, np.float32)
    np.testing.assert_allclose(p, tp, rtol=2e-6, atol=1e-5)
    for name in st:
        np.testing.assert_allclose(st[name], tst[name], rtol=2e-6, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------------------------
# LAMB (optax's lamb): hand-derived, in float64


def _lamb_by_hand(p, grads, lr, betas, eps, wd):
    """optax.lamb's chain written out: scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
    scale_by_learning_rate; norms with math.fsum (exactly rounded)."""
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads, 1):
        m = [(1 - betas[0]) * gi + betas[0] * mi for gi, mi in zip(g, m)]
        v = [(1 - betas[1]) * (gi * gi) + betas[1] * vi for gi, vi in zip(g, v)]
        u = [(mi / (1 - betas[0] ** t)) / (math.sqrt(vi / (1 - betas[1] ** t)) + eps) + wd * pi
             for mi, vi, pi in zip(m, v, p)]
        param_norm = math.sqrt(math.fsum(x * x for x in p))
        update_norm = math.sqrt(math.fsum(x * x for x in u))
        ratio = 1.0 if param_norm == 0 or update_norm == 0 else param_norm / update_norm
        p = [pi - lr * (ui * ratio) for pi, ui in zip(p, u)]
    return p, m, v


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lamb_is_optax_lamb_worked_by_hand(wd):
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(6)]
    p, m, v = p0.copy(), np.zeros(50), np.zeros(50)
    for t, g in enumerate(grads, 1):
        reference.lamb(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=0.05, weight_decay=wd)
    hand_p, hand_m, hand_v = _lamb_by_hand(list(p0), [list(g) for g in grads], 0.05,
                                           (0.9, 0.999), 1e-6, wd)
    np.testing.assert_allclose(p, hand_p, rtol=1e-13)
    np.testing.assert_allclose(m, hand_m, rtol=1e-13)
    np.testing.assert_allclose(v, hand_v, rtol=1e-13)


def test_lamb_moves_every_array_by_lr_times_its_norm_ratio():
    """With the trust ratio, ||p_new - p|| = lr * ||p|| for any gradient scale."""
    for scale in (1e-3, 1.0, 1e3):
        p = np.linspace(-2, 2, 101)
        before = p.copy()
        reference.lamb(p, scale * np.cos(np.arange(101.0)), exp_avg=np.zeros(101),
                       exp_avg_sq=np.zeros(101), step=1, lr=0.01)
        assert np.linalg.norm(p - before) == pytest.approx(0.01 * np.linalg.norm(before),
                                                           rel=1e-12)


def test_lamb_uses_a_ratio_of_one_for_a_zero_param():
    p = np.zeros(10)
    reference.lamb(p, np.ones(10), exp_avg=np.zeros(10), exp_avg_sq=np.zeros(10), step=1, lr=0.1)
    np.testing.assert_allclose(p, -0.1 / (1 + 1e-6), rtol=1e-15)
