"""The NumPy reference: the specification of every optimizer's math.

Each function updates ``param`` and its state buffers in place, one step, with torch.optim's
equations, hyperparameter names and defaults (torch 2.13, the single-tensor "for-loop" path, which
is torch's default on CPU). The compiled backends (C++, CUDA) are tested element by element,
state included, against these functions.

Conventions shared by all functions:

* ``step`` is the 1-based number of this update (torch's ``state["step"]`` after its increment).
* Every value is computed in the compute dtype: float32 for float16, bfloat16 and float32 params,
  float64 for float64 params, or ``compute_dtype`` if given (``np.float64`` makes this an
  accuracy oracle). Arrays are widened on load and rounded to nearest even on store, so a state
  buffer may have another dtype than its param (float32 state for 16-bit params is the default
  elsewhere in pyoptim).
* Per-step scalars (learning rate after decay, bias corrections, 1 - beta, ...) are computed once
  in float64 by ``pyoptim._spec`` exactly as torch computes them, then cast to the compute dtype.
* ``maximize`` flips the gradient's sign before anything else; so does a negative
  ``grad_factor``, by which the gradient is multiplied first (1 unless pyoptim's optimizer classes
  fold loss-scale unscaling or global-norm clipping into the step). ``clip_value``, if given,
  then clamps each gradient element to [-clip_value, clip_value]
  (torch.nn.utils.clip_grad_value_ on the unscaled gradient), before weight decay.
* The operations run in the order torch runs them, and the C++ kernels run them in this order too
  (csrc/rules.h), so that both round alike: with the same compute dtype the CPU backend matches
  these functions to the bit.
* NaN and Inf propagate silently, as in torch.
* Inputs are not checked here; ``pyoptim.functional`` checks them for every backend.

Plain (batch) gradient descent and mini-batch SGD are both :func:`sgd` with ``momentum=0``: the
first with the gradient of the loss over the whole data set, the second over a batch.
"""

from __future__ import annotations

import math
import numpy as np

from . import _spec
from ._memory import as_dtype

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta",
           "asgd", "rprop", "lion", "lamb", "compute_dtype_for", "sum_of_squares"]


def compute_dtype_for(param_dtype) -> np.dtype:
    """The dtype a param of this dtype is computed in: float32 for 16-bit params."""
    param_dtype = as_dtype(param_dtype)
    return np.dtype(np.float32) if param_dtype.itemsize == 2 else param_dtype


def _setup(opt, hp, step, grad_factor, param, compute_dtype, host=None):
    dtype = compute_dtype_for(param.dtype) if compute_dtype is None else as_dtype(compute_dtype)
    scalars = opt.scalars(hp, step, grad_factor, host)
    return type(scalars)(*(dtype.type(v) for v in scalars)), dtype


def _host(opt, hp, step, arrays):
    """The host states' current values, and a function that stores their next ones (worked out
    here, before the step writes anything: one that cannot be computed raises first)."""
    current = {name: np.asarray(a).reshape(()).copy() for name, a in arrays.items()}
    advanced = opt.advance_host(hp, step, current)

    def advance():
        for name, value in advanced.items():
            arrays[name][...] = value

    return current, advance


def _load(array, dtype):
    return np.asarray(array).astype(dtype)


def _store(array, value):
    array[...] = value.astype(array.dtype, copy=False)


def _lerp(start, end, weight):
    """torch.lerp(start, end, weight) for a scalar weight: two formulas, each exact at its end."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _sign(x):
    """torch.sign: -1, 0 or 1, and 0 for NaN (np.sign gives NaN there)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _gradient(s, g, p, weight_decay, decoupled=False, clip_value=None):
    """The common prologue: the gradient's sign (maximize) and factor, clamped to
    [-clip_value, clip_value] if clip_value is given (NaN stays NaN), then weight decay, either
    coupled (L2: g + wd*p) or decoupled (p * (1 - lr*wd)). Returns (p, g)."""
    g = s.grad_factor * g
    if clip_value is not None:
        bound = g.dtype.type(clip_value)
        g = np.minimum(np.maximum(g, -bound), bound)
    if weight_decay != 0:
        if decoupled:
            p = p * s.decay_factor
        else:
            g = g + s.weight_decay * p
    return p, g


