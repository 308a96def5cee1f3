"""What one benchmark cell is: an optimizer variant, a dtype combination, a shape, a thread count,
and the interface pyoptim is called through (its NumPy-array API, or pyoptim.torch).

The bytes an optimizer step moves per element are derived here from the optimizer's state buffers
(pyoptim._spec, the same table the kernels are driven by) and the storage dtypes, never from a hand
table: a step reads the param, the grad and every state buffer its options need, and writes the
param and those state buffers back (steady state, step >= 2; SGD's first momentum step only
writes its buffer).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .. import _memory, _spec

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
        Variant("lamb", "lamb", {}, "LAMB (two passes: the trust ratio needs whole-array norms)"),
    )
}
# The core optimizers (every dtype, many arrays in the default suites) and the rest of the family
# (fp32 buffers). `--optimizers all` is both.
CORE_VARIANTS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
FAMILY_VARIANTS = ("adamax", "nadam", "radam", "adadelta", "asgd", "rprop", "lion", "lamb")
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


def empty(size: int, dtype, skip: int = 0) -> np.ndarray:
    """An uninitialized 1-D array whose data starts at a multiple of ALIGNMENT bytes, `skip`
    multiples of ALIGNMENT after the first one in its allocation."""
    dtype = np.dtype(dtype)
    if not ALIGNMENT:
        return np.empty(size, dtype)
    raw = np.empty(size * dtype.itemsize + (skip + 1) * ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT + skip * ALIGNMENT
    return raw[start:start + size * dtype.itemsize].view(dtype)


PAGE = 4096


class Mover:
    """Moves arrays to new memory between rounds (``move(array)``: a copy at a new place), so that
    no contestant keeps one placement for a whole cell. Where an array lies changes a step's time
    here by up to 50% in cache-resident cells: two identical contestants timed in the same
    rounds differed by that much when each kept its first arrays (bench/README.md, "Layout";
    this machine is a virtual machine, whose memory is mapped twice). A copy is new memory; one
    of a page or more starts at a multiple of ALIGNMENT bytes drawn at random within a page
    (seeded), so that its offset against the step's other arrays changes too; a smaller one
    starts at the next multiple of ALIGNMENT, packed as an allocator packs small tensors. With
    ALIGNMENT 0 (--numpy-alignment), a copy is where NumPy's allocation puts it."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng([seed, 0x1A70])

    def __call__(self, values: np.ndarray) -> np.ndarray:
        lines = 0
        if ALIGNMENT and values.nbytes >= PAGE:
            lines = int(self._rng.integers(PAGE // ALIGNMENT))
        out = empty(values.size, values.dtype, skip=lines).reshape(values.shape)
        out[...] = values
        return out


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
    return _memory.as_dtype(name)


def itemsize(name: str) -> int:
    return numpy_dtype(name).itemsize


def bytes_per_element(variant: Variant, dtypes: DTypes) -> int:
    """Bytes a steady-state step moves per element: param read and written, grad read, each
    state buffer the options need read and written; plus, for a trust-ratio optimizer (LAMB),
    the second pass, which reads the param and the state again (second_pass_bytes)."""
    return (2 * itemsize(dtypes.param) + itemsize(dtypes.grad)
            + 2 * len(variant.states) * itemsize(dtypes.state)
            + second_pass_bytes(variant, dtypes))


def second_pass_bytes(variant: Variant, dtypes: DTypes) -> int:
    """What a two-pass step (csrc/kernels.h, run_trust_ratio) moves beyond one pass: pass 1 reads
    the param, grad and state and writes the state; pass 2 reads the param and state again and
    writes the param. 0 for the elementwise optimizers."""
    if variant.spec.elementwise:
        return 0
    return itemsize(dtypes.param) + len(variant.states) * itemsize(dtypes.state)


def gpt2_parameters(layers: int, d_model: int, vocab: int, context: int) -> tuple:
    """(name, shape) of every parameter of a GPT-2 decoder, in the order model.parameters()
    lists them in nanoGPT's implementation: token and position embeddings, then per layer
    ln_1, the fused q/k/v projection, the attention output projection, ln_2 and the 4x MLP (all
    with biases), then ln_f; the output head is tied to the token embedding."""
    d = d_model
    out = [("transformer.wte.weight", (vocab, d)), ("transformer.wpe.weight", (context, d))]
    for i in range(layers):
        h = f"transformer.h.{i}."
        out += [(h + "ln_1.weight", (d,)), (h + "ln_1.bias", (d,)),
                (h + "attn.c_attn.weight", (3 * d, d)), (h + "attn.c_attn.bias", (3 * d,)),
                (h + "attn.c_proj.weight", (d, d)), (h + "attn.c_proj.bias", (d,)),
                (h + "ln_2.weight", (d,)), (h + "ln_2.bias", (d,)),
                (h + "mlp.c_fc.weight", (4 * d, d)), (h + "mlp.c_fc.bias", (4 * d,)),
                (h + "mlp.c_proj.weight", (d, 4 * d)), (h + "mlp.c_proj.bias", (d,))]
    return tuple(out + [("transformer.ln_f.weight", (d,)), ("transformer.ln_f.bias", (d,))])


# Models whose parameter lists a cell can take (--sizes NAME): the shapes of real models, where
# the per-tensor cost of a step shows. gpt-tiny: GPT-2's architecture at 16 layers of width 64,
# vocab 2048, context 256: 196 tensors, 947,328 elements (4,833 per tensor on average; the
# smallest 64).
MODELS = {"gpt-tiny": gpt2_parameters(16, 64, 2048, 256)}


@dataclass(frozen=True)
class Shape:
    """`count` arrays of `size` elements each (count 1: one flat buffer), or the parameter
    tensors of a model of MODELS (`model`; count is their number and size 0)."""

    count: int
    size: int
    model: str = ""

    _POWER = re.compile(r"^2\^(\d+)$")

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """'2^20', '1048576', COUNTxSIZE for many arrays ('2000x1000', '200x100000'), or the
        name of a model of MODELS ('gpt-tiny')."""
        text = text.strip()
        if text in MODELS:
            return cls(len(MODELS[text]), 0, text)
        count, _, size = text.rpartition("x")
        try:
            shape = cls(cls._number(count) if count else 1, cls._number(size))
        except ValueError:
            raise ValueError(
                f"bad size {text!r}: expected a number of elements (1048576 or 2^20), "
                "COUNTxSIZE for many arrays (2000x1000) or a model's parameters "
                f"({', '.join(MODELS)})"
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
    def sizes(self) -> tuple[int, ...]:
        """The number of elements of each array."""
        if self.model:
            return tuple(math.prod(shape) for _, shape in MODELS[self.model])
        return (self.size,) * self.count

    @property
    def elements(self) -> int:
        return sum(self.sizes) if self.model else self.count * self.size

    @property
    def flat(self) -> bool:
        return self.count == 1 and not self.model

    @property
    def label(self) -> str:
        def number(n):
            return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)

        if self.model:
            return self.model
        return number(self.size) if self.flat else f"{self.count}x{number(self.size)}"


# How pyoptim is called in a cell: "arrays", its array API (pyoptim.functional on a flat
# buffer, the one-call many-array step on a list of arrays), or "torch", pyoptim.torch's
# optimizer over torch tensors whose .grad is set, stepped as a training loop steps it (what the
# torch.optim peers run, behind the same interface), or "torch-flat", the same with
# flat_grads=True (each .grad a view of one flat buffer).
TORCH_APIS = ("torch", "torch-flat")
APIS = ("arrays", *TORCH_APIS)


@dataclass(frozen=True)
class Cell:
    variant: Variant
    dtypes: DTypes
    shape: Shape
    threads: int
    api: str = "arrays"

    @property
    def label(self) -> str:
        api = "" if self.api == "arrays" else f" {self.api}"
        return f"{self.variant.name} {self.dtypes.label} {self.shape.label} {self.threads}t{api}"

    @property
    def bytes_per_element(self) -> int:
        return bytes_per_element(self.variant, self.dtypes)


def master_data(shape: Shape, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """float32 initial params and grads, one pair per array, that every contestant starts from
    (each casts them to its own storage dtypes). Gradients have no exact zeros, so that no state
    decays into subnormals while it is timed."""
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for size in shape.sizes:
        params.append(rng.standard_normal(size, dtype=np.float32))
        g = rng.standard_normal(size, dtype=np.float32)
        g[np.abs(g) < 1e-3] = 1e-3
        grads.append(g)
    return params, grads
