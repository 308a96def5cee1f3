"""rules.h's quotient: Adam's sqrt(v) / sqrt(1 - beta2^t) without a division instruction, to the
bit of the division (the reference's, torch's).

The proof (tests/proofs/quotient.cpp) is compiled and run here: it checks every case its error
bound leaves open. Then the hardest of those cases go through the compiled Adam step and must
give the reference's bits: the uncorrected product x * (1/c) would miss on them."""

from __future__ import annotations

import math
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from pyoptim import functional

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_the_proof_holds(tmp_path):
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler to build tests/proofs/quotient.cpp")
    binary = tmp_path / "quotient"
    # the kernels' floating-point flags (CMakeLists.txt): no contraction, no fast-math
    subprocess.run([compiler, "-O2", "-std=c++20", "-ffp-contract=off", f"-I{ROOT / 'csrc'}",
                    "-o", str(binary), str(ROOT / "tests" / "proofs" / "quotient.cpp")],
                   check=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROVED" in result.stdout


def _near_midpoint(c: np.float32) -> np.ndarray:
    """The float32 x in [1, 2) whose x / c lies within |K| <= 16 units of 2^-47 (2^-48 below 1)
    of a rounding midpoint (the cases the proof enumerates, for this c)."""
    mantissa, exponent = math.frexp(float(c))
    B = int(mantissa * 2**24)  # c = B 2^(exponent - 24)
    t = (B & -B).bit_length() - 1  # B = 2^t * odd
    xs = set()
    for s in (24, 25):
        for K in range(-16, 17):
            if K == 0 or K % (1 << t):
                continue
            # A 2^s - M B = K with M odd in [2^24, 2^25)
            modulus = 1 << (s - t)
            first = (-(K >> t) * pow(B >> t, -1, modulus)) % modulus
            for M in range(first, 1 << 25, modulus):
                if M >= 1 << 24 and M & 1:
                    A, rest = divmod(M * B + K, 1 << s)
                    if not rest and (1 << 23) <= A < (1 << 24):
                        xs.add(A * 2.0**-23)
    return np.array(sorted(xs), dtype=np.float32)


def test_adam_divides_hard_cases_exactly():
    uncorrected_misses = 0
    for beta2 in (0.999, 0.99, 0.95, 0.5, 0.9999):
        for step in (1, 2, 3, 7, 1000):
            c = np.float32(math.sqrt(1 - beta2**step))  # as pyoptim/_spec.py, cast to float32
            x = _near_midpoint(c)
            x = np.concatenate([x, x * np.float32(2.0**-30), x * np.float32(2.0**20)])
            hard = x.size
            # and the special values: an infinite x must give an infinite denominator
            x = np.concatenate([x, np.array([0.0, np.inf, np.nan], np.float32)])
            square = x * x
            np.testing.assert_array_equal(np.sqrt(square), x)  # the square root gives x back
            # amsgrad, a zero gradient and eps 0: the denominator is sqrt(max_exp_avg_sq) / c
            # exactly, and the param, from 0, is -step_size * exp_avg / denom
            results = {}
            for backend in (None, "numpy"):
                p = np.zeros_like(x)
                state = {"exp_avg": np.ones_like(x), "exp_avg_sq": np.zeros_like(x),
                         "max_exp_avg_sq": square.copy()}
                functional.adam(p, np.zeros_like(x), **state, step=step, lr=1e-3,
                                betas=(0.9, beta2), eps=0.0, amsgrad=True, backend=backend)
                results[backend] = p, state
            (p, state), (p_ref, state_ref) = results[None], results["numpy"]
            np.testing.assert_array_equal(p.view(np.uint32), p_ref.view(np.uint32))
            for name in state:
                np.testing.assert_array_equal(state[name], state_ref[name])
            numerator = np.float32(1e-3 / (1 - 0.9**step)) * state_ref["exp_avg"]
            with np.errstate(divide="ignore", invalid="ignore"):  # x = 0 and NaN
                np.testing.assert_array_equal(p_ref, -numerator / (x / c))
                uncorrected = -numerator / (x * (np.float32(1) / c))
            uncorrected_misses += int((uncorrected[:hard] != p_ref[:hard]).sum())
    # the cases are hard: with the product by the reciprocal instead, some params would move
    assert uncorrected_misses > 0
