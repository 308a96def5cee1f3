"""pyoptim.torch with flat_grads=True: every param's .grad is a view of one flat buffer per dtype,
backward accumulates into it, and a step checks a few cheap things per tensor instead of reading
and checking each grad. Trained side by side with torch.optim (whose zero_grad(set_to_none=False)
has the same semantics) and bit for bit with pyoptim.torch without it; what a user may do to the
grads between steps (set them to None, replace them, move their memory, move a param) falls
back to the general path or is refused, and never loses or misapplies an update."""

from __future__ import annotations

import numpy as np
import pytest

from test_torch_optim import (NOT_IN_TORCH, TOLERANCES, TORCH_NAMES, _Spy, assert_same_state,
                              groups_of, loss_of, make_data, make_model, needs_core, pt, torch)

pytestmark = [needs_core, pytest.mark.usefixtures("grad_reader")]

STEPS = 30
ALL_NAMES = sorted(TORCH_NAMES.values()) + sorted(NOT_IN_TORCH)
DTYPES = ("float64", "float32", "bfloat16", "float16")


def _kwargs(name):
    if name in NOT_IN_TORCH:
        return dict(NOT_IN_TORCH[name][0])
    kwargs = {"lr": 0.01}
    if name == "SGD":
        kwargs["momentum"] = 0.9
    return kwargs


def _train(model, opt, data, set_to_none=False, steps=STEPS):
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        loss_of(model, data).backward()
        opt.step()


def _spy(opt):
    runner = opt._engine._runner()
    runner.plan = _Spy(runner.plan)
    return runner.plan


def _fast_steps(opt):
    """Records, for each step that reaches the engine, whether it took a fast path: the grads
    the optimizer set up with the flat buffers (no per-grad reads), or those its compiled reader
    checked (every grad, in C++). Without the reader the list shows when the Python check of
    the views falls back to reading each grad."""
    engine = opt._engine
    taken = []
    step = engine.step

    def recorded(grads, **kwargs):
        taken.append(grads is opt._flat.given or
                     (opt._reader is not None and getattr(grads, "owners", None) is opt._reader))
        return step(grads, **kwargs)

    engine.step = recorded
    return taken


def _flat_buffer_of(view):
    base = view._base
    assert base is not None and base.ndim == 1
    return base


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_flat_grads_step_bit_for_bit_as_without(name, dtype):
    """The same kernels on the same gradients: 30 steps of training, two param groups, give
    identical params and state with and without flat_grads, in every dtype."""
    dtype = getattr(torch, dtype)
    models = [make_model(dtype), make_model(dtype)]
    plain = getattr(pt, name)(groups_of(models[0]), **_kwargs(name))
    flat = getattr(pt, name)(groups_of(models[1]), **_kwargs(name), flat_grads=True)
    taken = _fast_steps(flat)
    data = tuple(x.to(dtype) for x in make_data())
    _train(models[0], plain, data)
    _train(models[1], flat, data)
    assert taken == [True] * STEPS
    for i, (p, q) in enumerate(zip(models[0].parameters(), models[1].parameters())):
        assert torch.equal(p, q), f"params[{i}]"
        assert torch.equal(p.grad, q.grad), f"grads[{i}]"
        for key, value in plain.state[p].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(flat.state[q][key])), \
                f"{key} of params[{i}]"


@pytest.mark.parametrize("dtype", ("float64", "float32"))
@pytest.mark.parametrize("name", sorted(TORCH_NAMES.values()))
def test_flat_grads_train_as_torch_optim_with_zeroed_grads(name, dtype):
    """Against torch.optim with zero_grad(set_to_none=False), whose grads also stay and are
    zeroed: the same trajectory to rounding, and every grad still a view of the flat buffer."""
    dtype = getattr(torch, dtype)
    theirs_model, ours_model = make_model(dtype), make_model(dtype)
    theirs = getattr(torch.optim, name)(groups_of(theirs_model), **_kwargs(name))
    ours = getattr(pt, name)(groups_of(ours_model), **_kwargs(name), flat_grads=True)
    data = make_data(dtype)
    _train(theirs_model, theirs, data)
    _train(ours_model, ours, data)
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[dtype])
    buffers = {id(_flat_buffer_of(p.grad)) for p in ours_model.parameters()}
    assert len(buffers) == 1


def test_the_views_share_one_buffer_per_dtype_each_on_a_cache_line():
    """Existing grads are copied into their views; params of two dtypes get two buffers."""
    model = make_model()
    model.fc2.to(torch.float64)
    grads = {}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
        grads[p] = p.grad.clone()
    opt = pt.Adam(model.parameters(), flat_grads=True)
    bases = {}
    for p in model.parameters():
        assert torch.equal(p.grad, grads[p])
        assert p.grad.data_ptr() % 64 == 0
        bases.setdefault(p.dtype, set()).add(id(_flat_buffer_of(p.grad)))
    assert {k: len(v) for k, v in bases.items()} == {torch.float32: 1, torch.float64: 1}
    assert len(opt._flat.buffers) == 2


