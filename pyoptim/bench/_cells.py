"""What one benchmark cell is: an optimizer variant, a dtype combination, a shape, a thread count.

The bytes an optimizer step moves per element are derived here from the optimizer's state buffers
(pyoptim._spec, the same table the kernels are driven by) and the storage dtypes, never from a hand
table: a step reads the param, the grad and every state buffer its options need, and writes the
param and those state buffers back (steady state, step >= 2; SGD's first momentum step only
writes its buffer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from .. import _spec

SHORT = {"float32": "fp32", "float64": "fp64", "float16": "fp16", "bfloat16": "bf16"}
LONG = {short: long for long, short in SHORT.items()}


@dataclass(frozen=True)
class Variant:
    """An optimizer as benchmarked: a functional optimizer and the options that shape its step."""

    name: str
    optimizer: str  # the pyoptim.functional / torch.optim name
    options: dict = field(hash=False)  # hyperparameters besides the defaults (lr included)
    description: str = ""

    @property
    def spec(self) -> _spec.Optimizer:
        return _spec.OPTIMIZERS[self.optimizer]

    @property
    def hyperparameters(self) -> dict:
        """Every hyperparameter of the functional form: the defaults with the options applied."""
        return self.spec.hyperparameters(self.options)

    @property
    def states(self) -> tuple[str, ...]:
        """The state buffers, one element per param element, that a step reads and writes."""
        return self.spec.needed_states(self.hyperparameters)

    @property
    def host_states(self) -> tuple[str, ...]:
        """torch's scalar states (NAdam's mu_product, ASGD's eta and mu): one value per array."""
        return self.spec.host_states

    def initial_value(self, state: str) -> float:
        """What a state buffer holds before the first step, as torch.optim fills it."""
        return self.hyperparameters["lr"] if state == "step_size" else 0.0  # Rprop's step sizes

    def initial_host(self) -> dict:
        """Fresh host states for one param array: one-element float32 arrays, as torch has."""
        return {name: value.reshape(1)
                for name, value in self.spec.initial_host(self.hyperparameters).items()}


# lr 1e-2 for all: large enough that the validation sees every term of the update, also in 16 bits.
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("sgd", "sgd", dict(lr=1e-2), "SGD, no momentum"),
        Variant("momentum", "sgd", dict(lr=1e-2, momentum=0.9), "SGD, momentum 0.9"),
        Variant("nesterov", "sgd", dict(lr=1e-2, momentum=0.9, nesterov=True),
                "SGD, Nesterov momentum 0.9"),
        Variant("adagrad", "adagrad", dict(lr=1e-2), "Adagrad"),
        Variant("rmsprop", "rmsprop", dict(lr=1e-2), "RMSprop"),
        Variant("rmsprop-centered", "rmsprop", dict(lr=1e-2, centered=True, momentum=0.9),
                "RMSprop, centered, momentum 0.9"),
        Variant("adam", "adam", dict(lr=1e-2), "Adam"),
        Variant("adamw", "adamw", dict(lr=1e-2), "AdamW, weight_decay 1e-2"),
        Variant("amsgrad", "adam", dict(lr=1e-2, amsgrad=True), "Adam, amsgrad"),
        Variant("adamax", "adamax", {}, "Adamax"),
        Variant("nadam", "nadam", {}, "NAdam"),
        Variant("radam", "radam", {}, "RAdam"),
        Variant("adadelta", "adadelta", {}, "Adadelta"),
        Variant("asgd", "asgd", {}, "ASGD"),
        Variant("rprop", "rprop", {}, "Rprop"),
        Variant("lion", "lion", dict(lr=1e-3), "Lion"),
    )
}
# The core optimizers (every dtype, many arrays in the default suites) and the rest of the family
# (fp32 buffers). `--optimizers all` is both.
CORE_VARIANTS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
FAMILY_VARIANTS = ("adamax", "nadam", "radam", "adadelta", "asgd", "rprop", "lion")
DEFAULT_VARIANTS = CORE_VARIANTS + FAMILY_VARIANTS


