"""torch.optim optimizers on pyoptim's kernels: change one import.

::

    from pyoptim.torch import AdamW            # instead of torch.optim.AdamW

    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for x, y in data:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

``SGD``, ``Adagrad``, ``RMSprop``, ``Adam``, ``AdamW``, ``Adamax``, ``NAdam``, ``RAdam``,
``Adadelta``, ``ASGD``, ``Rprop``, ``Lion`` and ``Lamb`` (pyoptim's own; not in torch.optim)
are subclasses of ``torch.optim.Optimizer`` with torch.optim's constructor signatures and defaults,
and of the torch.optim class of the same name (``isinstance(opt, torch.optim.Adam)`` holds; its
``step`` is pyoptim's). ``Adagrad.share_memory()`` moves the state the kernels use into shared
memory, as torch's (Hogwild: processes forked afterwards update one state).
They take ``model.parameters()``, named parameters or param groups, read ``p.grad``, and work
with ``zero_grad``, ``add_param_group``, closures, step hooks, ``torch.optim.lr_scheduler`` and
``torch.amp.GradScaler``. The update is done by pyoptim's kernels in the tensors' own memory:

* CPU tensors: all params of the optimizer in one call into C++ (pyoptim's optimizer classes,
  pyoptim.optim: one kernel call per dtype combination and set of options, each one parallel
  region over every element of every param). float32, float64, float16 and bfloat16 params.
  Each step checks every ``p.grad`` (present, dense, contiguous, on the CPU, of its param's
  dtype and size) and that no param's memory moved. A small reader compiled against the torch
  installed (pyoptim/_torch_reader.py) does that in C++, a few us for 200 tensors where torch's
  Python accessors take some 100 us. It is built at the first CPU optimizer of a process that
  finds no build of it (once per torch version: 10-30 s with ``$CXX`` or ``c++``, cached in
  ``~/.cache/pyoptim``). Without a compiler pyoptim.torch warns once and checks from Python: the
  same results, slower. ``PYOPTIM_TORCH_READER=0`` turns it off.
* CUDA tensors: pyoptim's CUDA backend (Numba kernels; ``pip install "pyoptim[cuda]"``), one
  launch per param, on torch's current stream.

The math is torch.optim's, computed as pyoptim.reference states it: float64 params follow
torch.optim to rounding, float32 params to a few float32 ulps (torch's kernels contract some
products into FMAs, pyoptim's never do).

What differs from torch.optim:

* **State dtype.** The state of float16 and bfloat16 params is float32 by default (torch.optim
  keeps it in the param's dtype, where the small updates of the moments are lost);
  ``state_dtype=`` chooses (a torch or NumPy dtype). ``state_dict()`` holds the state in that
  dtype. ``load_state_dict()`` never casts state (torch issue 43706): a checkpoint whose state
  has another dtype is refused with ``pyoptim.CheckpointError`` and nothing changes, so a
  torch.optim checkpoint of bfloat16 params (bfloat16 state) loads into an optimizer built with
  ``state_dtype=torch.bfloat16``. The other way, torch.optim's ``load_state_dict`` casts
  pyoptim's float32 state of 16-bit params to the param dtype (torch's behaviour).
* **State is allocated when the optimizer is built**, not at the first step (``opt.state``
  shows a param's entry once it has taken a step, as torch's does; Adagrad's from the start,
  as torch's). Its tensors share memory with the optimizer: update them in place. What is
  written to ``opt.state`` counts from the next step (or ``state_dict()``), as in torch: a
  tensor assigned to an entry (``opt.state[p]["exp_avg"] = t``) is copied into the state the
  kernels use, which the entry then holds again (``t`` itself is not updated by later steps,
  as it would be by torch's); it must have the state's dtype and shape (a TypeError or
  ValueError names it otherwise). A
  ``step`` assigned or written in place sets the param's step count (to a whole number; 0 is
  refused: delete the entry to start a param afresh); keys of your own stay in their entries.
  ``state_dict()`` returns the state tensors, the state the kernels use, as torch's does (not
  copies: deepcopy it, or save it, to keep a snapshot); ``step`` and torch's scalar states are
  fresh tensors there. Deleting entries (``opt.state.clear()``, ``del opt.state[p]``) starts
  those params afresh at their next step, as in torch.
* **Params stay where they are.** The optimizer updates the memory its params had when it was
  built; a step after ``p.data`` was replaced (``module.to()``, ``.half()``...) is refused, as
  is one after a group's ``"params"`` list was edited (add params with ``add_param_group``).
  All params of one optimizer are on the CPU, or all on CUDA devices.
* **Memory layouts.** A CPU param laid out in another order than C's, its elements still
  filling one block of memory (``channels_last``, a transpose), is updated in place as the 1-D
  array of its memory, its state kept in the same order and shown and saved in the param's
  layout (as torch's ``zeros_like(p)``). Its grads are read without a copy when they have its
  layout, as autograd makes them (by address, as the grads of contiguous params), and copied
  into it otherwise; with ``flat_grads=True`` its view of the flat buffer has its layout (the
  buffer holds its grad in its memory's order). CUDA params must be contiguous.
* **Threads.** A CPU step runs on torch's intra-op thread count (``torch.set_num_threads``),
  as torch.optim's steps do, not on ``pyoptim.set_num_threads``' (which governs pyoptim's own
  API): a process that gives torch one thread per rank gets no more from its optimizer.
* ``torch.amp.GradScaler``: a step with ``found_inf`` set changes nothing (params, state, step
  counts); ``grad_scale`` is folded into the update (the kernel multiplies each gradient by
  ``1 / grad_scale``; the gradients are not rewritten). Both are also keyword arguments of
  ``step()``, as for torch's fused optimizers.
* pyoptim's options, keyword-only: ``state_dtype``, ``max_grad_norm`` and ``clip_value``
  (clipping folded into the update, CPU only), ``skip_nonfinite`` (a step with a NaN or Inf
  gradient anywhere changes nothing), ``backend``; see pyoptim.optim. And ``flat_grads``:
* ``flat_grads=True`` (default False): the optimizer makes every param's ``.grad`` a view of
  one flat buffer per dtype and device (a grad already there is copied in), as
  DistributedDataParallel's ``gradient_as_bucket_view`` does. Backward accumulates into those
  views in place: the grads lie in one buffer (to all-reduce, clip or save at once), and,
  where the compiled reader is off or not built, a step only checks from Python that each
  ``.grad`` is still its view instead of reading and checking every grad (about a quarter less
  time per step for a model of many small tensors; with the reader, reading each grad costs
  as little). ``zero_grad()`` zeroes the buffers in place whatever ``set_to_none``
  says, so a param that then gets no gradient steps with a zero one, as torch.optim does
  after ``zero_grad(set_to_none=False)`` (Adam's moments decay; for plain SGD nothing
  changes). A param that does not require grad gets no view. A ``.grad`` replaced or set to
  None by hand is read as it is (the step is then as without the option) until the
  optimizer's ``zero_grad()`` makes the views the grads again, as is a view whose layout or
  size was changed in place (``t_()``, ``as_strided_()``, ``resize_()``). Not detected: ``.data`` of a view set to a
  negated view of its own memory (torch._neg_view), which is read as that memory.
* **autograd** does not see the kernels write the tensors' memory; a step moves the version
  counter of every param it updated (``torch.autograd.graph.increment_version``), as torch's
  in-place ops do, so a backward through a graph saved before the step raises as after
  torch.optim's step. The state tensors' counters do not move (torch.optim's do).
* ``foreach``, ``fused`` and ``capturable`` are accepted and ignored (both of the first two
  True is refused, as by torch); ``differentiable=True``,
  sparse gradients, complex params and a tensor or pyoptim schedule as ``lr`` are refused (use
  ``torch.optim.lr_scheduler``). An optimizer cannot be pickled or deep-copied: save its
  ``state_dict()``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import operator
from collections import defaultdict
from itertools import chain
from typing import Any

import numpy as np
import torch

from . import _arrays, _cpu, _memory, _torch_reader, optim
from ._optimizer import NO_PARAMS, GradAddresses
from .schedules import Schedule

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
           "Adadelta", "ASGD", "Rprop", "Lion", "Lamb"]

_GRAD = operator.attrgetter("grad")
# the C method itself: mapped over a list, half the time of a methodcaller (0.06 against
# 0.12 us per tensor)
_DATA_PTR = torch.Tensor.data_ptr
# the checks of _grad_addresses, mapped over all grads at once
_DTYPE = operator.attrgetter("dtype")
_NUMEL = torch.Tensor.numel
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
_STRIDE = torch.Tensor.stride
_IS_NEG = torch.Tensor.is_neg
_IS_CPU = operator.attrgetter("is_cpu")
_INCOMPLETE = object()  # Optimizer._state_complete while some param has not stepped
_FLAT_ALIGN = 64  # bytes: each flat grad view starts on a cache line

# What torch.optim.Optimizer's step wrapper (profile_hook_step) reads: the global step hooks and
# the profiler's cheap range. None where this torch lacks one: torch then wraps the step itself.
_TORCH_OPTIMIZER = importlib.import_module("torch.optim.optimizer")
_GLOBAL_STEP_HOOKS = (getattr(_TORCH_OPTIMIZER, "_global_optimizer_pre_hooks", None),
                      getattr(_TORCH_OPTIMIZER, "_global_optimizer_post_hooks", None))
_RECORD_FUNCTION_FAST = getattr(getattr(torch._C, "_profiler", None), "_RecordFunctionFast", None)
_PROFILER_ENABLED = getattr(getattr(torch._C, "_autograd", None), "_profiler_enabled", None)


def _hooked_step(step):
    """step wrapped as torch.optim.Optimizer wraps every optimizer's step: the step pre-hooks
    (global, then the optimizer's; one may return new (args, kwargs)), the step, the post-hooks
    (the optimizer's, then global), all inside the profiler range "Optimizer.step#<class>.step".
    What differs is the range's cost when no profiler runs: torch enters
    torch.autograd.profiler.record_function (6 us a step here warm, and 0.05-0.18 ms of a 1 ms step
    on gpt-tiny's 196 tensors in `pyoptim bench`, where each step starts from caches another
    contestant has used), this one the C++ RecordFunctionFast (0.3 us); while a profiler runs it
    is record_function, as torch's, so traces show the same event. torch then leaves the step
    unwrapped (its `hooked` attribute). A subclass that overrides step gets torch's own wrapper
    around its step, and this one then only calls through, so that hooks run once."""
    if None in (*_GLOBAL_STEP_HOOKS, _RECORD_FUNCTION_FAST, _PROFILER_ENABLED):
        return step
    pre_hooks, post_hooks = _GLOBAL_STEP_HOOKS

    @functools.wraps(step)
    def hooked(*args, **kwargs):
        self = args[0]
        if type(self).step is not hooked:  # a subclass's step, hooked by torch around this call
            return step(*args, **kwargs)
        name = f"Optimizer.step#{type(self).__name__}.step"
        profiled = _PROFILER_ENABLED()
        with (torch.autograd.profiler.record_function(name) if profiled else
              _RECORD_FUNCTION_FAST(name)):
            if pre_hooks or self._optimizer_step_pre_hooks:
                for pre_hook in chain(pre_hooks.values(),
                                      self._optimizer_step_pre_hooks.values()):
                    result = pre_hook(self, args, kwargs)
                    if result is not None:
                        if isinstance(result, tuple) and len(result) == 2:
                            args, kwargs = result
                        else:
                            raise RuntimeError(f"{step} must return None or a tuple of "
                                               f"(new_args, new_kwargs), but got {result}.")
            out = step(*args, **kwargs)
            self._optimizer_step_code()
            if post_hooks or self._optimizer_step_post_hooks:
                for post_hook in chain(self._optimizer_step_post_hooks.values(),
                                       post_hooks.values()):
                    post_hook(self, args, kwargs)
            return out

    hooked.hooked = True
    return hooked


class Optimizer(torch.optim.Optimizer):
    """Base class of pyoptim.torch's optimizers: a torch.optim.Optimizer whose step is the step
    of a pyoptim optimizer class (``_engine_class``) over the same memory."""

    _engine_class: type[optim.Optimizer]
    _state_has_step = True  # torch's SGD keeps no step count in its state
    _state_from_start = False  # torch's Adagrad makes its state in its constructor
    # torch.amp.GradScaler hands this optimizer grad_scale and found_inf instead of unscaling
    # the gradients and skipping the step itself
    _step_supports_amp_scaling = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_engine_class" in cls.__dict__:  # torch's signature and defaults, with pyoptim's
            signature = inspect.signature(cls._engine_class)
            flat = inspect.Parameter("flat_grads", inspect.Parameter.KEYWORD_ONLY,
                                     default=False)
            cls.__signature__ = signature.replace(
                parameters=[*signature.parameters.values(), flat])

    def __init__(self, params, *args, flat_grads: bool = False, **kwargs):
        if kwargs.get("state_dtype") is not None:
            kwargs["state_dtype"] = _numpy_dtype(kwargs["state_dtype"])
        if not isinstance(flat_grads, bool):
            raise TypeError(f"flat_grads must be True or False, got {flat_grads!r}")
        # the engine checks the hyperparameters and holds the state; torch's __init__ then adds
        # the param groups through add_param_group
        self._engine = self._engine_class(NO_PARAMS, *args, **kwargs)
        self._engine._dense_layouts = True  # channels_last params: _layouts
        if self._engine.defaults.get("fused") and self._engine.defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")  # torch's words
        # values are checked here and by add_param_group, as torch.optim checks them; a step
        # takes what a scheduler or the user set since (LinearLR's decay to 0 can end at -3e-20)
        self._engine._values_checked_each_step = False
        # torch's scalar dtype (its step counts, NAdam's and ASGD's scalar states): float32, or
        # float64 under torch.set_default_dtype(torch.float64)
        self._scalar_dtype = np.float64 if torch.get_default_dtype() == torch.float64 \
            else np.float32
        self._engine._set_host_dtype(self._scalar_dtype)
        _check_lr(self._engine.defaults["lr"], "lr")
        self._pointers: list[int] = []
        self._metadata: np.ndarray | None = None  # the params' (_metadata_lines)
        self._by_address = False
        self._flat_grads = flat_grads
        self._flat: _FlatGrads | None = None
        self._layouts: list = []  # add_param_group's
        self._grad_strides: list = []  # add_param_group's
        self._reader = None  # _make_reader's
        # the engine's step counts in the scalar dtype, for .state: a NumPy array and a tensor
        # sharing it
        self._step_counts = np.zeros(0, self._scalar_dtype)
        self._steps = torch.from_numpy(self._step_counts)
        self._state_source = None
        self._state_complete = _INCOMPLETE  # _refresh_state's
        self._shared: dict[tuple[int, str], torch.Tensor] = {}  # _share_state_memory's
        # torch.optim.Optimizer's, not the torch class's this one also derives from (whose
        # constructor takes hyperparameters, which the engine has taken)
        torch.optim.Optimizer.__init__(self, params, self._engine.defaults)

    # -----------------------------------------------------------------------------------------
    # param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group, as torch.optim.Optimizer.add_param_group does (named params,
        keys of your own and hyperparameters that default to the optimizer's)."""
        engine = self._engine
        if type(self.state) is _State:  # what was written to opt.state, before it is rebuilt
            self._take_state_edits()
        groups = self.param_groups
        self.param_groups = list(groups)  # torch's checks append the group here
        try:
            super().add_param_group(param_group)
            group = self.param_groups[-1]
        finally:
            self.param_groups = groups
        _check_lr(group["lr"], f"param_groups[{len(groups)}]: lr")
        # the engine takes its hyperparameters (and refuses another optimizer's); other keys
        # (param_names, your own) ride along
        engine.add_param_group(_engine_keys(group, engine))
        engine.param_groups[-1].update(_extra_keys(group, engine))
        self.param_groups = engine.param_groups  # the same dicts: schedulers write lr here
        for group in self.param_groups:  # fixed once added: _Params notes edits
            if type(group["params"]) is not _Params:
                group["params"] = _Params(group["params"])
        self._pointers = engine._torch_pointers  # every param's data_ptr() (all are tensors)
        self._metadata = _metadata_lines(engine._params)
        self._dtypes = [p.dtype for p in engine._params]
        self._numels = [p.numel() for p in engine._params]
        # a param the engine takes as the 1-D array of its memory (channels_last): its strides,
        # to give its grads and show its state in its layout
        self._layouts = [None if _memory.shape_of(view) == tuple(p.shape) else p.stride()
                         for p, view in zip(engine._params, engine._views)]
        # the strides a grad must have to be read by address where its param is not contiguous
        # (the compiled reader's rule; a contiguous param's grad must be contiguous)
        self._grad_strides = [None if p.is_contiguous() else p.stride() for p in engine._params]
        self._all_contiguous = not any(self._grad_strides)
        # grads by address: CPU params on the C++ backend, none empty (address 0 means no grad)
        self._by_address = engine._placement == _arrays.HOST and engine.backend != "numpy" and \
            all(p.numel() > 0 for p in engine._params)
        self._reader = self._make_reader() if self._by_address else None
        self._step_counts = np.zeros(len(engine._params), self._scalar_dtype)
        self._steps = torch.from_numpy(self._step_counts)
        if self._flat_grads:
            self._flat = _FlatGrads(engine._params)
            views = self._flat.views
            self._flat.given = (self._grad_addresses(views) if self._by_address else None) \
                or self._views(views)
        self._refresh_state()

    # -----------------------------------------------------------------------------------------
    # the step

    @_hooked_step
    def step(self, closure=None, *, grad_scale=None, found_inf=None):
        """One update of every param that has a ``.grad``; returns the closure's loss (None
        without a closure).

        grad_scale / found_inf (also read from the attributes of the same names that
        torch.amp.GradScaler sets): the gradients are divided by grad_scale inside the update;
        a nonzero found_inf skips the step (nothing changes).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return loss  # an inf or NaN in the scaled gradients: GradScaler skips this step
        self._take_state_edits()
        self._check_params_unchanged()
        grad_scale = None if grad_scale is None else float(grad_scale)
        engine, reader = self._engine, self._reader
        given = None
        read = reader is not None and reader.read()  # if so, the grads are held until release()
        if read:
            given = GradAddresses(self._reader_addresses, reader, reader.mark_written)
        elif self._flat is not None and self._flat.in_place(engine._params, self._pointers):
            given = self._flat.given
        elif self._by_address:
            given = self._grad_addresses()
        if given is None:
            engine._check_not_moved()
            given = self._views([p.grad for p in engine._params])
        if engine._placement == _arrays.HOST:  # on torch's intra-op thread count, as torch.optim
            core = _cpu.core()
            core._set_calling_thread_num_threads(torch.get_num_threads())
            try:
                engine.step(given, grad_scale=grad_scale)
            finally:
                core._set_calling_thread_num_threads(0)
                if read:
                    reader.release()
        else:
            engine.step(given, grad_scale=grad_scale)
        self._step_counts[...] = engine._steps
        if engine._plan is not self._state_complete and self._state_source != self._source():
            self._refresh_state()
        return loss

    def _make_reader(self):
        """The compiled reader of the params' grads (pyoptim/_torch_reader.py), which does
        _grad_addresses' checks in C++: None where it is off or not built, or where a param is a
        subclass of torch.Tensor other than torch.nn.Parameter (whose .grad may be its own)."""
        params = self._engine._params
        if not all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in params):
            return None
        reader_type = _torch_reader.reader_type()
        if reader_type is None:
            return None
        self._reader_addresses = np.zeros(len(params), np.uint64)
        return reader_type(tuple(params), self._reader_addresses)

    def _views(self, grads: list) -> list:
        """What the engine's step takes for these grads (one per param, or None) when
        _grad_addresses does not vouch for them: NumPy views of host grads, or the tensors
        themselves (the engine refuses what it cannot take, by name)."""
        if self._engine._placement == _arrays.HOST:
            layouts, params = self._layouts, self._engine._params
            return [None if g is None else
                    _host_grad(g if layouts[i] is None else _in_memory_order(g, params[i]), i)
                    for i, g in enumerate(grads)]
        return [None if g is None else _arrays.torch_values(g) for g in grads]

    def _grad_addresses(self, grads=None) -> GradAddresses | None:
        """The address of every param's grad (``grads``, default: their ``.grad``; 0: no grad),
        when each is what torch makes: a
        dense, contiguous CPU tensor of its param's dtype and size, without a negative bit
        (p.grad's setter guarantees the device and size, not the dtype: see torch's
        grad_dtype). The C++ backend then reads the grads' memory without a NumPy view of each;
        the grads are held until the step returns (the kernels run without the GIL). None when a
        grad is not such a tensor, or a param's memory moved: the general path then views, or
        refuses, each grad by name.

        These checks are the per-tensor cost of a step, nearly all of it in torch's attribute
        reads: with every grad present, each check is one C call mapped over all grads (gpt-tiny's
        196 tensors, warm: 106 us, against 124 us for the loop below, which takes a step where
        some param has no grad; the same reads in C++ through the C API took 7-10% less)."""
        params = self._engine._params
        if grads is None:
            if self._metadata is not None:
                _cpu.core()._prefetch(self._metadata)
            grads = list(map(_GRAD, params))
        try:  # every param has a grad: each check one C call over all of them
            checked = (list(map(_DTYPE, grads)) == self._dtypes
                       and list(map(_NUMEL, grads)) == self._numels
                       and self._in_param_order(grads) and not any(map(_IS_NEG, grads))
                       and all(map(_IS_CPU, grads))
                       and list(map(_DATA_PTR, params)) == self._pointers)
        except AttributeError:  # a param without a grad (None has no dtype): one at a time below
            checked = None
        except RuntimeError:  # a sparse grad has no strides
            return None
        if checked is not None:
            if not checked:
                return None
            addresses = list(map(_DATA_PTR, grads))
            # 0: a lazy zero grad, without memory (the general path gives it some)
            return None if 0 in addresses else GradAddresses(addresses, grads)
        addresses, held = [], []
        append, hold = addresses.append, held.append
        try:
            for p, g, pointer, dtype, numel, strides in zip(
                    params, grads, self._pointers, self._dtypes, self._numels,
                    self._grad_strides):
                if g is None:
                    if p.data_ptr() != pointer:
                        return None
                    append(0)
                elif (p.data_ptr() == pointer and g.dtype is dtype and g.numel() == numel
                      and (g.is_contiguous() if strides is None else g.stride() == strides)
                      and not g.is_neg() and g.is_cpu
                      and (address := g.data_ptr())):
                    append(address)
                    hold(g)
                else:
                    return None
        except RuntimeError:  # a sparse grad has no strides
            return None
        return GradAddresses(addresses, held)

    def _in_param_order(self, grads: list) -> bool:
        """Whether every grad lies in memory as its param does: contiguous, or with the strides
        of a param that is not (channels_last)."""
        if self._all_contiguous:
            return all(map(_IS_CONTIGUOUS, grads))
        return all(g.is_contiguous() if strides is None else g.stride() == strides
                   for g, strides in zip(grads, self._grad_strides))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch.optim's zero_grad. With ``flat_grads=True``, every param's ``.grad`` is its view
        of the flat grad buffers again, zeroed (one fill per buffer), whatever ``set_to_none``
        says: a param that then gets no gradient steps with a zero one, as in torch.optim after
        ``zero_grad(set_to_none=False)``."""
        flat = self._flat
        if flat is None:
            return super().zero_grad(set_to_none)
        if not hasattr(self, "_zero_grad_profile_name"):
            self._patch_step_function()
        with torch.autograd.profiler.record_function(self._zero_grad_profile_name):
            self._engine._check_not_moved()
            flat.zero(self._engine._params, set_to_none)

    # -----------------------------------------------------------------------------------------
    # state

    def _source(self) -> tuple:
        """What opt.state is built from: the engine's runner (a new one after state buffers are
        added) and which params have taken a step."""
        engine = self._engine
        return engine._plan, int(np.count_nonzero(engine._steps))

    def _refresh_state(self, fresh: bool = False) -> None:
        """opt.state: for each param that has taken a step, torch tensors sharing memory with the
        engine's state (its step count: a view of the scalar-dtype copy of the counts). Each
        param keeps its entry, one dict from step to step as in torch, with any keys of your own
        in it; fresh: new entries (a loaded checkpoint's state replaces all of it)."""
        engine = self._engine
        self._step_counts[...] = engine._steps
        host = self._host_tensors()
        state = self.state
        if fresh or type(state) is not _State:
            state = _State(dict)
        for i, p in enumerate(engine._params):
            entry = dict.get(state, p)
            if engine._steps[i] == 0 and not self._state_from_start:
                # no state yet: only keys of your own are kept
                if entry is not None:
                    mine = {k: v for k, v in entry.items() if not self._is_engine_key(i, k)}
                    if mine:
                        dict.__setitem__(state, p, _Entry.of(state, mine))
                    else:
                        dict.__delitem__(state, p)
                continue
            values = self._entry(i, host)
            if not values and not entry:  # torch's SGD keeps no state without momentum
                continue
            if type(entry) is not _Entry or entry.owner is not state:
                entry = _Entry.of(state, entry or ())
                dict.__setitem__(state, p, entry)
            dict.update(entry, values)
        state.edited = state.deleted = False
        self.state = state
        self._steps_version = self._steps._version
        self._state_source = self._source()
        # once every param has stepped, opt.state changes only with a new runner: step() then
        # compares one attribute instead of counting the params that have stepped
        self._state_complete = engine._plan if self._state_source[1] == len(engine._params) \
            else _INCOMPLETE

    def _host_tensors(self) -> dict:
        """torch's scalar states as tensors sharing the engine's arrays (one element per param)."""
        return {name: torch.from_numpy(values) for name, values in self._engine._host.items()}

    def _entry(self, i: int, host: dict) -> dict:
        """Param i's entry of opt.state: tensors sharing memory with the state the kernels use."""
        entry = {"step": self._steps[i]} if self._state_has_step else {}
        for name, values in host.items():
            entry[name] = values[i]
        for name in self._engine._buffers[i]:
            entry[name] = self._state_tensor(i, name)
        return entry

    def _state_tensor(self, i: int, name: str) -> torch.Tensor:
        """Param i's state buffer name as a tensor sharing its memory (the tensor that
        share_memory made for it, while the buffer is still that memory)."""
        buffer = self._engine._buffers[i][name]
        tensor = self._shared.get((i, name))
        if tensor is None or not isinstance(buffer, np.ndarray) or \
                tensor.data_ptr() != buffer.__array_interface__["data"][0]:
            tensor = _as_tensor(buffer)
        if self._layouts[i] is not None:  # the 1-D array of its memory, in its param's layout
            tensor = tensor.as_strided(self._engine._params[i].shape, self._layouts[i])
        return tensor

    def _check_params_unchanged(self) -> None:
        """RuntimeError where a group's "params" list was edited (torch.optim would then update
        the params it lists; this optimizer's are fixed when added): refused rather than
        updating params the group no longer lists."""
        for g, group in enumerate(self.param_groups):
            params = group["params"]
            if type(params) is not _Params or params.changed:
                raise RuntimeError(
                    f"{type(self).__name__}: param_groups[{g}]['params'] was changed after it "
                    "was added; this optimizer's params are fixed then: add params with "
                    "add_param_group(), or build a new optimizer for another set")

    def _is_engine_key(self, i: int, key) -> bool:
        """Whether key of param i's entry is state the kernels use (else a key of your own)."""
        return (key == "step" and self._state_has_step) or key in self._engine._host \
            or key in self._engine._buffers[i]

    def _take_state_edits(self) -> None:
        """What was written to opt.state since the last step, taken as torch.optim takes it (one
        attribute read and one version counter when nothing was):

        * a tensor assigned to an entry (``opt.state[p]["exp_avg"] = t``): its values are copied
          into the state the kernels use (of the same dtype and shape: a TypeError or
          ValueError that names it otherwise), and the entry holds that state again;
        * a step count assigned or written in place (``opt.state[p]["step"].fill_(10)``): the
          param's next step is the one after it (a whole number of at least 1; to start a
          param afresh, delete its entry); torch's scalar states likewise;
        * entries deleted (``opt.state.clear()``, ``del opt.state[p]``, ``opt.state[p] = {}``,
          or opt.state replaced): those params start afresh at their next step, as in torch;
          the engine reloads its own state without theirs;
        * keys of your own ride along in their entries."""
        state = self.state
        if type(state) is _State and not state.edited and not state.deleted \
                and self._steps._version == self._steps_version:
            return
        engine = self._engine
        steps, host, copies = {}, [], []  # checked first: a refused edit changes nothing
        for p, entry in state.items():
            i = engine._index_of.get(id(p))
            if i is None or engine._params[i] is not p or not isinstance(entry, dict):
                continue
            for key, value in entry.items():
                where = f"opt.state[param {i}][{key!r}]"
                if key == "step" and self._state_has_step:
                    step = _whole_step(value, where)
                    if step == 0 and engine._steps[i] != 0:
                        raise ValueError(
                            f"{where}: a step count of 0 would start the param afresh with the "
                            "state it has; to start it afresh, delete its entry "
                            "(del opt.state[p])")
                    steps[i] = step
                elif key in engine._host:
                    values = engine._host[key]
                    if isinstance(value, torch.Tensor) and value.dtype != self._steps.dtype:
                        raise TypeError(f"{where} is a {value.dtype} tensor; torch's scalar "
                                        f"states are {self._steps.dtype} here: assign one of "
                                        "that dtype")
                    host.append((values, i, _number(value, where)))
                elif key in engine._buffers[i]:
                    ours = self._state_tensor(i, key)
                    if _assigned(ours, value, where):
                        copies.append((ours, value))
        for values, i, number in host:
            values[i] = number
        with torch.no_grad():
            for ours, value in copies:
                ours.copy_(value.clone() if value.device == ours.device else value)
        if any(engine._steps[i] != step for i, step in steps.items()):
            for i, step in steps.items():
                engine._steps[i] = step
            engine._recount_group_steps()
        if type(state) is not _State or state.deleted:
            kept = set()  # params whose entries hold state
            for p, entry in state.items():
                i = engine._index_of.get(id(p))
                if i is not None and isinstance(entry, dict) and \
                        any(self._is_engine_key(i, k) for k in entry):
                    kept.add(i)
            if any(step > 0 and i not in kept for i, step in enumerate(engine._steps)):
                saved = engine.state_dict()
                saved["state"] = {i: entry for i, entry in saved["state"].items() if i in kept}
                engine.load_state_dict(saved)
        self._refresh_state()

    def _share_state_memory(self, names) -> None:
        """These state buffers of every param in shared memory (torch's share_memory_(): a file
        each, mapped shared, which processes forked afterwards map too), with their values; the
        kernels then update them there. A no-op for CUDA state, as share_memory_() is."""
        engine = self._engine
        if engine._placement != _arrays.HOST:
            return
        for i, buffers in enumerate(engine._buffers):
            for name in names:
                if name not in buffers:
                    continue
                if (i, name) in self._shared and _as_tensor(buffers[name]).data_ptr() == \
                        self._shared[i, name].data_ptr():
                    continue
                shared = torch.empty_like(_as_tensor(buffers[name])).share_memory_()
                shared.copy_(_as_tensor(buffers[name]))
                buffers[name] = _arrays.host_view(shared, f"state '{name}' of params[{i}]")
                self._shared[i, name] = shared  # opt.state's tensor: is_shared() is True
        engine._plan = None  # a runner on the new addresses
        self._refresh_state()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict: {"state": {index: {"step": tensor, <buffers>}},
        "param_groups": [...]}. The buffers are the optimizer's own tensors (as torch's are),
        with what was written to opt.state taken first; "step" and torch's scalar states are
        copies; keys of your own ride along."""
        self._take_state_edits()
        live = self.state
        saved = {}
        for p, entry in live.items():
            if not entry:  # made by reading opt.state[p] for a param without state
                continue
            saved[p] = {k: v.clone() if isinstance(v, torch.Tensor) and v.ndim == 0 else v
                        for k, v in entry.items()}
        self.state = saved
        try:
            return super().state_dict()
        finally:
            self.state = live

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict of this class or of the torch.optim class of the same name, for the
        same param groups. Values are copied into this optimizer's state, which keeps its dtypes:
        a checkpoint whose state has other dtypes (or another layout, other shapes, invalid
        hyperparameters) is refused with pyoptim.CheckpointError, and nothing changes."""
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        engine = self._engine
        saved_groups = state_dict.get("param_groups")
        if isinstance(saved_groups, (list, tuple)):  # the engine checks and takes its keys
            state_dict["param_groups"] = [
                _engine_keys(saved, engine) if isinstance(saved, dict) else saved
                for saved in saved_groups]
            for g, saved in enumerate(state_dict["param_groups"]):
                if isinstance(saved, dict):
                    _check_lr(saved.get("lr"), f"param_groups[{g}]: lr")
        # the checkpoint's param indices, as far as its groups say (the engine checks them)
        try:
            param_of = {index: p for group, saved in zip(
                self.param_groups, saved_groups if isinstance(saved_groups, (list, tuple)) else ())
                if isinstance(saved, dict) and isinstance(saved.get("params"), (list, tuple))
                for index, p in zip(saved["params"], group["params"])}
        except TypeError:  # an index that is no key: refused by the engine below
            param_of = {}
        # keys of your own in state entries ride along; state names go to the engine (which
        # refuses another optimizer's), for a param it takes as the 1-D array of its memory in
        # that order; an entry left empty is no state, as in torch
        entries, mine = state_dict.get("state"), {}
        if isinstance(entries, dict):
            state_dict["state"] = {}
            for index, entry in entries.items():
                if isinstance(entry, dict):
                    own = {k: v for k, v in entry.items() if k not in _STATE_KEYS}
                    if own:
                        mine[index] = own
                    entry = {k: v for k, v in entry.items() if k in _STATE_KEYS}
                    if not entry:
                        continue
                    p = param_of.get(index)
                    if p is not None and self._layouts[engine._index_of[id(p)]] is not None:
                        entry = {k: _in_memory_order(v, p) if k in engine._spec.states else v
                                 for k, v in entry.items()}
                state_dict["state"][index] = entry
        # other top-level keys (metadata a state_dict post-hook added) are ignored, as by torch
        engine.load_state_dict({k: v for k, v in state_dict.items()
                                if k in ("state", "param_groups", "pyoptim")})
        for group, saved in zip(self.param_groups, saved_groups):
            # torch's rule for other keys: the checkpoint's, but param_names stay if it has none
            for key in _extra_keys(group, engine):
                if key not in saved and key != "param_names":
                    del group[key]
            group.update(_extra_keys(saved, engine))
        self._refresh_state(fresh=True)
        for index, own in mine.items():
            dict.update(self.state[param_of[index]], own)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def __getstate__(self):
        raise TypeError(
            f"a pyoptim.torch.{type(self).__name__} cannot be pickled or copied (its state is "
            "bound to its params' memory); save and load its state_dict() instead")


# ---------------------------------------------------------------------------------------------
# the optimizers


class SGD(Optimizer, torch.optim.SGD):
    """torch.optim.SGD on pyoptim's kernels (pyoptim.SGD; equations: pyoptim.reference.sgd).
    Its state is torch's: a ``momentum_buffer`` per param that has taken a step with momentum,
    no step count."""

    _engine_class = optim.SGD
    _state_has_step = False


class Adagrad(Optimizer, torch.optim.Adagrad):
    """torch.optim.Adagrad on pyoptim's kernels (pyoptim.Adagrad; dense gradients only)."""

    _engine_class = optim.Adagrad
    _state_from_start = True  # step 0 and sum = initial_accumulator_value, as torch's

    def share_memory(self) -> None:
        """Moves each param's ``sum`` into shared memory, as torch.optim.Adagrad.share_memory
        does (for Hogwild training: processes forked afterwards update one state; the step
        counts stay each process's own, as torch's). The state the kernels use is moved:
        torch's ``share_memory_()`` on opt.state's tensors would move copies of it."""
        self._take_state_edits()
        self._share_state_memory(("sum",))


class RMSprop(Optimizer, torch.optim.RMSprop):
    """torch.optim.RMSprop on pyoptim's kernels (pyoptim.RMSprop)."""

    _engine_class = optim.RMSprop


class Adam(Optimizer, torch.optim.Adam):
    """torch.optim.Adam on pyoptim's kernels (pyoptim.Adam)."""

    _engine_class = optim.Adam


class AdamW(Optimizer, torch.optim.AdamW):
    """torch.optim.AdamW on pyoptim's kernels (pyoptim.AdamW)."""

    _engine_class = optim.AdamW


class Adamax(Optimizer, torch.optim.Adamax):
    """torch.optim.Adamax on pyoptim's kernels (pyoptim.Adamax)."""

    _engine_class = optim.Adamax


class NAdam(Optimizer, torch.optim.NAdam):
    """torch.optim.NAdam on pyoptim's kernels (pyoptim.NAdam); ``mu_product`` is a CPU tensor per
    param of torch's scalar dtype (float32; float64 under a float64 default dtype), as torch
    keeps it."""

    _engine_class = optim.NAdam


class RAdam(Optimizer, torch.optim.RAdam):
    """torch.optim.RAdam on pyoptim's kernels (pyoptim.RAdam)."""

    _engine_class = optim.RAdam


class Adadelta(Optimizer, torch.optim.Adadelta):
    """torch.optim.Adadelta on pyoptim's kernels (pyoptim.Adadelta)."""

    _engine_class = optim.Adadelta


class ASGD(Optimizer, torch.optim.ASGD):
    """torch.optim.ASGD on pyoptim's kernels (pyoptim.ASGD); ``eta`` and ``mu`` are CPU tensors
    per param of torch's scalar dtype (float32; float64 under a float64 default dtype), as
    torch keeps them."""

    _engine_class = optim.ASGD


class Rprop(Optimizer, torch.optim.Rprop):
    """torch.optim.Rprop on pyoptim's kernels (pyoptim.Rprop)."""

    _engine_class = optim.Rprop


class Lion(Optimizer):
    """Lion (Chen et al. 2023; not in torch.optim) as a torch optimizer, on pyoptim's kernels
    (pyoptim.Lion: its arguments and defaults)."""

    _engine_class = optim.Lion


class Lamb(Optimizer):
    """LAMB (You et al. 2020, as optax.lamb; not in torch.optim) as a torch optimizer, on
    pyoptim's kernels (pyoptim.Lamb: its arguments and defaults). The trust ratio is per param
    tensor, i.e. per layer: a step runs the whole group in one call all the same."""

    _engine_class = optim.Lamb


def _noting(method, note):
    """method, calling note(self) first: how _Params, _State and _Entry note that they were
    changed."""

    def noted(self, *args, **kwargs):
        note(self)
        return method(self, *args, **kwargs)

    noted.__name__ = method.__name__
    return noted


class _Params(list):
    """A param group's "params", which notes that it was changed."""

    changed = False

    def _note(self):
        self.changed = True


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert",
              "pop", "remove", "clear", "sort", "reverse"):
    setattr(_Params, _name, _noting(getattr(list, _name), _Params._note))


