"""Test session setup: Numba's CUDA simulator where there is no GPU.

NUMBA_ENABLE_CUDASIM must be set before numba is first imported, so it is set here, before any
test module is collected: without an NVIDIA driver (no /dev/nvidiactl) the CUDA tests run on
Numba's simulator; on a machine with a GPU they run on it, unchanged. An explicit
NUMBA_ENABLE_CUDASIM in the environment wins either way. (pyoptim itself imports numba only when
a GPU array arrives.)
"""

from __future__ import annotations

import os
import sys

import pytest

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from harness import cuda_simulated  # noqa: E402 (after the variable is set)

if cuda_simulated():
    # The simulator runs each CUDA thread as a Python thread, and a thread waits up to the
    # interpreter's switch interval (5 ms) for the GIL: 0.1 ms took a sample of the CUDA parity
    # tests (78 of them) from 28 s to 24 s.
    sys.setswitchinterval(1e-4)


@pytest.fixture(params=["compiled", "python"])
def grad_reader(request, monkeypatch):
    """pyoptim.torch's two ways of reading the grads of CPU params (pyoptim/_torch_reader.py):
    its reader compiled against torch, and the Python checks that stand in where it cannot be
    built. The optimizers a test makes use the one named; "compiled" must build."""
    from pyoptim import _torch_reader

    if request.param == "python":
        monkeypatch.setattr(_torch_reader, "_loaded", None)
    else:
        assert _torch_reader.reader_type() is not None
    return request.param
