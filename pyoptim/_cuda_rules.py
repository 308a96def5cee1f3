"""The update rules of the CUDA kernels: one device function per optimizer, the math of one element.

Each rule reads line for line like its function in pyoptim/reference.py (the specification) and its
twin in csrc/rules.h: the same operations in the same order under the same names, so that the
kernels round as the reference does. The gradient arrives multiplied by grad_factor and clamped
for clip_value (``scaled_gradient``, applied by the kernel loop as csrc/kernels.h does). A rule
takes the param, the grad, one value per state buffer
(torch's state names) and the per-step scalars ``s`` (pyoptim._spec's ``*Scalars`` tuple, computed
once per call in float64 on the host and cast to the compute type T), and returns the new param
and state values.

A rule is made for one compute type T (np.float32 for float32, float16 and bfloat16 params,
np.float64 for float64 params) and one set of options: its factory takes the kernel flags of
pyoptim._spec (``flag_mask`` / ``active_flags``) as keyword arguments, and an option that is off
is not compiled at all (Numba prunes the branches on these constants). Each factory also says
which state buffers a step with these flags reads and writes (``Rule.reads`` / ``Rule.writes``,
one bool per state name, as ``reads(F, k)`` / ``writes(F, k)`` in csrc/rules.h).

Note [exact on the GPU]. Three things keep a GPU step equal to the reference to the bit:
* No FMA. NVVM (and ptxas after it) fuse ``a * b + c`` into one fused multiply-add, which rounds
  once where the reference rounds twice, unless the product carries an explicit rounding mode.
  So every product is written ``mul(a, b)``: ``__nv_fmul_rn`` / ``__nv_dmul_rn`` (PTX ``mul.rn``),
  "never merged into a multiply-add". Sums and quotients are plain ``+``, ``-``, ``/``.
* No fast-math: the kernels are compiled with Numba's defaults (IEEE ``div.rn`` and ``sqrt.rn``,
  denormals kept).
* No float64 in float32 kernels: a Python float literal would make Numba compute in float64.
  Constants are values of T made here (``half``, ``one``), scalars arrive as T.
tests/test_cuda_ptx.py compiles every float32 kernel to PTX and checks for ``.f64``, ``fma``,
``.approx`` and ``.ftz``.

Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same Python code runs on NumPy scalars,
which round alike. Two helpers differ there: ``mul`` is ``a * b`` (there is no libdevice), and
``sqrt`` is NumPy's (``math.sqrt`` raises on a negative value where a GPU returns NaN). Device
functions are called as plain Python functions there: they use no ``cuda.*`` API, and the
simulator's wrapper, which swaps module globals on every call, made a step about 5x slower.
"""

from __future__ import annotations

import functools
import math
import operator
import types
from typing import Callable, NamedTuple

import numpy as np
from numba import cuda
from numba.cuda import config as _config

SIMULATOR = bool(_config.ENABLE_CUDASIM)


def device(function):
    """A CUDA device function (inlined into the kernel), or the function itself on the simulator."""
    if SIMULATOR:
        return function
    return cuda.jit(device=True, forceinline=True)(function)


def kernel(function):
    """A CUDA kernel. On the simulator, one that runs ``function`` under
    ``np.errstate(all="ignore")``: NumPy scalars warn (or raise, under pytest) where a GPU
    silently gives inf or NaN. The simulator swaps its fake ``cuda`` module into the globals of
    the function it launches, so the wrapper gets the globals of ``function``'s module."""
    if not SIMULATOR:
        return cuda.jit(function)
    errstate = np.errstate

    def simulated(*args):
        with errstate(all="ignore"):
            function(*args)

    return cuda.jit(types.FunctionType(simulated.__code__, function.__globals__,
                                       function.__name__, None, simulated.__closure__))


class Rule(NamedTuple):
    update: Callable  # the device function
    reads: tuple  # per state name: does a step read this buffer
    writes: tuple  # per state name: does a step write this buffer


class Math(NamedTuple):
    mul: Callable
    sqrt: Callable
    lerp: Callable
    maximum: Callable
    sign: Callable
    clamp: Callable
    zero: object
    one: object


