"""Stateful optimizers with torch.optim's interface: SGD, Adagrad, RMSprop, Adam, AdamW, Adamax,
NAdam, RAdam, Adadelta, ASGD, Rprop, and Lion (not in torch.optim).

::

    opt = pyoptim.Adam(params, lr=1e-3)            # params: an array, a list, or param groups
    for batch in data:
        grads = compute_grads(params, batch)       # one per param, in order
        opt.step(grads)

Each class takes torch.optim's constructor arguments with torch's defaults (Lion, which torch lacks:
those of pyoptim.functional.lion) and computes torch's math (pyoptim.reference states it), and
adds:

* ``state_dtype=None``: the dtype of the state buffers; by default float32 for float16 and
  bfloat16 params, else the param's. State lives on the param's device.
* ``max_grad_norm=None``: clip the gradients by their global norm over all params, as
  ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` before the step does. The norm is
  computed in float64 with a fixed summation order, the same for any thread count; the last norm
  is ``opt.last_grad_norm``.
* ``clip_value=None``: clamp every gradient element to [-clip_value, clip_value], as
  ``torch.nn.utils.clip_grad_value_``. Exclusive with max_grad_norm.
* ``skip_nonfinite=False``: with True, a step whose gradients hold a NaN or an infinity anywhere
  updates nothing (no param, state buffer, step count or schedule position) and returns False.
* ``backend=None``: 'cpu' (C++), 'cuda', or 'numpy' (the reference, slow); None picks from the
  params' device.

``step(grads, grad_scale=s)`` divides the gradients by s (the loss scale of mixed-precision
training) before clipping. Neither clipping nor unscaling writes the gradients: their factor
multiplies each gradient inside the update.

All host params of an optimizer are updated by one call into C++, one parallel region over all
their elements (a kernel call per distinct dtype combination and per distinct set of options);
:mod:`pyoptim.flat` puts a whole model in one buffer.

torch-only flags: ``foreach``, ``fused`` and ``capturable`` choose torch's implementation, not
the math; they are accepted (so that torch code runs unchanged), kept in ``param_groups`` and
ignored. ``differentiable=True`` is refused: pyoptim updates arrays in place, outside autograd.

``lr`` may be a schedule from :mod:`pyoptim.schedules`: step k (from 0) uses ``lr(k)``.
Checkpoints: ``state_dict()`` / ``load_state_dict()`` in torch's layout, ``save(path)`` /
``load(path)`` to a .npz file; see :meth:`Optimizer.state_dict`.
"""

from __future__ import annotations

from typing import Mapping

from . import _spec
from ._checkpoint import CheckpointError
from ._optimizer import Optimizer, ParamState, StateView
from .schedules import Schedule

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
           "Adadelta", "ASGD", "Rprop", "Lion", "Lamb", "create", "CheckpointError", "ParamState",
           "StateView", "OPTIMIZER_NAMES"]