def sgd(param, grad, *, momentum_buffer=None, step, lr=1e-3, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False, compute_dtype=None, grad_factor=1.0,
        clip_value=None):
    r"""SGD with momentum, dampening and Nesterov momentum (torch.optim.SGD).

    With g the gradient, p the param, b the momentum buffer (state ``momentum_buffer``)::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        if momentum != 0:
            b = g                                         on the first step (step == 1)
            b = momentum * b + (1 - dampening) * g        afterwards
            g = g + momentum * b          if nesterov, else   g = b
        p = p - lr * g

    Defaults: lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False.
    ``momentum_buffer`` is needed only when momentum != 0; on the first step it is written, not
    read (it may hold anything). Nesterov momentum requires momentum > 0 and dampening = 0.
    """
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
              nesterov=nesterov, maximize=maximize)
    s, dtype = _setup(_spec.SGD, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        if momentum != 0:
            if step == 1:
                b = g
            else:
                b = _load(momentum_buffer, dtype) * s.momentum + s.one_minus_dampening * g
            g = g + s.momentum * b if nesterov else b
            _store(momentum_buffer, b)
        _store(param, p - s.lr * g)


def adagrad(param, grad, *, sum, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""Adagrad (torch.optim.Adagrad).

    With s the sum of squared gradients (state ``sum``)::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        clr = lr / (1 + (step - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (sqrt(s) + eps)

    Defaults: lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
    maximize=False. The caller fills ``sum`` with initial_accumulator_value before the first step
    (pyoptim.Adagrad does).
    """
    hp = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    s, dtype = _setup(_spec.ADAGRAD, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        acc = _load(sum, dtype) + g * g
        _store(sum, acc)
        _store(param, p - s.clr * g / (np.sqrt(acc) + s.eps))


def rmsprop(param, grad, *, square_avg, momentum_buffer=None, grad_avg=None, step, lr=1e-2,
            alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
            compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""RMSprop, optionally centered and with momentum (torch.optim.RMSprop).

    With v = ``square_avg``, m = ``grad_avg`` (centered only), b = ``momentum_buffer``::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            m = lerp(m, g, 1 - alpha)             (m + (1 - alpha) * (g - m))
            d = sqrt(v - m * m) + eps
        else:
            d = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / d
            p = p - lr * b
        else:
            p = p - lr * g / d

    Defaults: lr=1e-2, alpha=0.99, eps=1e-8 (added outside the square root, unlike Keras),
    weight_decay=0, momentum=0, centered=False, maximize=False. All state starts at zero.
    ``step`` does not enter the math.
    """
    hp = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
              centered=centered, maximize=maximize)
    s, dtype = _setup(_spec.RMSPROP, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        v = _load(square_avg, dtype) * s.alpha + s.one_minus_alpha * g * g
        _store(square_avg, v)
        if centered:
            m = _lerp(_load(grad_avg, dtype), g, s.one_minus_alpha)
            _store(grad_avg, m)
            avg = np.sqrt(v - m * m)
        else:
            avg = np.sqrt(v)
        avg = avg + s.eps
        if momentum > 0:
            b = _load(momentum_buffer, dtype) * s.momentum + g / avg
            _store(momentum_buffer, b)
            _store(param, p - s.lr * b)
        else:
            _store(param, p - s.lr * g / avg)


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hp, decoupled, opt,
          compute_dtype, grad_factor, clip_value):
    s, dtype = _setup(opt, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), hp["weight_decay"],
                         decoupled, clip_value)
        m, v = _load(exp_avg, dtype), _load(exp_avg_sq, dtype)
        m = _lerp(m, g, s.one_minus_beta1)
        v = v * s.beta2 + s.one_minus_beta2 * g * g
        _store(exp_avg, m)
        _store(exp_avg_sq, v)
        if hp["amsgrad"]:
            v = np.maximum(_load(max_exp_avg_sq, dtype), v)
            _store(max_exp_avg_sq, v)
        denom = np.sqrt(v) / s.bias_correction2_sqrt + s.eps
        _store(param, p - s.step_size * m / denom)


def adam(param, grad, *, exp_avg, exp_avg_sq, max_exp_avg_sq=None, step, lr=1e-3,
         betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled_weight_decay=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""Adam (torch.optim.Adam), with AMSGrad and optional decoupled weight decay.

    With m = ``exp_avg``, v = ``exp_avg_sq``, v_max = ``max_exp_avg_sq`` (amsgrad only), t = step::

        g = -g                            if maximize
        if weight_decay != 0:
            p = p * (1 - lr * weight_decay)       if decoupled_weight_decay (AdamW)
            g = g + weight_decay * p              otherwise (L2, coupled)
        m = lerp(m, g, 1 - beta1)                 (m + (1 - beta1) * (g - m))
        v = beta2 * v + (1 - beta2) * g * g
        v_max = maximum(v_max, v)                 if amsgrad; then v_max replaces v below
        step_size = lr / (1 - beta1^t)
        denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        p = p - step_size * m / denom

    Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
    maximize=False, decoupled_weight_decay=False. eps is added after the bias correction of the
    square root (torch's placement; Keras's epsilon-hat differs). All state starts at zero.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
              maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hp, decoupled_weight_decay,
          _spec.ADAM, compute_dtype, grad_factor, clip_value)


def adamw(param, grad, *, exp_avg, exp_avg_sq, max_exp_avg_sq=None, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""AdamW (torch.optim.AdamW): :func:`adam` with decoupled weight decay.

    The param decays before the Adam step, ``p = p * (1 - lr * weight_decay)``, instead of the
    decay entering the gradient; everything else is :func:`adam`. With weight_decay=0 AdamW is
    Adam. Defaults as Adam's but weight_decay=1e-2 (torch's; the decay is scaled by lr, as in
    torch, not as in Loshchilov & Hutter's paper).
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
              maximize=maximize)
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, hp, True, _spec.ADAMW,
          compute_dtype, grad_factor, clip_value)


def adamax(param, grad, *, exp_avg, exp_inf, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=0.0, maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""Adamax, Adam with the infinity norm (torch.optim.Adamax).

    With m = ``exp_avg``, u = ``exp_inf``, t = step::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        m = lerp(m, g, 1 - beta1)
        u = maximum(beta2 * u, |g| + eps)
        p = p - (lr / (1 - beta1^t)) * m / u

    Defaults: lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False. State
    starts at zero.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
    s, dtype = _setup(_spec.ADAMAX, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        m = _lerp(_load(exp_avg, dtype), g, s.one_minus_beta1)
        u = np.maximum(_load(exp_inf, dtype) * s.beta2, np.abs(g) + s.eps)
        _store(exp_avg, m)
        _store(exp_inf, u)
        _store(param, p - s.clr * m / u)


def nadam(param, grad, *, exp_avg, exp_avg_sq, mu_product, step, lr=2e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
          maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""NAdam, Adam with Nesterov momentum and Dozat's momentum schedule (torch.optim.NAdam).

    With m = ``exp_avg``, v = ``exp_avg_sq``, P = ``mu_product`` (a one-element host array in
    its own dtype, float32 as torch keeps it, starting at 1), t = step::

        g = -g                            if maximize
        weight decay as Adam's (coupled, or decoupled if decoupled_weight_decay)
        mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)),  mu_t+1 likewise
        P = P * mu_t                      (in P's dtype)
        m = lerp(m, g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2^t)) + eps
        p = p - (lr * (1 - mu_t) / (1 - P)) * g / denom
        p = p - (lr * mu_t+1 / (1 - P * mu_t+1)) * m / denom

    Defaults: lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
    decoupled_weight_decay=False, maximize=False.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
              maximize=maximize)
    host, advance = _host(_spec.NADAM, hp, step, {"mu_product": mu_product})
    s, dtype = _setup(_spec.NADAM, hp, step, grad_factor, param, compute_dtype, host)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         decoupled_weight_decay, clip_value)
        m = _lerp(_load(exp_avg, dtype), g, s.one_minus_beta1)
        v = _load(exp_avg_sq, dtype) * s.beta2 + s.one_minus_beta2 * g * g
        denom = np.sqrt(v / s.bias_correction2) + s.eps
        p = p - s.grad_coefficient * g / denom
        p = p - s.exp_avg_coefficient * m / denom
        _store(exp_avg, m)
        _store(exp_avg_sq, v)
        _store(param, p)
    advance()


