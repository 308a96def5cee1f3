"""Optimizer checkpoints: checking a state dict against an optimizer, and the .npz file format.

A state dict (torch's layout, Optimizer.state_dict())::

    {"state": {index: {"step": int, <state name>: array, ...}, ...},
     "param_groups": [{<hyperparameters>, "params": [index, ...]}, ...],
     "pyoptim": {"format": "pyoptim.optimizer", "version": 1, "optimizer": "Adam",
                 "step_count": int, "schedules": {group index: {"name", "state"}}}}

Loading checks everything first and changes nothing if anything is wrong: the optimizer kind
and format version (when the "pyoptim" section is there; a torch state dict has none), the
number of groups and of params per group, every hyperparameter (known names, valid values),
every state entry (known names, the param's shape, exactly the optimizer's state dtype, a
step >= 0, the buffers that the step and options need), and the schedules. Only then are values
copied into the existing state buffers, which keep their dtype.

The .npz file holds the arrays as ``state/<index>/<name>`` (bfloat16 as its uint16 bits) and
everything else as JSON in ``pyoptim.json``; it is read with allow_pickle=False.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Callable, Mapping

import numpy as np

from . import _arrays, _memory
from ._optimizer import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Optimizer
from .schedules import Schedule

META_KEY = "pyoptim.json"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the optimizer it is loaded into."""


def _refuse(message: str):
    raise CheckpointError(f"checkpoint refused: {message}; the optimizer was left unchanged")


