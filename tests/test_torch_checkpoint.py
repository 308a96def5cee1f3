"""pyoptim.torch checkpoints: torch.optim's state dicts load into pyoptim.torch and back (through
torch.save / torch.load, as checkpoints travel), training then goes on as if uninterrupted; state
dtypes never change on load (torch issue 43706); refused checkpoints change nothing."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

import pyoptim
from test_torch_optim import (CENTERED, NOT_IN_TORCH, STEPS, TOLERANCES, TORCH_NAMES,
                              assert_same_state, groups_of, loss_of, make_data, make_model,
                              needs_core, pt, torch, train_step)

HALF = STEPS // 2
# per optimizer: hyperparameters other than the constructors' below, so that loading shows
KWARGS = {"SGD": dict(momentum=0.9), "RMSprop": dict(momentum=0.5, centered=True),
          "Adam": dict(amsgrad=True), "ASGD": dict(t0=3.0)}


def _tolerance(name):
    return CENTERED[torch.float64] if KWARGS.get(name, {}).get("centered") else \
        TOLERANCES[torch.float64]


def _through_a_file(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _build(module, name, model, lr=0.01, **kwargs):
    return getattr(module, name)(groups_of(model), lr=lr, **KWARGS.get(name, {}), **kwargs)


def _state_dtypes(opt):
    """The dtype of every state buffer of a pyoptim.torch optimizer (it has them from the start)."""
    if not isinstance(opt, pt.Optimizer):
        return None
    return [{name: b.dtype for name, b in buffers.items()} for buffers in opt._engine._buffers]


def _handover(name, first, second):
    """Twin models: `first` trains both for HALF steps; then a checkpoint of one goes into a
    fresh `second` optimizer, and both optimizers go on for HALF steps."""
    data = make_data(torch.float64)
    models = [make_model(torch.float64), make_model(torch.float64)]
    before = _build(first, name, models[0])
    reference = _build(first, name, models[1])
    for _ in range(HALF):
        train_step(models[0], before, data)
        train_step(models[1], reference, data)
    after = _build(second, name, models[0], lr=0.5)  # the checkpoint's lr (0.01) must win
    dtypes = _state_dtypes(after)
    after.load_state_dict(_through_a_file(before.state_dict()))
    assert [g["lr"] for g in after.param_groups] == [0.01, 0.01]
    assert _state_dtypes(after) == dtypes
    for _ in range(HALF):
        train_step(models[0], after, data)
        train_step(models[1], reference, data)
    return after, models[0], reference, models[1]


def _assert_unchanged(opt, before):
    """opt's state dict equals `before` (a deep copy taken earlier): groups and every tensor."""
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(after["state"][index][key], value), (index, key)


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_a_torch_optim_checkpoint_resumes_in_pyoptim_torch(name):
    ours, ours_model, theirs, theirs_model = _handover(name, torch.optim, pt)
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **_tolerance(name))


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_a_pyoptim_torch_checkpoint_resumes_in_torch_optim(name):
    theirs, theirs_model, ours, ours_model = _handover(name, pt, torch.optim)
    # torch.optim casts loaded state to the param dtype: ASGD's float32 eta and mu to float64
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), check_dtypes=False, **_tolerance(name))


@needs_core
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()) + sorted(NOT_IN_TORCH))
def test_resuming_from_a_checkpoint_is_bit_identical(name):
    data = make_data()
    straight_model, resumed_model = make_model(), make_model()
    straight = _build(pt, name, straight_model)
    first = _build(pt, name, resumed_model)
    for _ in range(HALF):
        train_step(straight_model, straight, data)
        train_step(resumed_model, first, data)
    resumed = _build(pt, name, resumed_model, lr=0.3)
    resumed.load_state_dict(_through_a_file(first.state_dict()))
    for _ in range(HALF):
        train_step(straight_model, straight, data)
        train_step(resumed_model, resumed, data)
    assert_same_state(resumed, straight, list(resumed_model.parameters()),
                      list(straight_model.parameters()), rtol=0, atol=0)