def radam(param, grad, *, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, compute_dtype=None,
          grad_factor=1.0, clip_value=None):
    r"""RAdam, Adam with the variance of the adaptive learning rate rectified (torch.optim.RAdam).

    With m = ``exp_avg``, v = ``exp_avg_sq``, t = step::

        g = -g                            if maximize
        weight decay as Adam's (coupled, or decoupled if decoupled_weight_decay)
        m = lerp(m, g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1^t)
        rho_inf = 2 / (1 - beta2) - 1,  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        if rho_t > 5:
            r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            p = p - m_hat * lr * (sqrt(1 - beta2^t) / (sqrt(v) + eps)) * r
        else:
            p = p - m_hat * lr

    eps is added to the raw sqrt(v), not the bias-corrected one (torch's placement). Defaults:
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
    maximize=False.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    s, dtype = _setup(_spec.RADAM, hp, step, grad_factor, param, compute_dtype)
    rectify = _spec.RADAM.active_flags(hp, step)["rectify"]
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         decoupled_weight_decay, clip_value)
        m = _lerp(_load(exp_avg, dtype), g, s.one_minus_beta1)
        v = _load(exp_avg_sq, dtype) * s.beta2 + s.one_minus_beta2 * g * g
        m_hat = m / s.bias_correction1
        if rectify:
            p = p - m_hat * s.lr * (s.bias_correction2_sqrt / (np.sqrt(v) + s.eps)) * s.rect
        else:
            p = p - m_hat * s.lr
        _store(exp_avg, m)
        _store(exp_avg_sq, v)
        _store(param, p)


def adadelta(param, grad, *, square_avg, acc_delta, step, lr=1.0, rho=0.9, eps=1e-6,
             weight_decay=0.0, maximize=False, compute_dtype=None, grad_factor=1.0,
             clip_value=None):
    r"""Adadelta (torch.optim.Adadelta).

    With v = ``square_avg``, u = ``acc_delta``::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        v = rho * v + (1 - rho) * g * g
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta

    Defaults: lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False. State starts at zero;
    ``step`` does not enter the math.
    """
    hp = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    s, dtype = _setup(_spec.ADADELTA, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        v = _load(square_avg, dtype) * s.rho + s.one_minus_rho * g * g
        u = _load(acc_delta, dtype)
        delta = np.sqrt(u + s.eps) / np.sqrt(v + s.eps) * g
        u = u * s.rho + s.one_minus_rho * delta * delta
        _store(square_avg, v)
        _store(acc_delta, u)
        _store(param, p - s.lr * delta)


def asgd(param, grad, *, ax, eta, mu, step, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
         weight_decay=0.0, maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""Averaged SGD (torch.optim.ASGD).

    With ax the average (state ``ax``), eta and mu one-element host arrays (torch's ``eta`` and
    ``mu``, float32 as torch keeps them, starting at lr and 1), t = step::

        g = -g                            if maximize
        g = g + weight_decay * p          if weight_decay != 0
        p = p * (1 - lambd * eta)
        p = p - eta * g
        ax = ax + (p - ax) * mu           if mu != 1,  else ax = p
        eta = lr / (1 + lambd * lr * t)^alpha,  mu = 1 / max(1, t - t0)   (for the next step)

    Defaults: lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, maximize=False.
    """
    hp = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
              maximize=maximize)
    host, advance = _host(_spec.ASGD, hp, step, {"eta": eta, "mu": mu})
    s, dtype = _setup(_spec.ASGD, hp, step, grad_factor, param, compute_dtype, host)
    average = _spec.ASGD.active_flags(hp, step, host)["average"]
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), weight_decay,
                         clip_value=clip_value)
        p = p * s.decay_factor
        p = p - s.eta * g
        _store(ax, _load(ax, dtype) + (p - _load(ax, dtype)) * s.mu if average else p)
        _store(param, p)
    advance()


