"""The optimizer case database: every optimizer with every combination of its options.

One table drives the parity, property and refusal tests (torch's optim_db, optax's
_OPTIMIZERS_UNDER_TEST). An option is exercised by a value that turns it on (a nonzero decay, a
momentum, a flag), crossed with every other option of the same optimizer; combinations torch
refuses (Nesterov with dampening) are left out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from pyoptim import _spec

# Each option: the values a case takes for it (the first is torch's default).
OPTIONS = {
    "sgd": dict(momentum=(0.0, 0.9), dampening=(0.0, 0.3), nesterov=(False, True),
                weight_decay=(0.0, 0.05), maximize=(False, True)),
    "adagrad": dict(lr_decay=(0.0, 0.1), weight_decay=(0.0, 0.05), maximize=(False, True)),
    "rmsprop": dict(momentum=(0.0, 0.9), centered=(False, True), weight_decay=(0.0, 0.05),
                    maximize=(False, True)),
    "adam": dict(amsgrad=(False, True), weight_decay=(0.0, 0.05),
                 decoupled_weight_decay=(False, True), maximize=(False, True)),
    "adamw": dict(amsgrad=(False, True), weight_decay=(0.0, 0.05), maximize=(False, True)),
    "adamax": dict(weight_decay=(0.0, 0.05), maximize=(False, True)),
    "nadam": dict(weight_decay=(0.0, 0.05), decoupled_weight_decay=(False, True),
                  maximize=(False, True)),
    "radam": dict(weight_decay=(0.0, 0.05), decoupled_weight_decay=(False, True),
                  maximize=(False, True)),  # 7 steps: rectified from step 6 (rho_t > 5)
    "adadelta": dict(weight_decay=(0.0, 0.05), maximize=(False, True)),
    "asgd": dict(t0=(1e6, 2.0), weight_decay=(0.0, 0.05), maximize=(False, True)),  # t0=2: averages
    "rprop": dict(etas=((0.5, 1.2), (0.3, 1.5)), maximize=(False, True)),
    "lion": dict(weight_decay=(0.0, 0.05), maximize=(False, True)),
    "lamb": dict(weight_decay=(0.0, 0.05), maximize=(False, True)),
}

# Learning rates large enough that every term of the update shows in float16.
LR = {"sgd": 0.05, "adagrad": 0.05, "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01, "adamax": 0.01,
      "nadam": 0.01, "radam": 0.01, "adadelta": 1.0, "asgd": 0.05, "rprop": 0.01, "lion": 1e-3,
      "lamb": 0.01}


@dataclass(frozen=True)
class Case:
    optimizer: str
    hyperparameters: dict = field(hash=False)

    @property
    def spec(self) -> _spec.Optimizer:
        return _spec.OPTIMIZERS[self.optimizer]

    @property
    def id(self) -> str:
        defaults = self.spec.defaults
        on = [k if isinstance(v, bool) else f"{k}={v}".replace(" ", "")
              for k, v in self.hyperparameters.items()
              if k != "lr" and v != defaults[k]]
        return "-".join([self.optimizer, *on]) if on else self.optimizer

    def states(self) -> tuple[str, ...]:
        return self.spec.needed_states(self.spec.hyperparameters(self.hyperparameters))

    def initial_host(self) -> dict:
        """Fresh host states (torch's scalar state), as torch initializes them."""
        return self.spec.initial_host(self.spec.hyperparameters(self.hyperparameters))


def _valid(optimizer, hp) -> bool:
    if optimizer == "sgd":
        if hp["nesterov"] and (hp["momentum"] == 0 or hp["dampening"] != 0):
            return False
        if hp["momentum"] == 0 and hp["dampening"] != 0:  # dampening without momentum: a no-op
            return False
    if optimizer == "adam" and hp["decoupled_weight_decay"] and hp["weight_decay"] == 0:
        return False  # decoupling nothing: the same as the plain case
    return True


def all_cases() -> list[Case]:
    cases = []
    for optimizer, options in OPTIONS.items():
        names = list(options)
        for values in itertools.product(*(options[n] for n in names)):
            hp = dict(zip(names, values))
            if _valid(optimizer, hp):
                cases.append(Case(optimizer, {"lr": LR[optimizer], **hp}))
    return cases


CASES = all_cases()
# One case per optimizer with every option on: for the expensive dimensions (large buffers).
FULL_CASES = [
    max((c for c in CASES if c.optimizer == name),
        key=lambda c: sum(v != c.spec.defaults[k] for k, v in c.hyperparameters.items()
                          if k != "lr"))
    for name in OPTIONS
]

DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
# (param, grad, state) combinations, as names
COMBINATIONS = list(_spec.DTYPE_COMBINATIONS)


def combination_id(combo) -> str:
    p, g, s = combo
    return f"p{p}-g{g}-s{s}"
