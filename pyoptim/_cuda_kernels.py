"""The CUDA kernels around the update rules: storage types, the grid-stride loop, the kernel cache.

A kernel updates one param buffer, its grad and its state buffers, all flat (1-D, contiguous), in
a grid-stride loop: element i is widened to the compute type, updated by the optimizer's rule
(pyoptim/_cuda_rules.py) and rounded back to its storage type, by each thread for
i = thread index, + total threads, ... (64-bit indices). The loop is the one place kernels are
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
from typing import NamedTuple

import numpy as np
from numba import cuda, typeof

from . import _cuda_rules
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
    T = compute_type(key.param)
    zero = T(0)
    update = _rule_of(opt, key).update
    reads, writes = _slots(opt, key)
    K = len(opt.states)
    R0, R1, R2 = reads
    W0, W1, W2 = writes
    load_param, store_param = _storage(key.param, T)
    load_grad, _ = _storage(key.grad, T)
    load_state, store_state = _storage(key.state, T)

    def step(param, grad, state0, state1, state2, s):
        # unsigned indices: for a signed one Numba wraps negative values around, 3 more 64-bit
        # integer instructions per array access in the PTX
        start, stride = np.uint64(cuda.grid(1)), np.uint64(cuda.gridsize(1))
        for i in range(start, np.uint64(param.shape[0]), stride):
            p = load_param(param[i])
            g = load_grad(grad[i])
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

    if SIMULATOR:
        def simulated_step(param, grad, state0, state1, state2, s):
            # NumPy scalars warn (or raise, under pytest) where a GPU silently gives inf or NaN
            with np.errstate(all="ignore"):
                step(param, grad, state0, state1, state2, s)

        return cuda.jit(simulated_step)
    return cuda.jit(step)


def _slots(opt, key: Key) -> tuple[tuple, tuple]:
    """Which of the MAX_STATES state slots a step reads and writes."""
    r = _rule_of(opt, key)
    pad = (False,) * (MAX_STATES - len(r.reads))
    return tuple(r.reads) + pad, tuple(r.writes) + pad


def touched_states(opt, flags: int) -> tuple[str, ...]:
    """The state names a step with these flags reads or writes."""
    r = rule(opt.kernel, opt.flags, flags, np.float32)
    return tuple(n for n, rd, wr in zip(opt.states, r.reads, r.writes) if rd or wr)


def arguments(opt, key: Key, param, grad, states: dict, scalars: tuple) -> tuple:
    """The kernel's arguments: flat arrays of the kernel dtypes (see KERNEL_DTYPES), one per state
    slot (a slot the step does not touch gets the param array, never indexed), then the scalars
    cast to the compute type."""
    T = compute_type(key.param)
    reads, writes = _slots(opt, key)
    slots = [states[name] if reads[k] or writes[k] else param
             for k, name in enumerate(opt.states)]
    slots += [param] * (MAX_STATES - len(slots))
    return (param, grad, *slots, opt.scalar_type(*(T(v) for v in scalars)))


def signature(opt, key: Key) -> tuple:
    """The Numba types of the kernel's arguments (for compiling it ahead, e.g. to PTX)."""
    def empty(dtype):
        return np.empty(0, KERNEL_DTYPES[dtype])

    states = {name: empty(key.state) for name in opt.states}
    scalars = (0.0,) * len(opt.scalar_type._fields)
    return tuple(typeof(a) for a in arguments(opt, key, empty(key.param), empty(key.grad),
                                              states, scalars))
