"""`pyoptim bench`: how fast is one optimizer step, against the memory bound and against peers?

For every cell (optimizer x dtype combination x shape x thread count) the benchmark

1. checks pyoptim and every peer against the NumPy reference (param and every state buffer,
   element by element, after a few steps); a contestant that fails is reported, not timed;
2. warms up, then times many steps of every contestant, taking turns round robin so that a ratio
   from one run holds on a noisy machine; before every round each contestant's arrays move to new
   memory, so that no contestant keeps a lucky or unlucky placement for the whole cell
   (``--fixed-layout`` keeps them; ``--control`` adds an A/A control, a second pyoptim
   contestant, to show what two identical contestants differ by);
3. reports the median time per step and its spread, elements/s, and GB/s from the bytes a step
   moves per element (derived from the optimizer's state buffers and dtypes: Adam fp32 reads p, g,
   m, v and writes p, m, v, 28 B), and the percentage of the roofline: a STREAM-like pass that moves
   the same bytes with the same dtypes, timed in the same rounds (pyoptim._core.StreamPass).

Peers, when installed: the NumPy reference, torch.optim's for-loop, foreach and fused
implementations, DeepSpeedCPUAdam. Ratios are against the best (fastest valid) peer. pyoptim is
called through its array API, or (``--api torch``) as pyoptim.torch over torch tensors whose
.grad is set, as the torch.optim peers are (``--sizes gpt-tiny``: a GPT's parameter list, many
small tensors).

Run ``pyoptim bench --help`` for the options; ``pyoptim bench --quick`` takes under a minute.
Results go to a folder (``--out``): bench.json (every figure and the machine), results.md and PNG
plots. See bench/README.md in the source tree for how to read them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import _cpu
from ._cells import (APIS, TORCH_APIS, CORE_VARIANTS, DEFAULT_VARIANTS, MODELS, SHORT, VARIANTS, Cell,
                     DTypes, Shape, bytes_per_element)
from ._contestants import PEERS

__all__ = ["main", "add_arguments", "run", "bytes_per_element", "DESCRIPTION"]

DESCRIPTION = ("Microbenchmark of one optimizer step: pyoptim against the memory-bandwidth "
               "roofline and against its peers (NumPy, torch.optim, DeepSpeed).")

FLAT_SIZES = tuple(f"2^{k}" for k in range(10, 27, 2))  # 2^10 ... 2^26
MANY_ARRAYS = ("2000x1000", "200x100000")


@dataclass(frozen=True)
class Suite:
    """A cross product of cells, and the peers they run (None: all that --peers names)."""

    variants: tuple
    dtypes: tuple
    sizes: tuple
    threads: tuple
    peers: tuple | None = None
    apis: tuple = ("arrays",)

    def cells(self) -> list[Cell]:
        return [Cell(VARIANTS[v], DTypes.parse(d), Shape.parse(s), t, api)
                for v in self.variants for d in self.dtypes for s in self.sizes
                for t in self.threads for api in self.apis]


# The peers that run at the speed of memory (torch's foreach stands in for RMSprop's missing fused).
FAST_PEERS = ("torch-foreach", "torch-fused", "deepspeed")

# The optimizers torch 2.13 has a fused CPU step for: pyoptim.torch against it on a GPT's
# parameter list, through both APIs (the array API's cell is the floor: no per-tensor work in
# Python).
TORCH_FUSED_VARIANTS = ("momentum", "adagrad", "adam", "adamw")
MODEL = "gpt-tiny"

# The full run: every optimizer over flat fp32 buffers from 2^10 to 2^26 (at 2^26 without the
# slowest peers, which take seconds a step there); the core optimizers also with the other dtypes
# at a cache-resident and a DRAM size, and over many arrays; pyoptim.torch against torch fused
# on a GPT's parameters. One and two threads.
FULL = (
    Suite(DEFAULT_VARIANTS, ("fp32",), FLAT_SIZES[:-1], (1, 2)),
    Suite(DEFAULT_VARIANTS, ("fp32",), FLAT_SIZES[-1:], (1, 2), FAST_PEERS),
    Suite(CORE_VARIANTS, ("fp64", "bf16", "fp16"), ("2^20", "2^24"), (1, 2)),
    Suite(CORE_VARIANTS, ("fp32",), MANY_ARRAYS, (1, 2)),
    Suite(TORCH_FUSED_VARIANTS, ("fp32",), (MODEL,), (1, 2), FAST_PEERS[:2], APIS),
)
# --quick: Adam against every peer in cache and against the fast ones in DRAM; each core
# optimizer once; bf16; many arrays; pyoptim.torch on a GPT's parameters. One thread.
QUICK = (
    Suite(("adam",), ("fp32",), ("2^20",), (1,)),
    Suite(("adam",), ("fp32",), ("2^24",), (1,), FAST_PEERS[1:]),
    Suite(CORE_VARIANTS, ("fp32",), ("2^22",), (1,), FAST_PEERS),
    Suite(("adam",), ("bf16",), ("2^22",), (1,), FAST_PEERS[1:]),
    Suite(("adam",), ("fp32",), ("2000x1000",), (1,), FAST_PEERS[1:]),
    Suite(("adam",), ("fp32",), (MODEL,), (1,), FAST_PEERS[1:2], APIS),
)
QUICK_SIZES = ("2^16", "2^20", "2^22")

# rounds, warm-up steps, validation steps, seconds per sample
SETTINGS = {"full": (21, 3, 3, 0.005), "quick": (7, 2, 2, 0.002)}


class BenchError(Exception):
    """A bad option: printed as a message, exit status 2."""


# ---------------------------------------------------------------------------------------------
# options


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _names(kind: str, known, special: dict):
    """An option type: a comma-separated list of known names, or one of the special words."""

    def parse(text: str) -> tuple:
        names = _list(text)
        if len(names) == 1 and names[0] in special:
            return special[names[0]]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            words = " or ".join(f"'{w}'" for w in special)
            raise argparse.ArgumentTypeError(
                f"unknown {kind}(s) {', '.join(unknown) or text!r}; expected {words} or a "
                f"comma-separated list of {', '.join(known)}"
            )
        return tuple(names)

    return parse


def _checked(kind: str, check):
    """An option type: a comma-separated list, each item accepted by check (ValueError: no)."""

    def parse(text: str) -> tuple:
        names = _list(text)
        if not names:
            raise argparse.ArgumentTypeError(f"expected at least one {kind}")
        for name in names:
            try:
                check(name)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return tuple(names)

    return parse


_variants = _names("optimizer", VARIANTS, {"all": DEFAULT_VARIANTS})
_peers = _names("peer", PEERS, {"all": PEERS, "none": ()})
_dtypes = _checked("dtype combination", DTypes.parse)
_sizes = _checked("size", Shape.parse)
_apis = _names("api", APIS, {"all": APIS})


def _threads(text: str) -> tuple:
    try:
        counts = tuple(int(x) for x in _list(text))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"bad thread counts {text!r}: expected a comma-separated list of integers >= 1"
        )
    return counts


def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `pyoptim bench` (also used by `python -m pyoptim.bench`)."""
    parser.description = DESCRIPTION
    parser.epilog = (
        "Without --optimizers/--dtypes/--sizes/--threads, runs the default suites: every "
        f"optimizer over fp32 buffers {FLAT_SIZES[0]}..{FLAT_SIZES[-1]} (at {FLAT_SIZES[-1]} "
        f"against {', '.join(FAST_PEERS)} only); {', '.join(CORE_VARIANTS)} also with "
        f"fp64/bf16/fp16 at 2^20 and 2^24 and over many arrays ({', '.join(MANY_ARRAYS)}); on 1 "
        "and 2 threads (--quick: a subset that takes under a minute). Given any of them, runs "
        "their cross product. "
        "Optimizers: " + ", ".join(f"{v.name} ({v.description})" for v in VARIANTS.values())
        + ". Dtypes: PARAM[/GRAD[/STATE]] of " + ", ".join(SHORT.values())
        + " (bf16 = bf16 params and grads, fp32 state)."
    )
    parser.add_argument("--optimizers", type=_variants, metavar="LIST",
                        help="'all' or comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--dtypes", type=_dtypes, metavar="LIST",
                        help="comma-separated dtype combinations, e.g. fp32,bf16,bf16/bf16/bf16")
    parser.add_argument("--sizes", type=_sizes, metavar="LIST",
                        help="comma-separated: elements of one flat buffer (2^24 or 16777216), "
                             "COUNTxSIZE for many arrays (2000x1000), or a model's parameter "
                             "list: " + ", ".join(MODELS))
    parser.add_argument("--threads", type=_threads, metavar="LIST",
                        help="comma-separated thread counts (pyoptim.set_num_threads and "
                             "torch.set_num_threads)")
    parser.add_argument("--api", type=_apis, metavar="LIST",
                        help="how pyoptim is called: 'arrays' (default: its array API), 'torch' "
                             "(pyoptim.torch over tensors whose .grad is set, as torch.optim "
                             "is), 'torch-flat' (the same with flat_grads=True), a list of them "
                             "or 'all'")
    parser.add_argument("--backend", choices=("cpu", "cuda", "numpy"), default="cpu",
                        help="pyoptim's backend: cpu (C++), cuda (torch CUDA tensors) or numpy "
                             "(the reference); default cpu")
    parser.add_argument("--peers", type=_peers, default=PEERS, metavar="LIST",
                        help="'all' (default: those installed), 'none', or comma-separated: "
                             + ", ".join(PEERS))
    parser.add_argument("--repeat", type=_integer(1), metavar="N",
                        help="timed rounds per cell (default 21; --quick 7)")
    parser.add_argument("--warmup", type=_integer(0), metavar="N",
                        help="untimed steps of each contestant before timing (default 3)")
    parser.add_argument("--validate-steps", type=_integer(1), metavar="N",
                        help="steps checked against the reference before timing (default 3)")
    parser.add_argument("--sample-time", type=_seconds, metavar="SECONDS",
                        help="a sample times consecutive steps for at least this long "
                             "(default 0.005; --quick 0.002)")
    parser.add_argument("--out", type=Path, default=Path("pyoptim-bench"), metavar="DIR",
                        help="folder for bench.json, results.md and the plots "
                             "(default ./pyoptim-bench)")
    parser.add_argument("--quick", action="store_true",
                        help="a meaningful subset in under a minute")
    parser.add_argument("--numpy-alignment", action="store_true",
                        help="place the arrays where NumPy's allocation puts them (typically "
                             "16-byte aligned) instead of at 64-byte boundaries")
    parser.add_argument("--control", action="store_true",
                        help="also time an A/A control: a second pyoptim contestant, identical "
                             "but for its own arrays; its time over pyoptim's shows what two "
                             "identical contestants differ by in each cell (the resolution of "
                             "the cell's ratios)")
    parser.add_argument("--fixed-layout", action="store_true",
                        help="keep every contestant's arrays where they were first allocated for "
                             "the whole cell (default: they move to new memory, at a random "
                             "offset within a page, before every round, so that no contestant "
                             "keeps a lucky or unlucky layout)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with a stopped run: the cells that DIR/bench.json holds, "
                             "measured with the same settings and peers, are kept (each with "
                             "the commit and date it was measured on) and the others run")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial data")


