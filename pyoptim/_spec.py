"""What every backend shares about each optimizer.

For each optimizer: its hyperparameters with torch.optim's names and defaults, their checks, the
state buffers its options need, the flags the compiled kernels are specialized on, and the per-step
scalars. The scalars are computed here, once per call, in float64 (Python floats), exactly as
torch.optim computes them; each backend casts them once to its compute dtype (float32 for float16,
bfloat16 and float32 params, float64 for float64 params) before its loop. The field order of each
``*Scalars`` tuple is the order the C++ and CUDA kernels read them in (checked by a test).

The equations themselves are in pyoptim.reference.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

# The supported (param, grad, state) dtype combinations: the grad is the param's dtype or float32,
# the state float32 or the param's dtype; 16-bit values are computed in float32.
DTYPE_COMBINATIONS: tuple[tuple[str, str, str], ...] = (
    ("float32", "float32", "float32"),
    ("float64", "float64", "float64"),
    ("float64", "float64", "float32"),
    ("float64", "float32", "float64"),
    ("float64", "float32", "float32"),
    ("float16", "float16", "float32"),
    ("float16", "float16", "float16"),
    ("float16", "float32", "float32"),
    ("float16", "float32", "float16"),
    ("bfloat16", "bfloat16", "float32"),
    ("bfloat16", "bfloat16", "bfloat16"),
    ("bfloat16", "float32", "float32"),
    ("bfloat16", "float32", "bfloat16"),
)
SUPPORTED_DTYPES = ("float32", "float64", "float16", "bfloat16")


def supported_dtypes_text() -> str:
    """'(float32, float32, float32), (float64, float64 or float32, float64 or float32), ...'"""
    parts = []
    for param in SUPPORTED_DTYPES:
        grads = [g for p, g, _ in DTYPE_COMBINATIONS if p == param]
        states = [s for p, _, s in DTYPE_COMBINATIONS if p == param]
        grads = list(dict.fromkeys(grads))
        states = list(dict.fromkeys(states))
        parts.append(f"({param}, {' or '.join(grads)}, {' or '.join(states)})")
    return ", ".join(parts)


def default_state_dtype(param_dtype: str) -> str:
    """float32 for 16-bit params (their state would lose the small updates), else the param's."""
    return "float32" if param_dtype in ("float16", "bfloat16") else param_dtype


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks (torch.optim's rules; the message names the argument and the value)


def _real(name: str, value: Any) -> float:
    if type(value) is float:  # the common cases, without the ABC check
        return value
    if type(value) is not int and (isinstance(value, bool) or
                                   not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"invalid {name}: an integer of {len(str(value))} digits is beyond "
                         "float64's range") from None


def _at_least_zero(name: str, value: Any) -> None:
    if not 0.0 <= _real(name, value):  # also refuses NaN
        raise ValueError(f"invalid {name}={value!r}: expected a value >= 0")


def _betas(betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= _real(f"betas[{index}]", beta) < 1.0:
            raise ValueError(f"invalid betas[{index}]={beta!r}: expected a value in [0, 1)")


def check_step(step: Any) -> int:
    """step is the 1-based number of this update."""
    if isinstance(step, bool):
        raise TypeError("step must be an integer >= 1, got bool")
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer >= 1, got {type(step).__name__}") from None
    if step < 1:
        raise ValueError(f"invalid step={step}: expected the 1-based number of this update (>= 1)")
    if step > _LARGEST_STEP:  # its powers and products are computed in float64
        raise ValueError(f"invalid step of {len(str(step))} digits: expected at most "
                         f"{_LARGEST_STEP:.3e}, the largest float64")
    return step


_LARGEST_STEP = int(np.finfo(np.float64).max)


# ---------------------------------------------------------------------------------------------
# Per-step scalars, float64. Field names are the kernels' (csrc/rules.h).


class SgdScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    momentum: float
    one_minus_dampening: float
    lr: float


class AdagradScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    clr: float
    eps: float


class RmspropScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    alpha: float
    one_minus_alpha: float
    eps: float
    momentum: float
    lr: float


class AdamScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    decay_factor: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    step_size: float
    bias_correction2_sqrt: float
    eps: float


class AdamaxScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    one_minus_beta1: float
    beta2: float
    eps: float
    clr: float


class NadamScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    decay_factor: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    bias_correction2: float
    eps: float
    grad_coefficient: float
    exp_avg_coefficient: float


class RadamScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    decay_factor: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    bias_correction1: float
    lr: float
    bias_correction2_sqrt: float
    eps: float
    rect: float


class AdadeltaScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    rho: float
    one_minus_rho: float
    eps: float
    lr: float


class AsgdScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    decay_factor: float
    eta: float
    mu: float


class RpropScalars(NamedTuple):
    grad_factor: float
    etaminus: float
    etaplus: float
    step_size_min: float
    step_size_max: float


class LambScalars(NamedTuple):
    grad_factor: float
    weight_decay: float
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    inv_bias_correction1: float
    inv_bias_correction2: float
    eps: float
    lr: float


class LionScalars(NamedTuple):
    grad_factor: float
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    lr: float
    weight_decay: float


def _grad_factor(hp: Mapping[str, Any], grad_factor: float) -> float:
    return -grad_factor if hp["maximize"] else grad_factor


def _sgd_check(hp):
    for name in ("lr", "momentum", "weight_decay"):
        _at_least_zero(name, hp[name])
    _real("dampening", hp["dampening"])
    if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
        raise ValueError(
            "nesterov=True requires momentum > 0 and dampening=0, got "
            f"momentum={hp['momentum']!r}, dampening={hp['dampening']!r}"
        )


def _sgd_flags(hp, step, host=None):
    return {
        "weight_decay": hp["weight_decay"] != 0,
        "momentum": hp["momentum"] != 0,
        "nesterov": bool(hp["nesterov"]) and hp["momentum"] != 0,
        "first_step": step == 1,
    }


def _sgd_scalars(hp, step, grad_factor, host):
    return SgdScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        momentum=float(hp["momentum"]),
        one_minus_dampening=1.0 - hp["dampening"],
        lr=float(hp["lr"]),
    )


def _adagrad_check(hp):
    for name in ("lr", "lr_decay", "weight_decay", "eps"):
        _at_least_zero(name, hp[name])


def _adagrad_flags(hp, step, host=None):
    return {"weight_decay": hp["weight_decay"] != 0}


def _adagrad_scalars(hp, step, grad_factor, host):
    return AdagradScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        clr=hp["lr"] / (1 + (step - 1) * hp["lr_decay"]),
        eps=float(hp["eps"]),
    )