class _State(defaultdict):
    """opt.state (torch's defaultdict(dict)), which notes that entries were written (edited) or
    deleted; reading a missing entry adds an empty one, as torch's does."""

    edited = False
    deleted = False

    def __missing__(self, key):
        entry = _Entry.of(self)
        dict.__setitem__(self, key, entry)
        return entry

    def _note_deleted(self):
        self.deleted = True

    def _note_replaced(self):  # whole entries: what they hold replaces what was there
        self.edited = self.deleted = True

    def setdefault(self, key, default=None):  # marks an edit only where it sets
        if key not in self:
            self[key] = default
        return self[key]


for _name in ("__delitem__", "clear", "pop", "popitem"):
    setattr(_State, _name, _noting(getattr(defaultdict, _name), _State._note_deleted))
for _name in ("__setitem__", "update"):
    setattr(_State, _name, _noting(getattr(defaultdict, _name), _State._note_replaced))


class _Entry(dict):
    """One param's entry of opt.state, which notes on opt.state (owner) that it was written.
    Built as a dict is (``type(entry)(items)``, as libraries that move state tensors rebuild a
    collection: it then notes nothing until opt.state holds it); pickled or copied, it is a
    plain dict."""

    owner: _State | None = None

    @classmethod
    def of(cls, owner: _State, items=()) -> _Entry:
        entry = cls(items)
        entry.owner = owner
        return entry

    def __reduce__(self):
        return dict, (dict(self),)

    def _note(self):
        if self.owner is not None:
            self.owner.edited = True

    setdefault = _State.setdefault


