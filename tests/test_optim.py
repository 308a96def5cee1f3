"""The optimizer classes: against the reference backend (bit for bit), the many-array path
against per-array functional calls, thread counts, dtypes, param groups, the state API and
create(). Against torch.optim: test_optim_torch.py."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, _spec
from cases import CASES, DTYPES
from harness import assert_close, initial_state

needs_core = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")

CLASSES = {"sgd": pyoptim.SGD, "adagrad": pyoptim.Adagrad, "rmsprop": pyoptim.RMSprop,
           "adam": pyoptim.Adam, "adamw": pyoptim.AdamW, "adamax": pyoptim.Adamax,
           "nadam": pyoptim.NAdam, "radam": pyoptim.RAdam, "adadelta": pyoptim.Adadelta,
           "asgd": pyoptim.ASGD, "rprop": pyoptim.Rprop, "lion": pyoptim.Lion,
           "lamb": pyoptim.Lamb}
SHAPES = [(7, 5), (31,), (1,), (4, 3, 2)]  # two groups: the first two shapes, the last two
STEPS = 8


def _class_kwargs(case):
    """A case's hyperparameters as constructor arguments (Adagrad: a nonzero accumulator)."""
    hp = dict(case.hyperparameters)
    if case.optimizer == "adagrad":
        hp["initial_accumulator_value"] = 0.1
    return hp


def _second_group(case):
    """Different hyperparameters for the second param group: another lr and decay."""
    group = {"lr": case.hyperparameters["lr"] * 0.5}
    if "weight_decay" in case.spec.defaults:
        group["weight_decay"] = 0.02
    return group


def _params(rng, dtype, shapes=SHAPES):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _grads(rng, params, t, dtype=None):
    return [(rng.standard_normal(p.shape) * 2.0 ** (t % 3 - 1)).astype(dtype or p.dtype)
            for p in params]


def _groups(params, case):
    return [{"params": params[:2]}, {"params": params[2:], **_second_group(case)}]


def _run(cls, kwargs, params, grads_per_step, backend=None, **step_kwargs):
    opt = cls(params, backend=backend, **kwargs)
    results = [opt.step(grads, **step_kwargs) for grads in grads_per_step]
    return opt, results


@needs_core
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cpu_class_equals_reference_class_bit_for_bit(case):
    rng = np.random.default_rng(3)
    for combo in [("float32", "float32", "float32"), ("bfloat16", "float32", "float32"),
                  ("float16", "float16", "float16"), ("float64", "float32", "float64")]:
        pdt, gdt, sdt = (DTYPES[d] for d in combo)
        params = _params(rng, pdt)
        ref_params = [p.copy() for p in params]
        grads_per_step = [_grads(rng, params, t, gdt) for t in range(STEPS)]
        kwargs = dict(_class_kwargs(case), state_dtype=sdt)
        cls = CLASSES[case.optimizer]
        opt, _ = _run(cls, kwargs, _groups(params, case), grads_per_step)
        ref, _ = _run(cls, kwargs, _groups(ref_params, case), grads_per_step, backend="numpy")
        for i in range(len(params)):
            assert_close(params[i], ref_params[i], (0, 0), f"params[{i}] {combo}")
            for name in ref.state[i]:
                assert_close(opt.state[i][name], ref.state[i][name], (0, 0),
                             f"{name} of params[{i}] {combo}")


@pytest.mark.parametrize("backend", [b for b in ("cpu", "numpy")
                                     if b in pyoptim.available_backends()])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_a_step_without_any_grad_changes_nothing(name, backend):
    """All grads None (before the first backward, a skipped batch, everything frozen): no param,
    state buffer, scalar state or step count changes, before the first step and after, as in
    torch.optim. NAdam and ASGD raised KeyError here: with no param stepping, the scalars were
    computed without their scalar states."""
    rng = np.random.default_rng(5)
    params = _params(rng, np.float32)
    opt = CLASSES[name](params, backend=backend)
    for _ in range(2):
        before = [p.copy() for p in params]
        state = [{k: np.array(v, copy=True) for k, v in opt.state[i].items()}
                 for i in range(len(params))]
        opt.step([None] * len(params))
        for i, p in enumerate(params):
            np.testing.assert_array_equal(p, before[i])
            assert opt.state[i].keys() == state[i].keys()
            for k, v in state[i].items():
                np.testing.assert_array_equal(opt.state[i][k], v, err_msg=f"{k} of params[{i}]")
        opt.step(_grads(rng, params, 1))


