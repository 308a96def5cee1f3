"""One optimizer step on arrays you own: ``fn(param, grad, *, <state>, step, <hyperparameters>)``.

Each function updates ``param`` and its state buffers in place with torch.optim's math (see
:mod:`pyoptim.reference` for the equations). Names follow torch.optim: state buffers by their
torch state names, hyperparameters by the torch.optim constructor names, with its defaults.
``step`` is the 1-based number of this update. State buffers an option does not need may be
omitted; the caller allocates state (zeros; Adagrad's ``sum`` filled with its initial accumulator
value) in float32 for 16-bit params or in the param's dtype.

Arrays are dispatched on their device and dtype, zero-copy:

* host arrays (NumPy, PyTorch CPU tensors, anything exposing the buffer protocol,
  ``__array_interface__`` or a CPU ``__dlpack__``) run on the C++ OpenMP-SIMD backend;
* GPU arrays (``__cuda_array_interface__``: CuPy, Numba, PyTorch CUDA) on the CUDA backend;
* ``backend="numpy"`` runs the NumPy reference on host arrays, ``"cpu"``/``"cuda"`` force the
  others.

Supported dtypes (param, grad, state): float32 alone; float64 with float64 or float32 grads and
state; float16 and bfloat16 with 16-bit or float32 grads and state, computed in float32.

Anything that cannot be updated in place as given raises TypeError or ValueError naming the
argument, and nothing is changed: a Python list, a non-contiguous, read-only or misshapen array,
an unsupported dtype or combination, two arguments sharing memory, a state buffer the options need
but missing, invalid hyperparameters, step < 1.

Example::

    import numpy as np, pyoptim
    p = np.zeros(1 << 20, np.float32); g = np.ones_like(p)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 11):
        pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=1e-3)
"""

from __future__ import annotations

from . import _spec
from ._dispatch import functional_step

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


def sgd(param, grad, *, momentum_buffer=None, step, lr=1e-3, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False, backend=None):
    """SGD with momentum, dampening and Nesterov (torch.optim.SGD); see pyoptim.reference.sgd.

    Plain gradient descent and mini-batch SGD are this with momentum=0. ``momentum_buffer`` is
    needed when momentum != 0; on step 1 it is set to the gradient (its contents are not read).
    """
    functional_step(_spec.SGD, param, grad, {"momentum_buffer": momentum_buffer}, step,
                    dict(lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize),
                    backend)


def adagrad(param, grad, *, sum, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, backend=None):
    """Adagrad (torch.optim.Adagrad); see pyoptim.reference.adagrad.

    ``sum`` starts filled with the initial accumulator value (torch's default 0).
    """
    functional_step(_spec.ADAGRAD, param, grad, {"sum": sum}, step,
                    dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                         maximize=maximize),
                    backend)


def rmsprop(param, grad, *, square_avg, momentum_buffer=None, grad_avg=None, step, lr=1e-2,
            alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False, backend=None):
    """RMSprop (torch.optim.RMSprop); see pyoptim.reference.rmsprop.

    ``momentum_buffer`` is needed when momentum > 0, ``grad_avg`` when centered.
    """
    functional_step(_spec.RMSPROP, param, grad,
                    {"square_avg": square_avg, "momentum_buffer": momentum_buffer,
                     "grad_avg": grad_avg}, step,
                    dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize),
                    backend)


def adam(param, grad, *, exp_avg, exp_avg_sq, max_exp_avg_sq=None, step, lr=1e-3,
         betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled_weight_decay=False, backend=None):
    """Adam (torch.optim.Adam); see pyoptim.reference.adam.

    ``max_exp_avg_sq`` is needed when amsgrad=True. decoupled_weight_decay=True is AdamW.
    """
    functional_step(_spec.ADAM, param, grad,
                    {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                     "max_exp_avg_sq": max_exp_avg_sq}, step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay),
                    backend)


def adamw(param, grad, *, exp_avg, exp_avg_sq, max_exp_avg_sq=None, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          backend=None):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay; see pyoptim.reference.adamw.

    ``max_exp_avg_sq`` is needed when amsgrad=True.
    """
    functional_step(_spec.ADAMW, param, grad,
                    {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                     "max_exp_avg_sq": max_exp_avg_sq}, step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize),
                    backend)
