"""The contestants of a cell: pyoptim, its peers, and the roofline.

Every contestant owns its arrays, made from the cell's float32 master data in its own storage
dtypes (torch keeps its state in the param's dtype; pyoptim keeps float32 state for 16-bit
params), starts from zero state, and advances one optimizer step per ``step()`` call. ``buffers()``
returns host views (or copies, from a GPU) of its param and state arrays for the validation.
``relocate(move)`` moves every host array its step touches to new memory (``move``: an array to
its copy at a new place, _cells.Mover), keeping the values: the timing does it between rounds.

A peer that cannot run a cell here (not installed, no such implementation, no such dtype) raises
Unavailable with the reason, which the report keeps.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import numpy as np

from .. import _cpu, _spec, functional, reference
from ._cells import (TORCH_APIS, Cell, DTypes, array_like, bytes_per_element, full, numpy_dtype,
                     second_pass_bytes)

PEERS = ("numpy", "torch-forloop", "torch-foreach", "torch-fused", "deepspeed")
PYOPTIM = "pyoptim"
ROOFLINE = "roofline"
# --control: a second pyoptim contestant, identical but for its own arrays (an A/A control)
CONTROL = "pyoptim-control"


class Unavailable(Exception):
    """This contestant cannot run this cell here; the message says why."""


@dataclass
class Buffers:
    """Host views of a contestant's params, state buffers and grads, one array per param."""

    params: list
    states: dict  # state name -> list of arrays
    grads: list  # only read by a step: the validation checks that they did not change


