"""The contestants of `pyoptim compare`: every optimizer pyoptim has (each name of
pyoptim.create), plus full-batch gradient descent, with their default learning rates."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from ..optim import OPTIMIZER_NAMES

# Learning rates tuned for the default run (MLP 64-128-64-10, batch 32, 30 epochs, constant lr):
# for each optimizer, the lr of a grid (factors of about 3) with the lowest held-out loss after the
# last epoch, averaged over seeds 1 and 2 (the default run uses seed 0), the held-out samples being
# part of the training set, never the validation set. The sweep and its tables:
# `python -m pyoptim.compare.tune`, docs/compare.md. Every other hyperparameter is the class's
# default (torch's, optax's for LAMB; and that of the name: momentum 0.9 for "momentum" and
# "nesterov").
TUNED_LR = {
    "gd": 1.0,
    "sgd": 0.1,
    "momentum": 0.03,
    "nesterov": 0.01,
    "adagrad": 0.03,
    "rmsprop": 0.001,
    "adam": 0.003,
    "amsgrad": 0.003,
    "adamw": 0.003,
    "adamax": 0.03,
    "nadam": 0.001,
    "radam": 0.01,
    "adadelta": 0.3,
    "asgd": 0.1,
    "rprop": 0.001,
    "lion": 0.0001,
    "lamb": 0.001,
}

DESCRIPTIONS = {
    "gd": "full-batch gradient descent: SGD on the whole training set, one step per epoch",
    "sgd": "mini-batch SGD",
    "momentum": "SGD with momentum 0.9",
    "nesterov": "SGD with Nesterov momentum 0.9",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "amsgrad": "Adam with AMSGrad",
    "adamw": "AdamW (decoupled weight decay 0.01)",
    "adamax": "Adamax",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adadelta": "Adadelta",
    "asgd": "averaged SGD (the model is evaluated at the SGD iterate, as torch's ASGD leaves it)",
    "rprop": "Rprop on the whole training set, one step per epoch (a full-batch method: batch "
             "noise flips the gradient signs it adapts its steps on); its lr is the initial "
             "step size",
    "lion": "Lion",
    "lamb": "LAMB, one trust ratio per weight matrix and per bias vector",
}


@dataclass(frozen=True)
class Contestant:
    """One line of the comparison: ``pyoptim.create(optimizer, params, lr=lr, **options)``,
    stepping once per batch, or once per epoch on the whole training set (full_batch)."""

    name: str
    optimizer: str  # a pyoptim.create name
    lr: float
    description: str
    full_batch: bool = False
    per_layer: bool = False  # params: the views of the flat buffer, one per layer tensor
    tuned: bool = True  # False: the class's default lr, not tuned here
    options: dict = field(default_factory=dict)


def _class_default_lr(name: str) -> float:
    cls = OPTIMIZER_NAMES[name][0]
    return float(inspect.signature(cls).parameters["lr"].default)


# the contestants that take one step per epoch, on the whole training set
FULL_BATCH = ("gd", "rprop")
# the contestants whose update depends on how the parameters are split into arrays (LAMB's trust
# ratio is per array): they get one param per layer tensor, the views into the flat buffer (still
# one kernel call per step); the others get the whole flat buffer as one param
PER_LAYER = ("lamb",)


def _contestants() -> dict[str, Contestant]:
    out = {"gd": Contestant("gd", "sgd", TUNED_LR["gd"], DESCRIPTIONS["gd"], full_batch=True)}
    for name, (cls, _) in OPTIMIZER_NAMES.items():
        tuned = name in TUNED_LR
        out[name] = Contestant(
            name, name, TUNED_LR[name] if tuned else _class_default_lr(name),
            DESCRIPTIONS.get(name, cls.__name__), full_batch=name in FULL_BATCH,
            per_layer=name in PER_LAYER, tuned=tuned)
    return out


# name -> Contestant, in the order of the table and the plot
CONTESTANTS = _contestants()
