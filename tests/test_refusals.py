"""Every input that cannot be updated in place as given is refused, on every host backend, with a
TypeError or ValueError that names the argument, and nothing is changed."""

from __future__ import annotations

import array
import re

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, _spec, functional
from harness import shuffled_views

HOST_BACKENDS = [b for b in ("cpu", "numpy") if b in pyoptim.available_backends()]
N = 64


def adam_arrays(dtype=np.float32, state_dtype=None, n=N):
    state_dtype = state_dtype or dtype
    rng = np.random.default_rng(0)
    return dict(
        param=rng.standard_normal(n).astype(dtype),
        grad=rng.standard_normal(n).astype(dtype),
        exp_avg=np.full(n, 0.5, state_dtype),
        exp_avg_sq=np.full(n, 0.25, state_dtype),
        max_exp_avg_sq=np.full(n, 0.25, state_dtype),
    )


def snapshot(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items() if isinstance(v, np.ndarray)}


def assert_unchanged(before, arrays):
    for name, old in before.items():
        np.testing.assert_array_equal(np.asarray(arrays[name]), old, err_msg=f"{name} changed")


def call_adam(backend, a, **hp):
    args = dict(a)
    param, grad = args.pop("param"), args.pop("grad")
    functional.adam(param, grad, **args, step=hp.pop("step", 1), backend=backend, **hp)


def refused(backend, arrays, error, pattern, **hp):
    before = snapshot(arrays)
    with pytest.raises(error, match=pattern):
        call_adam(backend, arrays, **hp)
    assert_unchanged(before, arrays)


@pytest.fixture(params=HOST_BACKENDS)
def backend(request):
    return request.param


# ---------------------------------------------------------------------------------------------
# Buffers


def test_a_python_list_is_refused(backend):
    a = adam_arrays()
    a["grad"] = list(a["grad"])
    refused(backend, a, TypeError, r"grad: expected an array.*got list")


def test_a_scalar_is_refused(backend):
    a = adam_arrays()
    a["exp_avg"] = 0.0
    refused(backend, a, TypeError, r"exp_avg: expected an array.*got float")


@pytest.mark.parametrize("name", ["param", "grad", "exp_avg", "exp_avg_sq"])
def test_a_non_contiguous_array_is_refused(backend, name):
    a = adam_arrays()
    a[name] = np.repeat(a[name], 2)[::2]  # same values, stride 2
    refused(backend, a, ValueError, rf"{name} is not C-contiguous")


def test_a_fortran_ordered_matrix_is_refused(backend):
    a = {k: v.reshape(8, 8) for k, v in adam_arrays().items()}
    a["exp_avg"] = np.asfortranarray(a["exp_avg"].T)
    refused(backend, a, ValueError, r"exp_avg is not C-contiguous")


@pytest.mark.parametrize("name", ["param", "exp_avg", "exp_avg_sq"])
def test_a_read_only_buffer_that_is_written_is_refused(backend, name):
    a = adam_arrays()
    a[name].flags.writeable = False
    refused(backend, a, ValueError, rf"{name} is read-only")


def test_a_read_only_grad_is_accepted(backend):
    a = adam_arrays()
    a["grad"].flags.writeable = False
    before = a["param"].copy()
    call_adam(backend, a)
    assert not np.array_equal(a["param"], before)


@pytest.mark.parametrize("name", ["grad", "exp_avg", "exp_avg_sq"])
def test_a_length_mismatch_is_refused(backend, name):
    a = adam_arrays()
    a[name] = a[name][:-1].copy()
    refused(backend, a, ValueError, rf"{name} has shape \(63,\), but param has shape \(64,\)")


def test_a_shape_mismatch_of_equal_size_is_refused(backend):
    a = {k: v.reshape(8, 8) for k, v in adam_arrays().items()}
    a["grad"] = a["grad"].reshape(4, 16)
    refused(backend, a, ValueError, r"grad has shape \(4, 16\), but param has shape \(8, 8\)")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.complex64, np.bool_,
                                   ml_dtypes.float8_e4m3fn])
def test_an_unsupported_dtype_is_refused_and_the_supported_ones_listed(backend, dtype):
    a = adam_arrays()
    a["param"] = a["param"].astype(dtype)
    refused(backend, a, TypeError,
            r"param has dtype \w+; supported dtypes are float32, float64, float16 and bfloat16")


