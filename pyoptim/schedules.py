"""Learning-rate schedules: ``sched(k)`` is the learning rate after k scheduler steps.

Each schedule is built as ``pyoptim.schedules.<Name>(base_lr, **arguments)`` with the arguments
of ``torch.optim.lr_scheduler.<Name>`` (less the optimizer and ``last_epoch``), and ``sched(k)``
equals the lr that torch's scheduler sets after k calls of its ``step()`` (to rounding: pyoptim
evaluates the closed form where torch chains multiplications step by step). Schedules hold no
position of their own: they are pure functions of k, except :class:`ReduceLROnPlateau`, which is
fed a metric.

An optimizer's ``lr`` may be a schedule: its k-th step (k = 0, 1, ...) uses ``sched(k)``, as a
torch loop ``opt.step(); scheduler.step()`` does; a step skipped for non-finite gradients does
not advance it, and the position is part of the optimizer's state dict. :class:`OneCycleLR` and
:class:`CyclicLR` with ``cycle_momentum=True`` (torch's default) also set the momentum (SGD,
RMSprop) or beta1 (Adam, AdamW) of each step, as torch's do: ``sched.momentum(k)``.

=============================== ========================================================
schedule                        lr after k steps (base = base_lr)
=============================== ========================================================
StepLR(base, step_size, gamma)   base * gamma ** (k // step_size)
MultiStepLR(base, milestones)    base * gamma ** (number of milestones <= k)
ConstantLR(base, factor, total)  base * factor while k < total_iters, then base
LinearLR(base, start, end, total) base * (start + (end - start) * min(k, total) / total)
ExponentialLR(base, gamma)       base * gamma ** k
PolynomialLR(base, total, power) base * (1 - min(k, total) / total) ** power
CosineAnnealingLR(base, T_max)   eta_min + (base - eta_min) * (1 + cos(pi k / T_max)) / 2
CosineAnnealingWarmRestarts      the same within each period T_i = T_0 * T_mult ** i
OneCycleLR(max_lr, total_steps)  warm up from max_lr / div_factor to max_lr, anneal down
CyclicLR(base, max_lr, ...)      triangles between base_lr and max_lr
SequentialLR(schedules, miles.)  schedules[i](k - milestones[i - 1]) between milestones
ReduceLROnPlateau(base, ...)     base, times factor when the metric stops improving
=============================== ========================================================

OneCycleLR takes ``max_lr`` where the others take ``base_lr`` (torch's OneCycleLR overrides the
optimizer's lr with ``max_lr / div_factor``), and SequentialLR takes the schedules it joins.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Sequence

__all__ = [
    "Schedule",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "CyclicLR",
    "SequentialLR",
    "ReduceLROnPlateau",
]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if value != value:
        raise ValueError(f"invalid {name}=nan")
    return float(value)


def _nonnegative(name: str, value: Any) -> float:
    value = _number(name, value)
    if value < 0:
        raise ValueError(f"invalid {name}={value!r}: expected a value >= 0")
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer {name}, got {value!r}")
    return value


def _step_index(k: Any) -> int:
    if type(k) is not int:  # NumPy integers too, not bools or floats
        if isinstance(k, bool) or not hasattr(type(k), "__index__"):
            raise TypeError(f"a schedule takes an integer step k, got {type(k).__name__}")
        k = k.__index__()
    if k < 0:
        raise ValueError(f"a schedule takes a step k >= 0, got {k}")
    return k


class Schedule:
    """A learning-rate schedule: ``sched(k)`` is the lr after k scheduler steps (k >= 0)."""

    base_lr: float
    cycles_momentum = False  # OneCycleLR and CyclicLR with cycle_momentum=True

    def __call__(self, k: int) -> float:
        return self._lr(_step_index(k))

    def _lr(self, k: int) -> float:
        raise NotImplementedError

    def momentum(self, k: int) -> float | None:
        """The momentum (beta1 for Adam) of step k, for schedules that cycle it; else None."""
        return None

    def state_dict(self) -> dict:
        """The schedule's own state (empty for the closed-form schedules)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got {sorted(state)}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class StepLR(Schedule):
    """``base_lr * gamma ** (k // step_size)`` (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = _number("gamma", gamma)

    def _lr(self, k):
        return self.base_lr * self.gamma ** (k // self.step_size)


class MultiStepLR(Schedule):
    """``base_lr * gamma ** m``, m the number of milestones <= k; a milestone listed twice
    counts twice (torch.optim.lr_scheduler.MultiStepLR)."""

    def __init__(self, base_lr: float, milestones: Sequence[int], gamma: float = 0.1):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = _number("gamma", gamma)

    def _lr(self, k):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, k)


class ConstantLR(Schedule):
    """``base_lr * factor`` for k < total_iters, then ``base_lr``
    (torch.optim.lr_scheduler.ConstantLR)."""

    def __init__(self, base_lr: float, factor: float = 1.0 / 3, total_iters: int = 5):
        self.base_lr = _nonnegative("base_lr", base_lr)
        if not 0 <= _number("factor", factor) <= 1:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = float(factor)
        self.total_iters = int(total_iters)

    def _lr(self, k):
        return self.base_lr * (self.factor + (k >= self.total_iters) * (1 - self.factor))


class LinearLR(Schedule):
    """``base_lr * (start_factor + (end_factor - start_factor) * min(k, total_iters) /
    total_iters)`` (torch.optim.lr_scheduler.LinearLR): a linear warmup or decay."""

    def __init__(self, base_lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5):
        self.base_lr = _nonnegative("base_lr", base_lr)
        if not 0 < _number("start_factor", start_factor) <= 1:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and "
                             "less or equal to 1.")
        if not 0 <= _number("end_factor", end_factor) <= 1:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = _positive_int("total_iters", total_iters)

    def _lr(self, k):
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                               * min(self.total_iters, k) / self.total_iters)


class ExponentialLR(Schedule):
    """``base_lr * gamma ** k`` (torch.optim.lr_scheduler.ExponentialLR)."""

    def __init__(self, base_lr: float, gamma: float):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.gamma = _number("gamma", gamma)

    def _lr(self, k):
        return self.base_lr * self.gamma**k


class PolynomialLR(Schedule):
    """``base_lr * (1 - min(k, total_iters) / total_iters) ** power``
    (torch.optim.lr_scheduler.PolynomialLR)."""

    def __init__(self, base_lr: float, total_iters: int = 5, power: float = 1.0):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.total_iters = _positive_int("total_iters", total_iters)
        self.power = _number("power", power)

    def _lr(self, k):
        return self.base_lr * (1.0 - min(self.total_iters, k) / self.total_iters) ** self.power


class CosineAnnealingLR(Schedule):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * k / T_max)) / 2``
    (torch.optim.lr_scheduler.CosineAnnealingLR; past T_max the cosine goes on, up again)."""

    def __init__(self, base_lr: float, T_max: int, eta_min: float = 0.0):  # noqa: N803
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.T_max = _positive_int("T_max", T_max)
        self.eta_min = _number("eta_min", eta_min)

    def _lr(self, k):
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * k / self.T_max)) / 2


