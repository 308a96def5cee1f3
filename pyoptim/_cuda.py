"""The CUDA backend: GPU arrays updated in place by Numba CUDA kernels (pyoptim/_cuda_kernels.py).

Arrays. A GPU array is an object exposing ``__cuda_array_interface__`` (CuPy arrays, Numba device
arrays, PyTorch CUDA tensors, ...) or an array of Numba's CUDA simulator. It is updated where it
lies, zero-copy: its memory is wrapped, never copied, and anything that cannot be updated in place
as given is refused before anything is written, with the messages of the C++ backend
(pyoptim/_checks.py): an unsupported dtype or combination, a non-contiguous, read-only (the
interface's readonly flag) or misaligned buffer, a shape that differs from the param's, two
arguments sharing memory, a host array among GPU arrays.

dtypes. float32, float64, float16 and bfloat16, in the combinations of the C++ backend
(pyoptim._spec.DTYPE_COMBINATIONS). An array's dtype is its ``dtype`` attribute where it has one
(torch dtypes included; CuPy and Numba arrays carry NumPy dtypes), else the interface's typestr.
bfloat16 comes as a torch.bfloat16 CUDA tensor, or as an array whose dtype is
ml_dtypes.bfloat16 (``numba.cuda.to_device(a)`` of such a NumPy array); a bare interface with
typestr ``<V2`` (what torch and ml_dtypes report for bfloat16) is taken as bfloat16. A uint16 or
int16 array holding bfloat16 bits is refused like any integer array: its bits could as well be
float16; view it as bfloat16 first (``t.view(torch.bfloat16)``, ``a.view(ml_dtypes.bfloat16)``).

Streams. A kernel runs on the stream of its arrays: torch's current stream for a torch tensor (on
the tensor's device), the interface's ``stream`` entry (CAI v3: CuPy, Numba), or the stream a Numba
device array is bound to; Numba's default stream when none is given. Should the arrays of one
step name different streams, the kernel runs on the param's, after waiting (on the GPU, with an
event; the host does not block) for the work queued on the others. The call returns without
waiting for the kernel, as CUDA calls do.

Scalar states (NAdam's mu_product, ASGD's eta and mu) stay one-element host arrays with GPU
params too: pyoptim._dispatch reads them into the per-step scalars, as for the CPU, and advances
them once the step is launched.

Lists (``step``): each param array, with its grad and state buffers, is one kernel launch (three
for LAMB: its moments and sums of squares, its trust ratio, its update; pyoptim/_cuda_kernels.py);
a step over N arrays is N launches, each with its host-side cost (pyoptim's checks, wrapping the
arrays, Numba's dispatch: bench/bench_cuda.py shows it as 'pyoptim' against 'pyoptim-kernel'), so
many small arrays are better updated as slices of one flat buffer. Different arrays of one step
may have different dtypes (each launch runs its own kernel).

Sums of squares (``sum_of_squares``: the global gradient norm of the optimizer classes'
max_grad_norm and skip_nonfinite; LAMB's norms) are float64 sums in the fixed order of
pyoptim.reference.sum_of_squares (pyoptim/_cuda_sums.py): the C++ backend's result to the bit.
Their scratch arrays (16 bytes per 16384 elements, and the ratio or total) are allocated per call
with Numba's allocator (``cuda.device_array``) and dropped when the call returns, while LAMB's
kernels may still be queued: Numba frees memory late, and its default allocator's cuMemFree waits
for the GPU. (An external memory manager plugin with stream-ordered frees would want these
allocated on the launch stream, which they are.)

Launch configuration: 256 threads per block and at most as many blocks as the GPU holds at once
(one wave of a grid-stride loop), fewer for small buffers; on the simulator, which runs one Python
thread per CUDA thread, 2 blocks of 8. ``pyoptim.set_cuda_launch_config`` (``set_launch_config``
here) overrides either number.

numba-cuda is an optional dependency (``pip install "pyoptim[cuda]"``): it is imported when the
first GPU array arrives, never by ``import pyoptim``. Each kernel is compiled on its first use
(0.2 to 1.3 s to PTX on the 2-core CI machine) and cached for the process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _arrays, _checks, _spec

INSTALL_HINT = 'pip install "pyoptim[cuda]"'


# ---------------------------------------------------------------------------------------------
# numba-cuda, imported on first use


def installed() -> bool:
    """Whether numba-cuda is installed (without importing it)."""
    return importlib.util.find_spec("numba_cuda") is not None


def available() -> bool:
    """Whether GPU arrays can be updated here: numba-cuda with a GPU, or its simulator
    (NUMBA_ENABLE_CUDASIM=1). Imports numba."""
    if not installed():
        return False
    from numba import cuda  # noqa: PLC0415

    return bool(cuda.is_available())


_loaded = None  # pyoptim._cuda_kernels, once imported


def _kernels():
    """pyoptim._cuda_kernels (which imports numba), or an error that says what is missing."""
    global _loaded
    if not installed():
        raise ImportError(
            "pyoptim's CUDA backend needs numba-cuda, which is not installed; install it with "
            f"`{INSTALL_HINT}` (or `pip install numba-cuda`). Host arrays (NumPy, torch CPU "
            "tensors) need nothing more."
        )
    if _loaded is None:
        from numba import cuda  # noqa: PLC0415

        if not cuda.is_available():
            raise RuntimeError(
                "pyoptim got GPU arrays, but numba-cuda finds no usable CUDA GPU or driver here "
                f"({cuda.cuda_error() or 'no device'})"
            )
        from . import _cuda_kernels  # noqa: PLC0415

        _loaded = _cuda_kernels
    return _loaded


# ---------------------------------------------------------------------------------------------
# Launch configuration

THREADS_PER_BLOCK = 256
SIMULATOR_GRID = (2, 8)  # blocks, threads per block
_override: dict[str, int | None] = {"threads_per_block": None, "max_blocks": None}


def set_launch_config(threads_per_block: int | None = None, max_blocks: int | None = None) -> None:
    """Overrides the launch configuration of the CUDA kernels; None restores the automatic choice.

    threads_per_block: threads in a block (default 256; 8 on the simulator); max_blocks: the
    most blocks a launch uses (default: as many as the GPU holds resident at once; 2 on the
    simulator). Small buffers use fewer of both. Results do not depend on these numbers.
    """
    for name, value in (("threads_per_block", threads_per_block), ("max_blocks", max_blocks)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"set_cuda_launch_config: {name} must be an integer >= 1 or None, "
                             f"got {value!r}")
    if threads_per_block is not None and threads_per_block > 1024:
        raise ValueError(f"set_cuda_launch_config: threads_per_block must be at most 1024 (CUDA's "
                         f"limit), got {threads_per_block}")
    _override.update(threads_per_block=threads_per_block, max_blocks=max_blocks)


def get_launch_config() -> dict:
    """The overrides in force ({'threads_per_block': ..., 'max_blocks': ...}; None: automatic)."""
    return dict(_override)


def threads_per_block() -> int:
    """The threads of a block: the override, or the automatic choice."""
    return _override["threads_per_block"] or (SIMULATOR_GRID[1] if _kernels().SIMULATOR
                                              else THREADS_PER_BLOCK)


def launch_config(n: int) -> tuple[int, int]:
    """(blocks, threads per block) for a buffer of n > 0 elements."""
    simulator = _kernels().SIMULATOR
    threads = min(threads_per_block(), n)
    max_blocks = _override["max_blocks"] or (SIMULATOR_GRID[0] if simulator
                                             else _resident_blocks(threads))
    return max(1, min(-(-n // threads), max_blocks)), threads


def _resident_blocks(threads: int) -> int:
    """Blocks of this size the current GPU runs at once: one wave of the grid-stride loop."""
    from numba import cuda  # noqa: PLC0415

    device = cuda.get_current_device()
    return device.MULTIPROCESSOR_COUNT * max(1, device.MAX_THREADS_PER_MULTIPROCESSOR // threads)


# ---------------------------------------------------------------------------------------------
# GPU arrays: what the checks need, and the flat view a kernel indexes


@dataclass
class DeviceArray:
    buffer: _checks.Buffer
    size: int
    flat: Callable[[np.dtype], Any]  # kernel dtype -> a 1-D array of it on the same memory
    stream: Any  # the stream its producer queues work on, or None
    device: int | None  # the GPU ordinal, where known (torch)


def _is_simulator_array(x) -> bool:
    return bool(getattr(x, "__cuda_ndarray__", False)) and not _arrays._has_cuda_interface(x)


def describe(name: str, x) -> DeviceArray:
    """Reads a GPU array's interface (no copy, nothing written); TypeError for a host array."""
    if _arrays._is_torch(x):
        return _from_torch(name, x)
    if _is_simulator_array(x):
        # the simulator's arrays wrap a NumPy array, whose __array_interface__ they forward
        return _from_interface(name, x, x.__array_interface__, x.dtype,
                               lambda dtype: x.reshape(-1).view(dtype), x.stream or None, None)
    if _arrays._has_cuda_interface(x):
        cai = x.__cuda_array_interface__
        declared = getattr(x, "dtype", None)
        return _from_interface(name, x, cai, declared if isinstance(declared, np.dtype) else None,
                               lambda dtype: _wrap(x, cai, dtype), _interface_stream(x, cai), None)
    if isinstance(x, (list, tuple)) or x is None or isinstance(x, (int, float)):
        raise TypeError(f"{name}: expected a GPU array, got {type(x).__name__}")
    raise TypeError(
        f"{name} is a host array but the other arrays of this step are GPU arrays; all arrays "
        "of a step must be on the same device (no implicit transfer)"
    )