@pytest.mark.parametrize(("param", "grad", "state"), [
    ("float32", "float64", "float32"),   # grad wider than param
    ("float32", "float16", "float32"),   # grad 16-bit for a float32 param
    ("float32", "float32", "float64"),   # state wider than param
    ("float16", "bfloat16", "float32"),  # two 16-bit kinds
    ("bfloat16", "bfloat16", "float16"),
    ("float64", "float16", "float64"),
])
def test_an_unsupported_combination_is_refused_and_the_supported_ones_listed(
        backend, param, grad, state):
    dt = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
          "bfloat16": ml_dtypes.bfloat16}
    a = adam_arrays(dt[param], dt[state])
    a["grad"] = a["grad"].astype(dt[grad])
    refused(backend, a, TypeError,
            rf"unsupported dtypes \(param {param}, grad {grad}, state {state}\); supported "
            r"\(param, grad, state\): \(float32, float32, float32\), \(float64, float64 or "
            r"float32, float64 or float32\), \(float16, float16 or float32, float32 or float16\)")


def test_state_buffers_of_different_dtypes_are_refused(backend):
    a = adam_arrays(np.float16, np.float32)
    a["exp_avg_sq"] = a["exp_avg_sq"].astype(np.float16)
    refused(backend, a, TypeError, r"exp_avg_sq has dtype float16, but the other state buffers "
            r"are float32")


def test_a_big_endian_array_is_refused(backend):
    a = adam_arrays()
    a["exp_avg"] = a["exp_avg"].astype(">f4")
    refused(backend, a, TypeError, r"exp_avg")


@pytest.mark.parametrize("name", ["param", "grad", "exp_avg"])
def test_a_masked_array_is_refused(backend, name):
    """A step writes and reads every element of a masked array's memory, masked or not, and
    the backends would treat its mask differently: refused, as on the CUDA backend."""
    a = adam_arrays()
    a[name] = np.ma.masked_array(a[name], mask=np.arange(N) % 2 == 0)
    refused(backend, a, TypeError, rf"{name} is a masked array; pass an array without a mask")


@pytest.mark.parametrize(("first", "second"), [
    ("param", "grad"), ("param", "exp_avg"), ("exp_avg", "exp_avg_sq"), ("grad", "exp_avg_sq"),
])
def test_the_same_buffer_passed_twice_is_refused(backend, first, second):
    a = adam_arrays()
    a[second] = a[first]
    refused(backend, a, ValueError, rf"({first} and {second}|{second} and {first}) share memory")


def test_overlapping_views_are_refused(backend):
    buffer = np.zeros(N + 8, np.float32)
    a = adam_arrays()
    a["exp_avg"], a["exp_avg_sq"] = buffer[:N], buffer[8:]
    refused(backend, a, ValueError, r"share memory")


def test_adjacent_views_of_one_buffer_are_accepted(backend):
    buffer = np.zeros(3 * N, np.float32)
    a = adam_arrays()
    a["param"][...] = 1.0
    a["exp_avg"], a["exp_avg_sq"], a["grad"] = buffer[:N], buffer[N:2 * N], buffer[2 * N:]
    a["grad"][...] = 1.0
    call_adam(backend, a)
    assert (a["param"] < 1.0).all()


# ---------------------------------------------------------------------------------------------
# Missing state and bad hyperparameters


@pytest.mark.parametrize(("fn", "kwargs", "missing"), [
    ("adam", dict(amsgrad=True), "max_exp_avg_sq"),
    ("adamw", dict(amsgrad=True), "max_exp_avg_sq"),
    ("sgd", dict(momentum=0.9), "momentum_buffer"),
    ("rmsprop", dict(momentum=0.9), "momentum_buffer"),
    ("rmsprop", dict(centered=True), "grad_avg"),
])
def test_a_state_buffer_the_options_need_is_required(backend, fn, kwargs, missing):
    p, g = np.ones(N, np.float32), np.ones(N, np.float32)
    states = {"adam": dict(exp_avg=np.zeros(N, np.float32), exp_avg_sq=np.zeros(N, np.float32)),
              "adamw": dict(exp_avg=np.zeros(N, np.float32), exp_avg_sq=np.zeros(N, np.float32)),
              "sgd": {}, "rmsprop": dict(square_avg=np.zeros(N, np.float32))}[fn]
    before = snapshot(dict(p=p, **states))
    with pytest.raises(ValueError, match=rf"{fn}: {missing} is required"):
        getattr(functional, fn)(p, g, **states, step=2, backend=backend, **kwargs)
    assert_unchanged(before, dict(p=p, **states))


