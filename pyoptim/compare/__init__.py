"""`pyoptim compare`: which optimizer trains a real model best, and how fast?

Trains a small multi-layer perceptron, written in NumPy, on the handwritten digits that
scikit-learn ships (8x8 images, 1797 samples; nothing is downloaded), once per optimizer: full-batch
gradient descent, mini-batch SGD, momentum, Nesterov, and every other optimizer pyoptim has. All
the model's parameters live in one flat buffer (pyoptim.flat.FlatBuffer) and pyoptim's kernels do
every update: one ``opt.step(grads)`` per batch (per epoch for the full-batch methods, gradient
descent and Rprop). The buffer is one param, except for LAMB, whose trust ratio is per array: it
gets the buffer's views, one param per weight matrix and bias vector.

Every contestant starts from the same weights and sees the same batches (both drawn from
``--seed``); the train/validation split is fixed. After each epoch the loss on the whole training
set and the accuracy on the validation set are measured. Prints a table (final training loss,
validation accuracy, epochs to reach 90%, time spent in the optimizer's steps) and writes, in
``--out``: compare.json (every curve) and compare.png (the curves).

Needs scikit-learn and matplotlib: ``pip install "pyoptim[demo]"``. Run ``pyoptim compare --help``
for the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shlex
import sys
import textwrap
from pathlib import Path

from ._optimizers import CONTESTANTS, FULL_BATCH
from ._train import SCHEDULES

__all__ = ["main", "add_arguments", "run", "DESCRIPTION", "CompareError", "DEFAULTS"]

DESCRIPTION = ("Train a NumPy MLP on scikit-learn's digits with every optimizer, pyoptim's "
               "kernels doing the updates, and plot the comparison.")

DEFAULTS = dict(epochs=30, batch_size=32, hidden=(128, 64), schedule="constant", seed=0,
                threads=1, out=Path("pyoptim-compare"))


class CompareError(Exception):
    """A bad option or a missing dependency: printed as a message, exit status 2."""


# ---------------------------------------------------------------------------------------------
# options


def _items(values) -> list[str]:
    """Items from one or more arguments, each of which may hold a comma-separated list."""
    if isinstance(values, str):
        values = [values]
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def _optimizer_list(text: str) -> tuple[str, ...]:
    names = [n.lower() for n in _items(text)]
    if names == ["all"]:
        return tuple(CONTESTANTS)
    unknown = [n for n in names if n not in CONTESTANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(unknown) or repr(text)}; expected 'all' or a "
            f"comma-separated list of {', '.join(CONTESTANTS)}")
    return tuple(dict.fromkeys(names))  # in the given order, each once


def _lr_item(text: str) -> tuple[tuple[str, float], ...]:
    """NAME=VALUE (or several, comma-separated) -> ((name, lr), ...)"""
    pairs = []
    for item in _items(text):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        try:
            lr = float(value) if sep else math.nan
        except ValueError:
            lr = math.nan
        if not sep or not name:
            raise argparse.ArgumentTypeError(
                f"malformed --lr {item!r}: expected NAME=VALUE, e.g. adam=3e-3")
        if name not in CONTESTANTS:
            raise argparse.ArgumentTypeError(
                f"--lr {item!r}: unknown optimizer {name!r}; expected one of "
                f"{', '.join(CONTESTANTS)}")
        if not (math.isfinite(lr) and lr > 0):
            raise argparse.ArgumentTypeError(
                f"--lr {item!r}: the learning rate must be a number > 0, got {value.strip()!r}")
        pairs.append((name, lr))
    if not pairs:
        raise argparse.ArgumentTypeError("--lr expects NAME=VALUE, e.g. adam=3e-3")
    return tuple(pairs)


def _integer(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what}, an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected {what}, an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(x) for x in _items(text))
    except ValueError:
        widths = (0,)
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"bad --hidden {text!r}: expected comma-separated layer widths >= 1, e.g. 128,64")
    return widths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `pyoptim compare` (also used by `python -m pyoptim.compare`)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "optimizers (name: what it is, default lr):\n" + "\n".join(
        textwrap.fill(f"{c.name:9} {c.description}, lr {c.lr:g}" +
                      ("" if c.tuned else " (not tuned)"), width=79, initial_indent="  ",
                      subsequent_indent=" " * 12)
        for c in CONTESTANTS.values()) + (
        "\n\n" + textwrap.fill(
            f"{' and '.join(FULL_BATCH)} step once per epoch on the whole training set, the "
            "others once per batch. Every hyperparameter but lr is the class's default "
            "(torch.optim's; optax's for LAMB). The defaults finish in well under a minute on 2 "
            "cores.", width=79) +
        "\n\nexamples:\n"
        "  pyoptim compare                                  every optimizer, default settings\n"
        "  pyoptim compare --optimizers adam,sgd,momentum --epochs 10\n"
        "  pyoptim compare --lr adam=3e-3 sgd=0.1 --schedule warmup-cosine --out results")
    parser.add_argument("--optimizers", type=_optimizer_list, default=tuple(CONTESTANTS),
                        metavar="LIST",
                        help="'all' (default) or a comma-separated list of the names below")
    parser.add_argument("--epochs", type=_integer(1, "a number of epochs"),
                        default=DEFAULTS["epochs"], metavar="N",
                        help=f"passes over the training set (default {DEFAULTS['epochs']})")
    parser.add_argument("--batch-size", type=_integer(1, "a batch size"),
                        default=DEFAULTS["batch_size"], metavar="N",
                        help=f"samples per step (default {DEFAULTS['batch_size']}; "
                             f"{' and '.join(FULL_BATCH)} always take the whole training set)")
    parser.add_argument("--lr", type=_lr_item, nargs="+", default=(), metavar="NAME=VALUE",
                        help="learning rate of an optimizer, overriding its default: e.g. "
                             "--lr adam=3e-3 sgd=0.1 (or adam=3e-3,sgd=0.1)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS["schedule"],
                        help="learning-rate schedule over the whole run, from pyoptim.schedules:"
                             " constant (default), cosine (CosineAnnealingLR down to 0), "
                             "warmup-cosine (LinearLR warmup over the first 5%% of the steps, "
                             "then cosine), linear (LinearLR decay to 0), onecycle (OneCycleLR "
                             "with the lr as max_lr). Rprop ignores it (torch's Rprop reads "
                             "its lr only once)")
    parser.add_argument("--seed", type=_integer(0, "a seed"), default=DEFAULTS["seed"],
                        help="seed of the initial weights and of the batch order (default 0); "
                             "the results are the same for the same seed")
    parser.add_argument("--hidden", type=_hidden, default=DEFAULTS["hidden"], metavar="WIDTHS",
                        help="widths of the hidden layers (default "
                             f"{','.join(map(str, DEFAULTS['hidden']))})")
    parser.add_argument("--threads", type=_integer(1, "a thread count"),
                        default=DEFAULTS["threads"], metavar="N",
                        help="threads of pyoptim's kernels (default 1: the model is small)")
    parser.add_argument("--out", type=Path, default=DEFAULTS["out"], metavar="DIR",
                        help=f"folder for compare.json and compare.png (default "
                             f"./{DEFAULTS['out']})")
    parser.add_argument("--no-plot", action="store_true",
                        help="skip compare.png (matplotlib is then not needed)")


# ---------------------------------------------------------------------------------------------
# running


def _check_dependencies(plot: bool) -> None:
    needed = [("sklearn", "scikit-learn")] + [("matplotlib", "matplotlib")] * plot
    missing = [name for module, name in needed if importlib.util.find_spec(module) is None]
    if missing:
        raise CompareError(
            f"pyoptim compare needs {' and '.join(missing)}: pip install \"pyoptim[demo]\" "
            "(or pip install \".[demo]\" in pyoptim's source tree)")


def learning_rates(optimizers, lr_options) -> dict[str, float]:
    """The lr of each selected optimizer: its default, or what --lr says."""
    lrs = {name: CONTESTANTS[name].lr for name in optimizers}
    for name, lr in (pair for pairs in lr_options for pair in pairs):
        if name not in lrs:
            raise CompareError(f"--lr sets {name}, which --optimizers does not select "
                               f"({','.join(optimizers)})")
        lrs[name] = lr
    return lrs


def run(args: argparse.Namespace) -> int:
    """Runs the comparison the parsed options describe; returns the exit status (0: done,
    2: bad options or missing dependencies)."""
    prog = getattr(args, "prog", "pyoptim compare")
    try:
        lrs = learning_rates(args.optimizers, args.lr)
        _check_dependencies(not args.no_plot)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CompareError(f"cannot create the output folder {args.out}: {e}") from None
        from ._main import compare  # noqa: PLC0415 (keeps `pyoptim --help` light)

        return compare(args, lrs, command=getattr(args, "command_line", prog))
    except (CompareError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None, prog: str = "python -m pyoptim.compare") -> int:
    """`python -m pyoptim.compare [options]`; returns the exit status (a bad option: 2, with
    the message on stderr)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad option (argparse printed why)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    args.prog = prog
    args.command_line = shlex.join([*prog.split(), *argv])
    return run(args)