def _from_torch(name, t) -> DeviceArray:
    import torch  # noqa: PLC0415 (a torch tensor came in)

    if t.device.type != "cuda":
        raise TypeError(
            f"{name} is a host array (a PyTorch tensor on {t.device}) but the other arrays of "
            "this step are GPU arrays; all arrays of a step must be on the same device (no "
            "implicit transfer)"
        )
    _arrays.refuse_lazy_tensor(t, name)
    t = t.detach()  # the update is written into the tensor's memory, outside autograd
    handle = torch.cuda.current_stream(t.device).cuda_stream  # 0: the default stream
    cai = t.__cuda_array_interface__
    return _from_interface(name, t, cai, str(t.dtype).removeprefix("torch."),
                           lambda dtype: _wrap(t, cai, dtype), _stream(handle), t.device.index)


def _dtype_name(typestr: str, declared) -> str:
    if isinstance(declared, str):
        return declared
    if declared is None:
        if typestr == "<V2":  # torch's and ml_dtypes' typestr for bfloat16
            return "bfloat16"
        declared = typestr
    return _checks.dtype_name(np.dtype(declared))  # a declared '>f4' included


def _c_contiguous(shape, strides, itemsize) -> bool:
    if strides is None or math.prod(shape) == 0:
        return True
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides)):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