@needs_core
@pytest.mark.parametrize("case", [c for c in CASES if not c.hyperparameters.get("maximize")],
                         ids=lambda c: c.id)
def test_many_arrays_equal_per_array_functional_calls(case):
    """One Plan call over 200 arrays of sizes 0..4099 (SIMD tails, thread chunks, segments
    spanning chunks) equals the functional API called array by array."""
    rng = np.random.default_rng(4)
    sizes = [int(s) for s in rng.choice([0, 1, 7, 31, 64, 1000, 4099], size=200)]
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    copies = [p.copy() for p in params]
    hp = _class_kwargs(case)
    hp.pop("initial_accumulator_value", None)
    states = [{**{name: initial_state(case, name, p.size, np.float32, rng) for name in
                  case.states()}, **case.initial_host()} for p in copies]
    opt = CLASSES[case.optimizer](params, **_class_kwargs(case))
    fn = getattr(pyoptim.functional, case.optimizer)
    for t in range(1, 8):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        for p, g, st in zip(copies, grads, states):
            fn(p, g, **st, step=t, **hp)
    for i in range(len(params)):
        assert_close(params[i], copies[i], (0, 0), f"params[{i}]")
        for name in states[i]:
            assert_close(opt.state[i][name].reshape(-1), states[i][name].reshape(-1), (0, 0),
                         f"{name}[{i}]")


@needs_core
def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(5)
    sizes = [100_000, 3, 70_001, 4099] * 3
    grads_per_step = [[rng.standard_normal(n).astype(np.float32) for n in sizes]
                      for _ in range(4)]
    init = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    results = []
    before = pyoptim.get_num_threads()
    try:
        for threads in (1, 2, 3):
            pyoptim.set_num_threads(threads)
            params = [p.copy() for p in init]
            opt = pyoptim.AdamW(params, lr=0.01, max_grad_norm=1.0)
            for grads in grads_per_step:
                opt.step(grads)
            results.append((params, opt.last_grad_norm,
                            [opt.state[i]["exp_avg_sq"].copy() for i in range(len(sizes))]))
    finally:
        pyoptim.set_num_threads(before)
    for params, norm, states in results[1:]:
        assert norm == results[0][1]
        for a, b in zip(params + states, results[0][0] + results[0][2]):
            assert_close(a, b, (0, 0), "1 thread vs more")


@needs_core
def test_float_state_dtype_default_and_choice():
    p16 = np.zeros(4, np.float16)
    bf = np.zeros(4, ml_dtypes.bfloat16)
    p64 = np.zeros(4, np.float64)
    opt = pyoptim.Adam([p16, bf, p64])
    assert [opt.state[i]["exp_avg"].dtype for i in range(3)] == \
        [np.float32, np.float32, np.float64]
    opt = pyoptim.Adam([p16], state_dtype=np.float16)
    assert opt.state[0]["exp_avg"].dtype == np.float16
    opt = pyoptim.Adam([p64], state_dtype="float32")
    assert opt.state[0]["exp_avg_sq"].dtype == np.float32


@needs_core
def test_mixed_dtypes_and_flags_in_one_optimizer_match_separate_optimizers():
    """Groups with different flags and params of different dtypes: several kernel calls from
    one step, each equal to an optimizer of its own."""
    rng = np.random.default_rng(6)
    dtypes = [np.float32, np.float64, ml_dtypes.bfloat16, np.float32]
    params = [rng.standard_normal(50).astype(d) for d in dtypes]
    alone = [p.copy() for p in params]
    groups = [{"params": params[:2], "weight_decay": 0.0},
              {"params": params[2:], "weight_decay": 0.1, "amsgrad": True}]
    opt = pyoptim.Adam(groups, lr=0.01)
    singles = [pyoptim.Adam([alone[i]], lr=0.01, **({"weight_decay": 0.1, "amsgrad": True}
                                                     if i >= 2 else {})) for i in range(4)]
    for _ in range(5):
        grads = [rng.standard_normal(50).astype(np.float32) for _ in params]
        opt.step(grads)
        for single, g in zip(singles, grads):
            single.step([g])
    for i in range(4):
        assert_close(params[i], alone[i], (0, 0), f"params[{i}]")