for _name in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "update"):
    setattr(_Entry, _name, _noting(getattr(dict, _name), _Entry._note))


# every hyperparameter name of pyoptim's optimizers (torch's flags included)
_HYPERPARAMETERS = frozenset().union(
    *(cls._engine_class(NO_PARAMS).defaults for cls in Optimizer.__subclasses__()))


# every state name of pyoptim's optimizers (buffers and torch's scalar states) and "step": the
# keys of a state entry that are not keys of your own
_STATE_KEYS = frozenset({"step"}).union(
    *(set(spec.states) | set(spec.host_states)
      for spec in (cls._engine_class(NO_PARAMS)._spec for cls in Optimizer.__subclasses__())))


# ---------------------------------------------------------------------------------------------
# helpers


def _metadata_lines(tensors: list) -> np.ndarray | None:
    """The first cache lines of what reading ``.grad`` and ``data_ptr()`` walks for each tensor
    (its Python object, its C++ TensorImpl, its storage's StorageImpl; torch gives their
    addresses as id(), ``_cdata`` and ``untyped_storage()._cdata``), for _core._prefetch to fetch
    them all at once: read one at a time after a step's kernel has streamed megabytes through the
    caches, each read waits on memory. A hint only: fetching an address whose object is gone
    reads nothing. None without the compiled extension or these attributes."""
    if not _cpu.available():
        return None
    try:
        lines = []
        for t in tensors:
            impl = t._cdata
            lines += [id(t), id(t) + 64, impl, impl + 64, impl + 128, impl + 192,
                      t.untyped_storage()._cdata]
    except Exception:  # noqa: BLE001 (a tensor it cannot describe, e.g. without storage: no hint)
        return None
    return np.array(lines, np.uint64)