def _from_interface(name, x, interface: dict, declared, flat, stream, device) -> DeviceArray:
    if interface.get("mask") is not None:
        raise TypeError(f"{name} is a masked array; pass an array without a mask")
    shape = tuple(interface["shape"])
    itemsize = np.dtype(interface["typestr"]).itemsize
    address, readonly = interface["data"]
    size = math.prod(shape)
    return DeviceArray(
        buffer=_checks.Buffer(
            name=name,
            dtype=_dtype_name(interface["typestr"], declared),
            shape=shape,
            contiguous=_c_contiguous(shape, interface.get("strides"), itemsize),
            writeable=not readonly,
            address=address or 0,
            nbytes=size * itemsize,
        ),
        size=size,
        flat=flat,
        stream=stream,
        device=device,
    )


def _wrap(owner, cai: dict, dtype: np.dtype):
    """A flat Numba device array on the memory cai describes (no copy, no host synchronization)."""
    from numba import cuda  # noqa: PLC0415

    flat = {"shape": (math.prod(cai["shape"]),), "strides": None, "typestr": dtype.str,
            "data": (cai["data"][0], False), "version": 3}
    return cuda.from_cuda_array_interface(flat, owner=owner, sync=False)


def _interface_stream(x, cai):
    """The stream a CAI producer names (v3 'stream': a handle; 1 and 2 are CUDA's legacy and
    per-thread default streams), or the stream a Numba device array is bound to."""
    bound = getattr(x, "stream", 0) if getattr(x, "__cuda_ndarray__", False) else 0
    return bound or _stream(cai.get("stream"))