def _rmsprop_check(hp):
    for name in ("lr", "alpha", "eps", "weight_decay", "momentum"):
        _at_least_zero(name, hp[name])


def _rmsprop_flags(hp, step, host=None):
    return {
        "weight_decay": hp["weight_decay"] != 0,
        "centered": bool(hp["centered"]),
        "momentum": hp["momentum"] > 0,
    }


def _rmsprop_scalars(hp, step, grad_factor, host):
    return RmspropScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        alpha=float(hp["alpha"]),
        one_minus_alpha=1.0 - hp["alpha"],
        eps=float(hp["eps"]),
        momentum=float(hp["momentum"]),
        lr=float(hp["lr"]),
    )


def _adam_check(hp):
    for name in ("lr", "eps", "weight_decay"):
        _at_least_zero(name, hp[name])
    _betas(hp["betas"])


def _adam_flags(hp, step, host=None):
    return {
        "weight_decay": hp["weight_decay"] != 0,
        "decoupled_weight_decay": bool(hp.get("decoupled_weight_decay", True)),
        "amsgrad": bool(hp["amsgrad"]),
    }


def _adam_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    lr = float(hp["lr"])
    # as torch.optim.Adam computes them, in float64
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    return AdamScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        decay_factor=1 - lr * hp["weight_decay"],
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        step_size=lr / bias_correction1,
        bias_correction2_sqrt=bias_correction2**0.5,
        eps=float(hp["eps"]),
    )


