"""Parity machinery: run a backend and the reference side by side and compare every buffer.

A backend is tested through pyoptim.functional, exactly as users call it: its arrays are placed
where the backend runs (``Backend.to_device``), stepped, and read back after every step. The
reference runs on host copies in the same compute dtype. Param and every state buffer are compared
elementwise after every step, within the backend's tolerance for that dtype pair (TOLERANCES).

Large buffers tile a prime-length pattern, so that the reference runs on the pattern only while the
backend updates the whole buffer (every thread chunk, every SIMD tail); element i is compared with
pattern element i mod L.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

import pyoptim
from pyoptim import reference
from cases import DTYPES, Case

SIZES = (0, 1, 7, 31, 1000, 4099)
BIG = 3 * 2**20 + 17  # over three million: several chunks per thread, unaligned end
PATTERN = 4099  # prime, so that no thread or SIMD boundary lines up with the pattern
STEPS = 7

# Tolerances, per backend and (param dtype, state dtype), against the reference computed in the
# backend's compute dtype (float32 for 16-bit params). (0, 0) means identical values (NaN equal
# to NaN). The C++ backend performs the reference's operations in its order with no FMA
# contraction (CMakeLists.txt), so it is exact for every pair.
EXACT = (0.0, 0.0)
# The CUDA kernels do the same (no FMA contraction: every product is rounded on its own, see
# pyoptim/_cuda_rules.py; IEEE division and square root), on a GPU and on Numba's simulator.
TOLERANCES: dict[str, Callable[[str, str], tuple[float, float]]] = {
    "cpu": lambda param, state: EXACT,
    "numpy": lambda param, state: EXACT,
    "cuda": lambda param, state: EXACT,
}


@dataclass
class Backend:
    name: str
    to_device: Callable[[np.ndarray], object]  # a host array -> the backend's array (a copy)
    to_host: Callable[[object], np.ndarray]  # the backend's array -> a host copy
    sizes: tuple = SIZES + (BIG,)
    big: int = BIG

    def tolerance(self, param: str, state: str) -> tuple[float, float]:
        return TOLERANCES[self.name](param, state)

    def runs(self, n: int) -> bool:
        """Whether the parity suite runs this backend at size n: the sizes of SIZES and BIG it
        leaves out of ``sizes`` are skipped (the simulated GPU's largest), any other size runs."""
        return n in self.sizes or n not in (*SIZES, BIG)


def _cuda_to_device(a):
    from numba import cuda

    return cuda.to_device(a)


def cuda_simulated() -> bool:
    """Whether the CUDA tests run on Numba's simulator (tests/conftest.py decides)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


# Numba device arrays (the simulator's where there is no GPU). The simulator runs one Python
# thread per CUDA thread, some 10-20 us per element and step: there, every case runs at the sizes
# up to 31 (2 blocks of 8 threads: the grid-stride loop wraps), and one case per optimizer at
# 1000 and 4099 (tests/test_cuda.py).
BACKENDS: dict[str, Backend] = {
    "cpu": Backend("cpu", to_device=lambda a: a.copy(), to_host=lambda a: a.copy()),
    "numpy": Backend("numpy", to_device=lambda a: a.copy(), to_host=lambda a: a.copy(),
                     sizes=SIZES),
    "cuda": Backend("cuda", to_device=_cuda_to_device, to_host=lambda a: a.copy_to_host(),
                    sizes=tuple(n for n in SIZES if n <= 31) if cuda_simulated()
                    else SIZES + (BIG,)),
}


# (backend, kernel) pairs not implemented yet: the tests skip them, saying why.
PENDING: dict[tuple[str, str], str] = {}


def skip_if_pending(backend: str, kernel: str) -> None:
    reason = PENDING.get((backend, kernel))
    if reason:
        import pytest  # noqa: PLC0415

        pytest.skip(reason)


def available_backends() -> list[str]:
    return [name for name in BACKENDS if name in pyoptim.available_backends()]


def seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def _random(rng, n, dtype, scale=1.0):
    values = rng.standard_normal(n).astype(np.float32) * np.float32(scale)
    values[rng.random(n) < 0.02] = 0.0  # exact zeros: sign(0), sqrt(0), 0/eps paths
    return values.astype(dtype)


def initial_state(case: Case, name: str, n: int, dtype, rng) -> np.ndarray:
    if name == "sum":
        return np.full(n, 0.1, dtype)  # initial_accumulator_value
    if name == "step_size":
        return np.full(n, case.hyperparameters["lr"], dtype)  # Rprop starts from lr
    if name == "momentum_buffer" and case.optimizer == "sgd":
        return np.full(n, np.nan, dtype)  # must not be read on step 1
    return np.zeros(n, dtype)


def assert_close(actual, expected, tolerance, what):
    actual = np.asarray(actual).astype(np.float64)
    expected = np.asarray(expected).astype(np.float64)
    rtol, atol = tolerance
    if (rtol, atol) == EXACT:
        same = ((actual == expected) & (np.signbit(actual) == np.signbit(expected))) | (
            np.isnan(actual) & np.isnan(expected))
        if not same.all():
            first = np.argwhere(~same)[0]
            raise AssertionError(
                f"{what}: {np.count_nonzero(~same)} of {same.size} elements differ; first at "
                f"{tuple(first)}: {actual[tuple(first)]!r} != {expected[tuple(first)]!r}"
            )
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def _compare_tiled(actual, pattern, tolerance, what):
    """actual (n elements) against pattern tiled to n, without materializing the tiling."""
    actual = np.asarray(actual)
    whole = actual.size // pattern.size * pattern.size
    assert_close(actual[:whole].reshape(-1, pattern.size), pattern[None, :], tolerance, what)
    assert_close(actual[whole:], pattern[: actual.size - whole], tolerance, what)


def run_parity(backend: Backend, case: Case, combo, n: int, steps: int = STEPS, *,
               kwargs_for_call: dict | None = None):
    """Steps the backend and the reference side by side; compares every buffer after every step
    (after the last one for tiled large buffers). Does nothing for a size the backend leaves
    out (Backend.runs)."""
    if not backend.runs(n):
        return
    skip_if_pending(backend.name, case.spec.kernel)
    param_dtype, grad_dtype, state_dtype = (DTYPES[d] for d in combo)
    rng = np.random.default_rng(seed(case.id, combo, n))
    # a tiled pattern stands for the whole buffer only where elements are updated independently
    length = n if n <= backend.big // 2 or not case.spec.elementwise else PATTERN
    tile = (lambda a: np.resize(a, n)) if length != n else (lambda a: a)

    param = _random(rng, length, param_dtype)
    states = {name: initial_state(case, name, length, state_dtype, rng) for name in case.states()}
    device_param = backend.to_device(tile(param))
    device_states = {name: backend.to_device(tile(s)) for name, s in states.items()}

    # torch's scalar state (mu_product, eta, mu) stays on the host for every backend
    device_host, host = case.initial_host(), case.initial_host()
    hp = dict(case.hyperparameters)
    call = getattr(pyoptim.functional, case.optimizer)
    ref = getattr(reference, case.optimizer)
    tolerance = backend.tolerance(combo[0], combo[2])
    for t in range(1, steps + 1):
        grad = _random(rng, length, grad_dtype, scale=float(2.0 ** (t % 3 - 1)))
        call(device_param, backend.to_device(tile(grad)), **device_states, **device_host, step=t,
             backend=backend.name, **hp, **(kwargs_for_call or {}))
        ref(param, grad, **states, **host, step=t, **hp)
        for name in host:
            assert_close(device_host[name], host[name], EXACT, f"{name} after step {t}")
        if length != n and t < steps:
            continue
        where = f"{backend.name} {case.id} {combo} n={n} step {t}"
        for name, expected, actual in [("param", param, device_param),
                                       *((k, states[k], device_states[k]) for k in states)]:
            if length != n:
                _compare_tiled(backend.to_host(actual), expected, tolerance, f"{name}, {where}")
            else:
                assert_close(backend.to_host(actual), expected, tolerance, f"{name}, {where}")


def shuffled_views(count: int, size: int, seed: int):
    """2 * count float32 views of `size` elements of one buffer (random values), in an order
    unrelated to where they lie, as many arrays moved in memory are: (buffer, slot of each view
    in it, the first count views, the other count)."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(2 * count * size).astype(np.float32)
    slots = rng.permutation(2 * count)
    views = [pool[s * size:(s + 1) * size] for s in slots]
    return pool, slots, views[:count], views[count:]
