"""`python -m pyoptim.compare.tune`: how the default learning rates of `pyoptim compare` were
chosen.

For each optimizer, trains the default model with every lr of a grid ({1, 3} x 10^k, 1e-5 to 3)
on seeds other than the default run's (1 and 2; the default run uses 0), and picks the lr with
the lowest held-out loss after the last epoch (mean over the seeds; a diverged run counts as
infinite). The held-out samples are 20% of the training set (by class), trained on are the other
80%: the tuning never sees the validation set whose accuracy `pyoptim compare` reports. The
cross-entropy on held-out data is a smooth criterion that punishes both an lr too small to fit and
one so large that the model overfits or becomes overconfident. Prints two Markdown tables
(held-out loss and accuracy per lr) and the chosen lrs; docs/compare.md holds those of the
committed defaults.
"""

from __future__ import annotations

import argparse
import math
import sys

from . import DEFAULTS, _hidden, _integer, _items, _optimizer_list
from ._optimizers import CONTESTANTS

GRID = tuple(m * 10.0**k for k in range(-5, 1) for m in (1, 3))  # 1e-5, 3e-5, ..., 1, 3
SEEDS = (1, 2)


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(_integer(0, "a seed")(x) for x in _items(text))


def sweep(names, *, seeds=SEEDS, grid=GRID, epochs, batch_size, hidden, threads,
          stream=sys.stderr):
    """{name: {lr: (mean final held-out loss, mean final held-out accuracy)}}"""
    from . import _data  # noqa: PLC0415
    from ._train import threads as limited_threads, train  # noqa: PLC0415

    data = _data.tuning_split(_data.load())
    sizes = (data.n_features, *hidden, data.n_classes)
    table = {}
    with limited_threads(threads):
        for name in names:
            table[name] = {}
            for lr in grid:
                runs = [train(CONTESTANTS[name], data, sizes=sizes, epochs=epochs,
                              batch_size=batch_size, lr=lr, seed=seed) for seed in seeds]
                loss = sum(r.val_loss[-1] for r in runs) / len(runs)
                accuracy = sum(r.val_accuracy[-1] for r in runs) / len(runs)
                table[name][lr] = (loss if math.isfinite(loss) else math.inf, accuracy)
                print(f"{name} lr={lr:g}: held-out loss {loss:.3g}, accuracy {accuracy:.1%}",
                      file=stream, flush=True)
    return table


def best(row: dict) -> float:
    """The lr with the lowest held-out loss."""
    return min(row, key=lambda lr: row[lr][0])


def markdown(table: dict, grid=GRID) -> str:
    header = "| optimizer | " + " | ".join(f"{lr:g}" for lr in grid) + " | chosen |"
    rule = "|---|" + "---:|" * (len(grid) + 1)

    def cells(row, column, text):
        chosen = best(row)
        out = []
        for lr in grid:
            value = text(row[lr][column])
            out.append(f"**{value}**" if lr == chosen else value)
        return " | ".join(out) + f" | {chosen:g} |"

    loss = [header, rule] + [f"| {name} | " + cells(row, 0, lambda x: "div." if not
                                                       math.isfinite(x) else f"{x:.2g}")
                             for name, row in table.items()]
    accuracy = [header, rule] + [f"| {name} | " + cells(row, 1, lambda x: "div." if not
                                                           math.isfinite(x) else f"{x:.1%}")
                                 for name, row in table.items()]
    return ("Held-out loss after the last epoch (mean over the seeds; bold: the lowest, chosen):"
            "\n\n" + "\n".join(loss) + "\n\nHeld-out accuracy after the last epoch (mean over "
            "the seeds):\n\n" + "\n".join(accuracy))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyoptim.compare.tune",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--optimizers", type=_optimizer_list, default=tuple(CONTESTANTS),
                        metavar="LIST")
    parser.add_argument("--seeds", type=_seeds, default=SEEDS, metavar="LIST")
    parser.add_argument("--epochs", type=_integer(1, "a number of epochs"),
                        default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=_integer(1, "a batch size"),
                        default=DEFAULTS["batch_size"])
    parser.add_argument("--hidden", type=_hidden, default=DEFAULTS["hidden"])
    parser.add_argument("--threads", type=_integer(1, "a thread count"),
                        default=DEFAULTS["threads"])
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    table = sweep(args.optimizers, seeds=args.seeds, epochs=args.epochs,
                  batch_size=args.batch_size, hidden=args.hidden, threads=args.threads)
    print(markdown(table))
    print("\nChosen: " + ", ".join(f"{name}={best(row):g}" for name, row in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
