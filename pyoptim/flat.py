"""Flat parameter buffers: one contiguous buffer for a whole model, and shaped views into it.

An optimizer step over one flat buffer is one segment of one kernel call: no per-array work at
all. :class:`FlatBuffer` allocates that buffer (on the host, or on a GPU) and hands out a view of
the right shape for each of a model's parameters; :meth:`FlatBuffer.zeros_like` makes a second
one with the same layout for their gradients::

    import numpy as np, pyoptim
    shapes = [(512, 256), (512,), (10, 512), (10,)]
    params = pyoptim.flat.FlatBuffer(shapes, np.float32)       # zeros; fill the views
    grads = params.zeros_like()
    for view, init in zip(params.views, initial_values):
        view[...] = init
    opt = pyoptim.AdamW(params, lr=1e-3)                         # one param: params.buffer
    ...                                                          # write grads.views[i]
    opt.step(grads)                                              # one kernel call

Views start at multiples of ``align`` bytes (64 by default, a cache line); the gaps between them
are zeros in both buffers, which every optimizer leaves at zero. A PyTorch model can train on
the views: ``torch.from_numpy(view)`` shares their memory (see README.md).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from . import _memory

__all__ = ["FlatBuffer"]


class FlatBuffer:
    """One contiguous 1-D buffer and shaped views into it, one per tensor of a model.

    FlatBuffer(shapes, dtype=numpy.float32, *, device="cpu", align=64, like=None)

    shapes: the shape of each tensor. dtype: any dtype the array library has (ml_dtypes.bfloat16
    for bfloat16 on the host). device: "cpu" (NumPy) or "cuda" (a Numba device array); like: an
    array whose library and device to allocate with instead (a PyTorch CUDA tensor, a CuPy
    array...). align: the byte alignment of each view's start. The buffer starts zeroed.

    Attributes: ``buffer`` (the 1-D array), ``views`` (one shaped view per tensor, in order),
    ``shapes``, ``offsets`` (element offset of each view in ``buffer``), ``dtype``.
    Passed as params to an optimizer, or as the grads of its step, a FlatBuffer counts as one
    array: its ``buffer``.
    """

    def __init__(self, shapes: Iterable[Sequence[int]], dtype=np.float32, *, device: str = "cpu",
                 align: int = 64, like=None):
        self.shapes = [tuple(int(d) for d in _as_shape(s)) for s in shapes]
        self.dtype = _memory.as_dtype(dtype)
        if not isinstance(align, int) or align < 1 or align % self.dtype.itemsize:
            raise ValueError(
                f"align must be a positive multiple of the item size ({self.dtype.itemsize} "
                f"bytes), got {align!r}"
            )
        step = align // self.dtype.itemsize
        self.offsets = []
        end = 0
        for shape in self.shapes:
            if any(d < 0 for d in shape):
                raise ValueError(f"invalid shape {shape}")
            start = -(-end // step) * step
            self.offsets.append(start)
            end = start + int(np.prod(shape, dtype=np.int64))
        self._align = align
        self._device = device
        self._like = like
        self.buffer = _allocate_aligned(end, self.dtype, align, like, device)
        self.views = _memory.views(self.buffer, self.offsets, self.shapes)

    @classmethod
    def from_arrays(cls, arrays: Iterable, dtype=None, **kwargs) -> "FlatBuffer":
        """A FlatBuffer holding copies of host arrays (NumPy or anything np.asarray takes), in
        dtype (default: the first array's)."""
        arrays = [np.asarray(a) for a in arrays]
        if dtype is None:
            if not arrays:
                raise ValueError("from_arrays: no arrays and no dtype")
            dtype = arrays[0].dtype
        flat = cls([a.shape for a in arrays], dtype, **kwargs)
        for view, a in zip(flat.views, arrays):
            if isinstance(view, np.ndarray):
                view[...] = a
            else:
                _memory.copy_from_host(view, np.ascontiguousarray(a, dtype=flat.dtype))
        return flat

    def zeros_like(self, dtype=None) -> "FlatBuffer":
        """A zeroed FlatBuffer with the same layout (shapes and element offsets) and device, for
        gradients; dtype defaults to this one's (float32 gradients for 16-bit params are also
        supported)."""
        dtype = self.dtype if dtype is None else _memory.as_dtype(dtype)
        # the same element offsets, so that both buffers have the same length
        align = self._align // self.dtype.itemsize * dtype.itemsize
        return FlatBuffer(self.shapes, dtype, device=self._device, align=align, like=self._like)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index):
        return self.views[index]

    def __iter__(self):
        return iter(self.views)

    def __repr__(self) -> str:
        return (f"FlatBuffer({len(self.views)} views, {self.buffer.shape[0]} elements, "
                f"dtype={self.dtype.name})")


def _as_shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (shape,)
    return shape


def _allocate_aligned(size: int, dtype: np.dtype, align: int, like, device):
    if like is None and device == "cpu":
        # NumPy aligns to 16 bytes: over-allocate and start at the first aligned element
        raw = np.zeros(size + align // dtype.itemsize, dtype)
        skip = (-raw.__array_interface__["data"][0] % align) // dtype.itemsize
        return raw[skip:skip + size]
    return _memory.empty_1d(size, dtype, like=like, device=device)