def _stream(handle):
    """A Numba stream for a CUDA stream handle; None for none or 0 (the default stream)."""
    if not handle:
        return None
    from numba import cuda  # noqa: PLC0415

    if handle == 1:
        return cuda.legacy_default_stream()
    if handle == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(handle)


def _stream_key(stream):
    return int(stream) if hasattr(stream, "__int__") else id(stream)


def launch_stream(arrays: list[DeviceArray]) -> tuple[Any, list]:
    """The stream to launch on (the first array's that names one, the param's first; 0 for
    Numba's default stream) and the other streams named, which the launch must wait for."""
    named = {}
    for a in arrays:
        if a.stream is not None:
            named.setdefault(_stream_key(a.stream), a.stream)
    if not named:
        return 0, []
    streams = list(named.values())
    return streams[0], streams[1:]


def _check_aligned(where: str, a: DeviceArray) -> None:
    itemsize = a.buffer.nbytes // a.size if a.size else 1
    if a.size and a.buffer.address % itemsize:
        raise ValueError(
            f"{where} {a.buffer.name} is not aligned to its {itemsize}-byte elements (address "
            f"{a.buffer.address:#x}); pass an aligned array"
        )


def _check_distinct(where: str, arrays: list[DeviceArray]) -> None:
    """No two arrays of a step (across its params) share memory."""
    extents = sorted((a.buffer.address, a.buffer.address + a.buffer.nbytes, a.buffer.name)
                     for a in arrays if a.buffer.nbytes > 0)
    for (_, end, first), (start, _, second) in zip(extents, extents[1:]):
        if start < end:
            raise ValueError(
                f"{where} {first} and {second} share memory; every param, grad and state buffer "
                "must be distinct"
            )


# ---------------------------------------------------------------------------------------------
# Steps


def _as_list(obj, what: str, count: int | None = None) -> list:
    if not isinstance(obj, (list, tuple)):
        raise TypeError(f"{what} must be a list of arrays")
    if count is not None and len(obj) != count:
        raise ValueError(f"{what} has {len(obj)} arrays, expected {count} (one per param)")
    return list(obj)


def _scalar_rows(opt, scalars, rows, count: int) -> tuple[list, list]:
    """The rows of per-step scalars (float64) and the row of each param."""
    fields = len(opt.scalar_type._fields)
    if isinstance(scalars, tuple):
        if len(scalars) != fields:
            raise ValueError(f"{opt.name}: scalars must have {fields} values")
        table = [tuple(float(v) for v in scalars)]
    elif (isinstance(scalars, np.ndarray) and scalars.dtype == np.float64 and scalars.ndim == 2
          and scalars.shape[1] == fields):
        table = [tuple(row) for row in scalars.tolist()]
    else:
        raise ValueError(f"{opt.name}: scalars must be a tuple of {fields} floats or a float64 "
                         f"array of shape (rows, {fields})")
    if rows is not None:
        rows = [int(r) for r in rows]
        if len(rows) != count:
            raise ValueError(f"{opt.name}: rows must have one entry per param")
        if any(r < 0 or r >= len(table) for r in rows):
            raise ValueError(f"{opt.name}: row out of range")
        return table, rows
    if len(table) == count:
        return table, list(range(count))
    if len(table) != 1:
        raise ValueError(f"{opt.name}: scalars must have one row, or one row per param")
    return table, [0] * count


