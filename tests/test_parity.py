"""Every backend against the reference: every optimizer x option combination x dtype combination,
sizes 0, 1, 7, 31, 1000, 4099 and one over three million, 7 steps, param and every state buffer
compared elementwise (harness.py; tolerances per backend and dtype pair in harness.TOLERANCES)."""

from __future__ import annotations

import pytest

import numpy as np

from cases import CASES, COMBINATIONS, FULL_CASES, combination_id
from harness import BACKENDS, SIZES, Backend, available_backends, run_parity


def _parameters(backends):
    for backend in backends:
        for case in CASES:
            for combo in COMBINATIONS:
                if not case.states() and combo[2] != combo[0]:
                    continue  # no state buffer: the state dtype changes nothing
                yield pytest.param(backend, case, combo,
                                   id=f"{backend}-{case.id}-{combination_id(combo)}")


def _require(backend):
    if backend not in available_backends():
        pytest.skip(f"backend {backend!r} is not available here")


@pytest.mark.parametrize(("backend", "case", "combo"), list(_parameters(BACKENDS)))
def test_small_sizes(backend, case, combo):
    _require(backend)
    for n in SIZES:
        run_parity(BACKENDS[backend], case, combo, n)


@pytest.mark.parametrize(("backend", "case", "combo"),
                         [p for p in _parameters(BACKENDS)
                          if BACKENDS[p.values[0]].big in BACKENDS[p.values[0]].sizes])
def test_large_buffer(backend, case, combo):
    _require(backend)
    run_parity(BACKENDS[backend], case, combo, BACKENDS[backend].big)


def _placed(offsets):
    """A to_device that copies each array to the next offset (in bytes past a 64-byte boundary)
    of offsets, in turn: the param, grads and states of one run start at different offsets."""
    turn = iter(range(1 << 30))

    def to_device(a):
        offset = offsets[next(turn) % len(offsets)]
        raw = np.empty(a.nbytes + 64 + offset, np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        placed = raw[start:start + a.nbytes].view(a.dtype)
        placed[...] = a
        return placed

    return to_device


@pytest.mark.parametrize("offsets", [(0,), (8,), (16, 0, 48), (56, 24, 8, 40)],
                         ids=lambda o: "-".join(map(str, o)))
@pytest.mark.parametrize("case", FULL_CASES, ids=lambda c: c.id)
def test_results_do_not_depend_on_where_arrays_start(case, offsets):
    """The C++ loop runs the elements before the param's first cache-line boundary one at a time
    and the rest as SIMD (csrc/kernels.h, update_range): the same values wherever that falls."""
    _require("cpu")
    backend = Backend("cpu", to_device=_placed(offsets), to_host=lambda a: a.copy())
    for combo in (("float32", "float32", "float32"), ("bfloat16", "float32", "float32"),
                  ("float64", "float32", "float64")):
        for n in (5, 31, 1000):
            run_parity(backend, case, combo, n)
