"""pyoptim: compiled optimizer steps for large flat parameter buffers.

The update loops of SGD, Adagrad, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam, Adadelta, ASGD,
Rprop (torch.optim's math and names), Lion and LAMB, as C++ OpenMP-SIMD kernels and Numba CUDA
kernels, behind one functional API that takes the arrays you already have (NumPy, PyTorch,
CuPy...) and updates them in place, zero-copy.

    pyoptim.functional   one step on your arrays: sgd, adagrad, rmsprop, adam, adamw, adamax,
                         nadam, radam, adadelta, asgd, rprop, lion, lamb
    pyoptim.SGD, ...     stateful optimizers with torch.optim's interface (pyoptim.optim): SGD,
                         Adagrad, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam, Adadelta, ASGD,
                         Rprop, Lion, Lamb, and create("adam", params, ...)
    pyoptim.schedules    learning-rate schedules: sched(k) equals torch's lr_scheduler
    pyoptim.flat         flat parameter buffers: a whole model in one array
    pyoptim.reference    the NumPy reference: the specification of the math

GPU arrays (CuPy, Numba, PyTorch CUDA tensors) go to the CUDA backend when numba-cuda is
installed (pip install "pyoptim[cuda]"); it is imported only when the first GPU array arrives.
"""

from __future__ import annotations

from . import flat, functional, optim, reference, schedules
from .optim import (ASGD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, CheckpointError, Lamb,
                    Lion, NAdam, Optimizer, RAdam, RMSprop, Rprop, create)
from ._cpu import available as _cpu_available
from ._cpu import core as _core_module
from ._cuda import available as _cuda_available
from ._cuda import get_launch_config as get_cuda_launch_config
from ._cuda import set_launch_config as set_cuda_launch_config

__version__ = "0.1.0"

__all__ = [
    "functional",
    "reference",
    "optim",
    "schedules",
    "flat",
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "Adadelta",
    "ASGD",
    "Rprop",
    "Lion",
    "Lamb",
    "create",
    "CheckpointError",
    "get_num_threads",
    "set_num_threads",
    "available_backends",
    "set_cuda_launch_config",
    "get_cuda_launch_config",
    "__version__",
]


def set_num_threads(n: int) -> None:
    """Sets the number of threads pyoptim's CPU kernels use (default: OMP_NUM_THREADS, else the
    number of cores), at most max(1024, the number of processors): more raise ValueError
    (OpenMP's runtime cannot start tens of thousands of threads without crashing the process).
    Results do not depend on it: they are bit-identical for any count. In a
    process forked after pyoptim was loaded, pyoptim runs on one thread and n > 1 raises
    RuntimeError (OpenMP cannot start threads there); use multiprocessing's 'spawn' or
    'forkserver' start method for threads in child processes. pyoptim.torch's optimizers use
    torch's thread count instead (torch.set_num_threads), as torch.optim's do."""
    _core_module().set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads pyoptim's CPU kernels use."""
    return _core_module().get_num_threads()


def available_backends() -> list[str]:
    """The backends that can run here: 'numpy' always, 'cpu' with the compiled extension,
    'cuda' with numba-cuda and a GPU (or its simulator, NUMBA_ENABLE_CUDASIM=1; this imports
    numba when numba-cuda is installed)."""
    backends = ["numpy"]
    if _cpu_available():
        backends.append("cpu")
    if _cuda_available():
        backends.append("cuda")
    return backends
