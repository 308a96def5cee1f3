"""The C++ backend: pyoptim._core, built from csrc/ by scikit-build-core."""

from __future__ import annotations

try:
    from . import _core
except ImportError as e:  # a source checkout that was not built, or a broken build
    _core = None
    _import_error = e
else:
    _import_error = None


def core():
    """The compiled module, or an ImportError that says how to build it (no silent fallback)."""
    if _core is None:
        raise ImportError(
            f"pyoptim's compiled extension pyoptim._core could not be imported ({_import_error}). "
            "Build and install it with `pip install .` in a pyoptim source checkout (it needs a "
            "C++20 compiler and CMake; scikit-build-core and pybind11 are fetched by pip). "
            "pyoptim does not fall back to a slow path on its own: pass backend='numpy' to run "
            "the NumPy reference instead."
        )
    return _core


def available() -> bool:
    return _core is not None


def step(opt, flags: int, params: list, grads: list, states: dict, scalars, rows=None) -> None:
    """One step of opt over lists of host arrays (NumPy views), checked by the C++ module.

    scalars: one row of per-step scalars (a tuple of floats) for every param, or a float64 array
    with one row per group of params and ``rows`` saying which row each param uses.
    """
    slots = [states.get(name) for name in opt.states]
    core().step(opt.kernel, flags, params, grads, slots, scalars, rows)
