"""The CUDA backend (Numba CUDA kernels): not available in this version yet."""

from __future__ import annotations


def functional_step(opt, arrays, step, hp):
    raise NotImplementedError(
        f"{opt.name}: GPU arrays are not supported yet by this version of pyoptim (the CUDA "
        "backend is under development); pass host arrays"
    )