class Contestant:
    name: str
    role: str  # "pyoptim", "peer" or "roofline"
    dtypes: DTypes  # the storage it runs in
    compute_dtype: str | None = None  # what it computes in, if not the reference's default
    bytes_per_element: int

    def step(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Waits until the work of the steps so far is done (a GPU runs asynchronously)."""

    def buffers(self) -> Buffers:
        raise NotImplementedError

    def relocate(self, move) -> None:
        """Moves the host arrays of the step to new memory (a GPU's arrays stay)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drops the arrays."""


# ---------------------------------------------------------------------------------------------
# Arrays: host NumPy, or torch tensors on a GPU


def _host_arrays(master: list, dtype: str) -> list:
    return [array_like(m, numpy_dtype(dtype)) for m in master]


def _host_states(master: list, cell: Cell) -> dict:
    """The state buffers of every param array, filled as torch.optim fills them."""
    dtype = numpy_dtype(cell.dtypes.state)
    return {name: [full(m.size, cell.variant.initial_value(name), dtype) for m in master]
            for name in cell.variant.states}


def _relocate_host(c: "Contestant", move) -> None:
    """Moves the host arrays of a contestant that steps through functional calls (its params,
    grads, states and _calls); the host states in the calls (NAdam's mu_product...) carry on."""
    c.params = [move(a) for a in c.params]
    c.grads = [move(a) for a in c.grads]
    c.states = {name: [move(a) for a in arrays] for name, arrays in c.states.items()}
    c._calls = [(c.params[i], c.grads[i],
                 {**kwargs, **{name: arrays[i] for name, arrays in c.states.items()}})
                for i, (_, _, kwargs) in enumerate(c._calls)]


def _functional_calls(params: list, grads: list, states: dict, variant, **extra) -> list:
    """(param, grad, keyword arguments but the step) of each array's functional call, with its
    own host states."""
    return [(params[i], grads[i], {**{name: arrays[i] for name, arrays in states.items()},
                                    **variant.initial_host(), **extra, **variant.options})
            for i in range(len(params))]


def import_torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise Unavailable("torch is not installed") from None


def _torch_dtype(torch, name: str):
    return {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]


def _to_torch(torch, array: np.ndarray, device: str):
    if array.dtype == numpy_dtype("bfloat16"):
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    return tensor.to(device) if device != "cpu" else tensor


def _to_numpy(torch, tensor) -> np.ndarray:
    """A host view of a CPU tensor (a copy of a GPU one)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
    return tensor.numpy()


def cuda_torch():
    """torch, when it can run on a GPU here; else Unavailable."""
    torch = import_torch()
    if not torch.cuda.is_available():
        raise Unavailable("no CUDA GPU is visible to torch")
    return torch


# ---------------------------------------------------------------------------------------------
# pyoptim


def many_array_step(opt: _spec.Optimizer, hp: dict, step: int, params: list, grads: list,
                    states: dict) -> None:
    """One step over lists of host arrays in one call into C++ (one parallel region over the
    segment table of all arrays). The only place the benchmark calls pyoptim._cpu.step: the
    optimizer classes' step takes its place once they exist (issue 4)."""
    _cpu.step(opt, opt.flag_mask(hp, step), params, grads, states, opt.scalars(hp, step))


class Pyoptim(Contestant):
    """pyoptim as users call it: pyoptim.functional on a flat buffer; a many-array step over a
    list of arrays. backend: "cpu" (NumPy arrays, C++), "numpy" (the reference through
    pyoptim.functional) or "cuda" (torch CUDA tensors)."""

    role = PYOPTIM

    def __init__(self, cell: Cell, master: tuple, backend: str):
        self.name = PYOPTIM
        self.dtypes = cell.dtypes
        self.bytes_per_element = cell.bytes_per_element
        self.variant = cell.variant
        self.backend = backend
        self.fn = getattr(functional, cell.variant.optimizer)
        self.hp = cell.variant.hyperparameters
        self.t = 0
        params, grads = master
        p = _host_arrays(params, self.dtypes.param)
        g = _host_arrays(grads, self.dtypes.grad)
        s = _host_states(params, cell)
        if backend == "cuda":
            torch = cuda_torch()
            self._torch = torch
            p = [_to_torch(torch, a, "cuda") for a in p]
            g = [_to_torch(torch, a, "cuda") for a in g]
            s = {name: [_to_torch(torch, a, "cuda") for a in arrays] for name, arrays in s.items()}
        self.params, self.grads, self.states = p, g, s
        # many arrays in one call; optimizers with host states step array by array
        self._many = backend == "cpu" and len(p) > 1 and not cell.variant.host_states
        self._calls = _functional_calls(p, g, s, cell.variant, backend=backend)

    def step(self) -> None:
        self.t += 1
        if self._many:
            many_array_step(self.variant.spec, self.hp, self.t, self.params, self.grads,
                            self.states)
            return
        for p, g, kwargs in self._calls:
            self.fn(p, g, step=self.t, **kwargs)

    def sync(self) -> None:
        if self.backend == "cuda":
            self._torch.cuda.synchronize()

    def buffers(self) -> Buffers:
        if self.backend != "cuda":
            return Buffers(self.params, self.states, self.grads)
        convert = lambda arrays: [_to_numpy(self._torch, a) for a in arrays]  # noqa: E731
        return Buffers(convert(self.params),
                       {name: convert(arrays) for name, arrays in self.states.items()},
                       convert(self.grads))

    def relocate(self, move) -> None:
        if self.backend == "cuda":
            return
        _relocate_host(self, move)

    def close(self) -> None:
        self.params = self.grads = self.states = self._calls = None


# ---------------------------------------------------------------------------------------------
# peers


class NumpyReference(Contestant):
    """pyoptim.reference called directly: the NumPy reference (a NumPy-only user's best)."""

    role = "peer"

    def __init__(self, cell: Cell, master: tuple, backend: str):
        if backend == "cuda":
            raise Unavailable("the NumPy reference runs on the host")
        self.name = "numpy"
        self.dtypes = cell.dtypes
        self.bytes_per_element = cell.bytes_per_element
        self.fn = getattr(reference, cell.variant.optimizer)
        self.t = 0
        params, grads = master
        self.params = _host_arrays(params, self.dtypes.param)
        self.grads = _host_arrays(grads, self.dtypes.grad)
        self.states = _host_states(params, cell)
        self._calls = _functional_calls(self.params, self.grads, self.states, cell.variant)

    def step(self) -> None:
        self.t += 1
        for p, g, kwargs in self._calls:
            self.fn(p, g, step=self.t, **kwargs)

    def buffers(self) -> Buffers:
        return Buffers(self.params, self.states, self.grads)

    def relocate(self, move) -> None:
        _relocate_host(self, move)

    def close(self) -> None:
        self.params = self.grads = self.states = self._calls = None


_TORCH_CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
                  "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
                  "adadelta": "Adadelta", "asgd": "ASGD", "rprop": "Rprop"}
_TORCH_IMPLEMENTATIONS = {
    "torch-forloop": dict(foreach=False),
    "torch-foreach": dict(foreach=True),
    "torch-fused": dict(foreach=False, fused=True),
}


class _TorchOptimizer(Contestant):
    """A torch.optim-style optimizer over torch tensors whose .grad is set: step() is its step."""

    role = "peer"

    def _tensors(self, master: tuple, device: str) -> None:
        params, grads = master
        torch = self._torch
        # leaves that require grad, as a model's parameters are (pyoptim.torch's flat_grads
        # gives a view to those only)
        self.params = [torch.nn.Parameter(_to_torch(torch, a, device))
                       for a in _host_arrays(params, self.dtypes.param)]
        for p, g in zip(self.params, _host_arrays(grads, self.dtypes.grad)):
            p.grad = _to_torch(torch, g, device)

    def step(self) -> None:
        self.opt.step()

    def sync(self) -> None:
        if self.params[0].device.type == "cuda":
            self._torch.cuda.synchronize()

    def buffers(self) -> Buffers:
        convert = lambda t: _to_numpy(self._torch, t)  # noqa: E731
        return Buffers([convert(p) for p in self.params],
                       {name: [convert(self.opt.state[p][name]) for p in self.params]
                        for name in self.state_names},
                       [convert(p.grad) for p in self.params])

    def _moved(self, move, tensor):
        return _to_torch(self._torch, move(_to_numpy(self._torch, tensor)), "cpu")

    def _move_params(self, move) -> None:
        """Moves the params (p.data) and their grads."""
        for p in self.params:
            grad = p.grad
            p.data = self._moved(move, p)
            p.grad = self._moved(move, grad)

    def relocate(self, move) -> None:
        """Moves the params, their grads and the optimizer's state tensors (not its scalar ones:
        torch's step counts)."""
        if self.params[0].device.type != "cpu":
            return
        self._move_params(move)
        for entry in self.opt.state.values():
            for key, value in entry.items():
                if isinstance(value, self._torch.Tensor) and value.ndim > 0:
                    entry[key] = self._moved(move, value)

    def close(self) -> None:
        self.params = self.opt = None


class Torch(_TorchOptimizer):
    """torch.optim on tensors of the param's dtype (torch keeps its state in that dtype too):
    the for-loop, foreach or fused implementation. For 16-bit params the for-loop and foreach
    implementations compute in 16 bits (every operation rounds to the param's dtype), the fused
    one in float32, as pyoptim."""

    def __init__(self, cell: Cell, master: tuple, backend: str, name: str):
        self._torch = torch = cuda_torch() if backend == "cuda" else import_torch()
        self.name = name
        if cell.variant.optimizer not in _TORCH_CLASSES:
            raise Unavailable(f"torch.optim has no {cell.variant.description}")
        param = cell.dtypes.param
        self.dtypes = DTypes(param, param, param)
        if name != "torch-fused" and numpy_dtype(param).itemsize == 2:
            self.compute_dtype = param
        self.bytes_per_element = bytes_per_element(cell.variant, self.dtypes)
        self.state_names = cell.variant.states
        self._tensors(master, "cuda" if backend == "cuda" else "cpu")
        cls = getattr(torch.optim, _TORCH_CLASSES[cell.variant.optimizer])
        try:
            self.opt = cls(self.params, **cell.variant.options, **_TORCH_IMPLEMENTATIONS[name])
        except (TypeError, RuntimeError, ValueError) as e:
            raise Unavailable(f"torch {torch.__version__}: {e}") from None


class DeepSpeed(_TorchOptimizer):
    """DeepSpeedCPUAdam (its SIMD CPU kernel), float32 state, for Adam and AdamW."""

    def __init__(self, cell: Cell, master: tuple, backend: str):
        variant = cell.variant
        if backend != "cpu":
            raise Unavailable("DeepSpeedCPUAdam runs on the CPU")
        if variant.optimizer not in ("adam", "adamw") or variant.hyperparameters["amsgrad"]:
            raise Unavailable("DeepSpeedCPUAdam runs Adam and AdamW without amsgrad")
        if cell.dtypes.param == "float64" or cell.dtypes.grad != cell.dtypes.param:
            raise Unavailable("DeepSpeedCPUAdam takes fp32/fp16/bf16 params with grads alike")
        self._torch = import_torch()
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no search for a GPU, no warning
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam  # noqa: PLC0415
        except Exception as e:  # ImportError, or a failed build of its C++ op
            raise Unavailable(f"deepspeed is not usable: {str(e).splitlines()[0][:120]}") from None
        self.name = "deepspeed"
        fp32_state = cell.dtypes.state == "float32"
        self.dtypes = DTypes(cell.dtypes.param, cell.dtypes.param,
                             "float32" if fp32_state else cell.dtypes.param)
        self.bytes_per_element = bytes_per_element(variant, self.dtypes)
        self.state_names = variant.states
        self._tensors(master, "cpu")
        hp = variant.hyperparameters
        try:
            self.opt = DeepSpeedCPUAdam(
                self.params, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                weight_decay=hp["weight_decay"], adamw_mode=variant.optimizer == "adamw",
                fp32_optimizer_states=fp32_state)
        except Exception as e:  # its JIT build of the C++ op can fail in many ways
            raise Unavailable(f"DeepSpeedCPUAdam: {str(e).splitlines()[0][:120]}") from None


def make_peer(name: str, cell: Cell, master: tuple, backend: str) -> Contestant:
    if name == "numpy":
        return NumpyReference(cell, master, backend)
    if name in _TORCH_IMPLEMENTATIONS:
        return Torch(cell, master, backend, name)
    if name == "deepspeed":
        return DeepSpeed(cell, master, backend)
    raise ValueError(f"unknown peer {name!r}")


class PyoptimTorch(_TorchOptimizer):
    """pyoptim.torch's optimizer (the cell's api "torch") over torch tensors whose .grad is set,
    stepped as a training loop steps it: the interface and the tensors the torch.optim peers get,
    so that the comparison includes what a step costs per tensor on either side. Api
    "torch-flat": built with flat_grads=True (it copies the grads into views of a flat buffer and
    makes those the .grad)."""

    role = PYOPTIM

    def __init__(self, cell: Cell, master: tuple, backend: str):
        self._torch = cuda_torch() if backend == "cuda" else import_torch()
        import pyoptim.torch  # noqa: PLC0415 (torch is optional)
        from .. import optim  # noqa: PLC0415

        self.name = PYOPTIM
        self.dtypes = cell.dtypes
        self.bytes_per_element = cell.bytes_per_element
        self.state_names = cell.variant.states
        if cell.dtypes.grad != cell.dtypes.param:
            raise Unavailable("torch keeps a grad in its param's dtype")
        self._tensors(master, "cuda" if backend == "cuda" else "cpu")
        cls = getattr(pyoptim.torch, optim.OPTIMIZER_NAMES[cell.variant.optimizer][0].__name__)
        self._build = lambda: cls(self.params, **cell.variant.options,  # noqa: E731
                                  state_dtype=numpy_dtype(cell.dtypes.state),
                                  flat_grads=cell.api == "torch-flat",
                                  **({"backend": "numpy"} if backend == "numpy" else {}))
        self.opt = self._build()

    def relocate(self, move) -> None:
        """Moves the params and grads, and builds the optimizer anew over them with the old
        one's state (pyoptim.torch refuses params whose memory moved): its state buffers are
        new, placed by pyoptim's own allocation."""
        if self.params[0].device.type != "cpu":
            return
        saved = self.opt.state_dict()
        self._move_params(move)
        self.opt = self._build()
        self.opt.load_state_dict(saved)


def make_pyoptim(cell: Cell, master: tuple, backend: str) -> Contestant:
    """pyoptim through the cell's api."""
    if cell.api in TORCH_APIS:
        return PyoptimTorch(cell, master, backend)
    return Pyoptim(cell, master, backend)


def make_control(cell: Cell, master: tuple, backend: str) -> Contestant:
    """The A/A control: pyoptim as make_pyoptim makes it, over arrays of its own. Its time over
    pyoptim's, round by round, is what two identical contestants differ by in this cell (where
    their arrays lie, the order of turns): the resolution of the cell's other ratios."""
    control = make_pyoptim(cell, master, backend)
    control.name = CONTROL
    control.role = "control"
    return control


# ---------------------------------------------------------------------------------------------
# the roofline


class Roofline(Contestant):
    """The memory-bandwidth roofline of a cell, measured in the same run: a STREAM-like pass that
    moves the bytes pyoptim's step moves (pyoptim._core.StreamPass on the host; on a GPU, a
    device-to-device copy of as many bytes, read plus written). Many arrays are one flat buffer
    of the same total: the bound does not depend on how the elements are split."""

    role = ROOFLINE

    def __init__(self, cell: Cell, backend: str):
        self.name = ROOFLINE
        self.dtypes = cell.dtypes
        self.bytes_per_element = cell.bytes_per_element
        n = cell.shape.elements
        self._torch = None
        if backend == "cuda":
            torch = cuda_torch()
            self._torch = torch
            half = self.bytes_per_element * n // 2
            self._src = torch.ones(half, dtype=torch.uint8, device="cuda")
            self._dst = torch.zeros(half, dtype=torch.uint8, device="cuda")
            return
        # ones stay ones (each element becomes the mean of ones): no subnormal slows a pass
        arrays = [full(n, 1, numpy_dtype(d)) for d in
                  (self.dtypes.param, self.dtypes.grad)
                  + (self.dtypes.state,) * len(cell.variant.states)]
        self._arrays = [(arrays[0], arrays[1], arrays[2:])]
        if second_pass_bytes(cell.variant, self.dtypes):
            self._arrays.append(self._second_pass(n, len(cell.variant.states)))
        self._make_passes()
        moved = sum(p.bytes_per_element for p in self._passes)
        if moved != self.bytes_per_element:
            raise AssertionError(
                f"roofline moves {moved} B/element, the step "
                f"{self.bytes_per_element}"
            )

    def _second_pass(self, n: int, states: int) -> tuple:
        """A two-pass step (LAMB) reads the param and its two state buffers again and writes the
        param: P + 2S bytes per element. A second pass moving as many, with dtypes a StreamPass
        takes: a state-typed buffer read and written beside a param-typed one read (2S + P; the
        param's dtype must be the state's or float32), or, for 16-bit params with float32 state,
        param-typed buffers: one read and written, one read, one state (5P = P + 2S)."""
        param, state = numpy_dtype(self.dtypes.param), numpy_dtype(self.dtypes.state)
        if states == 2 and self.dtypes.param in (self.dtypes.state, "float32"):
            return full(n, 1, state), full(n, 1, param), []
        if states == 2 and state.itemsize == 2 * param.itemsize:
            return full(n, 1, param), full(n, 1, param), [full(n, 1, param)]
        raise Unavailable("no roofline pass moves a two-pass step's bytes with these dtypes")

    def _make_passes(self) -> None:
        core = _cpu.core()
        # each pass: (an array read and written, an array read, state-like arrays read and
        # written), as StreamPass takes them
        self._passes = [core.StreamPass(updated, read, states)
                        for updated, read, states in self._arrays]

    def relocate(self, move) -> None:
        if self._torch is not None:
            return
        self._arrays = [(move(updated), move(read), [move(a) for a in states])
                        for updated, read, states in self._arrays]
        self._make_passes()

    def step(self) -> None:
        if self._torch is not None:
            self._dst.copy_(self._src)
        else:
            for stream in self._passes:
                stream.run()

    def sync(self) -> None:
        if self._torch is not None:
            self._torch.cuda.synchronize()

    def close(self) -> None:
        self._passes = self._arrays = self._src = self._dst = None