@needs_core
def test_a_flat_buffer_is_one_param():
    shapes = [(3, 4), (5,), (2, 2, 2)]
    flat = pyoptim.flat.FlatBuffer(shapes, np.float32)
    grads = flat.zeros_like()
    rng = np.random.default_rng(7)
    for v in flat.views:
        v[...] = rng.standard_normal(v.shape)
    views = [v.copy() for v in flat.views]
    opt = pyoptim.SGD(flat, lr=0.1, momentum=0.9)
    per_view = pyoptim.SGD(views, lr=0.1, momentum=0.9)
    assert len(opt.state) == 1
    for _ in range(4):
        for g in grads.views:
            g[...] = rng.standard_normal(g.shape)
        opt.step(grads)
        per_view.step(grads)  # the grad views, one per param

    for v, w in zip(flat.views, views):
        assert_close(v, w, (0, 0), "flat vs per view")


@needs_core
def test_state_is_keyed_by_index_and_by_param():
    p, q = np.zeros(3, np.float32), np.zeros(2, np.float32)
    opt = pyoptim.RMSprop([p, q], momentum=0.5, centered=True)
    assert opt.state[1] is not opt.state[q]
    assert dict(opt.state[1]).keys() == dict(opt.state[q]).keys()
    assert set(opt.state[p]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    assert opt.state[p]["step"] == 0
    opt.step([np.ones(3, np.float32), np.ones(2, np.float32)])
    assert opt.state[0]["step"] == opt.state[q]["step"] == 1
    assert len(opt.state) == 2 and list(opt.state) == [0, 1]
    with pytest.raises(KeyError):
        opt.state[np.zeros(3, np.float32)]


@needs_core
def test_add_param_group_takes_defaults_and_steps_with_the_rest():
    p, q = np.ones(3, np.float32), np.ones(2, np.float32)
    opt = pyoptim.SGD([p], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": q, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    opt.step([np.ones(3, np.float32), np.ones(2, np.float32)])
    np.testing.assert_array_equal(p, np.float32(1) - np.float32(0.1))
    np.testing.assert_array_equal(q, np.float32(1) - np.float32(0.5))


@needs_core
@pytest.mark.parametrize(("name", "cls", "implied"), [
    ("sgd", pyoptim.SGD, {}), ("momentum", pyoptim.SGD, {"momentum": 0.9}),
    ("nesterov", pyoptim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adagrad", pyoptim.Adagrad, {}), ("rmsprop", pyoptim.RMSprop, {}),
    ("adam", pyoptim.Adam, {}), ("AMSGrad", pyoptim.Adam, {"amsgrad": True}),
    ("AdamW", pyoptim.AdamW, {})])
def test_create_by_name(name, cls, implied):
    opt = pyoptim.create(name, np.zeros(3, np.float32), lr=0.5)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.5
    for key, value in implied.items():
        assert opt.param_groups[0][key] == value
    overridden = pyoptim.create(name, np.zeros(3, np.float32), weight_decay=0.25)
    assert overridden.param_groups[0]["weight_decay"] == 0.25


def test_create_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adabelief'.*'adam'"):
        pyoptim.create("adabelief", np.zeros(3, np.float32))


@needs_core
def test_torch_only_flags_are_accepted_and_ignored():
    rng = np.random.default_rng(10)
    results = []
    for flags in ({}, {"foreach": True, "fused": True, "capturable": True}):
        p = rng.standard_normal(8).astype(np.float32) * 0 + 1
        opt = pyoptim.Adam([p], lr=0.1, **flags)
        opt.step([np.full(8, 0.5, np.float32)])
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


@needs_core
def test_one_cycle_with_adagrad_is_refused_like_torch():
    with pytest.raises(ValueError, match="cycle_momentum"):
        pyoptim.Adagrad([np.zeros(2)], lr=pyoptim.schedules.OneCycleLR(0.1, total_steps=5))
    pyoptim.Adagrad([np.zeros(2)], lr=pyoptim.schedules.OneCycleLR(0.1, total_steps=5,
                                                                    cycle_momentum=False))


def test_every_optimizer_has_a_class():
    assert set(CLASSES) == set(_spec.OPTIMIZERS)
