"""The training loop: one MLP per contestant, the same initial weights and batch order for all,
an optimizer step through pyoptim per batch, the curves measured after every epoch."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import get_num_threads, optim, schedules, set_num_threads
from ._data import Digits
from ._mlp import MLP
from ._optimizers import Contestant

SCHEDULES = ("constant", "cosine", "warmup-cosine", "linear", "onecycle")
WARMUP_FRACTION = 0.05

# param-group keys that choose torch's implementation, not the math: left out of the report
_TORCH_ONLY = ("params", "foreach", "fused", "capturable", "differentiable")


def make_lr(schedule: str, lr: float, total_steps: int):
    """The lr argument of the optimizer: lr itself, or a pyoptim.schedules schedule over
    total_steps steps (step k uses sched(k))."""
    total = max(1, total_steps)
    if schedule == "constant":
        return lr
    if schedule == "cosine":  # from lr down to 0 at the end
        return schedules.CosineAnnealingLR(lr, T_max=total)
    if schedule == "warmup-cosine":  # linear warmup over the first 5% of the steps, then cosine
        warmup = max(1, round(WARMUP_FRACTION * total))
        return schedules.SequentialLR(
            [schedules.LinearLR(lr, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup),
             schedules.CosineAnnealingLR(lr, T_max=max(1, total - warmup))],
            milestones=[warmup])
    if schedule == "linear":  # linear decay from lr to 0
        return schedules.LinearLR(lr, start_factor=1.0, end_factor=0.0, total_iters=total)
    if schedule == "onecycle":  # up to lr over 30% of the steps, then down (momentum left alone)
        return schedules.OneCycleLR(lr, total_steps=total, cycle_momentum=False)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


@contextlib.contextmanager
def threads(n: int):
    """Runs pyoptim's kernels and NumPy's BLAS on n threads, then restores both. The MLP is
    small: more threads than cores shared with other work wait on each other (OpenBLAS spins)."""
    before = get_num_threads()
    set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415 (scikit-learn's)
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
    finally:
        set_num_threads(before)


@dataclass
class Curves:
    """What one contestant's training gave. Lists have one entry per epoch, index 0 being the
    untrained model; NaN after a divergence."""

    contestant: Contestant
    lr: float
    hyperparameters: dict
    steps: int = 0
    train_loss: list = field(default_factory=list)  # on the whole training set
    val_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    step_time: float = 0.0  # seconds in optimizer.step
    wall_time: float = 0.0  # seconds for the whole training, evaluation included
    diverged_at: int | None = None  # the first epoch whose training loss was not finite

    @property
    def final_train_loss(self) -> float:
        return self.train_loss[-1]

    @property
    def final_val_accuracy(self) -> float:
        return self.val_accuracy[-1]

    def epochs_to(self, accuracy: float) -> int | None:
        """The first epoch after which the validation accuracy was at least accuracy."""
        for epoch, value in enumerate(self.val_accuracy):
            if value >= accuracy:
                return epoch
        return None


def batches_per_epoch(contestant: Contestant, n_train: int, batch_size: int) -> int:
    return 1 if contestant.full_batch else math.ceil(n_train / batch_size)


def train(contestant: Contestant, data: Digits, *, sizes, epochs: int, batch_size: int,
          lr: float, schedule: str = "constant", seed: int = 0, on_epoch=None) -> Curves:
    """Trains a fresh MLP(sizes) with the contestant's optimizer; on_epoch(epoch, curves) is
    called after each epoch. The initial weights and the batch order depend only on seed."""
    init_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    model = MLP(sizes, np.random.default_rng(init_seed))
    order = np.random.default_rng(order_seed)
    n = len(data.y_train)
    per_epoch = batches_per_epoch(contestant, n, batch_size)
    size = n if contestant.full_batch else batch_size
    # a FlatBuffer is one param (one segment); per layer: one param per view of the same buffer
    params, grads = ((model.params.views, model.grads.views) if contestant.per_layer
                     else (model.params, model.grads))
    opt = optim.create(contestant.optimizer, params,
                       lr=make_lr(schedule, lr, epochs * per_epoch), **contestant.options)
    hyperparameters = {k: v for k, v in opt.param_groups[0].items() if k not in _TORCH_ONLY}
    hyperparameters["lr"] = lr
    curves = Curves(contestant, lr, hyperparameters)

    def measure():
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, _ = model.evaluate(data.x_train, data.y_train)
            val_loss, accuracy = model.evaluate(data.x_val, data.y_val)
        if not math.isfinite(loss):
            loss, val_loss, accuracy = math.nan, math.nan, math.nan
        curves.train_loss.append(loss)
        curves.val_accuracy.append(accuracy)
        curves.val_loss.append(val_loss)

    start = time.perf_counter()
    measure()
    for epoch in range(1, epochs + 1):
        permutation = order.permutation(n)  # drawn for full batches too: same stream for all
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for first in range(0, n, size):
                batch = permutation[first:first + size]
                model.loss_and_grad(data.x_train[batch], data.y_train[batch])
                t = time.perf_counter()
                opt.step(grads)
                curves.step_time += time.perf_counter() - t
                curves.steps += 1
        measure()
        if on_epoch is not None:
            on_epoch(epoch, curves)
        if math.isnan(curves.train_loss[-1]):  # diverged: no point in going on
            curves.diverged_at = epoch
            for curve in (curves.train_loss, curves.val_accuracy, curves.val_loss):
                curve += [math.nan] * (epochs - epoch)
            break
    curves.wall_time = time.perf_counter() - start
    return curves