def step(opt: _spec.Optimizer, flags: int, params: list, grads: list, states: dict, scalars,
         rows=None, clip_value=None) -> None:
    """One step of opt over lists of GPU arrays: the meaning of pyoptim._cpu.step.

    flags: opt.flag_mask(...); states: state name -> a list of arrays (one per param) or None;
    scalars: opt.scalars(...) for every param (a tuple of floats), or a float64 array with one
    row per group of params and ``rows`` giving each param's row; clip_value: if given, each
    gradient element, after its multiplication by grad_factor, is clamped to
    [-clip_value, clip_value] (as _core.step's clip_value). Checks every array before launching
    anything; then one launch per param (module docstring), three for LAMB.
    """
    kernels = _kernels()
    if opt.kernel not in kernels.RULES:
        raise NotImplementedError(
            f"{opt.name}: the CUDA backend has no kernel for {opt.name} yet; use host arrays")
    if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags < 1 << len(opt.flags):
        raise ValueError(f"{opt.name}: flags {flags!r} out of range")
    clip = math.inf if clip_value is None else _clip_bound(opt.name, clip_value)
    params = _as_list(params, f"{opt.name}: params")
    count = len(params)
    grads = _as_list(grads, f"{opt.name}: grads", count)
    table, row_of = _scalar_rows(opt, scalars, rows, count)
    needed = kernels.touched_states(opt, flags)
    for name in needed:
        if states.get(name) is None:
            raise ValueError(f"{opt.name}: {name} is required by these options but was not given")
    lists = {name: _as_list(states[name], f"{opt.name}: {name}", count) for name in needed}

    def label(base, i):
        return base if count == 1 else f"{base}[{i}]"

    where = f"{opt.name}:"
    segments = []
    for i in range(count):
        param = describe(label("param", i), params[i])
        grad = describe(label("grad", i), grads[i])
        state = {name: describe(label(name, i), lists[name][i]) for name in needed}
        _checks.check(opt.name, param.buffer, grad.buffer, [s.buffer for s in state.values()])
        for a in (param, grad, *state.values()):
            _check_aligned(where, a)
        segments.append((param, grad, state))
    everything = [a for p, g, s in segments for a in (p, g, *s.values())]
    _check_distinct(where, everything)
    _check_one_gpu(where, everything)

    for i, (param, grad, state) in enumerate(segments):
        if param.size == 0:
            continue
        dtypes = (param.buffer.dtype, grad.buffer.dtype,
                  next(iter(state.values())).buffer.dtype if state else param.buffer.dtype)
        key = kernels.Key(opt.kernel, flags, *dtypes)
        types = kernels.KERNEL_DTYPES
        flat = (param.flat(types[key.param]), grad.flat(types[key.grad]),
                {name: s.flat(types[key.state]) for name, s in state.items()})
        found = kernels.kernel(opt, key)
        blocks, threads = launch_config(param.size)
        with _launching([param, grad, *state.values()]) as stream:
            if isinstance(found, kernels.TrustRatioKernels):
                _trust_ratio_step(kernels, opt, key, found, flat, table[row_of[i]], clip,
                                  param.size, stream)
            else:
                found[blocks, threads, stream](
                    *kernels.arguments(opt, key, *flat, table[row_of[i]], clip))


def _trust_ratio_step(kernels, opt, key, found, flat, scalars, clip, n, stream) -> None:
    """LAMB on one array: the moments and the blocks' sums of squares, the trust ratio, the update
    (pyoptim/_cuda_kernels.py). The sums and the ratio stay on the GPU."""
    from numba import cuda  # noqa: PLC0415

    from . import _cuda_sums  # noqa: PLC0415

    count = _cuda_sums.blocks_of(n)
    sums = cuda.device_array((2, count), np.float64, stream=stream)
    ratio = cuda.device_array(1, kernels.compute_type(key.param), stream=stream)
    args = kernels.trust_ratio_arguments(opt, key, *flat, scalars, clip, sums, ratio)
    blocks, threads = launch_config(n)
    found.moments[min(blocks, count), threads, stream](*args.moments)
    found.ratio[1, _cuda_sums.tree_threads(count, threads), stream](*args.ratio)
    found.apply[blocks, threads, stream](*args.apply)


def _clip_bound(name: str, clip_value) -> float:
    if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float, np.floating)):
        raise TypeError(f"{name}: clip_value must be a real number or None, got "
                        f"{type(clip_value).__name__}")
    return float(clip_value)


def _check_one_gpu(where: str, arrays: list[DeviceArray]) -> None:
    ordinals = {a.device for a in arrays if a.device is not None}
    if len(ordinals) > 1:
        raise ValueError(f"{where} the arrays are on different GPUs ({sorted(ordinals)}); a step "
                         "takes arrays of one GPU")


