"""Buffer checks for the backends that are not the C++ one (NumPy reference, CUDA).

The C++ module checks its own inputs (csrc/bindings.cpp) with the same rules and messages: every
array of a supported dtype and combination, C-contiguous, the written ones writeable, each of its
param's shape, and no two sharing memory. Checks run before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _spec


@dataclass(frozen=True)
class Buffer:
    """What the checks need to know of one array, on any device."""

    name: str
    dtype: str  # numpy dtype name, e.g. 'float32', 'bfloat16'
    shape: tuple
    contiguous: bool
    writeable: bool
    address: int
    nbytes: int


def check(opt_name: str, param: Buffer, grad: Buffer, states: list[Buffer]) -> None:
    where = f"{opt_name}:"
    for b in (param, grad, *states):
        if b.dtype not in _spec.SUPPORTED_DTYPES:
            raise TypeError(
                f"{where} {b.name} has dtype {b.dtype}; supported dtypes are float32, float64, "
                "float16 and bfloat16"
            )
        if not b.contiguous:
            raise ValueError(
                f"{where} {b.name} is not C-contiguous; pass a contiguous array (an update "
                "applied to a contiguous copy would not reach this one)"
            )
    for b in (param, *states):
        if not b.writeable:
            raise ValueError(f"{where} {b.name} is read-only; it is updated in place")
    for b in (grad, *states):
        if b.shape != param.shape:
            raise ValueError(
                f"{where} {b.name} has shape {b.shape}, but {param.name} has shape {param.shape}"
            )
    state_dtype = states[0].dtype if states else param.dtype
    for b in states[1:]:
        if b.dtype != state_dtype:
            raise TypeError(
                f"{where} {b.name} has dtype {b.dtype}, but the other state buffers are "
                f"{state_dtype}"
            )
    if (param.dtype, grad.dtype, state_dtype) not in _spec.DTYPE_COMBINATIONS:
        raise TypeError(
            f"{where} unsupported dtypes (param {param.dtype}, grad {grad.dtype}, state "
            f"{state_dtype}); supported (param, grad, state): {_spec.supported_dtypes_text()}"
        )
    _refuse_overlap(where, [(b.address, b.nbytes, b.name) for b in (param, grad, *states)])


def _refuse_overlap(where: str, spans: list[tuple[int, int, str]]) -> None:
    """ValueError naming two of these (address, nbytes, name) spans that share memory."""
    extents = sorted((address, address + nbytes, name) for address, nbytes, name in spans
                     if nbytes > 0)
    for (_, end, first), (start, _, second) in zip(extents, extents[1:]):
        if start < end:
            raise ValueError(
                f"{where} {first} and {second} share memory; every param, grad and state buffer "
                "must be distinct"
            )


def dtype_name(dtype) -> str:
    """A NumPy dtype's name for the checks: 'big-endian float32' for '>f4', which no backend
    reads (its bytes are not a native float32)."""
    return dtype.name if dtype.byteorder != ">" else "big-endian " + dtype.name


def host_buffer(name, array) -> Buffer:
    return Buffer(
        name=name,
        dtype=dtype_name(array.dtype),
        shape=tuple(array.shape),
        contiguous=bool(array.flags.c_contiguous),
        writeable=bool(array.flags.writeable),
        address=array.__array_interface__["data"][0],
        nbytes=array.nbytes,
    )


def host_scalar(opt_name: str, name: str, value) -> "np.ndarray":
    """A scalar state kept on the host (NAdam's mu_product, ASGD's eta and mu): a writeable NumPy
    array (or host array) of one float32 or float64 element, updated in place."""
    from ._arrays import _is_torch, host_view  # noqa: PLC0415

    where = f"{opt_name}: {name}"
    try:
        array = host_view(value, name)
    except TypeError as e:
        if _is_torch(value):  # a tensor whose memory is not its value: host_view says why
            raise TypeError(f"{opt_name}: {e}") from None
        raise TypeError(f"{where} must be a one-element float32 or float64 host array (torch's "
                        f"scalar state), got {type(value).__name__}") from None
    if array.size != 1 or array.dtype.name not in ("float32", "float64"):
        raise TypeError(f"{where} must be a one-element float32 or float64 host array (torch's "
                        f"scalar state), got {array.dtype.name} of shape {array.shape}")
    if not array.flags.writeable:
        raise ValueError(f"{where} is read-only; it is updated in place")
    return array


def host_scalars_apart(opt_name: str, host: dict, arrays: dict) -> None:
    """The host scalar states (host_scalar's) share memory with none of the call's other
    arrays (NumPy views of host arrays; GPU arrays: {}) and with each other: a step writes
    each, and would overwrite the other."""
    spans = [(a.__array_interface__["data"][0], a.nbytes, name)
             for name, a in (*host.items(), *arrays.items())]
    _refuse_overlap(f"{opt_name}:", spans)