@pytest.mark.parametrize(("fn", "kwargs", "pattern"), [
    ("adam", dict(lr=-1e-3), r"adam: invalid lr=-0.001"),
    ("adam", dict(lr=float("nan")), r"adam: invalid lr=nan"),
    ("adam", dict(eps=-1e-8), r"adam: invalid eps"),
    ("adam", dict(weight_decay=-0.1), r"adam: invalid weight_decay"),
    ("adam", dict(betas=(1.0, 0.999)), r"adam: invalid betas\[0\]=1.0: expected a value in \[0, 1\)"),
    ("adam", dict(betas=(0.9, -0.1)), r"adam: invalid betas\[1\]"),
    ("adam", dict(betas=(0.9, float("nan"))), r"adam: invalid betas\[1\]"),
    ("adamw", dict(betas=(0.9, 1.5)), r"adamw: invalid betas\[1\]"),
    ("sgd", dict(momentum=-0.9), r"sgd: invalid momentum"),
    ("sgd", dict(nesterov=True), r"sgd: nesterov=True requires momentum > 0 and dampening=0"),
    ("sgd", dict(nesterov=True, momentum=0.9, dampening=0.1), r"sgd: nesterov=True requires"),
    ("sgd", dict(lr=-1.0), r"sgd: invalid lr"),
    ("rmsprop", dict(alpha=-0.5), r"rmsprop: invalid alpha"),
    ("rmsprop", dict(momentum=-1.0), r"rmsprop: invalid momentum"),
    ("adagrad", dict(lr_decay=-1.0), r"adagrad: invalid lr_decay"),
    ("adagrad", dict(eps=-1.0), r"adagrad: invalid eps"),
    ("adamax", dict(betas=(0.9, 1.0)), r"adamax: invalid betas\[1\]"),
    ("nadam", dict(momentum_decay=-1e-3), r"nadam: invalid momentum_decay"),
    ("radam", dict(eps=-1.0), r"radam: invalid eps"),
    ("adadelta", dict(rho=1.5), r"adadelta: invalid rho=1.5: expected a value in \[0, 1\]"),
    ("asgd", dict(lr=-0.1), r"asgd: invalid lr"),
    ("rprop", dict(etas=(1.2, 0.5)), r"rprop: invalid etas=\(1.2, 0.5\): expected 0 < etaminus"),
    ("rprop", dict(etas=(0.5, 1.0)), r"rprop: invalid etas"),
    ("rprop", dict(step_sizes=(float("nan"), 50.0)), r"rprop: invalid step_sizes=\(nan, 50.0\): "
                                                     r"expected numbers, not NaN"),
    ("rprop", dict(step_sizes=(1e-6, float("nan"))), r"rprop: invalid step_sizes"),
    ("lion", dict(betas=(0.9, 1.5)), r"lion: invalid betas\[1\]"),
    ("sgd", dict(lr=10**400), r"sgd: invalid lr: an integer of 401 digits is beyond float64"),
    ("adam", dict(weight_decay=-10**400), r"adam: invalid weight_decay: an integer of 402"),
])
def test_invalid_hyperparameters_are_refused(backend, fn, kwargs, pattern):
    p, g = np.ones(N, np.float32), np.ones(N, np.float32)
    opt = _spec.OPTIMIZERS[fn]
    st = {name: np.zeros(N, np.float32) for name in opt.states}
    st.update(opt.initial_host(opt.defaults))
    before = snapshot(dict(p=p, **st))
    with pytest.raises(ValueError, match=pattern):
        getattr(functional, fn)(p, g, **st, step=1, backend=backend, **kwargs)
    assert_unchanged(before, dict(p=p, **st))


