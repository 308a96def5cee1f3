"""Checkpoints: state_dict()/load_state_dict() in torch's layout and save()/load() to .npz.

Resuming continues bit for bit as if never interrupted (every class, 16-bit params and state,
schedules); loading never casts a state buffer; every mismatch (kind, version, format, groups,
params, shapes, dtypes, names, values, schedules) is refused and changes nothing."""

from __future__ import annotations

import copy

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu
from pyoptim.schedules import CosineAnnealingLR, ReduceLROnPlateau
from harness import assert_close

BACKENDS = ["cpu", "numpy"]
CONFIGS = {
    "sgd": (pyoptim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adagrad": (pyoptim.Adagrad, {"lr": 0.05, "initial_accumulator_value": 0.1,
                                  "lr_decay": 0.01}),
    "rmsprop": (pyoptim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
    "adam": (pyoptim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    "adamw": (pyoptim.AdamW, {"lr": 0.01}),
    "adamax": (pyoptim.Adamax, {"lr": 0.01, "weight_decay": 0.01}),
    "nadam": (pyoptim.NAdam, {"lr": 0.01, "decoupled_weight_decay": True,
                              "weight_decay": 0.01}),  # mu_product: a scalar state
    "radam": (pyoptim.RAdam, {"lr": 0.01}),
    "adadelta": (pyoptim.Adadelta, {"lr": 0.5}),
    "asgd": (pyoptim.ASGD, {"lr": 0.01, "t0": 3.0}),  # eta, mu: scalar states; averaging
    "rprop": (pyoptim.Rprop, {"lr": 0.01, "etas": (0.4, 1.3)}),
    "lion": (pyoptim.Lion, {"lr": 1e-3, "weight_decay": 0.1}),
}


def _require(backend):
    if backend == "cpu" and not _cpu.available():
        pytest.skip("the compiled extension is not built")


def _make_params(seed=0, state16=False):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 5)).astype(np.float32),
            rng.standard_normal(9).astype(ml_dtypes.bfloat16),
            rng.standard_normal(3).astype(np.float16)]


def _grads(rng, params):
    return [rng.standard_normal(p.shape).astype(np.float32 if p.dtype != np.float16
                                                else np.float16) for p in params]


def _build(name, params, backend, schedule=True, **extra):
    cls, kwargs = CONFIGS[name]
    kwargs = dict(kwargs, **extra)
    lr = kwargs.pop("lr")
    second_lr = CosineAnnealingLR(lr, T_max=7) if schedule else lr
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": second_lr}]
    return cls(groups, lr=lr, backend=backend, **kwargs)