def _pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend):
    return dict(state_dtype=state_dtype, max_grad_norm=max_grad_norm, clip_value=clip_value,
                skip_nonfinite=skip_nonfinite, backend=backend)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum
    (torch.optim.SGD; equations: pyoptim.reference.sgd).

    State: ``momentum_buffer`` (momentum != 0), set to the gradient on a param's first step.
    Plain and mini-batch gradient descent are SGD with momentum=0. torch's SGD keeps no step
    count; pyoptim's does (in state_dict, like the others').
    """

    _spec = _spec.SGD

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, state_dtype=None, max_grad_norm=None, clip_value=None,
                 skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                 nesterov=nesterov, maximize=maximize, foreach=foreach,
                 differentiable=differentiable, fused=fused),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))

    def _infer_step(self, entry: Mapping) -> int:
        # a torch SGD state: a momentum buffer means at least one step was taken
        return 1 if entry.get("momentum_buffer") is not None else 0


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad; equations: pyoptim.reference.adagrad).

    State: ``sum``, starting at initial_accumulator_value.
    """

    _spec = _spec.ADAGRAD

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, state_dtype=None, max_grad_norm=None,
                 clip_value=None, skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                 initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                 maximize=maximize, differentiable=differentiable, fused=fused),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))

    def _check_class_hyperparameters(self, group, where):
        value = group["initial_accumulator_value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(
                f"{where}: invalid initial_accumulator_value={value!r}: expected a value >= 0")
        lr = group["lr"]
        if isinstance(lr, Schedule) and lr.cycles_momentum:
            raise ValueError(
                f"{where}: {type(lr).__name__} with cycle_momentum=True needs an optimizer with "
                "momentum or betas; pass cycle_momentum=False")

    def _initial_value(self, name, group):
        return float(group["initial_accumulator_value"]) if name == "sum" else 0.0


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum (torch.optim.RMSprop; equations:
    pyoptim.reference.rmsprop).

    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    _spec = _spec.RMSPROP

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, state_dtype=None, max_grad_norm=None, clip_value=None,
                 skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                 weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                 maximize=maximize, differentiable=differentiable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class Adam(Optimizer):
    """Adam, with AMSGrad and optional decoupled weight decay (torch.optim.Adam; equations:
    pyoptim.reference.adam).

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    _spec = _spec.ADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 state_dtype=None, max_grad_norm=None, clip_value=None, skip_nonfinite=False,
                 backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                 maximize=maximize, foreach=foreach, capturable=capturable,
                 differentiable=differentiable, fused=fused,
                 decoupled_weight_decay=decoupled_weight_decay),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class AdamW(Optimizer):
    """AdamW: Adam with decoupled weight decay (torch.optim.AdamW; equations:
    pyoptim.reference.adamw). Default weight_decay=1e-2.

    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad). Its param groups carry
    ``decoupled_weight_decay=True``, as torch's do; it cannot be switched off (use Adam).
    """

    _spec = _spec.ADAMW

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, state_dtype=None, max_grad_norm=None,
                 clip_value=None, skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                 maximize=maximize, foreach=foreach, capturable=capturable,
                 differentiable=differentiable, fused=fused, decoupled_weight_decay=True),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))

    def _check_class_hyperparameters(self, group, where):
        if group["decoupled_weight_decay"] is not True:
            raise ValueError(
                f"{where}: AdamW always decouples weight decay (decoupled_weight_decay=True); "
                "use Adam for coupled L2 decay")


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (torch.optim.Adamax; equations:
    pyoptim.reference.adamax).

    State: ``exp_avg``, ``exp_inf``.
    """

    _spec = _spec.ADAMAX

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False,
                 state_dtype=None, max_grad_norm=None, clip_value=None, skip_nonfinite=False,
                 backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay, foreach=foreach,
                 maximize=maximize, differentiable=differentiable, capturable=capturable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class NAdam(Optimizer):
    """NAdam, Adam with Nesterov momentum (torch.optim.NAdam; equations:
    pyoptim.reference.nadam).

    State: ``exp_avg``, ``exp_avg_sq``, and ``mu_product``, torch's scalar state: one float32 per
    param, kept on the host (``opt.state[i]["mu_product"]`` is a 0-d view).
    """

    _spec = _spec.NADAM

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, state_dtype=None,
                 max_grad_norm=None, clip_value=None, skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                 momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                 maximize=maximize, foreach=foreach, capturable=capturable,
                 differentiable=differentiable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class RAdam(Optimizer):
    """RAdam, rectified Adam (torch.optim.RAdam; equations: pyoptim.reference.radam).

    State: ``exp_avg``, ``exp_avg_sq``.
    """

    _spec = _spec.RADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, state_dtype=None, max_grad_norm=None, clip_value=None,
                 skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                 maximize=maximize, foreach=foreach, capturable=capturable,
                 decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class Adadelta(Optimizer):
    """Adadelta (torch.optim.Adadelta; equations: pyoptim.reference.adadelta).

    State: ``square_avg``, ``acc_delta``.
    """

    _spec = _spec.ADADELTA

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False, state_dtype=None,
                 max_grad_norm=None, clip_value=None, skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                 capturable=capturable, foreach=foreach, differentiable=differentiable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class ASGD(Optimizer):
    """Averaged SGD (torch.optim.ASGD; equations: pyoptim.reference.asgd).

    State: ``ax`` (the average), and ``eta`` and ``mu``, torch's scalar states: one float32 each
    per param, kept on the host (``opt.state[i]["eta"]`` is a 0-d view).
    """

    _spec = _spec.ASGD
    _started_at_first_step = ("eta",)  # the lr of the param's first step

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0,
                 foreach=None, maximize=False, differentiable=False, capturable=False, *,
                 state_dtype=None, max_grad_norm=None, clip_value=None, skip_nonfinite=False,
                 backend=None):
        super().__init__(
            params,
            dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                 foreach=foreach, maximize=maximize, differentiable=differentiable,
                 capturable=capturable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class Rprop(Optimizer):
    """Rprop, resilient backpropagation (torch.optim.Rprop; equations: pyoptim.reference.rprop).

    State: ``prev`` (the last gradient), ``step_size`` (per element, starting at the lr of the
    param's first step: lr enters nowhere else, so changing it later, or a schedule past that
    step, has no effect, as in torch).
    """

    _spec = _spec.RPROP
    _started_at_first_step = ("step_size",)

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False,
                 state_dtype=None, max_grad_norm=None, clip_value=None, skip_nonfinite=False,
                 backend=None):
        super().__init__(
            params,
            dict(lr=lr, etas=_pair(etas), step_sizes=_pair(step_sizes), foreach=foreach,
                 maximize=maximize, differentiable=differentiable, capturable=capturable),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))

    def _initial_value(self, name, group):
        if name != "step_size":
            return 0.0
        lr = group["lr"]
        return float(lr(self._step_count) if isinstance(lr, Schedule) else lr)