@functools.cache
def _math(T):
    """mul, sqrt, lerp, maximum, sign and clamp in the compute type T (csrc/rules.h's helpers)."""
    if SIMULATOR:
        mul, sqrt = operator.mul, np.sqrt
    else:
        from numba.cuda import libdevice  # noqa: PLC0415 (not in the simulator)

        mul = libdevice.fmul_rn if T is np.float32 else libdevice.dmul_rn
        sqrt = math.sqrt
    zero, half = T(0), T(0.5)

    @device
    def lerp(a, b, w):
        """torch.lerp(a, b, w) for a scalar weight w in [0, 1], branch-free (csrc/rules.h): torch's
        a + w*(b - a) for w < 0.5, else b - (b - a)*(1 - w), which equals b + (w - 1)*(b - a)."""
        small = w < half
        return (a if small else b) + mul(w - T(not small), b - a)

    @device
    def maximum(a, b):
        """np.maximum / torch.maximum: NaN in either argument gives NaN."""
        return a if (a != a) | (a > b) else b

    @device
    def sign(x):
        """torch.sign: -1, 0 or 1, and 0 for NaN."""
        return T(x > zero) - T(x < zero)

    @device
    def clamp(x, low, high):
        """std::min(std::max(x, low), high): NaN stays NaN, as np.clip."""
        x = low if x < low else x
        return high if high < x else x

    return Math(mul, sqrt, lerp, maximum, sign, clamp, zero, T(1))


@functools.cache
def scaled_gradient(T):
    """The gradient as every rule receives it (csrc/kernels.h, scaled_gradient): times
    grad_factor (-1 for maximize; the optimizer classes fold loss-scale unscaling and the
    global-norm clipping coefficient into it), then clamped to [-clip, clip]
    (torch.nn.utils.clip_grad_value_; NaN passes). Without clip_value the bound is infinite and
    the clamp changes no value; it always runs, as on the CPU: two comparisons in a kernel bound
    by memory. The kernel loop applies it, before the rule's prologue."""
    m = _math(T)
    mul, clamp = m.mul, m.clamp

    @device
    def scale_and_clamp(grad, grad_factor, clip):
        return clamp(mul(grad_factor, grad), -clip, clip)

    return scale_and_clamp


@functools.cache
def _prologue(T, weight_decay, decoupled=False):
    """The rest of the prologue every rule starts with (reference._gradient, csrc/rules.h
    gradient_prologue), after scaled_gradient: weight decay, coupled (L2: g + wd*p) or decoupled
    (p * (1 - lr*wd), as in AdamW). Returns (param, grad)."""
    mul = _math(T).mul

    @device
    def gradient_prologue(param, grad, s):
        if weight_decay:
            if decoupled:
                param = mul(param, s.decay_factor)
            else:
                grad = grad + mul(s.weight_decay, param)
        return param, grad

    return gradient_prologue


def sgd(T, *, weight_decay, momentum, nesterov, first_step):
    """pyoptim.reference.sgd; state: momentum_buffer."""
    mul = _math(T).mul
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, momentum_buffer, s):
        param, grad = prologue(param, grad, s)
        if momentum:
            if first_step:
                momentum_buffer = grad                           # b = g on the first step
            else:
                momentum_buffer = mul(momentum_buffer, s.momentum) + mul(s.one_minus_dampening, grad)
            if nesterov:
                grad = grad + mul(s.momentum, momentum_buffer)
            else:
                grad = momentum_buffer
        param = param - mul(s.lr, grad)
        return param, momentum_buffer

    return Rule(update, reads=(momentum and not first_step,), writes=(momentum,))


def adagrad(T, *, weight_decay):
    """pyoptim.reference.adagrad; state: sum."""
    mul, sqrt = _math(T)[:2]
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, sum, s):  # noqa: A002 (torch's state name)
        param, grad = prologue(param, grad, s)
        sum = sum + mul(grad, grad)  # noqa: A001
        param = param - mul(s.clr, grad) / (sqrt(sum) + s.eps)   # clr: lr with lr_decay
        return param, sum

    return Rule(update, reads=(True,), writes=(True,))


def rmsprop(T, *, weight_decay, centered, momentum):
    """pyoptim.reference.rmsprop; states: square_avg, momentum_buffer, grad_avg."""
    mul, sqrt, lerp = _math(T)[:3]
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, square_avg, momentum_buffer, grad_avg, s):
        param, grad = prologue(param, grad, s)
        square_avg = mul(square_avg, s.alpha) + mul(mul(s.one_minus_alpha, grad), grad)
        if centered:
            grad_avg = lerp(grad_avg, grad, s.one_minus_alpha)
            avg = sqrt(square_avg - mul(grad_avg, grad_avg))
        else:
            avg = sqrt(square_avg)
        avg = avg + s.eps
        if momentum:
            momentum_buffer = mul(momentum_buffer, s.momentum) + grad / avg
            param = param - mul(s.lr, momentum_buffer)
        else:
            param = param - mul(s.lr, grad) / avg
        return param, square_avg, momentum_buffer, grad_avg

    touched = (True, momentum, centered)
    return Rule(update, reads=touched, writes=touched)