def _assert_same_state(a, b, pa, pb):
    for x, y in zip(pa, pb):
        assert_close(x, y, (0, 0), "param")
    for i in range(len(pa)):
        assert a.state[i].keys() == b.state[i].keys()
        for k in a.state[i]:
            if k == "step":
                assert a.state[i][k] == b.state[i][k]
            else:
                assert a.state[i][k].dtype == b.state[i][k].dtype
                assert_close(a.state[i][k], b.state[i][k], (0, 0), k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("via", ["state_dict", "npz"])
@pytest.mark.parametrize("state_dtype", [None, "param"], ids=["fp32-state", "16bit-state"])
def test_resume_continues_bit_for_bit(backend, name, via, state_dtype, tmp_path):
    _require(backend)
    extra = {}
    params = _make_params()
    if state_dtype == "param":  # 16-bit state for the 16-bit params: one dtype per optimizer
        params = [p.astype(ml_dtypes.bfloat16) for p in params]
        extra["state_dtype"] = ml_dtypes.bfloat16
    rng = np.random.default_rng(1)
    grads = [_grads(rng, params) for _ in range(10)]
    grads = [[g.astype(np.float32) if p.dtype == ml_dtypes.bfloat16 else g
              for g, p in zip(gs, params)] for gs in grads]
    straight_params = [p.copy() for p in params]
    straight = _build(name, straight_params, backend, **extra)
    for gs in grads:
        straight.step(gs)

    first_params = [p.copy() for p in params]
    first = _build(name, first_params, backend, **extra)
    for gs in grads[:6]:
        first.step(gs)
    if via == "npz":
        first.save(tmp_path / "ckpt.npz")
    else:
        saved = first.state_dict()
    resumed_params = [p.copy() for p in first_params]
    for gs in grads[6:8]:  # the first run goes on: the saved state must not move with it
        first.step(gs)
    resumed = _build(name, resumed_params, backend, **extra)
    if via == "npz":
        resumed.load(tmp_path / "ckpt.npz")
    else:
        resumed.load_state_dict(saved)
    assert resumed.get_lr() == pytest.approx(
        [CONFIGS[name][1]["lr"], CosineAnnealingLR(CONFIGS[name][1]["lr"], T_max=7)(6)])
    for gs in grads[6:]:
        resumed.step(gs)
    _assert_same_state(resumed, straight, resumed_params, straight_params)
    assert resumed.state_dict()["pyoptim"]["step_count"] == 10


def test_state_dict_is_torchs_layout():
    p = [np.zeros(3, np.float32), np.zeros((2, 2), np.float32)]
    opt = pyoptim.Adam([{"params": [p[0]]}, {"params": [p[1]], "lr": 0.1}], backend="numpy")
    opt.step([np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "pyoptim"}
    assert list(sd["state"]) == [0, 1]
    assert set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq"}
    assert sd["state"][1]["step"] == 1 and sd["state"][1]["exp_avg"].shape == (2, 2)
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][1]["lr"] == 0.1
    assert sd["pyoptim"]["optimizer"] == "Adam" and sd["pyoptim"]["version"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_loading_never_casts_state(backend):
    _require(backend)
    p16 = [np.zeros(4, np.float16)]
    keeps16 = pyoptim.Adam([p16[0].copy()], state_dtype=np.float16, backend=backend)
    keeps16.step([np.ones(4, np.float16)])
    keeps32 = pyoptim.Adam([p16[0].copy()], backend=backend)
    keeps32.step([np.ones(4, np.float16)])
    before = keeps32.state_dict()
    with pytest.raises(pyoptim.CheckpointError, match="dtype float16.*float32.*never cast"):
        keeps32.load_state_dict(keeps16.state_dict())
    assert keeps32.state[0]["exp_avg"].dtype == np.float32
    _assert_dicts_equal(keeps32.state_dict(), before)
    other16 = pyoptim.Adam([p16[0].copy()], state_dtype=np.float16, backend=backend)
    other16.load_state_dict(keeps16.state_dict())
    assert other16.state[0]["exp_avg"].dtype == np.float16


def _assert_dicts_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["pyoptim"] == b["pyoptim"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            if k == "step":
                assert v == b["state"][i][k]
            else:
                assert v.dtype == b["state"][i][k].dtype
                np.testing.assert_array_equal(v, b["state"][i][k])


def _mutations():
    """(description, function changing a state dict, message pattern)."""
    def drop_pyoptim_version(sd):
        sd["pyoptim"]["version"] = 2

    def other_format(sd):
        sd["pyoptim"]["format"] = "something else"

    def other_kind(sd):
        sd["pyoptim"]["optimizer"] = "SGD"

    def extra_group(sd):
        sd["param_groups"].append(dict(sd["param_groups"][0], params=[9]))

    def fewer_params(sd):
        sd["param_groups"][0]["params"] = []

    def wrong_shape(sd):
        sd["state"][0]["exp_avg"] = np.zeros(5, np.float32)

    def wrong_dtype(sd):
        sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].astype(np.float64)

    def unknown_buffer(sd):
        sd["state"][0]["momentum_buffer"] = np.zeros(4, np.float32)

    def unknown_hyperparameter(sd):
        sd["param_groups"][0]["momentum"] = 0.9

    def invalid_hyperparameter(sd):
        sd["param_groups"][0]["lr"] = -1.0

    def negative_step(sd):
        sd["state"][0]["step"] = -3

    def fractional_step(sd):
        sd["state"][0]["step"] = 2.5

    def missing_buffer(sd):
        del sd["state"][0]["exp_avg_sq"]

    def unknown_param(sd):
        sd["state"][7] = sd["state"][0]

    def schedule_mismatch(sd):
        sd["pyoptim"]["schedules"] = {}

    def schedule_kind(sd):
        sd["pyoptim"]["schedules"][1]["name"] = "StepLR"

    def schedule_state(sd):
        sd["pyoptim"]["schedules"][1]["state"] = {"bogus": 1}

    def not_a_dict(sd):
        sd["state"] = [1, 2]

    def extra_key(sd):
        sd["epoch"] = 3

    return [
        ("version", drop_pyoptim_version, "format version 2"),
        ("format", other_format, "not a pyoptim optimizer checkpoint"),
        ("kind", other_kind, "state of a SGD optimizer, this is a Adam"),
        ("groups", extra_group, "2 param groups|3 param groups"),
        ("params", fewer_params, "has 0 params"),
        ("shape", wrong_shape, r"shape \(5,\), the param \(4,\)"),
        ("dtype", wrong_dtype, "dtype float64"),
        ("buffer", unknown_buffer, "momentum_buffer"),
        ("hyperparameter", unknown_hyperparameter, "momentum"),
        ("value", invalid_hyperparameter, "lr"),
        ("negative step", negative_step, "step"),
        ("fractional step", fractional_step, "step"),
        ("missing buffer", missing_buffer, "exp_avg_sq"),
        ("unknown param", unknown_param, "unknown params"),
        ("schedule", schedule_mismatch, "schedule"),
        ("schedule kind", schedule_kind, "StepLR"),
        ("schedule state", schedule_state, "bogus|state"),
        ("state", not_a_dict, "'state' must be a dict"),
        ("extra key", extra_key, "epoch"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("what", "mutate", "pattern"), _mutations(), ids=lambda x: None)
def test_a_mismatched_checkpoint_is_refused_and_changes_nothing(backend, what, mutate,
                                                                pattern):
    _require(backend)
    rng = np.random.default_rng(2)

    def make():
        params = [rng.standard_normal(4).astype(np.float32),
                  rng.standard_normal(3).astype(np.float32)]
        opt = pyoptim.Adam([{"params": params[:1]},
                            {"params": params[1:], "lr": ReduceLROnPlateau(0.1, patience=0)}],
                           backend=backend)
        for _ in range(2):
            opt.step([rng.standard_normal(4).astype(np.float32),
                      rng.standard_normal(3).astype(np.float32)])
        opt.param_groups[1]["lr"].step(1.0)
        opt.param_groups[1]["lr"].step(2.0)
        return opt, params

    source, _ = make()
    target, params = make()
    sd = copy.deepcopy(source.state_dict())
    mutate(sd)
    before = target.state_dict()
    before_params = [p.copy() for p in params]
    schedule_before = target.param_groups[1]["lr"].state_dict()
    with pytest.raises(pyoptim.CheckpointError, match=pattern) as info:
        target.load_state_dict(sd)
    assert "left unchanged" in str(info.value)
    _assert_dicts_equal(target.state_dict(), before)
    assert target.param_groups[1]["lr"].state_dict() == schedule_before
    for p, q in zip(params, before_params):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("via", ["state_dict", "npz"])
def test_a_schedule_state_is_restored(via, tmp_path):
    p = [np.zeros(2, np.float32)]
    sched = ReduceLROnPlateau(1.0, patience=1, factor=0.5)
    opt = pyoptim.SGD(p, lr=sched, backend="numpy")
    for metric in (5, 5, 5, 5):
        sched.step(metric)
    assert opt.get_lr() == [0.5]
    assert sched.state_dict()["best"] == 5.0
    fresh = pyoptim.SGD([np.zeros(2, np.float32)], lr=ReduceLROnPlateau(1.0, patience=1,
                                                                          factor=0.5),
                        backend="numpy")
    assert fresh.param_groups[0]["lr"].state_dict()["best"] == np.inf
    if via == "npz":
        opt.save(tmp_path / "sched.npz")
        fresh.load(tmp_path / "sched.npz")
    else:
        fresh.load_state_dict(opt.state_dict())
    assert fresh.get_lr() == [0.5]
    assert fresh.param_groups[0]["lr"].state_dict() == sched.state_dict()


def test_loaded_hyperparameters_replace_the_current_ones():
    a = pyoptim.SGD([np.zeros(2, np.float32)], lr=0.5, momentum=0.9, backend="numpy")
    b = pyoptim.SGD([np.zeros(2, np.float32)], lr=0.1, backend="numpy")
    b.load_state_dict(a.state_dict())
    assert b.param_groups[0]["lr"] == 0.5 and b.param_groups[0]["momentum"] == 0.9
    assert "momentum_buffer" in b.state[0]  # allocated for the loaded option


def test_npz_file_has_a_version_and_no_pickle(tmp_path):
    opt = pyoptim.Adam([np.zeros(3, ml_dtypes.bfloat16)], backend="numpy")
    opt.step([np.ones(3, np.float32)])
    opt.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert "pyoptim.json" in data.files
        assert '"version": 1' in str(data["pyoptim.json"])
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(pyoptim.CheckpointError, match="cannot read|not a pyoptim"):
        opt.load(tmp_path / "b.npy")
    np.savez(tmp_path / "c.npz", x=np.zeros(3))
    with pytest.raises(pyoptim.CheckpointError, match="not a pyoptim"):
        opt.load(tmp_path / "c.npz")


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam",
                                  "RAdam", "Adadelta", "ASGD", "Rprop"])
def test_a_torch_state_dict_loads_and_continues_like_torch(name):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    _require("cpu")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(6).astype(np.float32)
    tp = torch.nn.Parameter(torch.tensor(p0))
    kwargs = {"momentum": 0.9} if name in ("SGD", "RMSprop") else \
        {"t0": 2.0} if name == "ASGD" else {}
    topt = getattr(torch.optim, name)([tp], lr=0.01, **kwargs)
    for _ in range(3):
        tp.grad = torch.tensor(rng.standard_normal(6).astype(np.float32))
        topt.step()
    p = tp.detach().numpy().copy()
    opt = getattr(pyoptim, name)([p], lr=0.5, **kwargs)
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["lr"] == 0.01
    for _ in range(3):
        g = rng.standard_normal(6).astype(np.float32)
        opt.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=2e-6, atol=1e-7)
