"""pyoptim.torch with CPU params laid out in memory in another order than C's (torch's
channels_last, which conv nets use for speed): each such param is updated as the 1-D array of
its memory, its grads given in the same order (zero-copy where they have its layout, as
autograd makes them; copied otherwise), its state shown and saved in its layout. Such params
were refused ("not C-contiguous"), so a channels_last model could not use pyoptim.torch."""

from __future__ import annotations

import copy

import pytest

from test_torch_optim import (TOLERANCES, assert_same_state, loss_of, make_data, make_model,
                              needs_core, pt, torch)

pytestmark = [needs_core, pytest.mark.usefixtures("grad_reader")]

NAMES = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "NAdam", "RAdam", "Adamax", "Adadelta",
         "ASGD", "Rprop", "Lion", "Lamb"]
KWARGS = {"SGD": dict(lr=0.1, momentum=0.9), "RMSprop": dict(momentum=0.5, centered=True)}
CHANNELS_LAST = torch.channels_last


def _params(dtype, channels_last):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(6, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last:
        weight = weight.contiguous(memory_format=CHANNELS_LAST)
    return [torch.nn.Parameter(weight), torch.nn.Parameter(bias)]


@pytest.mark.parametrize("backend", [None, "numpy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_a_channels_last_param_steps_as_its_contiguous_twin_to_the_bit(name, dtype, backend):
    """The same values in C order and in channels_last, the same grads: channels_last ones
    (as autograd makes them) at even steps, C-order ones (set by hand: copied into the param's
    order) at odd ones. 7 steps; params and every state tensor equal to the bit after each, the
    state in its param's layout (as torch.optim's, zeros_like(p)). Lamb's trust ratio sums
    the squares of each param in its memory's order: to rounding there."""
    twins = {layout: _params(dtype, layout) for layout in (False, True)}
    opts = {layout: getattr(pt, name)(params, backend=backend, **KWARGS.get(name, {}))
            for layout, params in twins.items()}
    gen = torch.Generator().manual_seed(1)
    for t in range(7):
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
                 for p in twins[False]]
        for layout, params in twins.items():
            for p, g in zip(params, grads):
                p.grad = g.clone(memory_format=CHANNELS_LAST) \
                    if layout and t % 2 == 0 and g.ndim == 4 else g.clone()
            opts[layout].step()
        assert not twins[True][0].is_contiguous()
        for i, (p, q) in enumerate(zip(twins[False], twins[True])):
            _assert_same(q, p, name, f"step {t + 1}: params[{i}]")
            for key, value in opts[False].state[p].items():
                other = opts[True].state[q][key]
                _assert_same(other, value, name, f"step {t + 1}: {key} of params[{i}]")
                if value.ndim:
                    assert other.stride() == q.stride(), f"{key} of params[{i}]"


def _assert_same(got, want, name, message):
    if name != "Lamb":
        assert torch.equal(got, want), message
    else:
        rtol = {torch.float64: 1e-13, torch.float32: 1e-5}.get(want.dtype, 2e-2)
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol, msg=message)


def _channels_last_twins(name, dtype=torch.float64):
    """A ConvNet in channels_last for pyoptim.torch and its copy for torch.optim."""
    model = make_model(dtype).to(memory_format=CHANNELS_LAST)
    assert not model.conv.weight.is_contiguous()
    twin = copy.deepcopy(model)
    kwargs = KWARGS.get(name, {})
    return (model, getattr(pt, name)(model.parameters(), **kwargs),
            twin, getattr(torch.optim, name)(twin.parameters(), **kwargs))


def _train(pairs, steps, seed=3):
    for t in range(steps):
        data = make_data(torch.float64, seed=seed + t)
        for model, opt in pairs:
            opt.zero_grad()
            loss_of(model, data).backward()
            opt.step()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "NAdam"])