def adam(T, *, weight_decay, decoupled_weight_decay, amsgrad):
    """pyoptim.reference.adam and adamw (Adam with decoupled weight decay); states: exp_avg,
    exp_avg_sq, max_exp_avg_sq."""
    mul, sqrt, lerp, maximum = _math(T)[:4]
    prologue = _prologue(T, weight_decay, decoupled_weight_decay)

    @device
    def update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, s):
        param, grad = prologue(param, grad, s)
        exp_avg = lerp(exp_avg, grad, s.one_minus_beta1)         # first moment
        exp_avg_sq = mul(exp_avg_sq, s.beta2) + mul(mul(s.one_minus_beta2, grad), grad)
        second_moment = exp_avg_sq
        if amsgrad:
            max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)
            second_moment = max_exp_avg_sq
        denom = sqrt(second_moment) / s.bias_correction2_sqrt + s.eps
        param = param - mul(s.step_size, exp_avg) / denom        # step_size = lr / (1 - beta1^t)
        return param, exp_avg, exp_avg_sq, max_exp_avg_sq

    touched = (True, True, amsgrad)
    return Rule(update, reads=touched, writes=touched)


def adamax(T, *, weight_decay):
    """pyoptim.reference.adamax; states: exp_avg, exp_inf."""
    mul, sqrt, lerp, maximum = _math(T)[:4]
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, exp_avg, exp_inf, s):
        param, grad = prologue(param, grad, s)
        exp_avg = lerp(exp_avg, grad, s.one_minus_beta1)
        exp_inf = maximum(mul(exp_inf, s.beta2), abs(grad) + s.eps)   # infinity norm
        param = param - mul(s.clr, exp_avg) / exp_inf            # clr = lr / (1 - beta1^t)
        return param, exp_avg, exp_inf

    return Rule(update, reads=(True, True), writes=(True, True))


def nadam(T, *, weight_decay, decoupled_weight_decay):
    """pyoptim.reference.nadam; states: exp_avg, exp_avg_sq (mu_product stays on the host)."""
    mul, sqrt, lerp = _math(T)[:3]
    prologue = _prologue(T, weight_decay, decoupled_weight_decay)

    @device
    def update(param, grad, exp_avg, exp_avg_sq, s):
        param, grad = prologue(param, grad, s)
        exp_avg = lerp(exp_avg, grad, s.one_minus_beta1)
        exp_avg_sq = mul(exp_avg_sq, s.beta2) + mul(mul(s.one_minus_beta2, grad), grad)
        denom = sqrt(exp_avg_sq / s.bias_correction2) + s.eps
        # the momentum schedule's coefficients: lr (1 - mu_t) / (1 - P), lr mu_t+1 / (1 - P mu_t+1)
        param = param - mul(s.grad_coefficient, grad) / denom
        param = param - mul(s.exp_avg_coefficient, exp_avg) / denom
        return param, exp_avg, exp_avg_sq

    return Rule(update, reads=(True, True), writes=(True, True))


def radam(T, *, weight_decay, decoupled_weight_decay, rectify):
    """pyoptim.reference.radam; states: exp_avg, exp_avg_sq."""
    mul, sqrt, lerp = _math(T)[:3]
    prologue = _prologue(T, weight_decay, decoupled_weight_decay)

    @device
    def update(param, grad, exp_avg, exp_avg_sq, s):
        param, grad = prologue(param, grad, s)
        exp_avg = lerp(exp_avg, grad, s.one_minus_beta1)
        exp_avg_sq = mul(exp_avg_sq, s.beta2) + mul(mul(s.one_minus_beta2, grad), grad)
        exp_avg_hat = exp_avg / s.bias_correction1
        if rectify:                                              # rho_t > 5 (host)
            adaptive_lr = s.bias_correction2_sqrt / (sqrt(exp_avg_sq) + s.eps)
            param = param - mul(mul(mul(exp_avg_hat, s.lr), adaptive_lr), s.rect)
        else:
            param = param - mul(exp_avg_hat, s.lr)
        return param, exp_avg, exp_avg_sq

    return Rule(update, reads=(True, True), writes=(True, True))


def adadelta(T, *, weight_decay):
    """pyoptim.reference.adadelta; states: square_avg, acc_delta."""
    mul, sqrt = _math(T)[:2]
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, square_avg, acc_delta, s):
        param, grad = prologue(param, grad, s)
        square_avg = mul(square_avg, s.rho) + mul(mul(s.one_minus_rho, grad), grad)
        delta = mul(sqrt(acc_delta + s.eps) / sqrt(square_avg + s.eps), grad)
        acc_delta = mul(acc_delta, s.rho) + mul(mul(s.one_minus_rho, delta), delta)
        param = param - mul(s.lr, delta)
        return param, square_avg, acc_delta

    return Rule(update, reads=(True, True), writes=(True, True))


