"""The CUDA kernels around the update rules: storage types, the grid-stride loop, the kernel cache.

A kernel updates one param buffer, its grad and its state buffers, all flat (1-D, contiguous), in
a grid-stride loop: element i is widened to the compute type, its gradient scaled and clamped
(``scaled_gradient``: grad_factor and clip_value), updated by the optimizer's rule
(pyoptim/_cuda_rules.py) and rounded back to its storage type, by each thread for
i = thread index, + total threads, ... (64-bit indices). Trust-ratio rules (LAMB) take two passes
and a reduction instead (below). The loop is the one place kernels are
written; a kernel is generated, compiled on first use and cached for each (optimizer, flags,
param dtype, grad dtype, state dtype): options that are off and state buffers that a step does not
touch are not in its code.

Storage (csrc/storage.h does the same on the CPU):
* float32, float64: themselves; a float32 value in a float64 kernel is widened exactly and
  rounded back to nearest even when stored.
* float16: Numba's float16 (PTX ``cvt.f32.f16`` to widen, ``cvt.rn.f16.f32`` to round to
  nearest even), exact, as NumPy's astype.
* bfloat16: 16-bit patterns (a uint16 view of the buffer), converted with integer operations
  only: widening is a shift, rounding to nearest even the bit trick of csrc/storage.h. Numba has
  no bfloat16 array type.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
from numba import cuda, typeof

from . import _cuda_rules, _cuda_sums
from ._cuda_rules import SIMULATOR, device

# How each storage dtype reaches a kernel: the dtype of the array the kernel indexes.
KERNEL_DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
}
MAX_STATES = 3


RULES = _cuda_rules.RULES  # the optimizers with a CUDA rule

def compute_type(param_dtype: str):
    """The type a param of this dtype is computed in: float32 for 16-bit params."""
    return np.float64 if param_dtype == "float64" else np.float32


@device
def bfloat16_to_float(bits):
    """bfloat16 bits -> float32, exact: the bits are the float32's upper half."""
    return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)


