"""Every refusal of the optimizer classes raises TypeError or ValueError naming what is wrong, and
changes nothing: no param, state buffer, step count or param group moves."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu
from harness import shuffled_views

BACKENDS = ["cpu", "numpy"]


def _require(backend):
    if backend == "cpu" and not _cpu.available():
        pytest.skip("the compiled extension is not built")


def _setup(backend, **kwargs):
    """An Adam over two groups (a float32 pair, a bfloat16 param) after two steps."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 4)).astype(np.float32),
              rng.standard_normal(7).astype(np.float32),
              rng.standard_normal(5).astype(ml_dtypes.bfloat16)]
    opt = pyoptim.Adam([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.1}],
                       lr=0.01, backend=backend, **kwargs)
    for _ in range(2):
        opt.step(_good_grads(params))
    return opt, params


def _good_grads(params):
    return [np.full(p.shape, 0.5, np.float32) for p in params]


def _snapshot(opt, params):
    return ([p.copy() for p in params],
            [{k: np.array(v) for k, v in opt.state[i].items()} for i in range(len(params))],
            [dict(g, params=None) for g in opt.param_groups],
            opt.state_dict()["pyoptim"]["step_count"])


def _assert_unchanged(opt, params, before):
    after = _snapshot(opt, params)
    for a, b in zip(after[0], before[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(after[1], before[1]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert after[2:] == before[2:]


def _assert_step_refused(opt, params, grads, error, pattern, **kwargs):
    before = _snapshot(opt, params)
    with pytest.raises(error, match=pattern):
        opt.step(grads, **kwargs)
    _assert_unchanged(opt, params, before)


def _bad_grad_cases(params):
    """(description, grads, exception, message pattern) for a step; the bad grad is the last
    one, so that a partial update would show in the first group."""
    good = _good_grads(params)
    f32 = good[2]
    wide = np.zeros((5, 2), np.float32)
    cases = [
        ("too few grads", good[:2], ValueError, "got 2 grads for 3 params"),
        ("too many grads", good + [f32], ValueError, "got 4 grads for 3 params"),
        ("not a list", "grads", TypeError, "grads must be a list"),
        ("a Python list as a grad", good[:2] + [[0.5] * 5], TypeError, r"grads\[2\]"),
        ("wrong shape", good[:2] + [np.zeros(6, np.float32)], ValueError,
         r"grads\[2\] has shape \(6,\), but params\[2\] has shape \(5,\)"),
        ("integer dtype", good[:2] + [np.zeros(5, np.int32)], TypeError, r"grads\[2\].*dtype"),
        ("float16 grad for a bfloat16 param", good[:2] + [np.zeros(5, np.float16)], TypeError,
         r"grads\[2\].*unsupported dtypes"),
        ("float64 grad for a float32 param", [good[0].astype(np.float64)] + good[1:], TypeError,
         r"grads\[0\].*unsupported dtypes"),
        ("non-contiguous", good[:2] + [wide[:, 0]], ValueError, r"grads\[2\].*C-contiguous"),
        ("aliases a param", good[:2] + [params[2]] if params[2].dtype == np.float32 else
         good[:2] + [params[1][:5]], ValueError, "share memory"),
        ("two grads share memory", [good[0], good[0].reshape(-1)[:7], good[2]], ValueError,
         "share memory"),
    ]
    return cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_grads_are_refused_and_nothing_changes(backend):
    _require(backend)
    opt, params = _setup(backend)
    for _, grads, error, pattern in _bad_grad_cases(params):
        _assert_step_refused(opt, params, grads, error, pattern)
    # a grad aliasing a state buffer
    grads = _good_grads(params)
    grads[1] = opt.state[1]["exp_avg"]
    _assert_step_refused(opt, params, grads, ValueError, "share memory")
    assert opt.step(_good_grads(params)) is True  # and it still works


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf")])
def test_bad_grad_scale_is_refused(backend, scale):
    _require(backend)
    opt, params = _setup(backend)
    _assert_step_refused(opt, params, _good_grads(params), ValueError, "grad_scale",
                         grad_scale=scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("lr", -1.0, "lr"), ("betas", (0.9, 1.0), "betas"), ("eps", -1e-8, "eps"),
    ("lr", lambda k: 0.1, "schedule"), ("weight_decay", float("nan"), "weight_decay")])
def test_an_invalid_hyperparameter_set_between_steps_is_refused(backend, key, value, pattern):
    _require(backend)
    opt, params = _setup(backend)
    opt.param_groups[1][key] = value
    _assert_step_refused(opt, params, _good_grads(params), (ValueError, TypeError), pattern)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_param_is_refused_at_the_step(backend):
    _require(backend)
    opt, params = _setup(backend)
    params[0].flags.writeable = False
    _assert_step_refused(opt, params, _good_grads(params), ValueError,
                         r"params\[0\] is read-only")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_param_group_changes_nothing(backend):
    _require(backend)
    opt, params = _setup(backend)
    before = _snapshot(opt, params)
    groups = len(opt.param_groups)
    for group, error, pattern in [
        ({"params": [params[0]]}, ValueError, "more than once"),
        ({"params": [params[1][2:4]]}, ValueError, "share memory"),
        ({"params": [np.zeros(3, np.int64)]}, TypeError, "dtype"),
        ({"params": [np.zeros(3, np.float32)], "momentum": 0.9}, TypeError, "momentum"),
        ({"params": [np.zeros(3, np.float32)], "lr": -1}, ValueError, "lr"),
        ({"params": []}, ValueError, "no params"),
        ({"lr": 0.1}, ValueError, "no 'params'"),
        ([np.zeros(3, np.float32)], TypeError, "dict"),
    ]:
        with pytest.raises(error, match=pattern):
            opt.add_param_group(group)
        assert len(opt.param_groups) == groups
        _assert_unchanged(opt, params, before)
    assert opt.step(_good_grads(params)) is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_constructor_arguments_are_refused(backend):
    _require(backend)
    ok = np.zeros(4, np.float32)
    wide = np.zeros((4, 2), np.float32)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    buffer = np.zeros(10, np.float32)
    cases = [
        ([], {}, ValueError, "empty parameter list"),
        (None, {}, TypeError, "params must be"),
        ([ok, {"params": [ok]}], {}, TypeError, "not a mix"),
        ([ok, ok], {}, ValueError, "more than once"),
        ([buffer[:6], buffer[4:]], {}, ValueError, "share memory"),
        ([wide[:, 0]], {}, ValueError, "C-contiguous"),
        ([frozen], {}, ValueError, "read-only"),
        ([ok, np.ma.masked_array(ok, mask=[0, 1, 0, 0])], {}, TypeError,
         r"params\[1\] is a masked array"),
        ([np.zeros(3, np.int32)], {}, TypeError, "dtype"),
        ([[1.0, 2.0]], {}, TypeError, "expected an array"),
        ([ok], {"lr": -0.1}, ValueError, "lr"),
        ([ok], {"betas": (0.9,)}, TypeError, "betas"),
        ([ok], {"differentiable": True}, ValueError, "differentiable"),
        ([ok], {"foreach": "yes"}, TypeError, "foreach"),
        ([ok], {"state_dtype": np.float16}, TypeError, "state_dtype=float16"),
        ([ok], {"lr": print}, TypeError, "schedule"),
        ([{"params": [ok], "betaz": (0.9, 0.9)}], {}, TypeError, "betaz"),
    ]
    for params, kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            pyoptim.Adam(params, backend=backend, **kwargs)
    with pytest.raises(ValueError, match="unknown backend"):
        pyoptim.Adam([ok], backend="gpu")
    with pytest.raises(ValueError, match="cannot update host arrays"):
        pyoptim.Adam([ok], backend="cuda")
    with pytest.raises(ValueError, match="decoupled"):
        pyoptim.AdamW([{"params": [ok], "decoupled_weight_decay": False}], backend=backend)
    with pytest.raises(ValueError, match="nesterov"):
        pyoptim.SGD([ok], nesterov=True, backend=backend)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        pyoptim.Adagrad([ok], initial_accumulator_value=-1, backend=backend)


def test_state_is_read_only_through_the_mapping():
    opt = pyoptim.SGD([np.zeros(3, np.float32)], momentum=0.9, backend="numpy")
    with pytest.raises(TypeError):
        opt.state[0]["step"] = 3
    with pytest.raises(KeyError):
        opt.state[5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlaps_among_thousands_of_arrays_are_found(backend):
    # Over a thousand params and grads, views of one buffer in a shuffled order: the C++ checks
    # sort that many extents by radix (csrc/arguments.h, kRadixSortMin).
    _require(backend)
    size = 8
    pool, slots, params, grads = shuffled_views(1100, size, seed=4)
    with pytest.raises(ValueError, match=r"params\[17\] and params\[1000\] share memory|"
                                         r"params\[1000\] and params\[17\] share memory"):
        start = slots[17] * size + 3
        pyoptim.SGD(params[:1000] + [pool[start:start + size]] + params[1001:], lr=0.1,
                    backend=backend)
    opt = pyoptim.SGD(params, lr=0.5, momentum=0.9, backend=backend)
    opt.step(grads)
    for i in (0, 17, 1099):
        np.testing.assert_array_equal(opt.state[i]["momentum_buffer"], grads[i])
    bad = list(grads)
    bad[900] = opt.state[40]["momentum_buffer"]
    _assert_step_refused(opt, params, bad, ValueError,
                         r"(grads\[900\] and state 'momentum_buffer' of params\[40\]|state "
                         r"'momentum_buffer' of params\[40\] and grads\[900\]) share memory")
    bad = list(grads)
    bad[5] = params[800]
    _assert_step_refused(opt, params, bad, ValueError,
                         r"(grads\[5\] and params\[800\]|params\[800\] and grads\[5\]) "
                         r"share memory")
