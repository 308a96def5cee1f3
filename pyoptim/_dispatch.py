"""From a functional call to a backend: checks, device and backend choice, conversion."""

from __future__ import annotations

import numpy as np

from . import _arrays, _checks, _cpu, _spec, reference

BACKENDS = ("cpu", "cuda", "numpy")


def _choose_backend(backend, placement):
    if backend is None:
        return "cuda" if placement == _arrays.DEVICE else "cpu"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS} or None")
    if (backend == "cuda") != (placement == _arrays.DEVICE):
        where = "GPU" if placement == _arrays.DEVICE else "host"
        raise ValueError(f"backend={backend!r} cannot update {where} arrays")
    return backend


def functional_step(opt: _spec.Optimizer, param, grad, states: dict, step, hp: dict, backend):
    """Checks a functional call (hp holds every hyperparameter of opt), then runs one step of opt
    on the chosen backend."""
    opt.check(hp)
    step = _spec.check_step(step)
    needed = opt.needed_states(hp)
    missing = [name for name in needed + opt.host_states if states.get(name) is None]
    if missing:
        active = [f for f, on in opt.active_flags(hp, step).items() if on and f != "first_step"]
        because = f" with {', '.join(active)}" if active else ""
        raise ValueError(
            f"{opt.name}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required"
            f"{because} but was not given"
        )
    host = {name: _checks.host_scalar(opt.name, name, states[name]) for name in opt.host_states}
    arrays = {"param": param, "grad": grad, **{name: states[name] for name in needed}}
    placement = _arrays.placement(arrays)
    backend = _choose_backend(backend, placement)
    views = _host_views(arrays) if placement == _arrays.HOST else None
    if host:
        _checks.host_scalars_apart(opt.name, host, views or {})
    if backend == "numpy":
        _reference_step(opt, views, needed, host, step, hp)
    else:
        _kernel_step(opt, arrays if views is None else views, needed, host, step, hp, backend)
    _mark_torch_written([param, *(states[name] for name in needed + opt.host_states)])


def _reference_step(opt, views: dict, needed: list, host: dict, step: int, hp: dict) -> None:
    _checks.check(
        opt.name,
        _checks.host_buffer("param", views["param"]),
        _checks.host_buffer("grad", views["grad"]),
        [_checks.host_buffer(name, views[name]) for name in needed],
    )
    getattr(reference, opt.name)(
        views["param"], views["grad"], **{name: views[name] for name in needed}, **host,
        step=step, **hp
    )


def _kernel_step(opt, arrays: dict, needed: list, host: dict, step: int, hp: dict,
                 backend: str) -> None:
    current = {name: array.reshape(()).copy() for name, array in host.items()}
    flags, scalars = opt.flag_mask(hp, step, current), opt.scalars(hp, step, host=current)
    advanced = opt.advance_host(hp, step, current)  # raises before anything is written
    if backend == "cuda":
        from . import _cuda  # noqa: PLC0415 (imports numba only when a GPU array comes)

        _cuda.step(opt, flags, [arrays["param"]], [arrays["grad"]],
                   {name: [arrays[name]] for name in needed}, scalars)
    else:  # arrays: NumPy views of host arrays
        _cpu.step(opt, flags, [arrays["param"]], [arrays["grad"]],
                  {name: [arrays[name]] for name in needed}, scalars)
    for name, value in advanced.items():  # after the step succeeded
        host[name][...] = value


def _mark_torch_written(written: list) -> None:
    tensors = [x for x in written if type(x) is not np.ndarray and _arrays._is_torch(x)]
    if tensors:
        _arrays.mark_written(tensors)


def _host_views(arrays: dict) -> dict:
    return {name: x if type(x) is np.ndarray else _arrays.host_view(x, name)
            for name, x in arrays.items()}