def rprop(param, grad, *, prev, step_size, step, lr=1e-2, etas=(0.5, 1.2),
          step_sizes=(1e-6, 50.0), maximize=False, compute_dtype=None, grad_factor=1.0,
          clip_value=None):
    r"""Resilient backpropagation (torch.optim.Rprop).

    Per element, with g_prev = ``prev`` and s = ``step_size`` (the caller fills it with lr before
    the first step; lr enters nowhere else)::

        g = -g                            if maximize
        c = sign(g * g_prev)              (torch's sign: 0 for NaN)
        f = etaplus if c > 0, etaminus if c < 0, 1 if c == 0
        s = clamp(s * f, step_sizes[0], step_sizes[1])
        g = 0                             where f == etaminus (the sign flipped: skip this step)
        p = p - sign(g) * s
        g_prev = g

    Defaults: lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False.
    """
    hp = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)
    s, dtype = _setup(_spec.RPROP, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), 0,
                         clip_value=clip_value)
        c = _sign(g * _load(prev, dtype))
        factor = np.where(c > 0, s.etaplus, np.where(c < 0, s.etaminus, dtype.type(1)))
        size = np.clip(_load(step_size, dtype) * factor, s.step_size_min, s.step_size_max)
        g = np.where(factor == s.etaminus, dtype.type(0), g)
        _store(step_size, size)
        _store(prev, g)
        _store(param, p - _sign(g) * size)