@needs_core
def test_checkpoint_tensors_load_as_their_values_whatever_their_storage():
    """A checkpoint's tensors are read by value: one stored negated (its negative bit set), not
    contiguous, or as a lazy zero tensor loads as the plain tensor does, bit for bit."""
    model = make_model()
    opt = pt.Adam(groups_of(model))
    train_step(model, opt, make_data())
    plain = copy.deepcopy(opt.state_dict())
    plain["state"][5]["exp_avg"] = torch.zeros(16)  # fc1.bias's
    odd = copy.deepcopy(plain)
    odd["state"][5]["exp_avg"] = torch._efficientzerotensor(16)
    exp_avg = odd["state"][4]["exp_avg"]  # fc1.weight's (16, 75)
    odd["state"][4]["exp_avg"] = torch._neg_view(exp_avg.neg())
    odd["state"][4]["exp_avg_sq"] = odd["state"][4]["exp_avg_sq"].t().contiguous().t()
    assert odd["state"][4]["exp_avg"].is_neg()
    assert not odd["state"][4]["exp_avg_sq"].is_contiguous()
    loaded = []
    for state_dict in (plain, odd):
        target = pt.Adam(groups_of(make_model()))
        target.load_state_dict(state_dict)
        loaded.append(target.state_dict())
    for index, entry in loaded[0]["state"].items():
        for key, value in entry.items():
            assert torch.equal(loaded[1]["state"][index][key], value), (index, key)


@needs_core
def test_the_state_dict_has_torchs_layout():
    models = [make_model(), make_model()]
    ours, theirs = pt.Adam(groups_of(models[0])), torch.optim.Adam(groups_of(models[1]))
    for model, opt in zip(models, (ours, theirs)):
        train_step(model, opt, make_data())
    mine, other = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(other) == ["state", "param_groups"]
    assert mine["param_groups"] == other["param_groups"]
    assert list(mine["state"]) == list(other["state"])
    for index, entry in other["state"].items():
        assert list(mine["state"][index]) == list(entry)
        for key, value in entry.items():
            assert type(mine["state"][index][key]) is type(value)
            assert mine["state"][index][key].dtype == value.dtype
            assert mine["state"][index][key].shape == value.shape


@needs_core
def test_16bit_params_keep_float32_state_through_a_checkpoint():
    """bfloat16 params, float32 state (the default): the checkpoint holds float32 state and a
    resumed optimizer keeps it, to the bit."""
    model = make_model(torch.bfloat16)
    opt = pt.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        train_step(model, opt, make_data(torch.bfloat16))
    sd = _through_a_file(opt.state_dict())
    assert all(e["exp_avg"].dtype == torch.float32 for e in sd["state"].values())
    fresh = pt.Adam(model.parameters(), lr=0.01)
    fresh.load_state_dict(sd)
    for p in model.parameters():
        for name in ("exp_avg", "exp_avg_sq"):
            assert fresh.state[p][name].dtype == torch.float32
            assert torch.equal(fresh.state[p][name], opt.state[p][name])


@needs_core
def test_a_checkpoint_with_other_state_dtypes_is_refused_never_cast():
    """torch.optim keeps bfloat16 state for bfloat16 params: pyoptim.torch (float32 state by
    default) refuses it, unchanged; built with state_dtype=torch.bfloat16 it loads it."""
    models = [make_model(torch.bfloat16), make_model(torch.bfloat16)]
    theirs = torch.optim.Adam(models[0].parameters(), lr=0.01)
    for _ in range(3):
        train_step(models[0], theirs, make_data(torch.bfloat16))
    sd = _through_a_file(theirs.state_dict())
    ours = pt.Adam(models[1].parameters(), lr=0.01)
    train_step(models[1], ours, make_data(torch.bfloat16))
    before = copy.deepcopy(ours.state_dict())
    with pytest.raises(pyoptim.CheckpointError, match="never cast"):
        ours.load_state_dict(sd)
    _assert_unchanged(ours, before)

    matching = pt.Adam(models[1].parameters(), lr=0.01, state_dtype=torch.bfloat16)
    matching.load_state_dict(sd)
    for p, q in zip(models[1].parameters(), models[0].parameters()):
        for name in ("exp_avg", "exp_avg_sq"):
            assert matching.state[p][name].dtype == torch.bfloat16
            assert torch.equal(matching.state[p][name], theirs.state[q][name])


@needs_core
def test_refused_checkpoints_change_nothing():
    model = make_model()
    opt = pt.Adam(groups_of(model), lr=0.01)
    train_step(model, opt, make_data())
    good = _through_a_file(opt.state_dict())
    before = copy.deepcopy(opt.state_dict())

    one_group = copy.deepcopy(good)
    one_group["param_groups"] = one_group["param_groups"][:1]
    wrong_shape = copy.deepcopy(good)
    wrong_shape["state"][0]["exp_avg"] = torch.zeros(2)
    bad_value = copy.deepcopy(good)
    bad_value["param_groups"][1]["betas"] = (1.5, 0.999)
    sgd = _through_a_file(pt.SGD(groups_of(make_model()), momentum=0.9).state_dict())
    for bad in (one_group, wrong_shape, bad_value, sgd):
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        _assert_unchanged(opt, before)


