"""The machinery of pyoptim's optimizer classes (pyoptim.optim): param groups, state, the step
over all arrays, clipping and the non-finite skip, schedules, checkpoints.

A step over host arrays is one call into C++: a ``_core.Plan`` holds every param and state
buffer of the optimizer, checked once when it is built, and a step checks only the grads, then
updates every param in one kernel call per (dtype combination, flags) pair, each one parallel
region over all elements of all arrays (csrc/plan.cpp). The hyperparameters of each param group
become one row of per-step scalars; flags that differ between groups (a group without weight
decay, say) make separate kernel calls. Clipping and loss-scale unscaling never rewrite the
gradients: their factor multiplies the gradient inside the update (the scalar ``grad_factor``),
and ``clip_value`` clamps it there (csrc/kernels.h, gradient_prologue).

Per-step Python work is per group, not per array, except that grads that are not NumPy arrays
(PyTorch tensors...) are viewed as NumPy arrays one by one.
"""

from __future__ import annotations

import math
import numbers
import operator
import threading
from typing import Any, Iterable, Mapping

import numpy as np

from . import _arrays, _checks, _cpu, _memory, _spec, reference
from .flat import FlatBuffer
from .schedules import Schedule

CHECKPOINT_FORMAT = "pyoptim.optimizer"
CHECKPOINT_VERSION = 1

# torch.optim constructor flags that choose torch's implementation, not the math. pyoptim accepts
# them (so that torch code runs unchanged) and ignores them; differentiable=True is refused.
TORCH_ONLY_FLAGS = ("foreach", "fused", "capturable", "differentiable")

BACKENDS = (None, "cpu", "cuda", "numpy")

# Passed as params: an optimizer with no param group yet, which gets them from add_param_group()
# (pyoptim.torch builds its optimizers so, as torch.optim.Optimizer adds its groups one by one).
NO_PARAMS = object()


class GradAddresses:
    """A step's host gradients by address, for callers that have checked them and that the
    params' memory did not move (pyoptim.torch): ``addresses[i]`` (a list, or a uint64 array)
    is 0 (param i takes no step) or the address of a C-contiguous buffer of param i's shape and
    dtype; ``owners`` holds the objects that own that memory, so that it lives until the step
    returns (the kernels run without the GIL). The C++ backend takes them without making a
    NumPy array of each (Plan.set_grad_addresses)."""

    __slots__ = ("addresses", "owners", "mark_written")

    def __init__(self, addresses, owners, mark_written=None):
        self.addresses = addresses
        self.owners = owners
        # what moves on the autograd version counters of the params written (those with a
        # grad) after the step, in place of _arrays.mark_written; None: that
        self.mark_written = mark_written


_data_ptr = operator.methodcaller("data_ptr")  # a torch tensor's address


class ParamState(Mapping):
    """The state of one param: ``'step'`` (the number of updates it has had) and its state
    buffers by torch name. Read-only: update the arrays in place, or use load_state_dict()."""

    __slots__ = ("_opt", "_index")

    def __init__(self, opt: "Optimizer", index: int):
        self._opt = opt
        self._index = index

    def __getitem__(self, key):
        if key == "step":
            return int(self._opt._steps[self._index])
        if key in self._opt._host:  # a 0-d view of torch's scalar state (_host_dtype)
            return self._opt._host[key][self._index:self._index + 1].reshape(())
        return self._opt._buffers[self._index][key]

    def __iter__(self):
        yield "step"
        yield from self._opt._host
        yield from self._opt._buffers[self._index]

    def __len__(self):
        return 1 + len(self._opt._host) + len(self._opt._buffers[self._index])

    def __repr__(self):
        return repr(dict(self))


class StateView(Mapping):
    """``opt.state``: the state of every param, keyed by param index (the order of the params in
    the param groups, as in state_dict()) or by the param array itself."""

    __slots__ = ("_opt",)

    def __init__(self, opt: "Optimizer"):
        self._opt = opt

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < len(self._opt._params):
                raise KeyError(key)
            return ParamState(self._opt, int(key))
        index = self._opt._index_of.get(id(key))
        if index is None:
            raise KeyError("not a param of this optimizer")
        return ParamState(self._opt, index)

    def __iter__(self):
        return iter(range(len(self._opt._params)))

    def __len__(self):
        return len(self._opt._params)


