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


@pytest.mark.skipif("cpu" not in available_backends(), reason="the compiled extension is not built")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grad_dtype", [np.float16, np.float32])
def test_float16_lamb_steps_as_float32_lamb_on_the_widened_values(grad_dtype, threads):
    """LAMB over float16 params with float32 state widens pieces of 512 elements with F16C and
    runs the float32 passes on them, the trust ratio's sums going on from piece to piece
    (csrc/kernels.h, in_half_pieces). So each step is, to the bit, the float32 step on the
    widened params and grads with the same state, rounded back to float16: params and both
    state buffers compared exactly, 7 steps, sizes across pieces, SIMD tails and threads."""
    import pyoptim  # noqa: PLC0415
    from pyoptim import functional  # noqa: PLC0415

    saved = pyoptim.get_num_threads()
    pyoptim.set_num_threads(threads)
    try:
        rng = np.random.default_rng(5)
        for n in (0, 1, 7, 31, 513, 1000, 4099, 3_000_017):
            p16 = rng.standard_normal(n).astype(np.float16)
            state16 = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
            state32 = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
            for t in range(1, 8):
                g = rng.standard_normal(n).astype(grad_dtype)
                p32 = p16.astype(np.float32)
                hp = dict(step=t, lr=1e-2, weight_decay=0.05)
                functional.lamb(p16, g, exp_avg=state16[0], exp_avg_sq=state16[1], **hp)
                functional.lamb(p32, g.astype(np.float32), exp_avg=state32[0],
                                exp_avg_sq=state32[1], **hp)
                np.testing.assert_array_equal(p16, p32.astype(np.float16), err_msg=f"{n} {t}")
                for a, b in zip(state16, state32):
                    np.testing.assert_array_equal(a, b, err_msg=f"{n} {t}")
    finally:
        pyoptim.set_num_threads(saved)


ADAM_CASES = [c for c in CASES if c.spec.kernel == "adam"]
QUOTIENT_COMBINATIONS = [c for c in COMBINATIONS if c[0] in ("float32", "float16")]


@pytest.mark.skipif("cpu" not in available_backends(), reason="the compiled extension is not built")
@pytest.mark.parametrize("form", ["division", "fma"])
@pytest.mark.parametrize("combo", QUOTIENT_COMBINATIONS, ids=combination_id)
@pytest.mark.parametrize("case", ADAM_CASES, ids=lambda c: c.id)
def test_adam_in_both_forms_of_the_bias_correction_division(case, combo, form):
    """Adam divides by sqrt(1 - beta2^t) as a division or, with FMA, as rules.h's quotient (the
    same bits; csrc/kernels.h: each CPU takes one form, float32 and float16 params). The other
    form is forced here, so that both meet the reference on any CPU: every Adam and AdamW option,
    sizes across SIMD tails and threads."""
    from pyoptim import _cpu  # noqa: PLC0415

    core = _cpu.core()
    core._set_quotient_form(form)
    try:
        assert core._quotient_form() == form
        for n in (*SIZES, BACKENDS["cpu"].big):
            run_parity(BACKENDS["cpu"], case, combo, n)
    finally:
        core._set_quotient_form("auto")