def _adamax_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    return AdamaxScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        eps=float(hp["eps"]),
        clr=hp["lr"] / (1 - beta1**step),
    )


def _nadam_check(hp):
    _adam_check(hp)
    _at_least_zero("momentum_decay", hp["momentum_decay"])


def _nadam_momentum(hp, step):
    """torch's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))."""
    return float(hp["betas"][0]) * (1.0 - 0.5 * (0.96 ** (step * hp["momentum_decay"])))


def _nadam_advance(hp, step, host):
    # mu_product *= mu_t, in the state's dtype (torch keeps it in float32, its scalar dtype)
    mu_product = np.asarray(host["mu_product"])
    return {"mu_product": mu_product * mu_product.dtype.type(_nadam_momentum(hp, step))}


def _nadam_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    lr = float(hp["lr"])
    mu = _nadam_momentum(hp, step)
    mu_next = _nadam_momentum(hp, step + 1)
    mu_product = float(_nadam_advance(hp, step, host)["mu_product"])
    mu_product_next = mu_product * mu_next
    return NadamScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        decay_factor=1 - lr * hp["weight_decay"],
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        bias_correction2=1 - beta2**step,
        eps=float(hp["eps"]),
        grad_coefficient=lr * (1.0 - mu) / (1.0 - mu_product),
        exp_avg_coefficient=lr * mu_next / (1.0 - mu_product_next),
    )


def _radam_rho(hp, step):
    beta2 = float(hp["betas"][1])
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)


def _radam_flags(hp, step, host=None):
    return {"weight_decay": hp["weight_decay"] != 0,
            "decoupled_weight_decay": bool(hp["decoupled_weight_decay"]),
            "rectify": _radam_rho(hp, step)[1] > 5.0}  # torch's test for the rectification


def _radam_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    lr = float(hp["lr"])
    rho_inf, rho_t = _radam_rho(hp, step)
    rectify = rho_t > 5.0
    return RadamScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        decay_factor=1 - lr * hp["weight_decay"],
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        bias_correction1=1 - beta1**step,
        lr=lr,
        bias_correction2_sqrt=(1 - beta2**step) ** 0.5,
        eps=float(hp["eps"]),
        rect=((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        if rectify else 1.0,
    )


def _adadelta_check(hp):
    for name in ("lr", "eps", "weight_decay"):
        _at_least_zero(name, hp[name])
    if not 0.0 <= _real("rho", hp["rho"]) <= 1.0:
        raise ValueError(f"invalid rho={hp['rho']!r}: expected a value in [0, 1]")


def _adadelta_scalars(hp, step, grad_factor, host):
    return AdadeltaScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        rho=float(hp["rho"]),
        one_minus_rho=1 - hp["rho"],
        eps=float(hp["eps"]),
        lr=float(hp["lr"]),
    )


def _asgd_check(hp):
    for name in ("lr", "weight_decay"):
        _at_least_zero(name, hp[name])
    for name in ("lambd", "alpha", "t0"):
        _real(name, hp[name])


def _asgd_flags(hp, step, host=None):
    mu = 1.0 if host is None else float(host["mu"])
    return {"weight_decay": hp["weight_decay"] != 0, "average": mu != 1.0}


def _asgd_advance(hp, step, host):
    # as torch: after step t, eta = lr / (1 + lambd*lr*t)^alpha and mu = 1 / max(1, t - t0),
    # stored in the states' dtypes (torch's scalar dtype, float32)
    lr = float(hp["lr"])
    eta = np.asarray(host["eta"])
    mu = np.asarray(host["mu"])
    try:  # float() refuses the complex power of a negative base
        next_eta = float(lr / ((1 + hp["lambd"] * lr * step) ** hp["alpha"]))
    except (ArithmeticError, TypeError) as e:  # a zero or overflowing power
        next_eta = e
    if not isinstance(next_eta, float) or not math.isfinite(next_eta):
        raise ValueError(
            f"lambd={hp['lambd']!r}, alpha={hp['alpha']!r}: eta after step {step}, "
            f"lr / (1 + lambd*lr*{step})^alpha, is not a finite real number ({next_eta})")
    return {"eta": eta.dtype.type(next_eta), "mu": mu.dtype.type(1 / max(1, step - hp["t0"]))}


