"""64-bit indexing: a buffer of more than 2^31 elements is updated to its last element."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu

N = 2**31 + 129  # past the int32 range, with an unaligned tail


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")
def test_a_buffer_over_two_billion_elements_is_updated_to_its_end():
    # bfloat16 param: 4 GiB, written everywhere. The grad is zeros from calloc: its pages are
    # only read, so they map the zero page and cost no memory, except the few set below.
    if available_memory() < 8 * 2**30:
        pytest.skip("needs 8 GiB of free memory")
    p = np.zeros(N, ml_dtypes.bfloat16)
    g = np.zeros(N, ml_dtypes.bfloat16)
    marks = [0, 2**31 - 1, 2**31, 2**31 + 1, N - 2, N - 1]
    g[marks] = 1.0
    saved = pyoptim.get_num_threads()
    try:
        pyoptim.set_num_threads(2)
        pyoptim.functional.sgd(p, g, step=1, lr=1.0, backend="cpu")
    finally:
        pyoptim.set_num_threads(saved)
    assert (p[marks] == -1.0).all()
    assert p[1] == 0 and p[2**31 - 2] == 0 and p[N - 3] == 0
    assert np.count_nonzero(p[2**31 - 64:]) == 5  # the five marks there, nothing else