@pytest.mark.parametrize(("step", "error", "pattern"), [
    (0, ValueError, r"invalid step=0: expected the 1-based number"),
    (-3, ValueError, r"invalid step=-3"),
    (1.5, TypeError, r"step must be an integer >= 1, got float"),
    (True, TypeError, r"step must be an integer >= 1, got bool"),
    (None, TypeError, r"step must be an integer"),
    (10**400, ValueError, r"invalid step of 401 digits: expected at most 1.798e\+308"),
])
def test_a_bad_step_is_refused(backend, step, error, pattern):
    a = adam_arrays()
    refused(backend, a, error, pattern, step=step)


@pytest.mark.parametrize(("name", "value", "error", "pattern"), [
    ("mu_product", None, ValueError, r"nadam: mu_product is required"),
    ("mu_product", 1.0, TypeError, r"nadam: mu_product must be a one-element float32 or float64 "
                                   r"host array \(torch's scalar state\), got float"),
    ("mu_product", np.ones(2, np.float32), TypeError, r"mu_product must be a one-element.*shape"),
    ("mu_product", np.ones((), np.int64), TypeError, r"mu_product must be a one-element.*int64"),
    ("mu_product", "read-only", ValueError, r"nadam: mu_product is read-only"),
    ("mu_product", "negated tensor", TypeError,
     r"nadam: mu_product: a PyTorch tensor with its negative bit set"),
])
def test_host_scalar_state_is_checked(backend, name, value, error, pattern):
    p, g = np.ones(N, np.float32), np.ones(N, np.float32)
    st = dict(exp_avg=np.zeros(N, np.float32), exp_avg_sq=np.zeros(N, np.float32))
    if isinstance(value, str) and value == "read-only":
        value = np.ones((), np.float32)
        value.flags.writeable = False
    elif isinstance(value, str):  # "negated tensor"
        torch = pytest.importorskip("torch", reason="torch is not installed")
        value = torch._neg_view(torch.ones(()))
    before = snapshot(dict(p=p, **st))
    with pytest.raises(error, match=pattern):
        functional.nadam(p, g, **st, mu_product=value, step=1, backend=backend)
    assert_unchanged(before, dict(p=p, **st))


def test_host_scalar_state_is_unchanged_when_the_step_is_refused(backend):
    p, g = np.ones(N, np.float32), np.ones(N + 1, np.float32)  # grad of the wrong length
    ax, eta, mu = np.zeros(N, np.float32), np.full((), 0.01, np.float32), np.ones(1, np.float32)
    with pytest.raises(ValueError, match=r"grad has shape"):
        functional.asgd(p, g, ax=ax, eta=eta, mu=mu, step=3, backend=backend)
    assert eta == np.float32(0.01) and mu[0] == 1.0


def asgd_arrays():
    return dict(param=np.ones(N, np.float32), grad=np.linspace(-1, 1, N, dtype=np.float32),
                ax=np.zeros(N, np.float32), eta=np.full((), 0.01, np.float32),
                mu=np.ones(1, np.float32))


@pytest.mark.parametrize(("eta", "mu", "pattern"), [
    (lambda a: a["mu"], lambda a: a["mu"], r"asgd: eta and mu share memory"),
    (lambda a: a["ax"][:1], lambda a: a["mu"], r"asgd: (ax and eta|eta and ax) share memory"),
    (lambda a: a["eta"], lambda a: a["grad"][N - 1:], r"asgd: (grad and mu|mu and grad) share"),
    (lambda a: a["eta"], lambda a: a["param"].view(np.uint8)[2:6].view(np.float32),
     r"asgd: (param and mu|mu and param) share memory"),
])
def test_a_host_scalar_state_sharing_memory_is_refused(backend, eta, mu, pattern):
    """eta and mu are written by the step, as param and the state buffers are: one that
    shares memory with another argument, in whole or in part, would overwrite it."""
    a = asgd_arrays()
    a["eta"], a["mu"] = eta(a), mu(a)
    before = snapshot(a)
    with pytest.raises(ValueError, match=pattern):
        functional.asgd(a["param"], a["grad"], ax=a["ax"], eta=a["eta"], mu=a["mu"], step=2,
                        backend=backend)
    assert_unchanged(before, a)