@device
def float_to_bfloat16(value):
    """float32 -> bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN. 64-bit integer
    arithmetic, so that the rounding increment cannot overflow."""
    x = np.uint64(value.view(np.uint32))
    rounded = (x + np.uint64(0x7FFF) + ((x >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = (x & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000)
    return np.uint16((x >> np.uint64(16)) | np.uint64(0x0040)) if nan else np.uint16(rounded)


@functools.cache
def _storage(dtype: str, T):
    """(load, store) for buffers of this dtype in a kernel computing in T: load widens an element
    to T, store gives what is assigned to the element (an assignment to a float16, float32 or
    float64 element rounds to nearest even)."""
    if dtype == "bfloat16":
        return bfloat16_to_float, float_to_bfloat16

    @device
    def load(x):
        return T(x)

    @device
    def store(value):
        return value

    return load, store


class Key(NamedTuple):
    kernel: str  # pyoptim._spec.Optimizer.kernel
    flags: int  # pyoptim._spec.Optimizer.flag_mask
    param: str
    grad: str
    state: str


@functools.cache
def rule(kernel: str, flag_names: tuple, flags: int, T) -> _cuda_rules.Rule:
    """The rule of this kernel name with these flags (bit k of the mask: flag_names[k])."""
    active = {name: bool(flags >> k & 1) for k, name in enumerate(flag_names)}
    return RULES[kernel](T, **active)


def _rule_of(opt, key: Key) -> _cuda_rules.Rule:
    return rule(key.kernel, opt.flags, key.flags, compute_type(key.param))


def kernel(opt, key: Key):
    """The compiled kernel for key (compiled on its first launch; cached)."""
    found = _kernels.get(key)
    if found is None:
        found = _kernels[key] = _make_kernel(opt, key)
    return found


_kernels: dict = {}


def _make_kernel(opt, key: Key):
    if is_trust_ratio(opt):
        return TrustRatioKernels(_make_moments_kernel(opt, key), ratio_kernel(),
                                 _make_apply_kernel(opt, key))
    T = compute_type(key.param)
    zero = T(0)
    update = _rule_of(opt, key).update
    scaled_gradient = _cuda_rules.scaled_gradient(T)
    reads, writes = _slots(opt, key)
    K = len(opt.states)
    R0, R1, R2 = reads
    W0, W1, W2 = writes
    load_param, store_param = _storage(key.param, T)
    load_grad, _ = _storage(key.grad, T)
    load_state, store_state = _storage(key.state, T)

    def step(param, grad, state0, state1, state2, s, clip):
        # unsigned indices: for a signed one Numba wraps negative values around, 3 more 64-bit
        # integer instructions per array access in the PTX
        start, stride = np.uint64(cuda.grid(1)), np.uint64(cuda.gridsize(1))
        for i in range(start, np.uint64(param.shape[0]), stride):
            p = load_param(param[i])
            g = scaled_gradient(load_grad(grad[i]), s.grad_factor, clip)
            s0 = s1 = s2 = zero
            if R0:
                s0 = load_state(state0[i])
            if R1:
                s1 = load_state(state1[i])
            if R2:
                s2 = load_state(state2[i])
            if K == 1:
                p, s0 = update(p, g, s0, s)
            elif K == 2:
                p, s0, s1 = update(p, g, s0, s1, s)
            else:
                p, s0, s1, s2 = update(p, g, s0, s1, s2, s)
            param[i] = store_param(p)
            if W0:
                state0[i] = store_state(s0)
            if W1:
                state1[i] = store_state(s1)
            if W2:
                state2[i] = store_state(s2)

    return _cuda_rules.kernel(step)


# ---------------------------------------------------------------------------------------------
# Trust-ratio rules (LAMB): two passes and a reduction (csrc/kernels.h, run_trust_ratio)
#
# Pass 1 (``moments``, a _cuda_sums.block_sums_kernel) updates the moments and sums the squares of
# the param and of the update direction u (computed from the moments as stored, that is as pass 2
# reads them) per SUM_BLOCK block, in the fixed order of pyoptim.reference.sum_of_squares. Then
# ``ratio`` (a _cuda_sums.tree_sums_kernel) adds the blocks' sums pairwise and writes the array's
# trust ratio ||p|| / ||u|| (1 where either is 0; float64, cast once to the compute type) to a
# one-element device array, so that nothing waits for the host. Pass 2 (``apply``, a grid-stride
# loop) recomputes u and applies the rule with that ratio. The result is the reference's to the
# bit. Traffic: pass 1 reads p, g and the moments and writes the moments; pass 2 reads p and the
# moments and writes p (8 accesses per element, as on the CPU).


class TrustRatioKernels(NamedTuple):
    moments: Any  # (arrays=(param, grad, exp_avg, exp_avg_sq), (s, clip), sums, 0)
    ratio: Any  # (sums, ratio)
    apply: Any  # (param, exp_avg, exp_avg_sq, s, ratio)


def is_trust_ratio(opt) -> bool:
    return isinstance(rule(opt.kernel, opt.flags, 0, np.float32), _cuda_rules.TrustRatioRule)


def _make_moments_kernel(opt, key: Key):
    T = compute_type(key.param)
    r = _rule_of(opt, key)
    moments, direction = r.moments, r.direction
    scaled_gradient = _cuda_rules.scaled_gradient(T)
    square = _cuda_sums.square
    load_param, _ = _storage(key.param, T)
    load_grad, _ = _storage(key.grad, T)
    load_state, store_state = _storage(key.state, T)

    @device
    def element(arrays, i, scalars, shared, j):
        param, grad, exp_avg, exp_avg_sq = arrays
        s, clip = scalars
        p = load_param(param[i])
        g = scaled_gradient(load_grad(grad[i]), s.grad_factor, clip)
        m, v = moments(g, load_state(exp_avg[i]), load_state(exp_avg_sq[i]), s)
        exp_avg[i] = store_state(m)
        exp_avg_sq[i] = store_state(v)
        # the direction from the moments as stored (read back, rounded to the state's dtype)
        u = direction(p, load_state(exp_avg[i]), load_state(exp_avg_sq[i]), s)
        shared[0, j] = square(p)
        shared[1, j] = square(u)

    return _cuda_sums.block_sums_kernel(element, 2)


@functools.cache
def ratio_kernel():
    """The trust ratio from the blocks' sums of squares (sums[0]: param, sums[1]: direction),
    written to ratio[0] (an array of the compute type; the cast rounds to nearest even)."""
    sqrt = _cuda_rules._math(np.float64).sqrt

    @device
    def finish(totals, ratio):
        param_norm = sqrt(totals[0])
        update_norm = sqrt(totals[1])
        if param_norm == 0.0 or update_norm == 0.0:
            ratio[0] = 1.0
        else:
            ratio[0] = param_norm / update_norm

    return _cuda_sums.tree_sums_kernel(2, finish)


def _make_apply_kernel(opt, key: Key):
    T = compute_type(key.param)
    r = _rule_of(opt, key)
    direction, apply = r.direction, r.apply
    load_param, store_param = _storage(key.param, T)
    load_state, _ = _storage(key.state, T)

    def apply_step(param, exp_avg, exp_avg_sq, s, ratio):
        trust_ratio = ratio[0]
        start, stride = np.uint64(cuda.grid(1)), np.uint64(cuda.gridsize(1))
        for i in range(start, np.uint64(param.shape[0]), stride):
            p = load_param(param[i])
            u = direction(p, load_state(exp_avg[i]), load_state(exp_avg_sq[i]), s)
            param[i] = store_param(apply(p, u, trust_ratio, s))

    return _cuda_rules.kernel(apply_step)


def _slots(opt, key: Key) -> tuple[tuple, tuple]:
    """Which of the MAX_STATES state slots a step reads and writes."""
    r = _rule_of(opt, key)
    pad = (False,) * (MAX_STATES - len(r.reads))
    return tuple(r.reads) + pad, tuple(r.writes) + pad


def touched_states(opt, flags: int) -> tuple[str, ...]:
    """The state names a step with these flags reads or writes."""
    r = rule(opt.kernel, opt.flags, flags, np.float32)
    return tuple(n for n, rd, wr in zip(opt.states, r.reads, r.writes) if rd or wr)


def arguments(opt, key: Key, param, grad, states: dict, scalars: tuple,
              clip: float = math.inf) -> tuple:
    """The kernel's arguments: flat arrays of the kernel dtypes (see KERNEL_DTYPES), one per state
    slot (a slot the step does not touch gets the param array, never indexed), then the scalars
    and the clamp bound (clip_value; infinite: no clamp), cast to the compute type."""
    T = compute_type(key.param)
    reads, writes = _slots(opt, key)
    slots = [states[name] if reads[k] or writes[k] else param
             for k, name in enumerate(opt.states)]
    slots += [param] * (MAX_STATES - len(slots))
    return (param, grad, *slots, opt.scalar_type(*(T(v) for v in scalars)), T(clip))


def trust_ratio_arguments(opt, key: Key, param, grad, states: dict, scalars: tuple, clip: float,
                          sums, ratio) -> TrustRatioKernels:
    """The arguments of each kernel of a trust-ratio step: ``sums`` a float64 device array of
    shape (2, _cuda_sums.blocks_of(n)), ``ratio`` a one-element one of the compute type."""
    T = compute_type(key.param)
    s = opt.scalar_type(*(T(v) for v in scalars))
    m, v = (states[name] for name in opt.states)
    return TrustRatioKernels(moments=((param, grad, m, v), (s, T(clip)), sums, 0),
                             ratio=(sums, ratio), apply=(param, m, v, s, ratio))


class Compiled(NamedTuple):
    """A kernel as tests/test_cuda_ptx.py compiles it to PTX."""
    role: str  # "update"; "moments", "ratio", "apply" (trust ratio); "squares", "total"
    function: Any  # the Python function of the kernel
    signature: tuple  # the Numba types of its arguments
    float64: str  # "none": computes in float32 only; "sums": float64 only to add up squares
    # (_cuda_sums); "all": a float64 kernel


def compiled(opt, key: Key) -> list[Compiled]:
    """The kernels of a step with this key, with their argument types (for compiling them ahead,
    e.g. to PTX)."""
    def empty(dtype):
        return np.empty(0, KERNEL_DTYPES[dtype])

    float32 = compute_type(key.param) == np.float32
    f64 = "none" if float32 else "all"
    states = {name: empty(key.state) for name in opt.states}
    scalars = (0.0,) * len(opt.scalar_type._fields)
    found = kernel(opt, key)
    if not isinstance(found, TrustRatioKernels):
        types = tuple(typeof(a) for a in arguments(opt, key, empty(key.param), empty(key.grad),
                                                   states, scalars, 0.0))
        return [Compiled("update", found.py_func, types, f64)]
    args = trust_ratio_arguments(opt, key, empty(key.param), empty(key.grad), states, scalars,
                                 0.0, np.empty((2, 1)), np.empty(1, compute_type(key.param)))
    return [Compiled(role, getattr(found, role).py_func,
                     tuple(typeof(a) for a in getattr(args, role)), use)
            for role, use in (("moments", "sums" if float32 else "all"), ("ratio", "all"),
                              ("apply", f64))]


# ---------------------------------------------------------------------------------------------
# The global sum of squares (pyoptim._cuda.sum_of_squares)


def squares_kernel(dtype: str):
    """The _cuda_sums.block_sums_kernel of the squares of an array of this storage dtype:
    ((x,), (), sums, first) with x a flat array of its KERNEL_DTYPES dtype, sums of shape
    (1, blocks of all arrays)."""
    load, _ = _storage(dtype, compute_type(dtype))
    return _cuda_sums.squares_kernel(load)


def compiled_reductions() -> list[Compiled]:
    """The kernels of pyoptim._cuda.sum_of_squares, with their argument types."""
    sums = np.empty((1, 1))
    found = [Compiled("squares", squares_kernel(dtype).py_func,
                      tuple(typeof(a) for a in ((np.empty(0, KERNEL_DTYPES[dtype]),), (), sums,
                                                0)), "all")
             for dtype in KERNEL_DTYPES]
    found.append(Compiled("total", _cuda_sums.total_kernel().py_func,
                          (typeof(sums), typeof(np.empty(1))), "all"))
    return found