class _FlatGrads:
    """``flat_grads=True``: the grads of an optimizer's params as views of one flat buffer per
    dtype and device, set as their ``.grad`` once. Backward accumulates into a ``.grad`` that
    exists, in place (torch's AccumulateGrad, outside create_graph), so the views stay the
    grads from step to step, as DistributedDataParallel's ``gradient_as_bucket_view`` relies
    on. A step then checks each param with a few cheap reads (``.grad`` is its view, the view's
    memory, layout and size and the param's memory did not change: in_place) instead of reading
    and checking each grad, and hands the engine the addresses it computed once (``given``).

    A param that does not require grad gets no view (a frozen param keeps no .grad, and takes
    no step, as in torch). Each view starts on a cache line; a param's existing .grad is copied
    into its view."""

    __slots__ = ("buffers", "views", "given", "_owned", "_addresses", "_numels", "_strides",
                 "_metadata")

    def __init__(self, params: list):
        offsets, ends = [], {}
        for p in params:
            if not p.requires_grad:
                offsets.append(None)
                continue
            key = (p.dtype, p.device)
            per = max(1, _FLAT_ALIGN // p.element_size())
            start = -(-ends.get(key, 0) // per) * per
            offsets.append(start)
            ends[key] = start + p.numel()
        self.buffers = [torch.zeros(end, dtype=dtype, device=device)
                        for (dtype, device), end in ends.items()]
        buffer_of = dict(zip(ends, self.buffers))
        self.views = []
        with torch.no_grad():
            for p, start in zip(params, offsets):
                view = None
                if start is not None:  # laid out as its param (channels_last: its strides)
                    view = buffer_of[p.dtype, p.device][start:start + p.numel()]
                    view = view.view(p.shape) if p.is_contiguous() else \
                        view.as_strided(p.shape, p.stride())
                    if p.grad is not None:
                        view.copy_(p.grad if p.grad.layout == torch.strided else
                                   p.grad.to_dense())
                    p.grad = view
                self.views.append(view)
        self._owned = [v for v in self.views if v is not None]
        self._addresses = [v.data_ptr() for v in self._owned]
        self._numels = [v.numel() for v in self._owned]
        # the views' strides where one is not contiguous (else all are, checked as such)
        self._strides = None if all(v.is_contiguous() for v in self._owned) else \
            [v.stride() for v in self._owned]
        self._metadata = _metadata_lines(list(params) + self._owned)
        self.given = None  # set by the optimizer: what its engine's step takes for the views

    def in_place(self, params: list, pointers: list[int]) -> bool:
        """Whether every param's .grad is still its view (None where it has none), the views
        still have their memory (no ``.data`` or ``set_()`` on them) laid out as made (no
        ``t_()`` or ``as_strided_()``) and all of it (no ``resize_()`` to fewer elements, which
        keeps the address: the step would read stale values after them), and the params
        theirs."""
        if self._metadata is not None:
            _cpu.core()._prefetch(self._metadata)
        return (all(map(operator.is_, map(_GRAD, params), self.views))
                and list(map(_DATA_PTR, self._owned)) == self._addresses
                and (all(map(_IS_CONTIGUOUS, self._owned)) if self._strides is None
                     else list(map(_STRIDE, self._owned)) == self._strides)
                and list(map(_NUMEL, self._owned)) == self._numels
                and list(map(_DATA_PTR, params)) == pointers)

    def zero(self, params: list, set_to_none: bool) -> None:
        """Zeroes the views and makes each its param's .grad again (a param without a view:
        torch's zero_grad)."""
        for buffer in self.buffers:
            buffer.zero_()
        for view, address in zip(self._owned, self._addresses):
            if view.data_ptr() != address:  # given other memory (.data, set_()): zeroed there
                view.zero_()
        for p, view in zip(params, self.views):
            grad = p.grad
            if view is not None:
                if grad is not view:
                    p.grad = view
            elif grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    grad.detach_() if grad.grad_fn is not None else grad.requires_grad_(False)
                    grad.zero_()


def _numpy_dtype(dtype) -> np.dtype:
    """A torch dtype or anything np.dtype takes, 'bfloat16' included (ml_dtypes' dtype)."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    return _memory.as_dtype(dtype)


def _check_lr(lr, where: str) -> None:
    if isinstance(lr, (torch.Tensor, Schedule)):
        raise TypeError(
            f"{where}: pyoptim.torch takes a number as lr, got a {type(lr).__name__}; schedule it "
            "with torch.optim.lr_scheduler")


def _engine_keys(group: dict, engine: optim.Optimizer) -> dict:
    """What of a param group goes to the engine: its params and hyperparameters, and any other
    optimizer's hyperparameter (which it refuses: a group or checkpoint meant for another
    optimizer)."""
    return {k: v for k, v in group.items()
            if k == "params" or k in engine.defaults or k in _HYPERPARAMETERS}


def _extra_keys(group: dict, engine: optim.Optimizer) -> dict:
    """A group's other keys, which ride along as in torch: param_names, torch's lr schedulers'
    (initial_lr...), the user's own."""
    return {k: v for k, v in group.items() if k != "params" and k not in engine.defaults
            and k not in _HYPERPARAMETERS}


def _number(value, where: str) -> float:
    """A number written to opt.state (a one-element tensor, or a Python or NumPy number)."""
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex():
                raise TypeError
            return float(value.item())
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a number or a one-element tensor, got "
                        f"{type(value).__name__}") from None