def plan(args: argparse.Namespace) -> list[tuple[Cell, tuple]]:
    """The cells to run, in order, each with the peers it runs."""
    custom = any(getattr(args, k, None) is not None
                 for k in ("optimizers", "dtypes", "sizes", "threads", "api"))
    if not custom:
        suites = QUICK if args.quick else FULL
    else:
        suites = (Suite(
            args.optimizers or DEFAULT_VARIANTS,
            args.dtypes or ("fp32",),
            args.sizes or (QUICK_SIZES if args.quick else FLAT_SIZES),
            args.threads or ((1,) if args.quick else (1, 2)),
            apis=getattr(args, "api", None) or ("arrays",),
        ),)
    # the default suites' pyoptim.torch cells need torch, as the torch peers do: left out without
    torch_installed = importlib.util.find_spec("torch") is not None
    planned = {}
    for suite in suites:
        peers = tuple(p for p in args.peers if suite.peers is None or p in suite.peers)
        for cell in suite.cells():
            if cell.api in TORCH_APIS and not custom and not torch_installed:
                continue
            if cell.api in TORCH_APIS and cell.dtypes.grad != cell.dtypes.param:
                raise BenchError(
                    f"--api torch: {cell.dtypes.label} has grads of another dtype than the "
                    "params; torch keeps a grad in its param's dtype")
            planned.setdefault(cell, peers)
    return list(planned.items())


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark the parsed options describe; returns the exit status (0: done, 1: a
    pyoptim contestant failed its validation, 2: the options cannot run here)."""
    from ._main import run_cells  # noqa: PLC0415 (keeps `pyoptim --help` light)

    prog = getattr(args, "prog", "pyoptim bench")
    try:
        if args.backend in ("cpu", "numpy"):
            _cpu.core()  # without the extension: the ImportError that says how to build it
        return run_cells(plan(args), args, command=getattr(args, "command_line", prog))
    except (BenchError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None, prog: str = "python -m pyoptim.bench") -> int:
    """`python -m pyoptim.bench [options]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.prog = prog
    args.command_line = shlex.join([*prog.split(), *argv])
    return run(args)