def test_a_frozen_param_gets_no_view_and_an_unused_one_steps_with_zero_grads():
    """requires_grad=False: no .grad, no step (as torch). A param that takes part in no backward
    keeps its zeroed view and steps with a zero gradient: torch.optim after
    zero_grad(set_to_none=False) does the same once its grad exists."""
    def build(model, cls, **kwargs):
        model.conv.bias.requires_grad_(False)
        return cls(model.parameters(), lr=0.01, weight_decay=0.1, **kwargs)

    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    theirs = build(theirs_model, torch.optim.AdamW)
    ours = build(ours_model, pt.AdamW, flat_grads=True)
    for p in theirs_model.parameters():  # torch's grads exist from the start, as ours do
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    assert ours_model.conv.bias.grad is None
    data = make_data(torch.float64)
    for t in range(10):
        for model, opt in ((theirs_model, theirs), (ours_model, ours)):
            opt.zero_grad(set_to_none=False)
            if t % 2:  # fc2 unused: its grads stay zero
                x, y = data
                (model.fc1(model.conv(x).flatten(1)).sum() * 1e-3).backward()
            else:
                loss_of(model, data).backward()
            opt.step()
    assert ours_model.conv.bias.grad is None and ours_model.conv.bias not in ours.state
    np.testing.assert_array_equal(ours_model.conv.bias.detach().numpy(),
                                  make_model(torch.float64).conv.bias.detach().numpy())
    assert float(ours.state[ours_model.fc2.weight]["step"]) == 10
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])


def test_grads_set_to_none_or_replaced_take_the_general_path_until_zero_grad():
    """model.zero_grad() (set_to_none) makes backward allocate new grads; a user assigns another
    grad tensor: the step reads each .grad as without flat_grads (same result), and the
    optimizer's zero_grad makes the views the grads again."""
    models = [make_model(torch.float64), make_model(torch.float64)]
    plain = pt.SGD(models[0].parameters(), lr=0.05, momentum=0.9)
    flat = pt.SGD(models[1].parameters(), lr=0.05, momentum=0.9, flat_grads=True)
    taken = _fast_steps(flat)
    data = make_data(torch.float64)
    views = [p.grad for p in models[1].parameters()]
    for t in range(9):
        for model, opt in zip(models, (plain, flat)):
            if t in (2, 3):
                model.zero_grad()  # torch's Module.zero_grad: every .grad None
            else:
                opt.zero_grad(set_to_none=False)
            loss_of(model, data).backward()
            if t == 5:
                model.fc1.weight.grad = model.fc1.weight.grad * 2.0
            if t == 6:
                model.fc1.bias.grad = None
            opt.step()
    # the reader reads whatever .grad is; the views' check falls back while they are not
    assert taken == [True] * 9 if flat._reader else \
        [True, True, False, False, True, False, False, True, True]
    for p, q, view in zip(models[0].parameters(), models[1].parameters(), views):
        assert torch.equal(p, q)
        assert q.grad is view
        for key, value in plain.state[p].items():
            assert torch.equal(value, flat.state[q][key])


def test_a_view_given_other_memory_is_read_there_and_zeroed_there():
    """p.grad.data = other: the view object stays .grad but its memory is elsewhere. The step
    reads the new memory (not the flat buffer's stale values), zero_grad zeroes it."""
    p = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = pt.SGD([p], lr=1.0, flat_grads=True)
    view = p.grad
    view.data = torch.arange(5, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), -torch.arange(5, dtype=torch.float64))
    opt.zero_grad()
    assert p.grad is view and not view.any()


@pytest.mark.parametrize("relayout", ["t_", "as_strided_"])
def test_a_view_laid_out_otherwise_in_place_is_read_as_its_values(relayout):
    """A view transposed in place keeps its memory and address; its values are the transpose
    of that memory, and the step reads them as torch.optim does."""
    w = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    ref = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    opt = pt.SGD([w], lr=1.0, flat_grads=True)
    view = w.grad
    with torch.no_grad():
        view.copy_(torch.arange(9.0).reshape(3, 3))
        view.t_() if relayout == "t_" else view.as_strided_((3, 3), (1, 3))
    assert w.grad is view and not view.is_contiguous()
    ref.grad = view.clone()
    opt.step()
    torch.optim.SGD([ref], lr=1.0).step()
    assert torch.equal(w, ref)


def test_a_view_resized_in_place_is_refused_by_name_and_nothing_changes():
    """resize_() to fewer elements keeps the view's address and contiguity; the flat buffer
    still holds stale values past its new end. The step must not read them: it takes the
    general path, which refuses the grad's shape by name, as it refuses any such grad."""
    w = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = pt.SGD([w, b], lr=1.0, flat_grads=True)
    with torch.no_grad():
        w.grad.fill_(1.0)
        b.grad.fill_(1.0)
        w.grad.resize_(2, 2)
    assert w.grad.is_contiguous() and w.grad.data_ptr() == _flat_buffer_of(b.grad).data_ptr()
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(2, 2\), but params\[0\] "
                                         r"has shape \(3, 4\)"):
        opt.step()
    assert torch.equal(w, torch.ones(3, 4, dtype=torch.float64))
    assert torch.equal(b, torch.ones(5, dtype=torch.float64))