def _whole_step(value, where: str) -> int:
    """A step count written to opt.state: a whole number, at least 0."""
    number = _number(value, where)
    if not (math.isfinite(number) and 0 <= number < 2**53 and number == int(number)):
        raise ValueError(f"{where} must be a whole number of steps, got {number}")
    return int(number)


def _assigned(ours: torch.Tensor, value, where: str) -> bool:
    """Whether value, in an entry of opt.state where the state the kernels use (ours) was, is
    another tensor, whose values are to be copied into ours: of the same dtype and shape (the
    state is never cast); False where it is ours."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} must be a tensor, got {type(value).__name__}")
    if value.dtype != ours.dtype:
        raise TypeError(f"{where} is a {value.dtype} tensor; this optimizer keeps that state in "
                        f"{ours.dtype} (state_dtype): assign a tensor of that dtype")
    if value.shape != ours.shape:
        raise ValueError(f"{where} has shape {tuple(value.shape)}; its param's is "
                         f"{tuple(ours.shape)}")
    return not (value.device == ours.device and value.data_ptr() == ours.data_ptr()
                and value.stride() == ours.stride())


def _in_memory_order(t, param: torch.Tensor):
    """The 1-D tensor of t's values in the order param's elements lie in its memory (param:
    one block, in another order than C's: channels_last), which is how the engine takes such a
    param; t itself (a view) where it has param's layout. Anything not of param's shape goes
    as it is (refused by name)."""
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.shape != param.shape:
        return t
    t = _arrays.torch_values(t)
    if t.stride() != param.stride():
        t = torch.empty_strided(param.shape, param.stride(), dtype=t.dtype,
                                device=t.device).copy_(t)
    return t.as_strided((t.numel(),), (1,))


def _host_grad(g: torch.Tensor, i: int):
    """A NumPy view of a CPU gradient (a copy if its memory is not its values, contiguous: it
    is only read). Anything else goes to the engine as it is, which views or refuses it by
    name."""
    try:
        g = _arrays.torch_values(g)
        if not g.is_contiguous():
            g = g.contiguous()
        if g.dtype == torch.bfloat16:
            return g.view(torch.int16).numpy().view(_memory.bfloat16())
        return g.numpy()
    except (RuntimeError, TypeError):  # another device, requires grad, sparse...
        if g.layout != torch.strided:
            raise TypeError(f"grads[{i}] is a {g.layout} gradient; pyoptim.torch updates with "
                            "dense gradients only") from None
        return g


def _as_tensor(buffer) -> torch.Tensor:
    """A torch tensor sharing memory with a state buffer (a NumPy array, or a GPU tensor)."""
    if isinstance(buffer, torch.Tensor):
        return buffer
    if buffer.dtype.name == "bfloat16":
        return torch.from_numpy(buffer.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(buffer)