def test_nadam_mu_product_sharing_memory_is_refused(backend):
    a = {k: v for k, v in adam_arrays().items() if k != "max_exp_avg_sq"}
    before = snapshot(a)
    with pytest.raises(ValueError, match=r"nadam: (exp_avg and mu_product|mu_product and "
                                         r"exp_avg) share memory"):
        functional.nadam(a["param"], a["grad"], exp_avg=a["exp_avg"], exp_avg_sq=a["exp_avg_sq"],
                         mu_product=a["exp_avg"][3:4], step=1, backend=backend)
    assert_unchanged(before, a)


@pytest.mark.parametrize(("hp", "step", "cause"), [
    (dict(alpha=-float("inf")), 1, "division by zero"),
    (dict(alpha=1e308), 1, "out of range"),
    (dict(lambd=-1000.0), 1, "complex"),
])
def test_an_asgd_step_whose_next_eta_cannot_be_computed_changes_nothing(backend, hp, step, cause):
    """eta after the step, lr / (1 + lambd lr t)^alpha, is worked out before the step writes
    anything: where it is not a finite real number the call is refused and param, ax, eta and
    mu keep their values (they were written before and eta then failed: half a step)."""
    a = asgd_arrays()
    before = snapshot(a)
    with pytest.raises(ValueError, match=rf"lambd=.*alpha=.*eta after step {step}.*{cause}"):
        functional.asgd(a["param"], a["grad"], ax=a["ax"], eta=a["eta"], mu=a["mu"], step=step,
                        backend=backend, **hp)
    assert_unchanged(before, a)
    params = [np.ones(N, np.float32), np.ones(3, np.float32)]
    opt = pyoptim.ASGD(params, lr=0.01, backend=backend, **hp)
    with pytest.raises(ValueError, match=rf"eta after step 1.*{cause}"):
        opt.step([np.ones(N, np.float32), np.ones(3, np.float32)])
    assert all((p == 1).all() for p in params)
    assert opt.state[0]["step"] == 0 and opt.state[0]["eta"] == np.float32(0.01)


def test_a_wrongly_typed_hyperparameter_is_refused(backend):
    a = adam_arrays()
    refused(backend, a, TypeError, r"lr must be a real number, got str", lr="0.1")
    refused(backend, a, TypeError, r"betas must be a pair", betas=0.9)


def test_an_unknown_backend_is_refused():
    a = adam_arrays()
    refused("gpu", a, ValueError, r"unknown backend 'gpu'")


def test_the_cuda_backend_cannot_take_host_arrays():
    a = adam_arrays()
    refused("cuda", a, ValueError, r"backend='cuda' cannot update host arrays")


# ---------------------------------------------------------------------------------------------
# The compiled module checks its own inputs too (it can be imported directly)


@pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")
class TestCoreModule:
    core = staticmethod(lambda: _cpu.core())

    def scalars(self):
        return tuple([0.1] * len(self.core().optimizers()["sgd"]["scalars"]))

    def test_objects_that_are_not_arrays(self):
        p = np.ones(4, np.float32)
        with pytest.raises(TypeError, match=r"sgd: grad must be an array, got list"):
            self.core().step("sgd", 0, [p], [[1.0, 2.0, 3.0, 4.0]], [None], self.scalars())
        with pytest.raises(TypeError, match=r"sgd: params must be a list"):
            self.core().step("sgd", 0, p, [p], [None], self.scalars())

    def test_buffer_protocol_objects_are_not_converted(self):
        p = np.ones(4, np.float32)
        with pytest.raises(TypeError, match=r"grad must be an array, got array"):
            self.core().step("sgd", 0, [p], [array.array("f", [1, 2, 3, 4])], [None],
                             self.scalars())

    def test_lists_of_different_lengths(self):
        p = [np.ones(4, np.float32), np.ones(4, np.float32)]
        with pytest.raises(ValueError, match=r"grads has 1 arrays, expected 2"):
            self.core().step("sgd", 0, p, [np.ones(4, np.float32)], [None], self.scalars())

    def test_arrays_of_one_list_with_different_dtypes(self):
        p = [np.ones(4, np.float32), np.ones(4, np.float64)]
        g = [np.ones(4, np.float32), np.ones(4, np.float64)]
        with pytest.raises(TypeError, match=r"param\[1\] has a dtype different from the first"):
            self.core().step("sgd", 0, p, g, [None], self.scalars())

    def test_a_missing_state_list(self):
        p = np.ones(4, np.float32)
        with pytest.raises(ValueError, match=r"sgd: momentum_buffer is required"):
            self.core().step("sgd", 2, [p], [p.copy()], [None], self.scalars())

    def test_bad_scalars_and_flags(self):
        p, g = np.ones(4, np.float32), np.ones(4, np.float32)
        with pytest.raises(ValueError, match=r"scalars must have 5 values"):
            self.core().step("sgd", 0, [p], [g], [None], (0.1,))
        with pytest.raises(ValueError, match=r"scalars must be a tuple"):
            self.core().step("sgd", 0, [p], [g], [None], np.ones((1, 5), np.float32))
        with pytest.raises(ValueError, match=r"flags 16 out of range"):
            self.core().step("sgd", 16, [p], [g], [None], self.scalars())
        with pytest.raises(ValueError, match=r"unknown optimizer 'nonesuch'"):
            self.core().step("nonesuch", 0, [p], [g], [None], self.scalars())

    def test_segment_errors_name_the_index(self):
        p = [np.ones(4, np.float32), np.ones(4, np.float32)]
        g = [np.ones(4, np.float32), np.ones(5, np.float32)]
        with pytest.raises(ValueError, match=re.escape("grad[1] has shape (5,), but param[1] has "
                                                       "shape (4,)")):
            self.core().step("sgd", 0, p, g, [None], self.scalars())
        with pytest.raises(ValueError, match=r"param\[0\] and param\[1\] share memory"):
            self.core().step("sgd", 0, [p[0], p[0]], [g[0], g[0].copy()], [None], self.scalars())

    def test_an_overlap_among_thousands_of_arrays_is_found(self):
        # More extents than kRadixSortMin (csrc/arguments.h), so the overlap check sorts them by
        # radix: the params and grads are views of one buffer in a shuffled order, plus arrays of
        # their own (elsewhere in memory) so that the starts differ in many bits.
        size = 16
        pool, slots, params, grads = shuffled_views(700, size, seed=3)
        rng = np.random.default_rng(3)
        params[5] = rng.standard_normal(1 << 18).astype(np.float32)[:size]  # its own allocation
        grads[9] = rng.standard_normal(size).astype(np.float32)
        expected = [p - np.float32(0.5) * g for p, g in zip(params, grads)]
        sgd = self.core().optimizers()["sgd"]["scalars"]
        scalars = tuple({"lr": 0.5}.get(name, 1.0 if name == "grad_factor" else 0.0)
                        for name in sgd)
        self.core().step("sgd", 0, params, grads, [None], scalars)
        for i, (got, want) in enumerate(zip(params, expected)):
            np.testing.assert_array_equal(got, want, err_msg=f"param[{i}]")
        for first, second in [(3, 600), (650, 2), (0, 699)]:
            bad = list(grads)
            start = slots[first] * size + size - 1  # one element of param[first]
            bad[second] = pool[start:start + size]
            before = [p.copy() for p in params]
            with pytest.raises(ValueError, match=(
                    rf"sgd: (param\[{first}\] and grad\[{second}\]|grad\[{second}\] and "
                    rf"param\[{first}\]) share memory")):
                self.core().step("sgd", 0, params, bad, [None], scalars)
            for got, want in zip(params, before):
                np.testing.assert_array_equal(got, want)

    def test_prefetch_takes_only_a_uint64_array_and_any_address(self):
        prefetch = self.core()._prefetch
        for bad in ([1, 2], np.zeros(3, np.int64), np.zeros((2, 2), np.uint64),
                    np.zeros(6, np.uint64)[::2], np.zeros(3, np.float64)):
            with pytest.raises(TypeError, match="_prefetch: addresses must be a C-contiguous"):
                prefetch(bad)
        # a hint: addresses of nothing (0, unmapped, the top of the address space) are fine
        prefetch(np.array([0, 1, 0xDEAD0000, 2**63, 2**64 - 1], np.uint64))
        prefetch(np.zeros(0, np.uint64))
