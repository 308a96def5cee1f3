"""What `pyoptim compare` writes: the table (Markdown), compare.json (every curve) and
compare.png (validation accuracy and training loss per epoch, one line per optimizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ._train import Curves

TARGET_ACCURACY = 0.9
COLUMNS = ("optimizer", "lr", "final train loss", "val accuracy",
           f"epochs to {TARGET_ACCURACY:.0%}", "time in optimizer steps")
ALIGN = ("left", "right", "right", "right", "right", "right")


def _lr_text(lr: float) -> str:
    return f"{lr:g}"


def table_rows(results: list[Curves]) -> list[tuple[str, ...]]:
    rows = []
    for c in results:
        reached = c.epochs_to(TARGET_ACCURACY)
        if c.diverged_at is not None:
            loss, accuracy = f"diverged (epoch {c.diverged_at})", "-"
        else:
            loss, accuracy = f"{c.final_train_loss:.3g}", f"{c.final_val_accuracy:.1%}"
        per_step = c.step_time / c.steps * 1e6 if c.steps else 0.0
        rows.append((c.contestant.name, _lr_text(c.lr), loss, accuracy,
                     "never" if reached is None else str(reached),
                     f"{c.step_time:.3f} s ({c.steps} steps, {per_step:.0f} us/step)"))
    return rows


def markdown_table(results: list[Curves]) -> str:
    """The table, as Markdown that also reads as plain text."""
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if a == "left" else c.rjust(w)
                                 for c, w, a in zip(cells, widths, ALIGN)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if a == "right" else "-")
                          for w, a in zip(widths, ALIGN)) + "|"
    return "\n".join([line(rows[0]), rule] + [line(r) for r in rows[1:]])


def _finite(values):
    """JSON has no NaN: a diverged epoch is null."""
    return [v if math.isfinite(v) else None for v in values]


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report(results: list[Curves], config: dict) -> dict:
    """The content of compare.json. Everything outside "timings" is deterministic for a seed
    (on one machine and NumPy build: matrix products go through its BLAS)."""
    optimizers = {}
    timings = {}
    for c in results:
        optimizers[c.contestant.name] = dict(
            description=c.contestant.description,
            optimizer=c.contestant.optimizer,
            hyperparameters={k: _jsonable(v) for k, v in c.hyperparameters.items()},
            lr_tuned=c.contestant.tuned,
            full_batch=c.contestant.full_batch,
            steps=c.steps,
            train_loss=_finite(c.train_loss),
            val_accuracy=_finite(c.val_accuracy),
            val_loss=_finite(c.val_loss),
            final_train_loss=_jsonable(c.final_train_loss),
            final_val_accuracy=_jsonable(c.final_val_accuracy),
            epochs_to_90=c.epochs_to(TARGET_ACCURACY),
            diverged_at_epoch=c.diverged_at,
        )
        timings[c.contestant.name] = dict(step_time_s=c.step_time, wall_time_s=c.wall_time,
                                          steps=c.steps)
    return dict(config=config, optimizers=optimizers, timings=timings)


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=1, allow_nan=False) + "\n")


ACCURACY_TICKS = (0.1, 0.5, 0.9, 0.95, 0.98, 0.99, 0.995)
ACCURACY_RANGE = (0.05, 0.999)


def write_plot(path: Path, results: list[Curves], title: str) -> None:
    """Two panels side by side: validation accuracy (on a logit scale, which spreads out both
    the first epochs and the last percent) and training loss (log scale) per epoch."""
    import matplotlib  # noqa: PLC0415 (optional dependency)
    from matplotlib.figure import Figure  # noqa: PLC0415 (no pyplot: no GUI backend needed)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: PLC0415

    fig = Figure(figsize=(13, 5.4), dpi=100, layout="constrained")
    accuracy_ax, loss_ax = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab20"].colors
    low, high = ACCURACY_RANGE
    lines = []
    for i, c in enumerate(results):
        epochs = range(len(c.train_loss))
        style = dict(color=colors[(2 * i) % 20 + (2 * i) // 20 % 2], linewidth=1.6,
                     linestyle=("-", "--", ":")[i // 10 % 3])
        accuracy = [min(max(a, low), high) for a in c.val_accuracy]  # 0% and 100%: the edges
        (line,) = accuracy_ax.plot(epochs, accuracy, **style)
        loss_ax.plot(epochs, c.train_loss, **style)
        lines.append(line)
    accuracy_ax.set_yscale("logit")
    accuracy_ax.set(xlabel="epoch", ylabel="validation accuracy (logit scale)",
                    title="validation accuracy", ylim=ACCURACY_RANGE)
    accuracy_ax.yaxis.set_major_locator(FixedLocator(ACCURACY_TICKS))
    accuracy_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    accuracy_ax.yaxis.set_minor_formatter(NullFormatter())
    loss_ax.set(xlabel="epoch", ylabel="training loss (cross-entropy, log scale)", yscale="log",
                title="training loss")
    for ax in (accuracy_ax, loss_ax):
        ax.grid(True, which="major", alpha=0.3)
    fig.legend(lines, [c.contestant.name for c in results], loc="outside right center",
               frameon=False)
    fig.suptitle(title)
    fig.savefig(path)
