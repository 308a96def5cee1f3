"""Every backend against the reference: every optimizer x option combination x dtype combination,
sizes 0, 1, 7, 31, 1000, 4099 and one over three million, 7 steps, param and every state buffer
compared elementwise (harness.py; tolerances per backend and dtype pair in harness.TOLERANCES)."""

from __future__ import annotations

import pytest

from cases import CASES, COMBINATIONS, combination_id
from harness import BACKENDS, SIZES, available_backends, run_parity


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