def test_a_param_that_moved_is_refused_and_nothing_changes():
    model = make_model()
    opt = pt.Adam(model.parameters(), flat_grads=True)
    loss_of(model, make_data()).backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[model.fc1.weight].items()}
    model.fc1.weight.data = model.fc1.weight.data.clone()
    with pytest.raises(RuntimeError, match=r"params\[4\] no longer has the memory"):
        opt.step()
    with pytest.raises(RuntimeError, match=r"params\[4\] no longer has the memory"):
        opt.zero_grad()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    for k, v in state.items():
        assert torch.equal(opt.state[model.fc1.weight][k], v)


def test_add_param_group_moves_every_grad_into_new_buffers_with_their_values():
    theirs_model, ours_model = make_model(torch.float64), make_model(torch.float64)
    data = make_data(torch.float64)
    rest = lambda m: [p for n, p in m.named_parameters() if not n.startswith("fc2")]  # noqa: E731
    theirs = torch.optim.Adam(rest(theirs_model), lr=0.01)
    ours = pt.Adam(rest(ours_model), lr=0.01, flat_grads=True)
    for p in theirs_model.parameters():
        p.grad = torch.zeros_like(p)
    for t in range(12):
        if t == 5:
            for model, opt in ((theirs_model, theirs), (ours_model, ours)):
                loss_of(model, data).backward()  # grads pending when the group is added
                opt.add_param_group({"params": list(model.fc2.parameters()), "lr": 0.003})
                opt.step()
        for model, opt in ((theirs_model, theirs), (ours_model, ours)):
            opt.zero_grad(set_to_none=False)
            loss_of(model, data).backward()
            opt.step()
    assert_same_state(ours, theirs, list(ours_model.parameters()),
                      list(theirs_model.parameters()), **TOLERANCES[torch.float64])
    assert len({id(_flat_buffer_of(p.grad)) for p in ours_model.parameters()}) == 1


def test_grad_scaler_skips_and_unscales_on_flat_grads():
    """GradScaler unscales the views in place (unscale_) or hands grad_scale to the step; a
    step with an infinity changes nothing, and the next is one fast step."""
    models = [make_model(), make_model()]
    opts = [pt.Adam(models[0].parameters(), lr=0.01),
            pt.Adam(models[1].parameters(), lr=0.01, flat_grads=True)]
    taken = _fast_steps(opts[1])
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) for _ in opts]
    data = make_data()
    for t in range(8):
        for model, opt, scaler in zip(models, opts, scalers):
            opt.zero_grad(set_to_none=False)
            scaler.scale(loss_of(model, data)).backward()
            if t == 3:
                model.fc1.weight.grad[1, 2] = float("inf")
            if t % 2:
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
    assert len(taken) == 7 and all(taken)  # the skipped step returns before reading grads
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)
    assert float(opts[1].state[models[1].fc1.weight]["step"]) == 7


def test_flat_grads_must_be_a_bool():
    with pytest.raises(TypeError, match="flat_grads must be True or False"):
        pt.Adam([torch.zeros(2, requires_grad=True)], flat_grads=1)


def test_one_step_is_one_kernel_call_with_the_addresses_computed_once():
    model = make_model()
    opt = pt.AdamW(model.parameters(), flat_grads=True)
    spy = _spy(opt)
    data = make_data()
    for _ in range(3):
        opt.zero_grad()
        loss_of(model, data).backward()
        opt.step()
    assert spy.calls == ["set_grad_addresses", "run"] * 3
    assert opt._flat.given.addresses == [p.grad.data_ptr() for p in model.parameters()]


def test_the_metadata_a_step_reads_is_fetched_for_every_tensor():
    """The cache lines handed to _core._prefetch before a step's checks (pyoptim/torch.py,
    _metadata_lines) are those of every param and every grad view: their Python objects,
    TensorImpls and storages, kept up to date by add_param_group."""
    model = make_model()
    params = list(model.parameters())
    opt = pt.Adam(params[:-1], lr=0.01, flat_grads=True)
    opt.add_param_group({"params": params[-1:]})
    views = [p.grad for p in params]

    def expected(tensors):
        return {a for t in tensors for a in
                (id(t), t._cdata, t.untyped_storage()._cdata)}

    assert expected(params) <= set(opt._metadata.tolist())
    assert expected(params + views) <= set(opt._flat._metadata.tolist())
    loss_of(model, make_data()).backward()
    opt.step()  # and a step with them runs as before
    assert all(opt.state[p]["step"] == 1 for p in params)
