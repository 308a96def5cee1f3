"""Allocation and host copies of arrays on the host or on a GPU, in the array's own library.

Host arrays are NumPy arrays (views of PyTorch CPU tensors and other host arrays become NumPy
views, pyoptim._arrays). GPU arrays stay in the library they come from: PyTorch CUDA tensors,
CuPy arrays or Numba device arrays; new GPU arrays (optimizer state, flat buffers) are allocated
with the library and on the device of an array given as ``like``, or with Numba for
``device="cuda"``.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _arrays


@functools.cache
def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16, the NumPy dtype of bfloat16 arrays. ml_dtypes is imported here, on
    first use, not with pyoptim: its import registers a dozen dtypes and took 1.6-2.2 s on an
    AMD EPYC (Zen 1), 9x all the rest of ``import pyoptim`` (``python -X importtime``), and a
    bfloat16 array exists only once its caller imported it."""
    import ml_dtypes  # noqa: PLC0415

    return np.dtype(ml_dtypes.bfloat16)


def as_dtype(dtype) -> np.dtype:
    """np.dtype(dtype), where the name 'bfloat16' is ml_dtypes' bfloat16 whether or not ml_dtypes
    was imported yet."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return bfloat16()
    return np.dtype(dtype)


def library(x) -> str:
    """'numpy', 'torch', 'cupy' or 'numba' for an array pyoptim can update."""
    if isinstance(x, np.ndarray):
        return "numpy"
    if _arrays._is_torch(x):  # a subclass defined anywhere is torch's too
        return "torch"
    module = type(x).__module__.split(".")[0]
    if module in ("cupy", "numba"):
        return module
    if _arrays.is_device_array(x):
        raise TypeError(
            f"cannot allocate state next to a GPU array of type {type(x).__name__}; pass PyTorch, "
            "CuPy or Numba arrays"
        )
    return "numpy"


def dtype_of(x) -> np.dtype:
    """The NumPy dtype (ml_dtypes.bfloat16 for bfloat16) of a host or GPU array."""
    if isinstance(x, np.ndarray):
        return x.dtype
    if library(x) == "torch":
        name = str(x.dtype).removeprefix("torch.")
        return as_dtype(name)
    return np.dtype(x.dtype)


def shape_of(x) -> tuple:
    return tuple(x.shape)


def _torch_dtype(dtype: np.dtype):
    import torch

    return getattr(torch, np.dtype(dtype).name)


def empty_1d(size: int, dtype, like=None, device: str = "cpu"):
    """A new 1-D array of size elements, zero-filled, on like's device (or device)."""
    dtype = as_dtype(dtype)
    kind = "numpy" if like is None else library(like)
    if like is None and device == "cuda":
        kind = "numba"
    elif like is None and device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if kind == "numpy":
        return np.zeros(size, dtype)
    if kind == "torch":
        import torch

        return torch.zeros(size, dtype=_torch_dtype(dtype), device=like.device)
    if kind == "cupy":
        import cupy

        with like.device:
            return cupy.zeros(size, dtype)
    from numba import cuda

    return cuda.to_device(np.zeros(size, dtype))


def views(buffer, offsets, shapes):
    """Shaped views of a 1-D buffer: element offsets[i] onwards, shapes[i]."""
    out = []
    for offset, shape in zip(offsets, shapes):
        size = int(np.prod(shape, dtype=np.int64))
        out.append(buffer[offset:offset + size].reshape(shape))  # contiguous: a view
    return out


def to_host(x) -> np.ndarray:
    """A NumPy copy of a host or GPU array."""
    if isinstance(x, np.ndarray):
        return x.copy()
    kind = library(x)
    if kind == "torch":
        t = x.detach().cpu()
        return _arrays.host_view(t, "array").copy()
    if kind == "cupy":
        return x.get()
    if kind == "numba":
        return x.copy_to_host()
    return np.array(_arrays.host_view(x, "array"))


def copy_from_host(dst, src: np.ndarray) -> None:
    """Writes the host array src into dst (same shape and dtype), wherever dst lives."""
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src, casting="no")
        return
    kind = library(dst)
    if kind == "torch":
        import torch

        if src.dtype.name == "bfloat16":
            source = torch.from_numpy(np.ascontiguousarray(src).view(np.int16)).view(torch.bfloat16)
        else:
            source = torch.from_numpy(np.ascontiguousarray(src))
        dst.copy_(source)
    elif kind == "cupy":
        dst.set(np.ascontiguousarray(src))
    else:
        dst.copy_to_device(np.ascontiguousarray(src))


def fill(x, value: float) -> None:
    """Sets every element of a host or GPU array to value."""
    if isinstance(x, np.ndarray):
        x.fill(value)
    elif library(x) == "torch":
        x.fill_(value)
    elif library(x) == "cupy":
        x.fill(value)
    else:
        x.copy_to_device(np.full(x.shape, value, np.dtype(x.dtype)))