@needs_core
def test_a_state_dict_saves_what_was_written_to_opt_state_as_torchs_does():
    """A tensor assigned to an opt.state entry, a step count assigned and a key of your own are
    in the state_dict() taken right after (torch's has them), before any step: pyoptim.torch
    saved the state the kernels used and refused the checkpoint's key of your own on load. The
    checkpoint then resumes in pyoptim.torch and in torch.optim, and both runs go on alike."""
    models = [make_model(), make_model()]
    opts = [pt.Adam(models[0].parameters(), lr=0.01),
            torch.optim.Adam(models[1].parameters(), lr=0.01)]
    data = make_data()
    saved = []
    for model, opt in zip(models, opts):
        train_step(model, opt, data)
        weight = model.fc1.weight
        opt.state[weight]["exp_avg"] = torch.full_like(weight, 0.5)
        opt.state[weight]["step"] = torch.tensor(5.0)
        opt.state[weight]["note"] = 7  # (torch's load turns a str into its generator's repr)
        saved.append(_through_a_file(opt.state_dict()))
    index = [p is models[0].fc1.weight for p in models[0].parameters()].index(True)
    for checkpoint in saved:
        entry = checkpoint["state"][index]
        assert entry["note"] == 7 and float(entry["step"]) == 5
        assert torch.equal(entry["exp_avg"], torch.full_like(models[0].fc1.weight, 0.5))
    resumed = []
    for cls, checkpoint in ((pt.Adam, saved[0]), (torch.optim.Adam, saved[1])):
        model = copy.deepcopy(models[0])
        opt = cls(model.parameters(), lr=0.01)
        opt.load_state_dict(checkpoint)
        assert opt.state[model.fc1.weight]["note"] == 7
        resumed.append((model, opt))
    runs = [*zip(models, opts), *resumed]
    for _ in range(3):
        for model, opt in runs:
            train_step(model, opt, data)
    for model, _ in runs[1:]:
        for p, q in zip(models[0].parameters(), model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    for p, q in zip(models[0].parameters(), runs[2][0].parameters()):  # pyoptim's: to the bit
        assert torch.equal(p, q)


@needs_core
def test_metadata_a_state_dict_hook_adds_is_ignored_on_load_as_by_torch():
    """torch's way to put metadata in an optimizer checkpoint is a state_dict post-hook that
    adds a top-level key; torch.optim's load ignores keys other than state and param_groups.
    pyoptim.torch refused such a checkpoint, its own included."""
    model = make_model()
    opt = pt.Adam(model.parameters(), lr=0.01)

    def add_metadata(optimizer, state_dict):
        state_dict["meta"] = {"epoch": 3}
        return state_dict

    opt.register_state_dict_post_hook(add_metadata)
    train_step(model, opt, make_data())
    saved = _through_a_file(opt.state_dict())
    assert saved["meta"] == {"epoch": 3}
    fresh = pt.Adam(model.parameters(), lr=0.01)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh.state[model.fc1.weight]["exp_avg"].numpy(),
                                  opt.state[model.fc1.weight]["exp_avg"].numpy())
    theirs = torch.optim.Adam(model.parameters(), lr=0.01)
    theirs.load_state_dict(saved)  # and torch's takes it too
    assert float(theirs.state[model.fc1.weight]["step"]) == 1


@needs_core
def test_load_hooks_and_scheduler_keys_as_torch():
    """Load pre/post hooks run; keys the optimizer does not know (a scheduler's initial_lr, the
    user's) come from the checkpoint, as with torch.optim."""
    model = make_model()
    opt = pt.AdamW(groups_of(model), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(4):
        train_step(model, opt, make_data())
        sched.step()
    opt.param_groups[1]["tag"] = "head"
    sd = _through_a_file(opt.state_dict())

    fresh = pt.AdamW(groups_of(model), lr=0.5)
    calls = []
    fresh.register_load_state_dict_pre_hook(lambda o, s: calls.append("pre"))
    fresh.register_load_state_dict_post_hook(lambda o: calls.append("post"))
    fresh.load_state_dict(sd)
    assert calls == ["pre", "post"]
    assert [g["initial_lr"] for g in fresh.param_groups] == [0.01, 0.01]
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([1e-4, 1e-4])
    assert fresh.param_groups[1]["tag"] == "head" and "tag" not in fresh.param_groups[0]
    resumed = torch.optim.lr_scheduler.StepLR(fresh, step_size=2, gamma=0.1)
    resumed.load_state_dict(sched.state_dict())
    for _ in range(3):
        resumed.step()
        sched.step()
        assert [g["lr"] for g in fresh.param_groups] == [g["lr"] for g in opt.param_groups]
    assert fresh.param_groups[0]["lr"] == pytest.approx(1e-5)
    np.testing.assert_array_equal(fresh.state[model.fc1.weight]["exp_avg"].numpy(),
                                  opt.state[model.fc1.weight]["exp_avg"].numpy())
