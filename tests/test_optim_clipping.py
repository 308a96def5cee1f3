"""Clipping, loss-scale unscaling and the non-finite skip of the optimizer classes: the
deterministic global norm (the C++ and CUDA backends against the reference's summation order, any
thread count or launch configuration), the clamp prologue of every kernel of both backends against
the reference, torch's clip_grad_norm_ / clip_grad_value_ followed by the step, grad_scale, and the
all-or-nothing skip. (The classes on GPU params: tests/test_optim_cuda.py.)"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, _cuda, reference
from cases import CASES, COMBINATIONS, DTYPES, FULL_CASES, combination_id
from harness import BACKENDS, assert_close, cuda_simulated, initial_state
from test_optim import CLASSES, _class_kwargs, _grads, _groups, _params

needs_core = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")

SIZES = [0, 1, 7, 31, 1000, 4099, 3 * 2**14 + 5]


class Compiled:
    """A compiled backend's sum of squares and step (a list of host arrays in, updated in place):
    the C++ one, or the CUDA one (copies to the device and back)."""

    def __init__(self, name):
        self.name = name
        if name == "cpu" and not _cpu.available():
            pytest.skip("the compiled extension is not built")
        if name == "cuda" and "cuda" not in pyoptim.available_backends():
            pytest.skip("no CUDA backend here (numba-cuda with a GPU or its simulator)")

    def sum_of_squares(self, arrays):
        if self.name == "cpu":
            return _cpu.core().sum_of_squares(arrays)
        return _cuda.sum_of_squares([BACKENDS["cuda"].to_device(a) for a in arrays])

    def step(self, opt, flags, p, g, states, scalars, clip_value):
        if self.name == "cpu":
            _cpu.core().step(opt.kernel, flags, [p], [g],
                             [[states[k]] if k in states else None for k in opt.states],
                             scalars, None, clip_value)
            return
        cuda = BACKENDS["cuda"]
        device = {k: cuda.to_device(v) for k, v in states.items()}
        param = cuda.to_device(p)
        _cuda.step(opt, flags, [param], [cuda.to_device(g)], {k: [v] for k, v in device.items()},
                   scalars, clip_value=clip_value)
        p[...] = cuda.to_host(param)
        for k, v in device.items():
            states[k][...] = cuda.to_host(v)


@pytest.fixture(params=["cpu", "cuda"])
def compiled(request):
    return Compiled(request.param)


def _launch_configurations(backend):
    """The thread counts (C++) or CUDA launch configurations a result must not depend on."""
    if backend.name == "cpu":
        before = pyoptim.get_num_threads()
        try:
            for threads in (1, 2, 3):
                pyoptim.set_num_threads(threads)
                yield threads
        finally:
            pyoptim.set_num_threads(before)
    else:
        before = pyoptim.get_cuda_launch_config()
        try:
            for blocks, threads in ((1, 1), (3, 5), (None, None)):
                pyoptim.set_cuda_launch_config(threads_per_block=threads, max_blocks=blocks)
                yield blocks, threads
        finally:
            pyoptim.set_cuda_launch_config(**before)


# ---------------------------------------------------------------------------------------------
# the global sum of squares


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_sum_of_squares_equals_the_reference_order_bit_for_bit(compiled, dtype):
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal(n) * 3).astype(DTYPES[dtype]) for n in SIZES]
    arrays.append((rng.standard_normal((300, 700)) * 1e-3).astype(DTYPES[dtype]))
    want = reference.sum_of_squares(arrays)
    # the CUDA simulator runs a launch configuration in seconds: all of them for float32 only
    configurations = _launch_configurations(compiled) if compiled.name == "cpu" or \
        dtype == "float32" else [None]
    for configuration in configurations:
        got = compiled.sum_of_squares(arrays)
        assert got == want, (configuration, got, want)
    exact = math.fsum(float(x) ** 2 for a in arrays for x in a.astype(np.float64).ravel())
    assert want[0] == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sum_of_squares_sees_every_non_finite_element(compiled, dtype, bad):
    rng = np.random.default_rng(1)
    big = 3 * 2**14 + 5 if compiled.name == "cpu" else 2**14 + 5  # several blocks; the simulator
    for where in (0, 4098, big - 1):
        arrays = [rng.standard_normal(n).astype(DTYPES[dtype]) for n in (5, 4099, big)]
        target = arrays[1] if where < 4099 else arrays[2]
        target[where] = bad
        assert compiled.sum_of_squares(arrays)[1] is False
        assert reference.sum_of_squares(arrays)[1] is False
    assert compiled.sum_of_squares([np.ones(3, DTYPES[dtype])])[1] is True


def test_a_float64_overflow_is_not_a_non_finite_gradient(compiled):
    for arrays, expected in (([np.full(4, 1e200), np.ones(3)], True),
                             ([np.ones(3), np.full(2 * 2**14 + 3, 1e200)], True),
                             ([np.full(2**14 + 1, 1e200), np.array([1.0, np.inf])], False)):
        total, finite = compiled.sum_of_squares(arrays)
        assert total == np.inf and finite is expected
        assert (total, finite) == reference.sum_of_squares(arrays)


def test_sum_of_squares_of_nothing(compiled):
    assert compiled.sum_of_squares([]) == (0.0, True) == reference.sum_of_squares([])
    assert compiled.sum_of_squares([np.zeros(0, np.float32)]) == (0.0, True)


# ---------------------------------------------------------------------------------------------
# the clamp prologue in every kernel, against the reference


def _clamp_cases(backend):
    """Every case with every dtype combination (n=1000) on the CPU; on the CUDA simulator every
    case in float32 and one case per optimizer (all options on) in every combination (n=31)."""
    if backend == "cpu" or not cuda_simulated():
        return [(case, combo, 1000) for case in CASES for combo in COMBINATIONS]
    full = {c.id for c in FULL_CASES}
    return [(case, combo, 31) for case in CASES for combo in COMBINATIONS
            if combo == ("float32",) * 3 or case.id in full]


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_clip_value_and_grad_factor_in_every_kernel_match_the_reference(backend, case):
    compiled = Compiled(backend)
    rng = np.random.default_rng(2)
    for _, combo, n in (c for c in _clamp_cases(backend) if c[0] is case):
        if not case.states() and combo[2] != combo[0]:
            continue
        pdt, gdt, sdt = (DTYPES[d] for d in combo)
        p = rng.standard_normal(n).astype(pdt)
        ref_p = p.copy()
        states = {k: initial_state(case, k, n, sdt, rng) for k in case.states()}
        ref_states = {k: v.copy() for k, v in states.items()}
        host, ref_host = case.initial_host(), case.initial_host()
        opt = case.spec
        hp = opt.hyperparameters(case.hyperparameters)
        for t in range(1, 8):
            g = (rng.standard_normal(n) * 4).astype(gdt)
            g[::29] = np.nan
            factor = 0.37 * t
            compiled.step(opt, opt.flag_mask(hp, t, host), p, g, states,
                          opt.scalars(hp, t, factor, host), 0.5)
            host.update(opt.advance_host(hp, t, host))
            getattr(reference, case.optimizer)(ref_p, g, **ref_states, **ref_host, step=t, **hp,
                                               grad_factor=factor, clip_value=0.5)
        where = f"{backend} {case.id} {combination_id(combo)}"
        for k in host:
            assert_close(host[k], ref_host[k], (0, 0), f"{k} {where}")
        assert_close(p, ref_p, (0, 0), f"param {where}")
        for k in states:
            assert_close(states[k], ref_states[k], (0, 0), f"{k} {where}")


@needs_core
@pytest.mark.parametrize("case", [c for c in CASES if c.optimizer in ("adam", "sgd")],
                         ids=lambda c: c.id)
@pytest.mark.parametrize("options", [{"max_grad_norm": 0.5}, {"clip_value": 0.3},
                                     {"skip_nonfinite": True}], ids=str)
def test_clipping_classes_equal_the_reference_class(case, options):
    rng = np.random.default_rng(3)
    params = _params(rng, np.float32)
    ref_params = [p.copy() for p in params]
    cls = CLASSES[case.optimizer]
    kwargs = dict(_class_kwargs(case), **options)
    opt = cls(_groups(params, case), **kwargs)
    ref = cls(_groups(ref_params, case), backend="numpy", **kwargs)
    for t in range(8):
        grads = _grads(rng, params, t)
        if t == 3 and options.get("skip_nonfinite"):
            grads[3][1, 1, 0] = np.inf
        scale = 2.0 ** (t % 4) * 1.3
        assert opt.step([g * np.float32(scale) for g in grads], grad_scale=scale) == \
            ref.step([g * np.float32(scale) for g in grads], grad_scale=scale)
        assert opt.last_grad_norm == ref.last_grad_norm
    for i in range(len(params)):
        assert_close(params[i], ref_params[i], (0, 0), f"params[{i}]")
        for name in ref.state[i]:
            assert_close(opt.state[i][name], ref.state[i][name], (0, 0), name)


# ---------------------------------------------------------------------------------------------
# grad_scale


@needs_core
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_grad_scale_by_a_power_of_two_changes_nothing(name):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(300).astype(np.float32)
    b = a.copy()
    opt_a, opt_b = CLASSES[name]([a], lr=0.01), CLASSES[name]([b], lr=0.01)
    for _ in range(6):
        g = rng.standard_normal(300).astype(np.float32)
        opt_a.step([g])
        opt_b.step([g * np.float32(1024)], grad_scale=1024)
    assert_close(a, b, (0, 0), "unscaled vs scaled by 1024")


# ---------------------------------------------------------------------------------------------
# the non-finite skip: all or nothing


def _snapshot(opt, params):
    return ([p.copy() for p in params],
            [{k: np.array(v) for k, v in opt.state[i].items()} for i in range(len(params))],
            opt.state_dict()["pyoptim"]["step_count"], opt.get_lr())


def _assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        assert_close(x, y, (0, 0), "param")
    for x, y in zip(a[1], b[1]):
        assert x.keys() == y.keys()
        for k in x:
            assert_close(x[k], y[k], (0, 0), k)
    assert a[2:] == b[2:]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_anywhere_skips_the_whole_step(backend, name, bad):
    if backend == "cpu" and not _cpu.available():
        pytest.skip("the compiled extension is not built")
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(n).astype(np.float32) for n in (10, 4099, 7)] + \
        [rng.standard_normal(5).astype(ml_dtypes.bfloat16)]
    clean = [p.copy() for p in params]
    sched = pyoptim.schedules.ExponentialLR(0.01, gamma=0.5)
    kwargs = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    opt = CLASSES[name](params, lr=sched, skip_nonfinite=True, backend=backend, **kwargs)
    never = CLASSES[name](clean, lr=pyoptim.schedules.ExponentialLR(0.01, gamma=0.5),
                          skip_nonfinite=True, backend=backend, **kwargs)
    for t in range(5):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        if t in (0, 3):  # a skipped first step must not count as the first (SGD momentum)
            poisoned = [g.copy() for g in grads]
            poisoned[2 if t else 3][-1] = bad
            before = _snapshot(opt, params)
            assert opt.step(poisoned, grad_scale=2.0) is False
            _assert_same(_snapshot(opt, params), before)
        assert opt.step(grads, grad_scale=2.0) is True
        assert never.step(grads, grad_scale=2.0) is True
    _assert_same(_snapshot(opt, params), _snapshot(never, clean))
    assert opt.state[0]["step"] == 5


@needs_core
def test_without_skip_a_nan_gradient_propagates_as_in_torch():
    p = np.ones(4, np.float32)
    opt = pyoptim.Adam([p], lr=0.1)
    g = np.array([np.nan, 1, 1, 1], np.float32)
    assert opt.step([g]) is True
    assert np.isnan(p[0]) and np.isfinite(p[1:]).all()


# ---------------------------------------------------------------------------------------------
# against torch.nn.utils


@needs_core
@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_max_grad_norm_is_clip_grad_norm_then_step(name, dtype):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not hasattr(torch.optim, CLASSES[name].__name__):
        pytest.skip(f"torch.optim has no {CLASSES[name].__name__}")
    rng = np.random.default_rng(6)
    params = _params(rng, dtype)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    kwargs = {"lr": 0.01}
    opt = CLASSES[name](params, max_grad_norm=2.0, **kwargs)
    topt = getattr(torch.optim, type(opt).__name__)(tparams, **kwargs)
    for t in range(8):
        grads = [g * (0.1 if t % 2 else 3.0) for g in _grads(rng, params, t)]
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        total = torch.nn.utils.clip_grad_norm_(tparams, 2.0)
        topt.step()
        assert opt.last_grad_norm == pytest.approx(float(total),
                                                   rel=1e-12 if dtype == "float64" else 1e-6)
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (1e-5, 1e-6)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=rtol, atol=atol)


@needs_core
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_clip_value_is_clip_grad_value_then_step(name):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not hasattr(torch.optim, CLASSES[name].__name__):
        pytest.skip(f"torch.optim has no {CLASSES[name].__name__}")
    rng = np.random.default_rng(7)
    params = _params(rng, np.float64)
    tparams = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    opt = CLASSES[name](params, lr=0.01, clip_value=0.5, maximize=True)
    topt = getattr(torch.optim, type(opt).__name__)(tparams, lr=0.01, maximize=True)
    for t in range(8):
        grads = _grads(rng, params, t)
        opt.step([g * 64 for g in grads], grad_scale=64)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_value_(tparams, 0.5)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_clipping_options_are_checked():
    p = [np.zeros(2, np.float32)]
    with pytest.raises(ValueError, match="exclusive"):
        pyoptim.Adam(p, max_grad_norm=1.0, clip_value=1.0)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_grad_norm"):
            pyoptim.Adam(p, max_grad_norm=bad)
        with pytest.raises(ValueError, match="clip_value"):
            pyoptim.Adam(p, clip_value=bad)
    with pytest.raises(TypeError, match="max_grad_norm"):
        pyoptim.Adam(p, max_grad_norm="1")
    with pytest.raises(TypeError, match="skip_nonfinite"):
        pyoptim.Adam(p, skip_nonfinite=1)