class Lion(Optimizer):
    """Lion, evolved sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms"; not in torch.optim; equations: pyoptim.reference.lion). Use a smaller lr than
    AdamW's (3-10x) and a larger weight decay.

    State: ``exp_avg``.
    """

    _spec = _spec.LION

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 state_dtype=None, max_grad_norm=None, clip_value=None, skip_nonfinite=False,
                 backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), weight_decay=weight_decay, maximize=maximize),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


class Lamb(Optimizer):
    """LAMB, layer-wise adaptive moments (You et al. 2020), as optax.lamb: Adam's direction
    plus decoupled weight decay, scaled per param array by the trust ratio ||p|| / ||u||
    (equations and conventions: pyoptim.reference.lamb; not in torch.optim). The ratio is per
    param: give one param per layer (a flat buffer of the whole model gets one ratio).

    State: ``exp_avg``, ``exp_avg_sq``.
    """

    _spec = _spec.LAMB

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *,
                 maximize=False, state_dtype=None, max_grad_norm=None, clip_value=None,
                 skip_nonfinite=False, backend=None):
        super().__init__(
            params,
            dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                 maximize=maximize),
            **_pyoptim_options(state_dtype, max_grad_norm, clip_value, skip_nonfinite, backend))


def _pair(betas):
    return tuple(betas) if isinstance(betas, list) else betas


# ---------------------------------------------------------------------------------------------
# by name

# name -> (class, hyperparameters the name implies)
OPTIMIZER_NAMES: dict[str, tuple[type, dict]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (Adagrad, {}),
    "rmsprop": (RMSprop, {}),
    "adam": (Adam, {}),
    "amsgrad": (Adam, {"amsgrad": True}),
    "adamw": (AdamW, {}),
    "adamax": (Adamax, {}),
    "nadam": (NAdam, {}),
    "radam": (RAdam, {}),
    "adadelta": (Adadelta, {}),
    "asgd": (ASGD, {}),
    "rprop": (Rprop, {}),
    "lion": (Lion, {}),
    "lamb": (Lamb, {}),
}


def create(name: str, params, **hyperparameters) -> Optimizer:
    """An optimizer by name, as Keras users write ``optimizer="adam"``.

    Names (case-insensitive): 'sgd', 'momentum' (SGD with momentum=0.9), 'nesterov' (SGD with
    momentum=0.9, nesterov=True), 'adagrad', 'rmsprop', 'adam', 'amsgrad' (Adam with
    amsgrad=True), 'adamw', 'adamax', 'nadam', 'radam', 'adadelta', 'asgd', 'rprop', 'lion'.
    hyperparameters are the class's arguments (torch's names, e.g. lr, and pyoptim's:
    max_grad_norm, state_dtype...); they override what the name implies.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZER_NAMES)}")
    cls, implied = OPTIMIZER_NAMES[key]
    return cls(params, **{**implied, **hyperparameters})