def _host_array(value, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if _arrays._is_torch(value):
        return _arrays.host_view(_arrays.torch_values(value.detach().cpu()), where)
    try:
        return _arrays.host_view(value, where)
    except TypeError:
        _refuse(f"{where} is a {type(value).__name__}, not an array")


def _step_value(value, where: str) -> int:
    if _arrays._is_torch(value) or isinstance(value, np.ndarray):
        value = _host_array(value, where)
        if value.size != 1:
            _refuse(f"{where} must be a number")
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _refuse(f"{where} must be an integer >= 0, got {type(value).__name__}")
    if not (value >= 0 and float(value).is_integer()):
        _refuse(f"{where} must be an integer >= 0, got {value!r}")
    return int(value)


def plan_load(opt: Optimizer, state_dict: Mapping) -> Callable[[], None]:
    """Checks state_dict against opt; returns the function that applies it."""
    if not isinstance(state_dict, Mapping):
        _refuse(f"expected a dict, got {type(state_dict).__name__}")
    unknown = set(state_dict) - {"state", "param_groups", "pyoptim"}
    if unknown or "state" not in state_dict or "param_groups" not in state_dict:
        _refuse("a state dict has the keys 'state' and 'param_groups' (and 'pyoptim'), got "
                f"{sorted(map(str, state_dict))}")
    kind = type(opt).__name__
    meta = state_dict.get("pyoptim")
    step_count = None
    saved_schedules: dict = {}
    if meta is not None:
        if not isinstance(meta, Mapping) or meta.get("format") != CHECKPOINT_FORMAT:
            _refuse("its 'pyoptim' section is not a pyoptim optimizer checkpoint")
        if meta.get("version") != CHECKPOINT_VERSION:
            _refuse(f"format version {meta.get('version')!r}; this pyoptim reads version "
                    f"{CHECKPOINT_VERSION}")
        if meta.get("optimizer") != kind:
            _refuse(f"it is the state of a {meta.get('optimizer')} optimizer, this is a {kind}")
        step_count = _step_value(meta.get("step_count"), "pyoptim.step_count")
        saved_schedules = {int(k): v for k, v in dict(meta.get("schedules") or {}).items()}

    groups = state_dict["param_groups"]
    if not isinstance(groups, (list, tuple)) or len(groups) != len(opt.param_groups):
        _refuse(f"it has {len(groups) if isinstance(groups, (list, tuple)) else '?'} param groups, "
                f"the optimizer {len(opt.param_groups)}")
    index_map: dict[int, int] = {}  # checkpoint index -> param index
    new_groups = []
    schedule_loads = []
    first = 0
    for g, (saved, group) in enumerate(zip(groups, opt.param_groups)):
        where = f"param_groups[{g}]"
        if not isinstance(saved, Mapping) or "params" not in saved:
            _refuse(f"{where} is not a param group")
        indices = list(saved["params"])
        if len(indices) != len(group["params"]):
            _refuse(f"{where} has {len(indices)} params, the optimizer's {len(group['params'])}")
        for j, index in enumerate(indices):
            if index in index_map:
                _refuse(f"param index {index} appears twice")
            index_map[index] = first + j
        first += len(indices)
        torch_keys = {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}
        unknown = set(saved) - set(group) - torch_keys
        if unknown:
            _refuse(f"{where} has hyperparameters this {kind} does not know: {sorted(unknown)}")
        merged = dict(group)
        for key in group:
            if key == "params" or key not in saved:
                continue
            value = saved[key]
            if isinstance(group[key], tuple) and isinstance(value, (list, tuple)):
                value = tuple(value)  # betas, etas, step_sizes
            if key == "lr" and isinstance(group["lr"], Schedule):
                continue  # the schedule stays; its state is loaded below
            merged[key] = value
        schedule = group["lr"] if isinstance(group["lr"], Schedule) else None
        if schedule is not None:
            entry = saved_schedules.get(g)
            if entry is None:
                _refuse(f"{where}: this optimizer's lr is a {type(schedule).__name__} schedule, "
                        "the checkpoint's a number")
            if entry.get("name") != type(schedule).__name__:
                _refuse(f"{where}: the checkpoint's lr schedule is a {entry.get('name')}, this "
                        f"optimizer's a {type(schedule).__name__}")
            schedule_loads.append((schedule, dict(entry.get("state") or {})))
        elif g in saved_schedules:
            _refuse(f"{where}: the checkpoint's lr is a {saved_schedules[g].get('name')} "
                    "schedule, this optimizer's a number")
        try:
            opt._check_group(merged, where)
        except (TypeError, ValueError) as e:
            _refuse(str(e))
        new_groups.append(merged)
    if set(index_map) != set(range(len(index_map))):
        _refuse("param indices must be 0, 1, ... (one per param)")

    # schedule states: checked on copies
    for schedule, state in schedule_loads:
        trial = _copy_schedule(schedule)
        try:
            trial.load_state_dict(state)
        except (TypeError, ValueError, KeyError) as e:
            _refuse(f"schedule state: {e}")

    entries = state_dict["state"]
    if not isinstance(entries, Mapping):
        _refuse("'state' must be a dict")
    if set(entries) - set(index_map):
        _refuse(f"'state' has entries for unknown params {sorted(set(entries) - set(index_map))}")
    steps = np.zeros(len(opt._params), np.int64)
    values: list[dict] = [{} for _ in opt._params]
    host: dict[str, dict[int, np.ndarray]] = {name: {} for name in opt._spec.host_states}
    state_names = set(opt._spec.states)
    for index, entry in entries.items():
        i = index_map[index]
        where = f"state of params[{i}]"
        if not isinstance(entry, Mapping):
            _refuse(f"{where} is not a dict")
        hp_needed = set(opt._spec.needed_states(opt._hyperparameters(new_groups[opt._group_of[i]])))
        unknown = set(entry) - state_names - {"step"} - set(host)
        if unknown:
            _refuse(f"{where} has buffers a {kind} does not keep: {sorted(unknown)}")
        if "step" in entry:
            steps[i] = _step_value(entry["step"], f"{where}: step")
        else:
            steps[i] = opt._infer_step(entry)
        shape = _memory.shape_of(opt._views[i])
        dtype = opt._state_dtypes[i]
        for name in state_names & set(entry):
            value = entry[name]
            if value is None:
                continue
            array = _host_array(value, f"{where}: {name}")
            if tuple(array.shape) != shape:
                _refuse(f"{where}: '{name}' has shape {tuple(array.shape)}, the param {shape}")
            if array.dtype != dtype:
                _refuse(f"{where}: '{name}' has dtype {array.dtype}, but this optimizer keeps it "
                        f"in {dtype} (state_dtype); state is never cast on load")
            values[i][name] = array
        for name in host:
            if entry.get(name) is None:
                continue
            array = _host_array(entry[name], f"{where}: {name}")
            if array.size != 1 or array.dtype != opt._host_dtype:
                _refuse(f"{where}: '{name}' must be one {opt._host_dtype} value (torch's scalar "
                        f"state), got {array.dtype} of shape {array.shape}; state is never cast "
                        "on load")
            host[name][i] = array.reshape(())
        missing = sorted(n for n in hp_needed | set(host)
                         if n not in values[i] and i not in host.get(n, {}))
        if missing and steps[i] > 0:
            _refuse(f"{where}: step {steps[i]} but no {', '.join(missing)}")
    if step_count is None:
        step_count = int(steps.max()) if steps.size else 0

    def apply():
        for group, merged in zip(opt.param_groups, new_groups):
            group.update({k: v for k, v in merged.items() if k != "params"})
        for schedule, state in schedule_loads:
            schedule.load_state_dict(state)
        opt._ensure_states([opt._hyperparameters(g) for g in opt.param_groups])
        for i, buffers in enumerate(opt._buffers):
            for name, array in buffers.items():
                if name in values[i]:
                    _memory.copy_from_host(array, values[i][name])
                else:
                    group = opt.param_groups[opt._group_of[i]]
                    _memory.fill(array, opt._initial_value(name, group))
        for g, group in enumerate(opt.param_groups):
            initial = opt._spec.initial_host(opt._hyperparameters(group), opt._host_dtype)
            members = range(len(opt._params))[opt._members(g)]
            for name, value in initial.items():
                for i in members:
                    opt._host[name][i] = host[name].get(i, value)
        opt._steps[...] = steps
        opt._step_count = step_count
        opt._recount_group_steps()

    return apply


def _copy_schedule(schedule: Schedule) -> Schedule:
    import copy

    return copy.deepcopy(schedule)


# ---------------------------------------------------------------------------------------------
# .npz files


def _to_json(value):
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return float(value["float"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def save(opt: Optimizer, path) -> None:
    sd = opt.state_dict()
    arrays = {}
    entries = {}
    for index, entry in sd["state"].items():
        described = {"step": entry["step"], "buffers": {}}
        for name, array in entry.items():
            if name == "step":
                continue
            dtype = array.dtype.name
            stored = array.view(np.uint16) if dtype == "bfloat16" else array
            arrays[f"state/{index}/{name}"] = stored
            described["buffers"][name] = dtype
        entries[str(index)] = described
    meta = {
        **sd["pyoptim"],
        "param_groups": sd["param_groups"],
        "state": entries,
    }
    arrays[META_KEY] = np.array(json.dumps(_to_json(meta)))
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays)


def read(path) -> dict:
    """The state dict stored in a file written by save()."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if META_KEY not in data.files:
                _refuse(f"{path} is not a pyoptim optimizer checkpoint (no {META_KEY})")
            meta = _from_json(json.loads(str(data[META_KEY])))
            if not isinstance(meta, dict):
                _refuse(f"{path}: {META_KEY} is not an object")
            state = {}
            for index, described in dict(meta.pop("state", {})).items():
                entry = {"step": described["step"]}
                for name, dtype in described["buffers"].items():
                    key = f"state/{index}/{name}"
                    if key not in data.files:
                        _refuse(f"{path} lacks {key}")
                    array = data[key]
                    if dtype == "bfloat16":
                        array = array.view(_memory.bfloat16())
                    elif array.dtype.name != dtype:
                        _refuse(f"{path}: {key} has dtype {array.dtype}, its description says "
                                f"{dtype}")
                    entry[name] = array
                state[int(index)] = entry
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        if isinstance(e, CheckpointError):
            raise
        _refuse(f"cannot read {path}: {e}")
    groups = meta.pop("param_groups", None)
    for group in groups or []:  # JSON has no tuples: betas, etas, step_sizes
        for key, value in group.items():
            if key != "params" and isinstance(value, list):
                group[key] = tuple(value)
    return {"state": state, "param_groups": groups, "pyoptim": meta}


__all__ = ["CheckpointError", "plan_load", "save", "read"]