class CosineAnnealingWarmRestarts(Schedule):
    """Cosine annealing from base_lr to eta_min over T_0 steps, then restarts, each period
    T_mult times the last (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)::

        T_i = T_0 * T_mult ** i for the period i that k falls in, T_cur = k - (start of period i)
        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2
    """

    def __init__(self, base_lr: float, T_0: int, T_mult: int = 1,  # noqa: N803
                 eta_min: float = 0.0):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.T_0 = _positive_int("T_0", T_0)
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        self.T_mult = T_mult
        self.eta_min = _number("eta_min", eta_min)

    def _lr(self, k):
        if self.T_mult == 1:
            t_cur, t_i = k % self.T_0, self.T_0
        else:  # integer arithmetic: the period boundaries are exact
            t_cur, t_i = k, self.T_0
            while t_cur >= t_i:
                t_cur -= t_i
                t_i *= self.T_mult
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t_cur / t_i)) / 2


class OneCycleLR(Schedule):
    """The 1cycle policy (torch.optim.lr_scheduler.OneCycleLR): from max_lr / div_factor up to
    max_lr over the first pct_start of total_steps, then down to max_lr / div_factor /
    final_div_factor (three_phase: up, back down to the start, then to the minimum), by cosine
    or linear annealing. With cycle_momentum the momentum (beta1) moves the opposite way between
    max_momentum and base_momentum. ``sched(k)`` for k > total_steps raises ValueError, as
    torch's scheduler does."""

    def __init__(self, max_lr: float, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        if total_steps is not None:
            self.total_steps = _positive_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive_int("epochs", epochs)
                                * _positive_int("steps_per_epoch", steps_per_epoch))
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        self.max_lr = _nonnegative("max_lr", max_lr)
        self.base_lr = self.max_lr / div_factor  # the lr of step 0
        self.min_lr = self.base_lr / final_div_factor
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = bool(cycle_momentum)
        self.cycles_momentum = self.cycle_momentum
        self.base_momentum = _number("base_momentum", base_momentum)
        self.max_momentum = _number("max_momentum", max_momentum)
        self.three_phase = bool(three_phase)
        n = self.total_steps
        lrs = {"initial": self.base_lr, "max": self.max_lr, "min": self.min_lr}
        up = (float(pct_start * n) - 1, "initial", "max", "max_m", "base_m")
        if three_phase:
            phases = [up, (float(2 * pct_start * n) - 2, "max", "initial", "base_m", "max_m"),
                      (n - 1, "initial", "min", "max_m", "max_m")]
        else:
            phases = [up, (n - 1, "max", "min", "base_m", "max_m")]
        moms = {"max_m": self.max_momentum, "base_m": self.base_momentum}
        self._phases = [(end, lrs[a], lrs[b], moms[c], moms[d]) for end, a, b, c, d in phases]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase(self, k):
        if k > self.total_steps:
            raise ValueError(
                f"Tried to step {k} times. The specified number of total steps is "
                f"{self.total_steps}")
        start_step = 0.0
        for i, phase in enumerate(self._phases):
            end_step = phase[0]
            if k <= end_step or i == len(self._phases) - 1:
                return phase, (k - start_step) / (end_step - start_step)
            start_step = end_step
        raise AssertionError("unreachable")

    def _lr(self, k):
        (_, start, end, _, _), pct = self._phase(k)
        return self._anneal(start, end, pct)

    def momentum(self, k):
        if not self.cycle_momentum:
            return None
        (_, _, _, start, end), pct = self._phase(_step_index(k))
        return self._anneal(start, end, pct)