@contextlib.contextmanager
def _launching(arrays: list[DeviceArray]):
    """The stream to launch on (launch_stream), ordered after the work queued on the arrays'
    other streams, with the arrays' GPU current."""
    from numba import cuda  # noqa: PLC0415

    stream, others = launch_stream(arrays)
    device = next((a.device for a in arrays if a.device is not None), None)
    with cuda.gpus[device] if device is not None else contextlib.nullcontext():
        for other in others:  # order the launch after the work queued on the other streams
            event = cuda.event()
            event.record(other)
            event.wait(stream)
        yield stream


# ---------------------------------------------------------------------------------------------
# The global sum of squares (the optimizer classes' max_grad_norm and skip_nonfinite)


def sum_of_squares(arrays: list, names: list | None = None) -> tuple[float, bool]:
    """(sum of the squares of every element of every GPU array, in float64; whether every element
    is finite), as pyoptim.reference.sum_of_squares and _core.sum_of_squares: the same additions
    in the same order (pyoptim/_cuda_sums.py), so the same sum to the bit, for any launch
    configuration. One launch per array and one for the total, on the arrays' stream; waits for
    the total (the caller needs it on the host)."""
    kernels = _kernels()
    from numba import cuda  # noqa: PLC0415

    from . import _cuda_sums  # noqa: PLC0415

    names = names or [f"arrays[{i}]" for i in range(len(arrays))]
    described = [describe_readable("sum_of_squares:", name, a) for name, a in zip(names, arrays)]
    _check_one_gpu("sum_of_squares:", described)
    present = [a for a in described if a.size > 0]
    if not present:
        return 0.0, True
    firsts = np.cumsum([0] + [_cuda_sums.blocks_of(a.size) for a in present]).tolist()
    with _launching(present) as stream:
        sums = cuda.device_array((1, firsts[-1]), np.float64, stream=stream)
        total = cuda.device_array(1, np.float64, stream=stream)
        for a, first in zip(present, firsts):
            blocks, threads = launch_config(a.size)
            kernels.squares_kernel(a.buffer.dtype)[
                min(blocks, _cuda_sums.blocks_of(a.size)), threads, stream](
                    (a.flat(kernels.KERNEL_DTYPES[a.buffer.dtype]),), (), sums, first)
        _cuda_sums.total_kernel()[1, _cuda_sums.tree_threads(firsts[-1], threads_per_block()),
                                  stream](sums, total)
        result = float(_to_host(total, stream)[0])
        if math.isfinite(result):
            return result, True
        # A NaN or infinite element makes its block's sum NaN or infinite. A block of 16- or
        # 32-bit values cannot overflow in float64; one of float64 values can, so its elements
        # are looked at (as csrc/reductions.cpp does).
        block_sums = _to_host(sums, stream)[0]
        for a, first, last in zip(present, firsts, firsts[1:]):
            for b in range(last - first):
                value = block_sums[first + b]
                if math.isfinite(value):
                    continue
                if a.buffer.dtype != "float64" or math.isnan(value):
                    return result, False
                begin = b * _cuda_sums.SUM_BLOCK
                block = a.flat(np.dtype(np.float64))[begin:begin + _cuda_sums.SUM_BLOCK]
                if not np.isfinite(_to_host(block, stream)).all():
                    return result, False
    return result, True


def describe_readable(where: str, name: str, x) -> DeviceArray:
    """describe(name, x) for an array a kernel reads as a flat buffer: of a supported dtype,
    C-contiguous and aligned, else TypeError or ValueError (nothing else checked)."""
    a = describe(name, x)
    if a.buffer.dtype not in _spec.SUPPORTED_DTYPES:
        raise TypeError(f"{where} {name} has dtype {a.buffer.dtype}; supported dtypes are "
                        "float32, float64, float16 and bfloat16")
    if not a.buffer.contiguous:
        raise ValueError(f"{where} {name} is not C-contiguous; pass a contiguous array")
    _check_aligned(where, a)
    return a


def _to_host(array, stream) -> np.ndarray:
    """A host copy of a device array, once the work queued before it on stream is done."""
    copy = array.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    return copy