def test_a_channels_last_model_trains_as_with_torch_optim(name):
    """A channels_last ConvNet, float64, 8 steps side by side with torch.optim; after 4, a
    C-order tensor assigned to the conv weight's first state buffer (copied into its layout).
    Every param and state entry compared; the state had torch's strides before."""
    model, ours, twin, theirs = _channels_last_twins(name)
    _train([(model, ours), (twin, theirs)], 4)
    params = list(model.parameters()), list(twin.parameters())
    for p, q in zip(*params):
        for k, v in theirs.state[q].items():
            if isinstance(v, torch.Tensor) and v.ndim:
                assert ours.state[p][k].stride() == v.stride(), k
    key = next(k for k, v in theirs.state[twin.conv.weight].items() if v.ndim)
    for opt, weight in ((ours, model.conv.weight), (theirs, twin.conv.weight)):
        opt.state[weight][key] = torch.full(weight.shape, 0.25, dtype=weight.dtype)
    _train([(model, ours), (twin, theirs)], 4, seed=7)
    assert_same_state(ours, theirs, *params, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_checkpoints_of_channels_last_params_go_both_ways(name):
    """A pyoptim.torch checkpoint of a channels_last model loads into torch.optim and into
    pyoptim.torch (its state in the param's layout), and torch's into pyoptim.torch; each
    resumed run goes on as the run it was taken from."""
    model, ours, twin, theirs = _channels_last_twins(name)
    _train([(model, ours), (twin, theirs)], 3)
    runs = [(model, ours), (twin, theirs)]
    for cls, saved in ((torch.optim, ours.state_dict()), (pt, ours.state_dict()),
                       (pt, theirs.state_dict())):
        resumed = copy.deepcopy(model)
        opt = getattr(cls, name)(resumed.parameters(), **KWARGS.get(name, {}))
        opt.load_state_dict(copy.deepcopy(saved))
        runs.append((resumed, opt))
    _train(runs, 3, seed=11)
    for resumed, opt in runs[1:]:
        assert_same_state(ours, opt, list(model.parameters()), list(resumed.parameters()),
                          **TOLERANCES[torch.float64])


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_flat_grads_views_of_channels_last_params_have_their_layout(name):
    """flat_grads=True gives each param a .grad that views one flat buffer; a channels_last
    param's view has its strides (its grad lies in the buffer in its memory's order), so that
    backward accumulates into it and steps read it by address. (It was refused.) 6 steps,
    bit-identical to the same model without flat_grads; the views stay the grads."""
    models = [make_model(torch.float64).to(memory_format=CHANNELS_LAST) for _ in range(2)]
    opts = [getattr(pt, name)(m.parameters(), flat_grads=flat, **KWARGS.get(name, {}))
            for m, flat in zip(models, (True, False))]
    flat = opts[0]._flat
    assert flat.views[0].stride() == models[0].conv.weight.stride()
    for t in range(6):
        data = make_data(torch.float64, seed=20 + t)
        for model, opt in zip(models, opts):
            opt.zero_grad()
            loss_of(model, data).backward()
        assert flat.in_place(opts[0]._engine._params, opts[0]._pointers)
        for opt in opts:
            opt.step()
        for p, q in zip(*(m.parameters() for m in models)):
            assert torch.equal(p, q), t


def test_a_param_of_no_single_block_is_still_refused():
    """A view that skips memory (every other element) has no 1-D array of its memory: an
    update applied to a copy would not reach it, so it is refused, as before."""
    base = torch.zeros(4, 6)
    with pytest.raises(ValueError, match="not C-contiguous"):
        pt.Adam([torch.nn.Parameter(base[:, ::2])])


@pytest.mark.parametrize("grad_order", ["channels_last", "C"])
def test_grads_in_their_params_order_are_read_by_address(grad_order, grad_reader):
    """The grads of channels_last params, as autograd makes them, are read by address as those
    of contiguous params are (by the compiled reader, or by the Python checks where it is off),
    and a grad in C order is not (its values are copied into the param's order): the reader
    and the Python checks agree."""
    params = _params(torch.float32, True)
    opt = pt.Adam(params)
    for p in params:
        g = torch.ones(p.shape)
        p.grad = g.contiguous(memory_format=CHANNELS_LAST) \
            if grad_order == "channels_last" and g.ndim == 4 else g
    by_python = opt._grad_addresses() is not None
    assert by_python == (grad_order == "channels_last")
    if grad_reader == "compiled":
        assert opt._reader.read() == by_python
        opt._reader.release()
    opt.step()
    assert torch.equal(opt.state[params[0]]["exp_avg"], torch.full(params[0].shape, 0.1))
