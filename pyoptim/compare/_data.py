"""The data: scikit-learn's handwritten digits (8x8 images, 1797 samples, shipped with
scikit-learn: nothing is downloaded), split once and for all into training and validation sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The split does not depend on --seed: every run, every optimizer, sees the same two sets.
SPLIT_SEED = 20240
VALIDATION_FRACTION = 0.2
# The tuning of the default learning rates (pyoptim.compare.tune) holds out part of the training
# set instead, and never looks at the validation set.
TUNING_SPLIT_SEED = 20241


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (n, 64) float32, standardized with the training set's statistics
    y_train: np.ndarray  # (n,) int64, digits 0-9
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return 10


def _held_out(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask of the samples held out: a fraction of each class, chosen at random."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        mask[members[:round(fraction * len(members))]] = True
    return mask


def load(dtype=np.float32) -> Digits:
    """The digits, split with a fixed permutation: 80% training, 20% validation, each class
    split in the same proportion. Features are standardized by the training set's mean and
    standard deviation (pixels that are constant there are only centred)."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 (optional dependency)

    x, y = load_digits(return_X_y=True)
    val = _held_out(y, VALIDATION_FRACTION, SPLIT_SEED)
    x_train, x_val = x[~val], x[val]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return Digits(
        x_train=((x_train - mean) / std).astype(dtype),
        y_train=y[~val].astype(np.int64),
        x_val=((x_val - mean) / std).astype(dtype),
        y_val=y[val].astype(np.int64),
    )


def tuning_split(data: Digits) -> Digits:
    """The training set split again, 80/20 by class: what the lr tuning trains and measures
    on. Its "validation" part is training data; the validation set is left out entirely."""
    held = _held_out(data.y_train, VALIDATION_FRACTION, TUNING_SPLIT_SEED)
    return Digits(x_train=data.x_train[~held], y_train=data.y_train[~held],
                  x_val=data.x_train[held], y_val=data.y_train[held])
