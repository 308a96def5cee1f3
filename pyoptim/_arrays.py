"""Where an array lives, and a zero-copy NumPy view of a host array.

Host arrays are NumPy arrays, PyTorch CPU tensors and any object exposing the buffer protocol,
``__array_interface__`` or a CPU ``__dlpack__``: each becomes a NumPy view of the same memory,
never a copy (an update applied to a copy would be lost). Device arrays expose
``__cuda_array_interface__`` (CuPy, Numba, PyTorch CUDA tensors), or are arrays of Numba's CUDA
simulator (``__cuda_ndarray__``); they are passed on untouched to the CUDA backend.
"""

from __future__ import annotations

import sys

import numpy as np

HOST = "cpu"
DEVICE = "cuda"

_KINDS = (
    "a NumPy array, a PyTorch tensor, a CuPy or Numba CUDA array, or an object exposing the "
    "buffer protocol, __array_interface__, __dlpack__ or __cuda_array_interface__"
)

_DLPACK_CPU = 1


def _is_torch(x) -> bool:
    """Whether x is a PyTorch tensor, of torch's classes or a subclass defined anywhere (a
    tensor exists only once torch is imported: this never imports it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _has_cuda_interface(x) -> bool:
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # a property that raises (e.g. a tensor on another device)
        return False


def is_device_array(x) -> bool:
    if _is_torch(x):
        return x.device.type == "cuda"
    return bool(getattr(x, "__cuda_ndarray__", False)) or _has_cuda_interface(x)


def _lazy_kind(t) -> str | None:
    """Why a strided PyTorch tensor's memory is not its values, or None when it is: "negative"
    (its negative bit is set: torch._neg_view, the .imag of a conjugated complex view; the memory
    holds their opposite) or "no memory" (a lazy zero tensor, torch._efficientzerotensor:
    address 0)."""
    if t.is_neg():
        return "negative"
    if t.data_ptr() == 0 and t.numel() > 0:
        return "no memory"
    return None


def refuse_lazy_tensor(t, name: str) -> None:
    """pyoptim reads and writes a PyTorch tensor's memory (DLPack, __cuda_array_interface__):
    a tensor whose memory is not its values (_lazy_kind) is refused by name, as is one of another
    layout than strided (sparse, mkldnn: no memory of that form)."""
    import torch

    if t.layout != torch.strided:
        raise TypeError(f"{name}: a PyTorch tensor of layout {t.layout}; pyoptim takes dense "
                        "(strided) tensors only")
    kind = _lazy_kind(t)
    if kind == "negative":
        raise TypeError(f"{name}: a PyTorch tensor with its negative bit set holds the opposite "
                        "of its values in memory; pass t.resolve_neg() (a copy: an update "
                        "written there does not reach t)")
    if kind == "no memory":
        raise TypeError(f"{name}: a PyTorch tensor without memory (a lazy zero tensor); pass "
                        "t.clone() (a copy: an update written there does not reach t)")


def mark_written(tensors: list) -> None:
    """Tells autograd that a step wrote these PyTorch tensors in place (their version counters
    move on, as torch's own in-place ops move them): a backward through a graph that saved one
    of them before the step then raises, as after torch.optim's step, instead of computing with
    the new values. pyoptim writes their memory, which autograd does not see."""
    import torch

    torch.autograd.graph.increment_version(tensors)


def torch_values(t):
    """t itself when its memory holds its values, else a copy that does (for tensors that are
    only read: gradients, checkpoints): resolved where its negative bit is set, materialized
    where it has no memory (_lazy_kind). Another layout: t, for the caller to refuse."""
    import torch

    if t.layout != torch.strided:
        return t
    if _lazy_kind(t) == "negative":
        t = t.resolve_neg()
    if _lazy_kind(t) == "no memory":  # of the resolved tensor
        t = t.clone()
    return t


def _torch_to_numpy(t, name):
    import torch

    if t.device.type != "cpu":
        raise TypeError(f"{name}: a PyTorch tensor on device {t.device} is not supported")
    refuse_lazy_tensor(t, name)
    t = t.detach()  # the update is written into the tensor's memory, outside autograd
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: view the bits, then as ml_dtypes'
        import ml_dtypes  # noqa: PLC0415 (imported where a bfloat16 array is made: it is slow)

        return np.from_dlpack(t.view(torch.int16)).view(ml_dtypes.bfloat16)
    try:
        return np.from_dlpack(t)
    except (TypeError, RuntimeError, BufferError) as e:
        raise TypeError(f"{name}: cannot view this tensor without a copy ({e})") from None


def host_view(x, name: str) -> np.ndarray:
    """A NumPy array sharing x's memory (x itself if it is one)."""
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):  # as the CUDA backend refuses a mask
            raise TypeError(f"{name} is a masked array; pass an array without a mask (its "
                            ".data is the memory an update would write, masked or not)")
        return x
    if _is_torch(x):
        return _torch_to_numpy(x, name)
    if isinstance(x, (list, tuple, dict, set, str, bytes, int, float, complex, bool)) or x is None:
        raise TypeError(f"{name}: expected an array ({_KINDS}), got {type(x).__name__}")
    if hasattr(x, "__array_interface__") or _has_buffer(x):
        try:
            view = np.asarray(x, copy=False) if np.lib.NumpyVersion(np.__version__) >= "2.0.0" \
                else np.asarray(x)
        except ValueError as e:
            raise TypeError(f"{name}: cannot view {type(x).__name__} without a copy ({e})") from None
        return view
    if hasattr(x, "__dlpack__"):
        device_type = x.__dlpack_device__()[0] if hasattr(x, "__dlpack_device__") else _DLPACK_CPU
        if device_type != _DLPACK_CPU:
            raise TypeError(
                f"{name}: a __dlpack__ array on device type {device_type} has no "
                "__cuda_array_interface__; pass a CuPy, Numba or PyTorch array"
            )
        return np.from_dlpack(x)
    raise TypeError(f"{name}: expected an array ({_KINDS}), got {type(x).__name__}")


def _has_buffer(x) -> bool:
    try:
        memoryview(x)
    except TypeError:
        return False
    return True


def placement(arrays: dict) -> str:
    """HOST or DEVICE for a call's arrays; refuses a mix of the two."""
    if all(type(x) is np.ndarray for x in arrays.values()):
        return HOST
    on_device = {name: is_device_array(x) for name, x in arrays.items()}
    if all(on_device.values()):
        return DEVICE
    if not any(on_device.values()):
        return HOST
    device = next(n for n, d in on_device.items() if d)
    host = next(n for n, d in on_device.items() if not d)
    raise TypeError(
        f"{device} is a GPU array but {host} is a host array; all arrays of a step must be on "
        "the same device (no implicit transfer)"
    )