def asgd(T, *, weight_decay, average):
    """pyoptim.reference.asgd; state: ax (eta and mu stay on the host)."""
    mul = _math(T).mul
    prologue = _prologue(T, weight_decay)

    @device
    def update(param, grad, ax, s):
        param, grad = prologue(param, grad, s)
        param = mul(param, s.decay_factor)                       # 1 - lambd * eta
        param = param - mul(s.eta, grad)
        if average:                                              # mu != 1 (host)
            ax = ax + mul(param - ax, s.mu)
        else:
            ax = param
        return param, ax

    return Rule(update, reads=(average,), writes=(True,))


def rprop(T):
    """pyoptim.reference.rprop; states: prev, step_size."""
    m = _math(T)
    mul, sign, clamp, zero, one = m.mul, m.sign, m.clamp, m.zero, m.one
    prologue = _prologue(T, False)

    @device
    def update(param, grad, prev, step_size, s):
        param, grad = prologue(param, grad, s)
        c = sign(mul(grad, prev))
        factor = s.etaplus if c > zero else (s.etaminus if c < zero else one)
        step_size = clamp(mul(step_size, factor), s.step_size_min, s.step_size_max)
        grad = zero if factor == s.etaminus else grad            # sign flipped: no step
        param = param - mul(sign(grad), step_size)
        prev = grad
        return param, prev, step_size

    return Rule(update, reads=(True, True), writes=(True, True))


def lion(T, *, weight_decay):
    """pyoptim.reference.lion (Chen et al. 2023); state: exp_avg."""
    mul, sign = _math(T).mul, _math(T).sign
    prologue = _prologue(T, False)                               # its decay is below

    @device
    def update(param, grad, exp_avg, s):
        param, grad = prologue(param, grad, s)
        c = mul(s.beta1, exp_avg) + mul(s.one_minus_beta1, grad)
        if weight_decay:
            param = param - mul(s.lr, sign(c) + mul(s.weight_decay, param))
        else:
            param = param - mul(s.lr, sign(c))
        exp_avg = mul(s.beta2, exp_avg) + mul(s.one_minus_beta2, grad)
        return param, exp_avg

    return Rule(update, reads=(True,), writes=(True,))


class TrustRatioRule(NamedTuple):
    """A rule whose update is scaled, per param array, by a trust ratio ||p|| / ||u|| (LAMB;
    csrc/rules.h's kTrustRatio rules, run in two passes by pyoptim/_cuda_kernels.py)."""
    moments: Callable  # pass 1: (grad, exp_avg, exp_avg_sq, s) -> the new moments
    direction: Callable  # (param, exp_avg, exp_avg_sq, s) -> the update direction u
    apply: Callable  # pass 2: (param, u, ratio, s) -> the new param
    reads: tuple
    writes: tuple


def lamb(T, *, weight_decay):
    """pyoptim.reference.lamb (as optax.lamb); states: exp_avg, exp_avg_sq."""
    mul, sqrt = _math(T)[:2]

    @device
    def moments(grad, exp_avg, exp_avg_sq, s):
        # optax's update_moment: (1 - b) * g + b * m
        exp_avg = mul(s.one_minus_beta1, grad) + mul(s.beta1, exp_avg)
        exp_avg_sq = mul(s.one_minus_beta2, mul(grad, grad)) + mul(s.beta2, exp_avg_sq)
        return exp_avg, exp_avg_sq

    @device
    def direction(param, exp_avg, exp_avg_sq, s):
        # from the moments as stored (both passes)
        exp_avg_hat = mul(exp_avg, s.inv_bias_correction1)
        exp_avg_sq_hat = mul(exp_avg_sq, s.inv_bias_correction2)
        update = exp_avg_hat / (sqrt(exp_avg_sq_hat) + s.eps)
        if weight_decay:
            update = update + mul(s.weight_decay, param)
        return update

    @device
    def apply(param, update, ratio, s):
        # pass 2, with the array's trust ratio
        return param - mul(s.lr, mul(update, ratio))

    return TrustRatioRule(moments, direction, apply, reads=(True, True), writes=(True, True))


# The rule of each kernel name (pyoptim._spec.Optimizer.kernel).
RULES = {"sgd": sgd, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam, "adamax": adamax,
         "nadam": nadam, "radam": radam, "adadelta": adadelta, "asgd": asgd, "rprop": rprop,
         "lion": lion, "lamb": lamb}
