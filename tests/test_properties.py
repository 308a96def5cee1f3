"""Property-based tests: the C++ backend equals the reference to the bit for random
hyperparameters, sizes, dtype combinations, start steps and unaligned offsets into larger
buffers, with NaN and infinity sprinkled into the gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyoptim import _cpu, _spec, functional, reference
from cases import COMBINATIONS, DTYPES
from harness import EXACT, assert_close

pytestmark = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")

unit = st.floats(0.0, 1.0)
small = st.floats(0.0, 0.5)
below_one = st.floats(0.0, 0.999)


@st.composite
def hyperparameters(draw):
    name = draw(st.sampled_from(["sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam",
                                 "radam", "adadelta", "asgd", "rprop", "lion"]))
    hp = dict(lr=draw(st.floats(0.0, 0.5)), maximize=draw(st.booleans()),
              weight_decay=draw(st.one_of(st.just(0.0), small)))
    if name == "sgd":
        hp["momentum"] = draw(st.one_of(st.just(0.0), below_one))
        hp["nesterov"] = hp["momentum"] > 0 and draw(st.booleans())
        hp["dampening"] = 0.0 if hp["nesterov"] else draw(unit)
    elif name == "adagrad":
        hp.update(lr_decay=draw(small), eps=draw(st.floats(0.0, 1e-3)))
    elif name == "rmsprop":
        hp.update(alpha=draw(unit), eps=draw(st.floats(0.0, 1e-3)),
                  momentum=draw(st.one_of(st.just(0.0), below_one)), centered=draw(st.booleans()))
    elif name == "adadelta":
        hp.update(rho=draw(unit), eps=draw(st.floats(0.0, 1e-3)))
    elif name == "asgd":
        hp.update(lambd=draw(st.floats(0.0, 1.0)), alpha=draw(unit), t0=draw(st.floats(0.0, 20.0)))
    elif name == "rprop":
        del hp["weight_decay"]
        hp.update(etas=(draw(st.floats(0.01, 0.99)), draw(st.floats(1.01, 3.0))),
                  step_sizes=(draw(st.floats(0.0, 1e-3)), draw(st.floats(1e-3, 100.0))))
    elif name == "lion":
        hp.update(betas=(draw(unit), draw(unit)))
    else:
        hp.update(betas=(draw(below_one), draw(below_one)), eps=draw(st.floats(0.0, 1e-3)))
        if name in ("adam", "adamw"):
            hp["amsgrad"] = draw(st.booleans())
        if name in ("adam", "nadam", "radam"):
            hp["decoupled_weight_decay"] = draw(st.booleans())
        if name == "nadam":
            hp["momentum_decay"] = draw(st.floats(0.0, 0.1))
    return name, hp


def views(rng, n, dtype, count, offset, fill=None):
    """count arrays of n elements, each a view starting `offset` elements into its own buffer."""
    out = []
    for _ in range(count):
        buffer = rng.standard_normal(n + offset + 3).astype(np.float32).astype(dtype)
        view = buffer[offset:offset + n]
        if fill is not None:
            view[...] = fill
        out.append(view)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opt=hyperparameters(), combo=st.sampled_from(COMBINATIONS), n=st.integers(0, 3000),
       offset=st.integers(0, 17), first_step=st.integers(1, 10_000), steps=st.integers(1, 8),
       nonfinite=st.booleans(), data=st.data())
def test_cpu_equals_reference(opt, combo, n, offset, first_step, steps, nonfinite, data):
    name, hp = opt
    param_dtype, grad_dtype, state_dtype = (DTYPES[d] for d in combo)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    opt = _spec.OPTIMIZERS[name]
    states = opt.needed_states(opt.hyperparameters(hp))
    if name == "sgd" and hp.get("momentum") and first_step == 1:
        init = np.nan  # not read on the first step
    else:
        init = 0.25
    (p_cpu,) = views(rng, n, param_dtype, 1, offset)
    st_cpu = dict(zip(states, views(rng, n, state_dtype, len(states), offset,
                                    fill=np.abs(init) if name != "sgd" else init)))
    host_cpu = opt.initial_host(opt.hyperparameters(hp))
    host_ref = {k: v.copy() for k, v in host_cpu.items()}
    p_ref = p_cpu.copy()
    st_ref = {k: v.copy() for k, v in st_cpu.items()}
    for t in range(first_step, first_step + steps):
        g = rng.standard_normal(n).astype(np.float32)
        if nonfinite and n:
            g[rng.integers(0, n, size=3)] = [np.nan, np.inf, -np.inf]
        g = g.astype(grad_dtype)
        getattr(functional, name)(p_cpu, g, **st_cpu, **host_cpu, step=t, backend="cpu", **hp)
        getattr(reference, name)(p_ref, g, **st_ref, **host_ref, step=t, **hp)
    assert_close(p_cpu, p_ref, EXACT, f"param {name} {hp} {combo}")
    for k in states:
        assert_close(st_cpu[k], st_ref[k], EXACT, f"{k} {name} {hp} {combo}")
    for k in host_cpu:
        assert_close(host_cpu[k], host_ref[k], EXACT, f"{k} {name} {hp}")