def _asgd_scalars(hp, step, grad_factor, host):
    eta = float(host["eta"])
    return AsgdScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        decay_factor=1 - hp["lambd"] * eta,
        eta=eta,
        mu=float(host["mu"]),
    )


def _rprop_check(hp):
    _at_least_zero("lr", hp["lr"])
    etas, sizes = hp["etas"], hp["step_sizes"]
    if not isinstance(etas, (tuple, list)) or len(etas) != 2:
        raise TypeError(f"etas must be a pair (etaminus, etaplus), got {etas!r}")
    if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
        raise TypeError(f"step_sizes must be a pair (min, max), got {sizes!r}")
    if not 0.0 < _real("etas[0]", etas[0]) < 1.0 < _real("etas[1]", etas[1]):
        raise ValueError(f"invalid etas={tuple(etas)!r}: expected 0 < etaminus < 1 < etaplus")
    for i, size in enumerate(sizes):
        if math.isnan(_real(f"step_sizes[{i}]", size)):  # clamp's bound: NaN has no order
            raise ValueError(f"invalid step_sizes={tuple(sizes)!r}: expected numbers, not NaN")


def _rprop_scalars(hp, step, grad_factor, host):
    return RpropScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        etaminus=float(hp["etas"][0]),
        etaplus=float(hp["etas"][1]),
        step_size_min=float(hp["step_sizes"][0]),
        step_size_max=float(hp["step_sizes"][1]),
    )


def _lion_check(hp):
    for name in ("lr", "weight_decay"):
        _at_least_zero(name, hp[name])
    betas = hp["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= _real(f"betas[{index}]", beta) <= 1.0:
            raise ValueError(f"invalid betas[{index}]={beta!r}: expected a value in [0, 1]")


def _lion_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    return LionScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        beta1=beta1,
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        lr=float(hp["lr"]),
        weight_decay=float(hp["weight_decay"]),
    )


def _lamb_scalars(hp, step, grad_factor, host):
    beta1, beta2 = (float(b) for b in hp["betas"])
    return LambScalars(
        grad_factor=_grad_factor(hp, grad_factor),
        weight_decay=float(hp["weight_decay"]),
        beta1=beta1,
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        inv_bias_correction1=1 / (1 - beta1**step),
        inv_bias_correction2=1 / (1 - beta2**step),
        eps=float(hp["eps"]),
        lr=float(hp["lr"]),
    )


def _weight_decay_flag(hp, step, host=None):
    return {"weight_decay": hp["weight_decay"] != 0}