class Optimizer:
    """Base class of pyoptim.SGD, Adagrad, RMSprop, Adam and AdamW; see pyoptim.optim."""

    _spec: _spec.Optimizer  # the math (pyoptim._spec)
    # states torch sets at a param's first step from its group's hyperparameters then, not when
    # the optimizer is built: a warmup schedule or an lr set before that step starts them
    _started_at_first_step: tuple[str, ...] = ()
    # whether a step refuses hyperparameter values (ValueError) as the constructor does, or only
    # their types (pyoptim.torch: torch.optim checks values in the constructor and
    # add_param_group, and steps with whatever a scheduler or the user set later)
    _values_checked_each_step = True
    # whether a host param whose elements fill one block of memory in another order than C's
    # (torch's channels_last) is taken as the 1-D array of its memory (_memory_order), its state
    # 1-D in the same order: pyoptim.torch, which gives each such param's grads in its order
    _dense_layouts = False

    def __init__(self, params, defaults: dict, *, state_dtype=None, max_grad_norm=None,
                 clip_value=None, skip_nonfinite=False, backend=None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if max_grad_norm is not None:
            max_grad_norm = _positive("max_grad_norm", max_grad_norm)
        if clip_value is not None:
            clip_value = _positive("clip_value", clip_value)
        if max_grad_norm is not None and clip_value is not None:
            raise ValueError(
                "max_grad_norm and clip_value are exclusive: clip the gradient by its global norm "
                "or by value, not both"
            )
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be a bool, got {type(skip_nonfinite).__name__}")
        self._step_count = 0  # applied steps: the position of lr schedules
        self.defaults = dict(defaults)
        self._check_group(self.defaults, "defaults")
        self.max_grad_norm = max_grad_norm
        self.clip_value = clip_value
        self.skip_nonfinite = skip_nonfinite
        self.backend = backend
        self._state_dtype = None if state_dtype is None else _memory.as_dtype(state_dtype)
        self.last_grad_norm: float | None = None
        self.param_groups: list[dict] = []
        self.state = StateView(self)
        self._params: list = []  # the user's objects, in param index order
        self._views: list = []  # NumPy views (host) or the arrays themselves (GPU)
        self._group_of: list[int] = []  # per param: its group
        self._group_first: list[int] = []  # per group: the index of its first param
        self._index_of: dict[int, int] = {}
        self._buffers: list[dict] = []  # per param: state name -> array
        self._state_dtypes: list[np.dtype] = []
        self._steps = np.zeros(0, np.int64)
        # torch's scalar states (NAdam's mu_product, ASGD's eta and mu): one per param, in
        # torch's scalar dtype (float32; pyoptim.torch: float64 under a float64 default dtype)
        self._host_dtype = np.dtype(np.float32)
        self._host = {name: np.zeros(0, self._host_dtype) for name in self._spec.host_states}
        self._group_steps: list[int | None] = []  # the step of all params of a group, if equal
        self._placement: str | None = None
        self._plan = None
        self._lock = threading.Lock()
        # the params that are torch tensors (by index, and the tensors): a step tells autograd
        # it wrote them (_arrays.mark_written), once it checked they still have the memory
        # it writes (their data_ptr() then: _check_not_moved)
        self._torch_indices: list[int] = []
        self._torch_params: list = []
        self._torch_pointers: list[int] = []
        if params is NO_PARAMS:
            return

        groups = _param_groups(params)
        pending = _Pending(self)
        for group in groups:
            pending.add(group)
        pending.commit()

    # -----------------------------------------------------------------------------------------
    # param groups

    def add_param_group(self, param_group: dict) -> None:
        """Adds a param group ({"params": [...], <hyperparameters>}); hyperparameters it does not
        give take the optimizer's defaults. Nothing changes if the group is refused."""
        if not isinstance(param_group, Mapping):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        pending = _Pending(self)
        pending.add(dict(param_group))
        pending.commit()

    def _check_group(self, group: Mapping, where: str) -> None:
        """Checks a group's hyperparameters (at the current schedule position)."""
        hp = self._hyperparameters(group, where)
        self._spec.check(hp)
        for name in TORCH_ONLY_FLAGS:
            if name in group and name != "differentiable":
                value = group[name]
                if value is not None and not isinstance(value, bool):
                    raise TypeError(f"{where}: {name} must be None or a bool, got {value!r}")
        if group.get("differentiable", False):
            raise ValueError(
                f"{where}: differentiable=True is not supported: pyoptim updates arrays in place, "
                "outside any autograd graph"
            )
        self._check_class_hyperparameters(group, where)

    def _check_class_hyperparameters(self, group: Mapping, where: str) -> None:
        """Checks the class's own hyperparameters (those not in the kernel's)."""

    def _hyperparameters(self, group: Mapping, where: str = "") -> dict:
        """The kernel hyperparameters of a group at the current step: lr (and momentum or beta1,
        for schedules that cycle it) taken from its schedule."""
        hp = {name: group[name] for name in self._spec.defaults}
        lr = hp["lr"]
        if isinstance(lr, Schedule):
            k = self._step_count
            hp["lr"] = lr(k)
            momentum = lr.momentum(k) if lr.cycles_momentum else None
            if momentum is not None:
                if "betas" in hp:
                    hp["betas"] = (momentum, hp["betas"][1])
                else:
                    hp["momentum"] = momentum
        elif callable(lr):
            raise TypeError(
                f"{where}: lr must be a number or a pyoptim.schedules schedule, got "
                f"{type(lr).__name__}"
            )
        return hp

    def get_lr(self) -> list[float]:
        """The learning rate of each param group for the next step (a schedule evaluated at the
        current position)."""
        return [float(self._hyperparameters(g, f"param_groups[{i}]")["lr"])
                for i, g in enumerate(self.param_groups)]

    # -----------------------------------------------------------------------------------------
    # the step

    def step(self, grads, *, grad_scale=None) -> bool:
        """One update of every param with its gradient.

        grads: one gradient per param, in param order (an array when there is one param, else a
        list; None leaves a param out of this step, as a torch param without .grad), each of the
        param's shape, of the param's dtype or float32. grad_scale: the gradients are divided by
        it (loss scaling); clipping and the non-finite check see the unscaled gradients.

        Returns True when the step was applied. With skip_nonfinite=True, a step whose gradients
        hold a NaN or an infinity anywhere changes nothing (no param, state buffer, step count or
        schedule position) and returns False. Bad input raises TypeError or ValueError naming the
        argument, and nothing is changed.
        """
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("step() is already running on this optimizer in another thread")
        try:
            return self._step(grads, grad_scale)
        finally:
            self._lock.release()

    def _set_host_dtype(self, dtype) -> None:
        """The dtype of torch's scalar states, before any param is added (pyoptim.torch: torch's
        scalar dtype, float64 under torch.set_default_dtype(torch.float64))."""
        assert not self._params, "the scalar states' dtype is set before params are added"
        self._host_dtype = np.dtype(dtype)
        self._host = {name: np.zeros(0, self._host_dtype) for name in self._spec.host_states}

    def _check_not_moved(self) -> None:
        """RuntimeError when a torch param's memory is no longer the memory this optimizer
        writes (its .data replaced): the step would update memory the tensor no longer has."""
        if self._torch_params and \
                list(map(_data_ptr, self._torch_params)) != self._torch_pointers:
            j = next(j for j, (p, address) in
                     enumerate(zip(self._torch_params, self._torch_pointers))
                     if p.data_ptr() != address)
            raise RuntimeError(
                f"{type(self).__name__}: params[{self._torch_indices[j]}] no longer has the "
                "memory this optimizer was built with (its .data was replaced, e.g. by "
                "module.to() or .half()); build the optimizer after moving or converting the "
                "model")

    def _step(self, grads, grad_scale) -> bool:
        if isinstance(grads, GradAddresses):
            present = None  # made below, cheaply when every param has a grad
        else:
            self._check_not_moved()
            grads = self._grads(grads)
            present = [g is not None for g in grads]
        scale = 1.0
        if grad_scale is not None:
            scale = 1.0 / _positive("grad_scale", grad_scale)
        hps = [self._hyperparameters(g, f"param_groups[{i}]") for i, g in
               enumerate(self.param_groups)]
        for g, hp in enumerate(hps):
            try:
                self._spec.check(hp)
            except ValueError as e:
                if self._values_checked_each_step:
                    raise ValueError(f"param_groups[{g}]: {e}") from None
            except TypeError as e:
                raise TypeError(f"param_groups[{g}]: {e}") from None
        self._ensure_states(hps)
        runner = self._runner()
        everything = runner.set_grads(grads) == len(self._params)
        if present is None:
            present = [True] * len(self._params) if everything else \
                [a != 0 for a in grads.addresses]

        factor = scale
        if self.max_grad_norm is not None or self.skip_nonfinite:
            sum_of_squares, finite = runner.grad_sum_of_squares()
            norm = math.sqrt(sum_of_squares) * scale
            self.last_grad_norm = norm
            if self.skip_nonfinite and not finite:
                runner.release()
                return False
            if self.max_grad_norm is not None:
                # torch.nn.utils.clip_grad_norm_: the coefficient clamped to 1 (NaN stays NaN)
                coefficient = self.max_grad_norm / (norm + 1e-6)
                factor = scale * (1.0 if coefficient > 1.0 else coefficient)

        steps = self._steps
        if self._started_at_first_step and not steps.all():
            self._start_states([i for i, on in enumerate(present) if on and steps[i] == 0], hps)
        if everything and all(s is not None for s in self._group_steps) and \
                self._host_uniform():
            rows = None  # the Plan's: row g for the params of group g
            keys = [(g, s + 1, self._host_of(self._group_first[g]))
                    for g, s in enumerate(self._group_steps)]
        else:  # params at different steps: one row of scalars per (group, step, scalar state)
            table: dict[tuple, int] = {}
            rows = []
            for i, on in enumerate(present):
                key = (self._group_of[i], int(steps[i]) + 1, self._host_of(i))
                rows.append(table.setdefault(key, len(table)) if on else 0)
            # no grad at all: one row all the same, with scalar states to compute it from
            keys = list(table) or [(0, 1, self._host_of(0))]
        host = [self._host_values(h) for _, _, h in keys]
        flags = [self._spec.flag_mask(hps[g], t, h) for (g, t, _), h in zip(keys, host)]
        scalars = [self._spec.scalars(hps[g], t, factor, h) for (g, t, _), h in zip(keys, host)]
        # torch's scalar states after this step, worked out before it: one that cannot be
        # computed (ASGD's eta) raises while nothing is written yet
        advanced = [self._spec.advance_host(hps[g], t, h) for (g, t, _), h in zip(keys, host)]
        runner.run(flags, scalars, rows, self.clip_value, keys, hps, factor)

        if isinstance(grads, GradAddresses) and grads.mark_written is not None:
            grads.mark_written()
        elif self._torch_params:
            _arrays.mark_written(self._torch_params if everything else
                                 [self._params[i] for i in self._torch_indices if present[i]])
        if self._host:  # torch's scalar states move on, as torch's step does
            for row, ((g, _, _), values) in enumerate(zip(keys, advanced)):
                members = self._members(g) if rows is None else \
                    [i for i, r in enumerate(rows) if r == row and present[i]]
                for name, value in values.items():
                    self._host[name][members] = value
        if everything:
            steps += 1
            self._group_steps = [None if s is None else s + 1 for s in self._group_steps]
        else:
            steps[np.asarray(present)] += 1
            self._recount_group_steps()
        self._step_count += 1
        return True

    def _grads(self, grads) -> list:
        n = len(self._params)
        if isinstance(grads, FlatBuffer):  # its buffer for one flat param, else its views
            whole = n == 1 and _memory.shape_of(self._views[0]) == _memory.shape_of(grads.buffer)
            grads = grads.buffer if whole else list(grads.views)
        if not isinstance(grads, (list, tuple)):
            if n != 1:
                raise TypeError(
                    f"grads must be a list of {n} arrays (one per param, in order), got "
                    f"{type(grads).__name__}"
                )
            grads = [grads]
        if len(grads) != n:
            raise ValueError(
                f"got {len(grads)} grads for {n} params; pass one grad per param, in order"
            )
        return list(grads)

    def _members(self, g: int) -> slice:
        """The param indices of group g (each group's params are consecutive)."""
        first = self._group_first[g]
        return slice(first, first + len(self.param_groups[g]["params"]))

    def _host_of(self, i: int) -> tuple:
        """Param i's scalar states, as a hashable tuple."""
        return tuple(float(self._host[name][i]) for name in self._spec.host_states)

    def _host_values(self, values: tuple) -> dict:
        """The scalar states as _spec takes them: 0-d arrays of their dtype."""
        return {name: np.array(v, self._host_dtype)
                for name, v in zip(self._spec.host_states, values)}

    def _host_uniform(self) -> bool:
        """Whether the params of each group hold the same scalar states (they do unless steps
        were skipped for some params, or a checkpoint said otherwise)."""
        for values in self._host.values():
            for g in range(len(self.param_groups)):
                part = values[self._members(g)]
                if not (part == part[0]).all():
                    return False
        return True

    def _recount_group_steps(self) -> None:
        groups = np.asarray(self._group_of, np.int64)
        result = []
        for g in range(len(self.param_groups)):
            s = self._steps[groups == g]
            result.append(int(s[0]) if s.size and (s == s[0]).all() else None)
        self._group_steps = result

    def _runner(self):
        if self._plan is None:
            self._plan = _make_runner(self)
        return self._plan

    # -----------------------------------------------------------------------------------------
    # state buffers

    def _infer_step(self, entry: Mapping) -> int:
        """The step of a loaded state entry that has none (torch's SGD keeps no step)."""
        from ._checkpoint import _refuse

        _refuse("a state entry has no 'step'")

    def _start_states(self, indices: list[int], hps: list[dict]) -> None:
        """Sets the states of _started_at_first_step for these params, about to take their
        first step, from their groups' hyperparameters now, as torch does at that step."""
        for i in indices:
            g = self._group_of[i]
            initial = self._spec.initial_host(hps[g], self._host_dtype)
            for name in self._started_at_first_step:
                if name in initial:
                    self._host[name][i] = initial[name]
                else:
                    _memory.fill(self._buffers[i][name],
                                 self._initial_value(name, self.param_groups[g]))

    def _initial_value(self, name: str, group: Mapping) -> float:
        """The value a state buffer starts at (Adagrad's sum: initial_accumulator_value)."""
        return 0.0

    def _ensure_states(self, hps: list[dict]) -> None:
        """Allocates the state buffers that the groups' options need and that are missing (an
        option switched on after construction, as torch allocates on first use)."""
        added = False
        for g, hp in enumerate(hps):
            first = self._group_first[g]
            for name in self._spec.needed_states(hp):
                if name not in self._buffers[first]:
                    indices = [i for i, gi in enumerate(self._group_of) if gi == g]
                    self._allocate(indices, name, self._initial_value(name, self.param_groups[g]))
                    added = True
        if added:
            self._plan = None

    def _allocate(self, indices: list[int], name: str, value: float) -> None:
        """One state buffer for each param of indices: views of one flat buffer per state dtype
        (on the params' device), so that a group's state is contiguous."""
        by_dtype: dict[np.dtype, list[int]] = {}
        for i in indices:
            by_dtype.setdefault(self._state_dtypes[i], []).append(i)
        for dtype, members in by_dtype.items():
            like = None if self._placement == _arrays.HOST else self._views[members[0]]
            flat = FlatBuffer([_memory.shape_of(self._views[i]) for i in members], dtype,
                              like=like)
            if value != 0:
                _memory.fill(flat.buffer, value)
            for i, view in zip(members, flat.views):
                self._buffers[i][name] = view

    # -----------------------------------------------------------------------------------------
    # checkpoints

    def state_dict(self) -> dict:
        """The optimizer's state in torch's layout, as copies (NumPy arrays, device state copied
        to the host)::

            {"state": {index: {"step": int, <state name>: array, ...}, ...},
             "param_groups": [{<hyperparameters>, "params": [index, ...]}, ...],
             "pyoptim": {"format", "version", "optimizer", "step_count", "schedules"}}

        A group whose lr is a schedule shows the lr of its next step; the schedule's position
        (step_count) and state are in "pyoptim".
        """
        state = {}
        for i, buffers in enumerate(self._buffers):
            entry = {"step": int(self._steps[i])}
            for name, values in self._host.items():
                entry[name] = np.array(values[i], self._host_dtype)
            for name, array in buffers.items():
                entry[name] = _memory.to_host(array)
            state[i] = entry
        groups = []
        schedules = {}
        offset = 0
        for g, group in enumerate(self.param_groups):
            saved = {k: v for k, v in group.items() if k != "params"}
            if isinstance(group["lr"], Schedule):
                saved["lr"] = float(group["lr"](self._step_count))
                schedules[g] = {"name": type(group["lr"]).__name__,
                                "state": group["lr"].state_dict()}
            count = len(group["params"])
            saved["params"] = list(range(offset, offset + count))
            offset += count
            groups.append(saved)
        return {
            "state": state,
            "param_groups": groups,
            "pyoptim": {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "optimizer": type(self).__name__,
                "step_count": self._step_count,
                "schedules": schedules,
            },
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Loads a state dict from state_dict() (or torch's, for the same optimizer and params).

        Values are copied into this optimizer's state buffers, which keep their dtype: a
        checkpoint whose state arrays have another dtype is refused, never cast (torch issue
        43706). So is one of another optimizer kind or format version, with other param counts or
        shapes, unknown keys or invalid hyperparameters; a refused checkpoint changes nothing.
        """
        from ._checkpoint import plan_load

        apply = plan_load(self, state_dict)
        apply()

    def save(self, path) -> None:
        """Writes state_dict() to a NumPy .npz file (no pickle; bfloat16 stored as its bits)."""
        from ._checkpoint import save

        save(self, path)

    def load(self, path) -> None:
        """Loads a checkpoint written by save(), as load_state_dict() does (refusals included)."""
        from ._checkpoint import read

        self.load_state_dict(read(path))

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            for key, value in group.items():
                if key != "params":
                    lines.append(f"    {key}: {value}")
        lines.append(")")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# building the param groups


def _param_groups(params) -> list[dict]:
    if isinstance(params, FlatBuffer):
        params = [params.buffer]
    elif isinstance(params, Mapping):
        params = [params]
    elif _is_array(params):
        params = [params]
    elif isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise TypeError(
            "params must be an array, a list of arrays or a list of param-group dicts, got "
            f"{type(params).__name__}"
        )
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(p, Mapping) for p in params):
        return [dict(p) for p in params]
    if any(isinstance(p, Mapping) for p in params):
        raise TypeError("params must be all arrays or all param-group dicts, not a mix")
    return [{"params": params}]


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "__array_interface__") or \
        hasattr(x, "__cuda_array_interface__") or hasattr(x, "__dlpack__") or \
        bool(getattr(x, "__cuda_ndarray__", False))


class _Pending:
    """Param groups being added: checked completely before the optimizer changes."""

    def __init__(self, opt: Optimizer):
        self.opt = opt
        self.groups: list[dict] = []
        self.params: list = []
        self.views: list = []
        self.group_of: list[int] = []

    def add(self, group: dict) -> None:
        opt = self.opt
        g = len(opt.param_groups) + len(self.groups)
        where = f"param_groups[{g}]"
        if "params" not in group:
            raise ValueError(f"{where} has no 'params'")
        params = group["params"]
        if isinstance(params, FlatBuffer):
            params = [params.buffer]
        elif _is_array(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{where}: params must be an ordered list, not a set")
        else:
            params = list(params)
        if not params:
            raise ValueError(f"{where} has no params")
        known = set(opt.defaults)
        unknown = set(group) - known - {"params"}
        if unknown:
            raise TypeError(
                f"{where}: unknown hyperparameter(s) {sorted(unknown)}; {type(opt).__name__} "
                f"takes {sorted(known)}"
            )
        full = {"params": params, **{k: group.get(k, v) for k, v in opt.defaults.items()}}
        for key, value in full.items():  # betas, etas, step_sizes: tuples, as torch keeps them
            if isinstance(opt.defaults.get(key), tuple) and isinstance(value, list):
                full[key] = tuple(value)
        opt._check_group(full, where)
        first = len(opt._params) + len(self.params)
        for j, p in enumerate(params):
            name = f"params[{first + j}]"
            if isinstance(p, FlatBuffer):
                p = p.buffer
                params[j] = p
            if id(p) in opt._index_of or any(p is q for q in self.params):
                raise ValueError(f"{name} appears more than once among the optimizer's params")
            placement = "cuda" if _arrays.is_device_array(p) else "cpu"
            view = p if placement == "cuda" else _arrays.host_view(p, name)
            if type(view) is np.ndarray and not view.flags.c_contiguous:
                flat = _memory_order(view) if opt._dense_layouts else None
                if flat is None:
                    raise ValueError(
                        f"{name} is not C-contiguous; pass a contiguous array (an update applied "
                        "to a contiguous copy would not reach this one)")
                view = flat
            if type(view) is np.ndarray and not view.flags.writeable:
                raise ValueError(f"{name} is read-only; it is updated in place")
            self.params.append(p)
            self.views.append(view)
            self.group_of.append(g)
        self.groups.append(full)

    def commit(self) -> None:
        opt = self.opt
        placements = {_arrays.DEVICE if not isinstance(v, np.ndarray) else _arrays.HOST
                      for v in self.views}
        if opt._placement is not None:
            placements.add(opt._placement)
        if len(placements) > 1:
            raise TypeError(
                "an optimizer's params must all be host arrays or all GPU arrays; use one "
                "optimizer per device"
            )
        placement = placements.pop()
        _check_backend(opt.backend, placement)
        state_dtypes = []
        for i, view in enumerate(self.views):
            dtype = _memory.dtype_of(view)
            name = f"params[{len(opt._params) + i}]"
            if dtype.name not in _spec.SUPPORTED_DTYPES:
                raise TypeError(
                    f"{name} has dtype {dtype}; supported dtypes are float32, float64, float16 "
                    "and bfloat16"
                )
            state_dtype = opt._state_dtype if opt._state_dtype is not None else \
                np.dtype(_spec.default_state_dtype(dtype.name))
            if not any(p == dtype.name and s == state_dtype.name
                       for p, _, s in _spec.DTYPE_COMBINATIONS):
                raise TypeError(
                    f"{name}: state_dtype={state_dtype.name} is not supported for {dtype.name} "
                    f"params; supported (param, grad, state): {_spec.supported_dtypes_text()}"
                )
            state_dtypes.append(state_dtype)
        # a trial Plan checks memory overlaps (and everything else) before anything changes
        old = (list(opt.param_groups), list(opt._params), list(opt._views),
               list(opt._group_of), list(opt._group_first), dict(opt._index_of),
               list(opt._buffers), list(opt._state_dtypes), opt._steps, list(opt._group_steps),
               opt._placement, opt._plan, dict(opt._host))
        try:
            first = len(opt._params)
            for group in self.groups:
                opt._group_first.append(first)
                first += len(group["params"])
            for i, p in enumerate(self.params):
                opt._index_of[id(p)] = len(opt._params)
                opt._params.append(p)
                opt._views.append(self.views[i])
                opt._group_of.append(self.group_of[i])
                opt._buffers.append({})
                opt._state_dtypes.append(state_dtypes[i])
            opt.param_groups.extend(self.groups)
            opt._steps = np.concatenate([opt._steps, np.zeros(len(self.params), np.int64)])
            opt._group_steps.extend([0] * len(self.groups))
            opt._placement = placement
            first_group = len(opt.param_groups) - len(self.groups)
            for g in range(first_group, len(opt.param_groups)):
                group = opt.param_groups[g]
                hp = opt._hyperparameters(group)
                count = len(group["params"])
                for name, value in opt._spec.initial_host(hp, opt._host_dtype).items():
                    opt._host[name] = np.concatenate(
                        [opt._host[name], np.full(count, value, opt._host_dtype)])
                indices = [i for i, gi in enumerate(opt._group_of) if gi == g]
                for name in opt._spec.needed_states(hp):
                    opt._allocate(indices, name, opt._initial_value(name, group))
            opt._plan = None
            opt._runner()
        except BaseException:
            (opt.param_groups, opt._params, opt._views, opt._group_of, opt._group_first,
             opt._index_of, opt._buffers, opt._state_dtypes, opt._steps, opt._group_steps,
             opt._placement, opt._plan, opt._host) = old
            raise
        for i, p in enumerate(self.params, len(opt._params) - len(self.params)):
            if _arrays._is_torch(p):
                opt._torch_indices.append(i)
                opt._torch_params.append(p)
                opt._torch_pointers.append(p.data_ptr())


def _check_backend(backend, placement) -> None:
    if backend is None:
        return
    if (backend == "cuda") != (placement == _arrays.DEVICE):
        where = "GPU" if placement == _arrays.DEVICE else "host"
        raise ValueError(f"backend={backend!r} cannot update {where} arrays")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"invalid {name}={value!r}: expected a finite value > 0")
    return value


def _memory_order(view: np.ndarray) -> np.ndarray | None:
    """The 1-D array of a host array's memory, its elements in the order they lie there, where
    they fill one block without gaps or overlaps, every stride positive (a permutation of a
    C-contiguous layout: torch's channels_last, a transpose); None otherwise."""
    dims = sorted(((stride, n) for stride, n in zip(view.strides, view.shape) if n != 1),
                  reverse=True)
    expected = view.itemsize
    for stride, n in reversed(dims):
        if stride != expected:
            return None
        expected *= n
    return np.lib.stride_tricks.as_strided(view, (view.size,), (view.itemsize,),
                                           writeable=view.flags.writeable)


def _host_grad(g, i: int):
    if g is None or type(g) is np.ndarray:
        return g
    if _arrays.is_device_array(g):
        raise TypeError(
            f"grads[{i}] is a GPU array but the params are host arrays (no implicit transfer)")
    return _arrays.host_view(g, f"grads[{i}]")


# ---------------------------------------------------------------------------------------------
# runners: how a step reaches a backend


def _make_runner(opt: Optimizer):
    if opt._placement == _arrays.DEVICE:
        return _CudaRunner(opt)
    if opt.backend == "numpy":
        return _ReferenceRunner(opt)
    return _CppRunner(opt)


class _CppRunner:
    """Host arrays on the C++ backend: one _core.Plan for all params."""

    def __init__(self, opt: Optimizer):
        core = _cpu.core()
        names = opt._spec.states
        states = [[b.get(name) for b in opt._buffers] for name in names]
        self.plan = core.Plan(type(opt).__name__, opt._spec.kernel, opt._views,
                              [s if any(x is not None for x in s) else None for s in states],
                              opt._group_of)

    def set_grads(self, grads):
        if isinstance(grads, GradAddresses):
            return self.plan.set_grad_addresses(grads.addresses)
        return self.plan.set_grads(grads, _host_grad)

    def grad_sum_of_squares(self):
        return self.plan.grad_sum_of_squares()

    def release(self):
        self.plan.clear_grads()

    def run(self, flags, scalars, rows, clip_value, keys, hps, factor):
        self.plan.run(flags, np.array(scalars, np.float64), rows, clip_value)


class _ReferenceRunner:
    """backend='numpy': the NumPy reference, param by param, after checking every grad."""

    def __init__(self, opt: Optimizer):
        self.opt = opt
        self.grads = None
        extents = sorted(self._fixed())
        for (start, size, first), (other, _, second) in zip(extents, extents[1:]):
            if other < start + size:
                raise ValueError(
                    f"{type(opt).__name__}: {first} and {second} share memory; every param, grad "
                    "and state buffer must be distinct")

    def _fixed(self):
        """(address, nbytes, name) of every param and state buffer."""
        opt = self.opt
        out = [(v.__array_interface__["data"][0], v.nbytes, f"params[{i}]")
               for i, v in enumerate(opt._views) if v.nbytes]
        out += [(b.__array_interface__["data"][0], b.nbytes, f"state '{k}' of params[{i}]")
                for i, bs in enumerate(opt._buffers) for k, b in bs.items() if b.nbytes]
        return out

    def set_grads(self, grads):
        opt = self.opt
        grads[:] = [_host_grad(g, i) for i, g in enumerate(grads)]
        for i, g in enumerate(grads):
            if g is None:
                continue
            combo = (opt._views[i].dtype.name, g.dtype.name, opt._state_dtypes[i].name)
            if g.dtype.name in _spec.SUPPORTED_DTYPES and combo not in _spec.DTYPE_COMBINATIONS:
                raise TypeError(
                    f"{type(opt).__name__}: grads[{i}]: unsupported dtypes (param {combo[0]}, "
                    f"grad {combo[1]}, state {combo[2]}); supported (param, grad, state): "
                    f"{_spec.supported_dtypes_text()}")
            states = [_checks.host_buffer(f"state '{k}' of params[{i}]", v)
                      for k, v in opt._buffers[i].items()]
            _checks.check(type(opt).__name__, _checks.host_buffer(f"params[{i}]", opt._views[i]),
                          _checks.host_buffer(f"grads[{i}]", g), states)
        extents = sorted(self._fixed() + [
            (g.__array_interface__["data"][0], g.nbytes, f"grads[{i}]")
            for i, g in enumerate(grads) if g is not None and g.nbytes])
        for (start, size, first), (other, _, second) in zip(extents, extents[1:]):
            if other < start + size:
                raise ValueError(
                    f"{type(opt).__name__}: {first} and {second} share memory; every param, grad "
                    "and state buffer must be distinct")
        self.grads = grads
        return sum(g is not None for g in grads)

    def grad_sum_of_squares(self):
        return reference.sum_of_squares([g for g in self.grads if g is not None])

    def release(self):
        self.grads = None

    def run(self, flags, scalars, rows, clip_value, keys, hps, factor):
        opt = self.opt
        fn = getattr(reference, opt._spec.name)
        try:
            for i, g in enumerate(self.grads):
                if g is None:
                    continue
                group, step, host = keys[opt._group_of[i] if rows is None else rows[i]]
                hp = hps[group]
                states = {k: opt._buffers[i][k] for k in opt._spec.needed_states(hp)}
                # copies: the optimizer advances its scalar states itself, after the step
                states.update({name: np.array([v], opt._host_dtype)
                               for name, v in zip(opt._spec.host_states, host)})
                fn(opt._views[i], g, **states, step=step, **hp, grad_factor=factor,
                   clip_value=clip_value)
        finally:
            self.grads = None


class _CudaRunner:
    """GPU arrays on the CUDA backend: pyoptim._cuda.step, one call per (flags, dtypes) bucket.
    Bucketing is a Python loop over the params (about a microsecond each per step). The global
    sum of squares (max_grad_norm, skip_nonfinite) is pyoptim._cuda.sum_of_squares: computed on
    the GPU, in the order of the C++ backend's, and waited for (the step depends on it)."""

    def __init__(self, opt: Optimizer):
        from . import _cuda

        if not hasattr(_cuda, "step"):
            raise NotImplementedError(
                f"{type(opt).__name__}: GPU params need pyoptim's CUDA backend, which this "
                "version does not have yet; pass host arrays")
        self.opt = opt
        self.grads = None

    def set_grads(self, grads):
        from . import _cuda

        opt = self.opt
        for i, g in enumerate(grads):
            if g is None:
                continue
            if not _arrays.is_device_array(g):
                raise TypeError(f"grads[{i}] is a host array but the params are GPU arrays "
                                "(no implicit transfer)")
            _cuda.describe_readable(f"{type(opt).__name__}:", f"grads[{i}]", g)
            if _memory.shape_of(g) != _memory.shape_of(opt._views[i]):
                raise ValueError(
                    f"{type(opt).__name__}: grads[{i}] has shape {_memory.shape_of(g)}, but "
                    f"params[{i}] has shape {_memory.shape_of(opt._views[i])}")
            combo = (_memory.dtype_of(opt._views[i]).name, _memory.dtype_of(g).name,
                     opt._state_dtypes[i].name)
            if combo not in _spec.DTYPE_COMBINATIONS:
                raise TypeError(
                    f"{type(opt).__name__}: grads[{i}]: unsupported dtypes (param {combo[0]}, "
                    f"grad {combo[1]}, state {combo[2]}); supported (param, grad, state): "
                    f"{_spec.supported_dtypes_text()}")
        self.grads = grads
        return sum(g is not None for g in grads)

    def grad_sum_of_squares(self):
        from . import _cuda

        present = [i for i, g in enumerate(self.grads) if g is not None]
        return _cuda.sum_of_squares([self.grads[i] for i in present],
                                    [f"grads[{i}]" for i in present])

    def release(self):
        self.grads = None

    def run(self, flags, scalars, rows, clip_value, keys, hps, factor):
        from . import _cuda

        opt = self.opt
        buckets: dict[tuple, list[int]] = {}
        for i, g in enumerate(self.grads):
            if g is None:
                continue
            row = opt._group_of[i] if rows is None else rows[i]
            key = (flags[row], _memory.dtype_of(opt._views[i]).name, _memory.dtype_of(g).name)
            buckets.setdefault(key, []).append(i)
        table = np.array(scalars, np.float64)
        try:
            for (mask, _, _), members in buckets.items():
                member_rows = [opt._group_of[i] if rows is None else rows[i] for i in members]
                names = [n for n in opt._spec.states
                         if all(n in opt._buffers[i] for i in members)]
                _cuda.step(opt._spec, mask, [opt._views[i] for i in members],
                           [self.grads[i] for i in members],
                           {n: [opt._buffers[i][n] for i in members] for n in names},
                           table, member_rows, clip_value)
        finally:
            self.grads = None