@dataclass(frozen=True)
class DTypes:
    """Storage dtypes (NumPy names) of the param, the grad and the state buffers."""

    param: str
    grad: str
    state: str

    @classmethod
    def parse(cls, text: str) -> "DTypes":
        """'fp32', 'bf16' (bf16 params and grads, fp32 state), 'bf16/bf16/bf16', 'float64'..."""
        parts = [LONG.get(part.strip(), part.strip()) for part in text.split("/")]
        if not 1 <= len(parts) <= 3 or any(p not in SHORT for p in parts):
            raise ValueError(
                f"bad dtype combination {text!r}: expected PARAM[/GRAD[/STATE]] with each of "
                f"{', '.join(SHORT.values())} (or the NumPy names), e.g. fp32, bf16, bf16/bf16/bf16"
            )
        param = parts[0]
        grad = parts[1] if len(parts) > 1 else param
        state = parts[2] if len(parts) > 2 else _spec.default_state_dtype(param)
        combo = cls(param, grad, state)
        if (param, grad, state) not in _spec.DTYPE_COMBINATIONS:
            raise ValueError(
                f"unsupported dtype combination {combo.label} (param/grad/state); supported: "
                f"{_spec.supported_dtypes_text()}"
            )
        return combo

    @property
    def label(self) -> str:
        """'fp32', 'bf16' when grad and state are the defaults, else 'bf16/fp32/bf16'."""
        if self.grad == self.param and self.state == _spec.default_state_dtype(self.param):
            return SHORT[self.param]
        return "/".join(SHORT[d] for d in (self.param, self.grad, self.state))

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.param, self.grad, self.state)


# Where the benchmark's arrays start: at a multiple of 64 bytes (a cache line, an AVX-512 vector),
# as torch and most allocators for numerical work place large buffers, so that no contestant pays
# for split vector loads and stores. 0: where NumPy's allocation puts them (malloc: 16 bytes).
# See bench/README.md for what misalignment costs.
ALIGNMENT = 64


def empty(size: int, dtype) -> np.ndarray:
    """An uninitialized 1-D array whose data starts at a multiple of ALIGNMENT bytes."""
    dtype = np.dtype(dtype)
    if not ALIGNMENT:
        return np.empty(size, dtype)
    raw = np.empty(size * dtype.itemsize + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size * dtype.itemsize].view(dtype)


def array_like(values: np.ndarray, dtype) -> np.ndarray:
    """values cast to dtype, in a new array placed as ALIGNMENT says."""
    out = empty(values.size, dtype)
    out[...] = values.astype(dtype, copy=False)
    return out


def full(size: int, value, dtype) -> np.ndarray:
    out = empty(size, dtype)
    out.fill(value)
    return out


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def itemsize(name: str) -> int:
    return numpy_dtype(name).itemsize


def bytes_per_element(variant: Variant, dtypes: DTypes) -> int:
    """Bytes a steady-state step moves per element: param read and written, grad read, each
    state buffer the options need read and written."""
    return (2 * itemsize(dtypes.param) + itemsize(dtypes.grad)
            + 2 * len(variant.states) * itemsize(dtypes.state))


@dataclass(frozen=True)
class Shape:
    """`count` arrays of `size` elements each (count 1: one flat buffer)."""

    count: int
    size: int

    _POWER = re.compile(r"^2\^(\d+)$")

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """'2^20', '1048576', or COUNTxSIZE for many arrays ('2000x1000', '200x100000')."""
        text = text.strip()
        count, _, size = text.rpartition("x")
        try:
            shape = cls(cls._number(count) if count else 1, cls._number(size))
        except ValueError:
            raise ValueError(
                f"bad size {text!r}: expected a number of elements (1048576 or 2^20) or "
                "COUNTxSIZE for many arrays (2000x1000)"
            ) from None
        if shape.count < 1 or shape.size < 1:
            raise ValueError(f"bad size {text!r}: counts and sizes must be at least 1")
        return shape

    @classmethod
    def _number(cls, text: str) -> int:
        power = cls._POWER.match(text.strip())
        if power:
            return 1 << int(power.group(1))
        return int(text.strip())

    @property
    def elements(self) -> int:
        return self.count * self.size

    @property
    def flat(self) -> bool:
        return self.count == 1

    @property
    def label(self) -> str:
        def number(n):
            return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)

        return number(self.size) if self.flat else f"{self.count}x{number(self.size)}"


@dataclass(frozen=True)
class Cell:
    variant: Variant
    dtypes: DTypes
    shape: Shape
    threads: int

    @property
    def label(self) -> str:
        return f"{self.variant.name} {self.dtypes.label} {self.shape.label} {self.threads}t"

    @property
    def bytes_per_element(self) -> int:
        return bytes_per_element(self.variant, self.dtypes)


def master_data(shape: Shape, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """float32 initial params and grads, one pair per array, that every contestant starts from
    (each casts them to its own storage dtypes). Gradients have no exact zeros, so that no state
    decays into subnormals while it is timed."""
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for _ in range(shape.count):
        params.append(rng.standard_normal(shape.size, dtype=np.float32))
        g = rng.standard_normal(shape.size, dtype=np.float32)
        g[np.abs(g) < 1e-3] = 1e-3
        grads.append(g)
    return params, grads