_HOST_INITIAL = {
    "mu_product": lambda hp: 1.0,
    "eta": lambda hp: hp["lr"],
    "mu": lambda hp: 1.0,
}


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    """One optimizer as the backends see it."""

    name: str  # the functional / reference function name
    defaults: Mapping[str, Any]  # hyperparameters of the functional form, torch.optim's defaults
    states: tuple[str, ...]  # state names, in kernel order
    flags: tuple[str, ...]  # kernel flag names: bit k of the mask is flags[k]
    scalar_type: type
    _check: Callable[[Mapping[str, Any]], None]
    _flags: Callable[..., dict]  # (hp, step, host=None) -> {flag name: bool}
    _scalars: Callable[..., tuple]  # (hp, step, grad_factor, host) -> scalars
    kernel: str = ""  # the compiled rule that runs it, if not its name (AdamW runs Adam's)
    # the states that options need, from the active flags; default: all of them
    _needs: Callable[[Mapping[str, bool]], tuple[str, ...]] | None = None
    # torch's scalar state (NAdam's mu_product, ASGD's eta and mu): one value per param, kept on
    # the host in a one-element array of the state's own dtype. The per-step scalars are derived
    # from it; _advance gives its values after this step.
    host_states: tuple[str, ...] = ()
    _advance: Callable[..., dict] | None = None  # (hp, step, host) -> new host values
    # False where an element's update depends on the whole array (LAMB's trust ratio)
    elementwise: bool = True

    def __post_init__(self):
        if not self.kernel:
            object.__setattr__(self, "kernel", self.name)

    def hyperparameters(self, given: Mapping[str, Any]) -> dict:
        """The defaults updated with the given values, checked."""
        unknown = set(given) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}; "
                f"expected {sorted(self.defaults)}"
            )
        hp = {**self.defaults, **given}
        self.check(hp)
        return hp

    def check(self, hp: Mapping[str, Any]) -> None:
        """Checks a complete set of hyperparameters (TypeError or ValueError naming the first bad
        one)."""
        try:
            self._check(hp)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{self.name}: {e}") from None

    def active_flags(self, hp: Mapping[str, Any], step: int, host=None) -> dict:
        return self._flags(hp, step, host)

    def flag_mask(self, hp: Mapping[str, Any], step: int, host=None) -> int:
        """The kernels' bit mask: bit k set when flags[k] is active."""
        active = self._flags(hp, step, host)
        mask = 0
        for k, name in enumerate(self.flags):
            if active[name]:
                mask |= 1 << k
        return mask

    def needed_states(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        """The state buffers a step with these hyperparameters reads or writes."""
        return self._needs(self._flags(hp, 1)) if self._needs else self.states

    def scalars(self, hp: Mapping[str, Any], step: int, grad_factor: float = 1.0,
                host: Mapping[str, Any] | None = None) -> tuple:
        """The per-step scalars in float64. grad_factor multiplies the gradient first (its sign
        flips for maximize); pyoptim's classes fold loss-scale and clipping factors into it.
        host: the current values of the host states (0-d NumPy values of their dtype)."""
        return self._scalars(hp, step, grad_factor, host or {})

    def advance_host(self, hp: Mapping[str, Any], step: int, host: Mapping[str, Any]) -> dict:
        """The host states' values after this step, in their own dtypes."""
        return self._advance(hp, step, host) if self._advance else {}

    def initial_host(self, hp: Mapping[str, Any], dtype=np.float32) -> dict:
        """Host states before the first step, as torch.optim initializes them (float32, torch's
        scalar dtype)."""
        return {name: np.array(_HOST_INITIAL[name](hp), dtype) for name in self.host_states}


SGD = Optimizer(
    name="sgd",
    defaults=dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False),
    states=("momentum_buffer",),
    flags=("weight_decay", "momentum", "nesterov", "first_step"),
    scalar_type=SgdScalars,
    _check=_sgd_check,
    _flags=_sgd_flags,
    _scalars=_sgd_scalars,
    _needs=lambda f: ("momentum_buffer",) if f["momentum"] else (),
)

ADAGRAD = Optimizer(
    name="adagrad",
    defaults=dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False),
    states=("sum",),
    flags=("weight_decay",),
    scalar_type=AdagradScalars,
    _check=_adagrad_check,
    _flags=_adagrad_flags,
    _scalars=_adagrad_scalars,
)

RMSPROP = Optimizer(
    name="rmsprop",
    defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                  maximize=False),
    states=("square_avg", "momentum_buffer", "grad_avg"),
    flags=("weight_decay", "centered", "momentum"),
    scalar_type=RmspropScalars,
    _check=_rmsprop_check,
    _flags=_rmsprop_flags,
    _scalars=_rmsprop_scalars,
    _needs=lambda f: ("square_avg",) + ("momentum_buffer",) * f["momentum"]
    + ("grad_avg",) * f["centered"],
)