class CyclicLR(Schedule):
    """Cyclical learning rates (torch.optim.lr_scheduler.CyclicLR): triangles between base_lr and
    max_lr, step_size_up steps up and step_size_down (default: step_size_up) down, the amplitude
    scaled by mode 'triangular' (1), 'triangular2' (halved every cycle), 'exp_range'
    (gamma ** k) or a custom scale_fn(x) with scale_mode 'cycle' or 'iterations'. With
    cycle_momentum the momentum (beta1) moves the opposite way between max_momentum and
    base_momentum."""

    def __init__(self, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0,
                 scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: float = 0.8,
                 max_momentum: float = 0.9):
        self.base_lr = _nonnegative("base_lr", base_lr)
        self.max_lr = _nonnegative("max_lr", max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = _number("gamma", gamma)
        self.scale_fn = scale_fn
        if scale_fn is None:
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.scale_mode = scale_mode
        self.cycle_momentum = bool(cycle_momentum)
        self.cycles_momentum = self.cycle_momentum
        self.base_momentum = _number("base_momentum", base_momentum)
        self.max_momentum = _number("max_momentum", max_momentum)

    def _scale(self, x):
        if self.scale_fn is not None:
            return self.scale_fn(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def _position(self, k):
        """(scale factor of the triangle at k, the amplitude scale)"""
        cycle = math.floor(1 + k / self.total_size)
        x = 1.0 + k / self.total_size - cycle
        if x <= self.step_ratio:
            factor = x / self.step_ratio
        else:
            factor = (x - 1) / (self.step_ratio - 1)
        return factor, self._scale(cycle if self.scale_mode == "cycle" else k)

    def _lr(self, k):
        factor, scale = self._position(k)
        return self.base_lr + (self.max_lr - self.base_lr) * factor * scale

    def momentum(self, k):
        if not self.cycle_momentum:
            return None
        factor, scale = self._position(_step_index(k))
        return self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale


class SequentialLR(Schedule):
    """Schedules one after the other (torch.optim.lr_scheduler.SequentialLR): ``schedules[0]``
    until ``milestones[0]``, then ``schedules[1]`` started afresh, and so on::

        i = number of milestones <= k
        lr = schedules[i](k - milestones[i - 1])        (k itself for i = 0)

    e.g. ``SequentialLR([LinearLR(1e-3, 0.01, total_iters=100), CosineAnnealingLR(1e-3, 900)],
    milestones=[100])``: a linear warmup, then cosine decay.
    """

    def __init__(self, schedules: Sequence[Schedule], milestones: Sequence[int]):
        schedules = list(schedules)
        if not schedules:
            raise ValueError("SequentialLR expects at least one schedule")
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule) or isinstance(s, ReduceLROnPlateau):
                raise TypeError(
                    f"SequentialLR: schedules[{i}] must be a closed-form pyoptim schedule, got "
                    f"{type(s).__name__}")
        if len(milestones) != len(schedules) - 1:
            raise ValueError(
                "SequentialLR expects one milestone fewer than schedules, got "
                f"{len(schedules)} schedules and {len(milestones)} milestones")
        self.schedules = schedules
        self.milestones = [int(m) for m in milestones]
        self.base_lr = schedules[0].base_lr
        self.cycles_momentum = any(s.cycles_momentum for s in schedules)

    def _child(self, k):
        i = bisect.bisect_right(self.milestones, k)
        return self.schedules[i], k - (self.milestones[i - 1] if i > 0 else 0)

    def _lr(self, k):
        schedule, position = self._child(k)
        return schedule(position)

    def momentum(self, k):
        schedule, position = self._child(_step_index(k))
        return schedule.momentum(position)


class ReduceLROnPlateau(Schedule):
    """Reduces the lr by ``factor`` when a metric has stopped improving for ``patience`` checks
    (torch.optim.lr_scheduler.ReduceLROnPlateau). Stateful: feed it the metric with
    ``sched.step(metric)`` (once per epoch, say); ``sched(k)`` is the current lr, whatever k.
    Its state (best value, counters, lr) is saved with the optimizer's."""

    def __init__(self, base_lr: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8):
        self.base_lr = _nonnegative("base_lr", base_lr)
        if _number("factor", factor) >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode = mode
        self.factor = float(factor)
        self.patience = int(patience)
        self.threshold = _number("threshold", threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = int(cooldown)
        self.min_lr = _nonnegative("min_lr", min_lr)
        self.eps = _number("eps", eps)
        self._reset()

    def _reset(self):
        self.lr = self.base_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _lr(self, k):
        return self.lr

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metric: float) -> float:
        """Records one value of the metric; returns the lr from now on."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    _STATE = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self._STATE):
            raise ValueError(
                f"ReduceLROnPlateau state must have the keys {sorted(self._STATE)}, got "
                f"{sorted(state)}")
        values = {
            "lr": _nonnegative("lr", state["lr"]),
            "best": float(state["best"]),
            "num_bad_epochs": int(state["num_bad_epochs"]),
            "cooldown_counter": int(state["cooldown_counter"]),
            "last_epoch": int(state["last_epoch"]),
        }
        for name, value in values.items():
            setattr(self, name, value)