def lion(param, grad, *, exp_avg, step, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
         maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""Lion, evolved sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms"; defaults of lucidrains/lion-pytorch). Not in torch.optim.

    With m = ``exp_avg``::

        g = -g                            if maximize
        c = beta1 * m + (1 - beta1) * g
        p = p - lr * (sign(c) + weight_decay * p)     (sign(0) = 0, as torch.sign)
        m = beta2 * m + (1 - beta2) * g

    Defaults: lr=1e-4, betas=(0.9, 0.99), weight_decay=0, maximize=False. Lion's update has
    magnitude lr in every coordinate: use a learning rate 3-10x smaller than AdamW's.
    """
    hp = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
    s, dtype = _setup(_spec.LION, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), 0,
                         clip_value=clip_value)
        m = _load(exp_avg, dtype)
        c = s.beta1 * m + s.one_minus_beta1 * g
        if weight_decay != 0:
            p = p - s.lr * (_sign(c) + s.weight_decay * p)
        else:
            p = p - s.lr * _sign(c)
        _store(exp_avg, s.beta2 * m + s.one_minus_beta2 * g)
        _store(param, p)


# The reduction behind global-norm clipping (csrc/reductions.cpp computes the same sums).
SUM_BLOCK = 1 << 14  # elements per block
SUM_LANES = 16  # partial sums per block


def _pairwise_sum(values):
    if len(values) == 0:
        return np.float64(0.0)
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])


def sum_of_squares(arrays) -> tuple[float, bool]:
    """The sum of the squares of every element of every array, in float64, and whether every
    element is finite: ``(sum, finite)``. The global gradient norm is ``sqrt(sum)``.

    The order of the additions is fixed, so that the result does not depend on threads or SIMD
    width: each array is cut into blocks of SUM_BLOCK elements; in a block, element i is added
    into partial sum i mod SUM_LANES, in order; the SUM_LANES partial sums, then the blocks (of
    all arrays, in order), are added pairwise (the sum of a list is the sum of its first half
    plus the sum of its second half, the first half having len // 2 elements).
    """
    blocks = []
    finite = True
    with np.errstate(all="ignore"):
        for array in arrays:
            x = np.asarray(array).reshape(-1)
            finite = finite and bool(np.isfinite(x.astype(np.float64)).all())
            for begin in range(0, x.size, SUM_BLOCK):
                v = x[begin:begin + SUM_BLOCK].astype(np.float64)
                whole = v.size // SUM_LANES * SUM_LANES
                squares = v * v
                lanes = np.zeros(SUM_LANES)
                if whole:
                    lanes = np.add.reduce(squares[:whole].reshape(-1, SUM_LANES), axis=0)
                lanes[: v.size - whole] += squares[whole:]
                blocks.append(_pairwise_sum(list(lanes)))
    return float(_pairwise_sum(blocks)), finite


def lamb(param, grad, *, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.0, maximize=False, compute_dtype=None, grad_factor=1.0, clip_value=None):
    r"""LAMB, layer-wise adaptive moments (You et al. 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes"), as optax.lamb. Not in torch.optim.

    With m = ``exp_avg``, v = ``exp_avg_sq``, t = step, and norms over this param array::

        g = -g                            if maximize
        m = (1 - beta1) * g + beta1 * m   (optax's moment form, not torch's lerp)
        v = (1 - beta2) * (g * g) + beta2 * v
        u = (m * c1) / (sqrt(v * c2) + eps)   [from m, v as stored]
            c1 = 1 / (1 - beta1^t), c2 = 1 / (1 - beta2^t)   (float64, then the compute dtype)
        u = u + weight_decay * p          if weight_decay != 0 (decoupled: in the update)
        r = ||p|| / ||u||,  1 where either norm is 0        (the trust ratio)
        p = p - lr * (u * r)

    Conventions, after optax (the reference implementation most used) rather than NVIDIA's
    NVLAMB: eps is added outside the square root after the bias corrections, as in Adam; weight
    decay enters the update before the trust ratio, so the ratio also scales the decay; the ratio
    is neither clipped nor replaced by 1 beyond the zero-norm case. The bias corrections are
    applied by multiplying with their reciprocals, where optax divides: the moments' estimates
    then differ from optax's by at most an ulp, and the direction, computed in both passes,
    costs one division per element instead of three. The norms are float64 sums in the fixed
    order of :func:`sum_of_squares` (the kernels use the same), so the ratio does not
    depend on threads. "Layer-wise" is per param array: pass one array per layer (a flat buffer
    of the whole model gets one ratio). Defaults: lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
    weight_decay=0, maximize=False. State starts at zero.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
    s, dtype = _setup(_spec.LAMB, hp, step, grad_factor, param, compute_dtype)
    with np.errstate(all="ignore"):
        p, g = _gradient(s, _load(grad, dtype), _load(param, dtype), 0, clip_value=clip_value)
        _store(exp_avg, s.one_minus_beta1 * g + s.beta1 * _load(exp_avg, dtype))
        _store(exp_avg_sq, s.one_minus_beta2 * (g * g) + s.beta2 * _load(exp_avg_sq, dtype))
        m, v = _load(exp_avg, dtype), _load(exp_avg_sq, dtype)  # as stored
        u = (m * s.inv_bias_correction1) / (np.sqrt(v * s.inv_bias_correction2) + s.eps)
        if weight_decay != 0:
            u = u + s.weight_decay * p
        param_norm = math.sqrt(sum_of_squares([p])[0])
        update_norm = math.sqrt(sum_of_squares([u])[0])
        ratio = 1.0 if param_norm == 0 or update_norm == 0 else param_norm / update_norm
        _store(param, p - s.lr * (u * dtype.type(ratio)))
