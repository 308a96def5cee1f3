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

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta",
           "asgd", "rprop", "lion", "lamb"]


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


def adamax(param, grad, *, exp_avg, exp_inf, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=0.0, maximize=False, backend=None):
    """Adamax (torch.optim.Adamax); see pyoptim.reference.adamax."""
    functional_step(_spec.ADAMAX, param, grad, {"exp_avg": exp_avg, "exp_inf": exp_inf}, step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize),
                    backend)


def nadam(param, grad, *, exp_avg, exp_avg_sq, mu_product, step, lr=2e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
          maximize=False, backend=None):
    """NAdam (torch.optim.NAdam); see pyoptim.reference.nadam.

    ``mu_product`` is torch's scalar state: a one-element NumPy array on the host (float32 as
    torch keeps it, or float64), starting at 1, updated in place.
    """
    functional_step(_spec.NADAM, param, grad,
                    {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "mu_product": mu_product},
                    step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize),
                    backend)


def radam(param, grad, *, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, backend=None):
    """RAdam (torch.optim.RAdam); see pyoptim.reference.radam."""
    functional_step(_spec.RADAM, param, grad, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq},
                    step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize),
                    backend)


def adadelta(param, grad, *, square_avg, acc_delta, step, lr=1.0, rho=0.9, eps=1e-6,
             weight_decay=0.0, maximize=False, backend=None):
    """Adadelta (torch.optim.Adadelta); see pyoptim.reference.adadelta."""
    functional_step(_spec.ADADELTA, param, grad,
                    {"square_avg": square_avg, "acc_delta": acc_delta}, step,
                    dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize),
                    backend)


def asgd(param, grad, *, ax, eta, mu, step, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
         weight_decay=0.0, maximize=False, backend=None):
    """Averaged SGD (torch.optim.ASGD); see pyoptim.reference.asgd.

    ``eta`` and ``mu`` are torch's scalar states: one-element NumPy arrays on the host (float32
    as torch keeps them, or float64), starting at lr and 1, updated in place.
    """
    functional_step(_spec.ASGD, param, grad, {"ax": ax, "eta": eta, "mu": mu}, step,
                    dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                         maximize=maximize),
                    backend)


def rprop(param, grad, *, prev, step_size, step, lr=1e-2, etas=(0.5, 1.2),
          step_sizes=(1e-6, 50.0), maximize=False, backend=None):
    """Rprop (torch.optim.Rprop); see pyoptim.reference.rprop.

    ``prev`` starts at zero, ``step_size`` filled with lr (lr enters nowhere else).
    """
    functional_step(_spec.RPROP, param, grad, {"prev": prev, "step_size": step_size}, step,
                    dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize), backend)


def lion(param, grad, *, exp_avg, step, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
         maximize=False, backend=None):
    """Lion (Chen et al. 2023; not in torch.optim); see pyoptim.reference.lion."""
    functional_step(_spec.LION, param, grad, {"exp_avg": exp_avg}, step,
                    dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize),
                    backend)


def lamb(param, grad, *, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.0, maximize=False, backend=None):
    """LAMB (You et al. 2020) as optax.lamb; see pyoptim.reference.lamb. The trust ratio is per
    param array: a call updates one array with its own ratio."""
    functional_step(_spec.LAMB, param, grad, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq},
                    step,
                    dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         maximize=maximize),
                    backend)