ADAM = Optimizer(
    name="adam",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  maximize=False, decoupled_weight_decay=False),
    states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    flags=("weight_decay", "decoupled_weight_decay", "amsgrad"),
    scalar_type=AdamScalars,
    _check=_adam_check,
    _flags=_adam_flags,
    _scalars=_adam_scalars,
    _needs=lambda f: ("exp_avg", "exp_avg_sq") + ("max_exp_avg_sq",) * f["amsgrad"],
)

# AdamW is Adam with decoupled weight decay and torch's default weight_decay=1e-2.
ADAMW = Optimizer(
    name="adamw",
    kernel="adam",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                  maximize=False),
    states=ADAM.states,
    flags=ADAM.flags,
    scalar_type=AdamScalars,
    _check=_adam_check,
    _flags=_adam_flags,  # decoupled_weight_decay absent: always decoupled
    _scalars=_adam_scalars,
    _needs=ADAM._needs,
)

ADAMAX = Optimizer(
    name="adamax",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    states=("exp_avg", "exp_inf"),
    flags=("weight_decay",),
    scalar_type=AdamaxScalars,
    _check=_adam_check,
    _flags=_weight_decay_flag,
    _scalars=_adamax_scalars,
)

NADAM = Optimizer(
    name="nadam",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    states=("exp_avg", "exp_avg_sq"),
    flags=("weight_decay", "decoupled_weight_decay"),
    scalar_type=NadamScalars,
    _check=_nadam_check,
    _flags=lambda hp, step, host=None: {
        "weight_decay": hp["weight_decay"] != 0,
        "decoupled_weight_decay": bool(hp["decoupled_weight_decay"])},
    _scalars=_nadam_scalars,
    host_states=("mu_product",),
    _advance=_nadam_advance,
)

RADAM = Optimizer(
    name="radam",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  decoupled_weight_decay=False, maximize=False),
    states=("exp_avg", "exp_avg_sq"),
    flags=("weight_decay", "decoupled_weight_decay", "rectify"),
    scalar_type=RadamScalars,
    _check=_adam_check,
    _flags=_radam_flags,
    _scalars=_radam_scalars,
)

ADADELTA = Optimizer(
    name="adadelta",
    defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    states=("square_avg", "acc_delta"),
    flags=("weight_decay",),
    scalar_type=AdadeltaScalars,
    _check=_adadelta_check,
    _flags=_weight_decay_flag,
    _scalars=_adadelta_scalars,
)

ASGD = Optimizer(
    name="asgd",
    defaults=dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False),
    states=("ax",),
    flags=("weight_decay", "average"),
    scalar_type=AsgdScalars,
    _check=_asgd_check,
    _flags=_asgd_flags,
    _scalars=_asgd_scalars,
    host_states=("eta", "mu"),
    _advance=_asgd_advance,
)

RPROP = Optimizer(
    name="rprop",
    defaults=dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False),
    states=("prev", "step_size"),
    flags=(),
    scalar_type=RpropScalars,
    _check=_rprop_check,
    _flags=lambda hp, step, host=None: {},
    _scalars=_rprop_scalars,
)

LION = Optimizer(
    name="lion",
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    states=("exp_avg",),
    flags=("weight_decay",),
    scalar_type=LionScalars,
    _check=_lion_check,
    _flags=_weight_decay_flag,
    _scalars=_lion_scalars,
)

# LAMB as optax.lamb (not in torch.optim): its update is scaled per param array by a trust
# ratio, so its kernel runs two passes (csrc/kernels.h run_trust_ratio).
LAMB = Optimizer(
    name="lamb",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False),
    states=("exp_avg", "exp_avg_sq"),
    flags=("weight_decay",),
    scalar_type=LambScalars,
    _check=_adam_check,
    _flags=_weight_decay_flag,
    _scalars=_lamb_scalars,
    elementwise=False,
)

OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o for o in (SGD, ADAGRAD, RMSPROP, ADAM, ADAMW, ADAMAX, NADAM, RADAM, ADADELTA, ASGD,
                        RPROP, LION, LAMB)
}
