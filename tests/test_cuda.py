"""The CUDA backend beyond the parity suite: in-place updates of the GPU arrays users have, views,
launch configurations, streams, lists of arrays, and every refusal, checked to change nothing.

These tests run unchanged on a GPU and, where there is none, on Numba's CUDA simulator
(tests/conftest.py). Torch CUDA tensors and CuPy arrays are tested where they can exist (a GPU,
the library installed) and skipped with the reason elsewhere.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cuda, _spec, reference
from cases import CASES, COMBINATIONS, DTYPES, FULL_CASES, combination_id
from harness import BACKENDS, EXACT, PENDING, assert_close, cuda_simulated, run_parity

pytestmark = pytest.mark.skipif(
    not _cuda.available(), reason="no CUDA backend here (numba-cuda with a GPU or its simulator)"
)

if _cuda.installed():
    from numba import cuda

    from pyoptim import _cuda_sums

CUDA = BACKENDS["cuda"]
ADAM_ALL = next(c for c in FULL_CASES if c.optimizer == "adam")
LAMB_ALL = next(c for c in FULL_CASES if c.optimizer == "lamb")


def cuda_backend(*sizes):
    return dataclasses.replace(CUDA, sizes=sizes)


@pytest.fixture
def launch():
    """pyoptim.set_cuda_launch_config for one test, restored afterwards."""
    saved = pyoptim.get_cuda_launch_config()
    yield pyoptim.set_cuda_launch_config
    pyoptim.set_cuda_launch_config(**saved)


def host(x):
    return x.copy_to_host()


def adam_arrays(n=100, dtype=np.float32, seed=0, shape=None):
    rng = np.random.default_rng(seed)
    shape = shape or (n,)
    values = {
        "param": rng.standard_normal(shape).astype(dtype),
        "grad": rng.standard_normal(shape).astype(dtype),
        "exp_avg": (0.1 * rng.standard_normal(shape)).astype(dtype),
        "exp_avg_sq": rng.random(shape).astype(dtype),
    }
    return values, {name: cuda.to_device(a) for name, a in values.items()}


def adam_call(arrays, **hp):
    pyoptim.functional.adam(arrays["param"], arrays["grad"], exp_avg=arrays["exp_avg"],
                            exp_avg_sq=arrays["exp_avg_sq"], step=3, lr=0.01, **hp)


def adam_reference(values, **hp):
    expected = {name: a.copy() for name, a in values.items()}
    reference.adam(expected["param"], expected["grad"], exp_avg=expected["exp_avg"],
                   exp_avg_sq=expected["exp_avg_sq"], step=3, lr=0.01, **hp)
    return expected


def assert_updated(device, expected, what=""):
    for name in ("param", "exp_avg", "exp_avg_sq"):
        assert_close(host(device[name]), expected[name], EXACT, f"{name} {what}")


# ---------------------------------------------------------------------------------------------
# Parity at larger sizes (the parity suite stops at 31 on the simulator): one case per optimizer
# with every option on, every dtype combination at 1000 and two at 4099.

LARGER = [(1000, combo) for combo in COMBINATIONS] + \
    [(4099, ("float32",) * 3), (4099, ("bfloat16", "bfloat16", "float32"))]


@pytest.mark.parametrize(
    ("case", "n", "combo"),
    [pytest.param(case, n, combo, id=f"{case.id}-{n}-{combination_id(combo)}")
     for case in FULL_CASES for n, combo in LARGER
     if case.states() or combo[2] == combo[0]],
)
def test_parity_larger(case, n, combo):
    run_parity(cuda_backend(n), case, combo, n)


def test_nan_and_inf_propagate_as_in_the_reference():
    values, device = adam_arrays(64)
    values["grad"][::5] = np.nan
    values["grad"][1::7] = np.inf
    values["exp_avg_sq"][2::9] = -1.0  # sqrt of a negative: NaN, not an error
    device = {name: cuda.to_device(a) for name, a in values.items()}
    adam_call(device, amsgrad=False)
    expected = adam_reference(values)
    assert np.isnan(expected["param"]).any() and np.isinf(expected["exp_avg"]).any()
    assert_updated(device, expected)


# ---------------------------------------------------------------------------------------------
# In place, zero-copy


def test_numba_device_arrays_are_updated_in_place():
    values, device = adam_arrays(257)
    adam_call(device)
    assert_updated(device, adam_reference(values))


def test_views_into_a_larger_buffer_are_updated_and_nothing_else():
    rng = np.random.default_rng(1)
    buffers = {name: rng.standard_normal(300).astype(np.float32)
               for name in ("param", "grad", "exp_avg")}
    buffers["exp_avg_sq"] = rng.random(300).astype(np.float32)
    device = {name: cuda.to_device(a) for name, a in buffers.items()}
    views = {name: d[100:200] for name, d in device.items()}
    adam_call(views)
    expected = adam_reference({name: a[100:200] for name, a in buffers.items()})
    for name in ("param", "exp_avg", "exp_avg_sq"):
        after = host(device[name])
        assert_close(after[100:200], expected[name], EXACT, name)
        np.testing.assert_array_equal(after[:100], buffers[name][:100])
        np.testing.assert_array_equal(after[200:], buffers[name][200:])


def test_multidimensional_arrays():
    values, device = adam_arrays(shape=(4, 3, 25))
    adam_call(device)
    assert_updated(device, adam_reference(values))


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if cuda_simulated() or not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here (no GPU, or Numba's simulator)")
    return torch


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_torch_cuda_tensors_are_updated_in_place(dtype):
    torch = _torch_cuda()
    values, _ = adam_arrays(1000, DTYPES[dtype])
    tensors = {name: torch.from_numpy(a.view(np.int16) if dtype == "bfloat16" else a).cuda()
               for name, a in values.items()}
    if dtype == "bfloat16":
        tensors = {name: t.view(torch.bfloat16) for name, t in tensors.items()}
    tensors["param"] = torch.nn.Parameter(tensors["param"])  # requires grad: updated outside autograd
    pointers = {name: t.data_ptr() for name, t in tensors.items()}
    adam_call(tensors)
    torch.cuda.synchronize()
    expected = adam_reference(values)
    for name in ("param", "exp_avg", "exp_avg_sq"):
        t = tensors[name].detach()
        assert t.data_ptr() == pointers[name]
        got = t.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16) \
            if dtype == "bfloat16" else t.cpu().numpy()
        assert_close(got, expected[name], EXACT, name)


def test_torch_current_stream_is_used():
    torch = _torch_cuda()
    side = torch.cuda.Stream()
    values, _ = adam_arrays(1 << 20)
    with torch.cuda.stream(side):
        tensors = {name: torch.from_numpy(a).cuda() for name, a in values.items()}
        described = _cuda.describe("param", tensors["param"])
        assert _cuda._stream_key(described.stream) == side.cuda_stream
        adam_call(tensors)
        result = {name: t.cpu() for name, t in tensors.items()}  # queued on the side stream
    expected = adam_reference(values)
    for name in ("param", "exp_avg", "exp_avg_sq"):
        assert_close(result[name].numpy(), expected[name], EXACT, name)


def test_cupy_arrays_are_updated_in_place():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if cuda_simulated():
        pytest.skip("CuPy needs a GPU; this run uses Numba's simulator")
    values, _ = adam_arrays(1000)
    arrays = {name: cupy.asarray(a) for name, a in values.items()}
    adam_call(arrays)
    cupy.cuda.get_current_stream().synchronize()
    expected = adam_reference(values)
    for name in ("param", "exp_avg", "exp_avg_sq"):
        assert_close(cupy.asnumpy(arrays[name]), expected[name], EXACT, name)


# ---------------------------------------------------------------------------------------------
# Launch configuration


@pytest.mark.parametrize(("blocks", "threads"), [(1, 1), (3, 5), (1, 64), (4, 32)])
def test_any_launch_configuration_gives_the_same_result(launch, blocks, threads):
    launch(threads_per_block=threads, max_blocks=blocks)
    assert _cuda.launch_config(1000) == (blocks, threads)
    run_parity(cuda_backend(1000), ADAM_ALL, ("float32",) * 3, 1000, steps=2)
    run_parity(cuda_backend(1000), ADAM_ALL, ("bfloat16", "float32", "float32"), 1000, steps=2)
    run_parity(cuda_backend(1000), LAMB_ALL, ("float32",) * 3, 1000, steps=2)


# ---------------------------------------------------------------------------------------------
# LAMB: sums over several blocks, the pairwise tree


@pytest.mark.parametrize(("blocks", "threads"), [(None, None), (1, 3)])
def test_lamb_over_several_sum_blocks(launch, blocks, threads):
    # two SUM_BLOCK blocks (the second one short): one CUDA block each, or one for both
    launch(threads_per_block=threads, max_blocks=blocks)
    n = _cuda_sums.SUM_BLOCK + 37
    run_parity(cuda_backend(n), LAMB_ALL, ("float32",) * 3, n)


@pytest.mark.parametrize("zero", ["param", "update"])
def test_lamb_trust_ratio_is_one_where_a_norm_is_zero(zero):
    n = 40
    rng = np.random.default_rng(5)
    p = np.zeros(n, np.float32) if zero == "param" else rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32) if zero == "param" else np.zeros(n, np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    device = [cuda.to_device(a) for a in (p, g, m, v)]
    pyoptim.functional.lamb(device[0], device[1], exp_avg=device[2], exp_avg_sq=device[3],
                            step=1, lr=0.1)
    reference.lamb(p, g, exp_avg=m, exp_avg_sq=v, step=1, lr=0.1)
    if zero == "param":  # ratio 1: the plain Adam-like step
        assert np.count_nonzero(p) > n // 2
    for got, want, name in zip(device, (p, g, m, v), ("param", "grad", "exp_avg", "exp_avg_sq")):
        assert_close(host(got), want, EXACT, name)


@pytest.mark.parametrize("threads", [1, 2, 4, 8, 16])
def test_tree_sums_are_the_reference_pairwise_sums(threads):
    rng = np.random.default_rng(4)
    kernel = _cuda_sums.tree_sums_kernel(2, _copy_totals)
    for n in [*range(1, 34), 100, 257]:
        values = rng.random((2, n)) * 10.0 ** rng.integers(-8, 9, (2, n))
        values[1, rng.random(n) < 0.2] = 0.0
        out = cuda.device_array(2, np.float64)
        kernel[1, threads](cuda.to_device(values), out)
        want = [reference._pairwise_sum(list(row)) for row in values]
        assert out.copy_to_host().tolist() == want, (n, threads)
    assert _cuda_sums.tree_threads(5, 256) == 8 and _cuda_sums.tree_threads(5, 6) == 4
    assert _cuda_sums.tree_threads(1, 256) == 1 and _cuda_sums.tree_threads(10**6, 2000) == 1024


def _copy_totals(totals, out):
    out[0] = totals[0]
    out[1] = totals[1]


def test_automatic_launch_configuration():
    assert pyoptim.get_cuda_launch_config() == {"threads_per_block": None, "max_blocks": None}
    for n in (1, 7, 31, 1000, 4099, 1 << 28):
        blocks, threads = _cuda.launch_config(n)
        assert 1 <= threads <= min(n, 1024) and 1 <= blocks <= -(-n // threads)
        if cuda_simulated():  # one Python thread per CUDA thread: a small grid
            assert blocks * threads <= 16
        elif n >= 1 << 20:
            assert threads == 256 and blocks >= cuda.get_current_device().MULTIPROCESSOR_COUNT
    assert _cuda.launch_config(7) == (1, 7)


@pytest.mark.parametrize("bad", [dict(threads_per_block=0), dict(max_blocks=-1),
                                 dict(threads_per_block=2048), dict(max_blocks=1.5),
                                 dict(threads_per_block=True)])
def test_bad_launch_configuration_is_refused(launch, bad):
    with pytest.raises(ValueError, match="set_cuda_launch_config"):
        launch(**bad)
    assert pyoptim.get_cuda_launch_config() == {"threads_per_block": None, "max_blocks": None}


# ---------------------------------------------------------------------------------------------
# Streams


def test_the_kernel_runs_on_the_arrays_stream():
    stream = cuda.stream()
    values, _ = adam_arrays(300)
    device = {name: cuda.to_device(a).bind(stream) for name, a in values.items()}
    chosen, others = _cuda.launch_stream([_cuda.describe(n, a) for n, a in device.items()])
    assert _cuda._stream_key(chosen) == _cuda._stream_key(stream) and others == []
    adam_call(device)
    stream.synchronize()
    assert_updated(device, adam_reference(values))


def test_arrays_on_two_streams_wait_for_each_other():
    first, second = cuda.stream(), cuda.stream()
    values, _ = adam_arrays(300)
    device = {name: cuda.to_device(a).bind(first if name == "param" else second)
              for name, a in values.items()}
    chosen, others = _cuda.launch_stream([_cuda.describe(n, a) for n, a in device.items()])
    assert _cuda._stream_key(chosen) == _cuda._stream_key(first)
    assert [_cuda._stream_key(s) for s in others] == [_cuda._stream_key(second)]
    adam_call(device)
    first.synchronize()
    assert_updated(device, adam_reference(values))


def test_no_stream_means_the_default_stream():
    _, device = adam_arrays(10)
    assert _cuda.launch_stream([_cuda.describe(n, a) for n, a in device.items()]) == (0, [])


# ---------------------------------------------------------------------------------------------
# Lists of arrays (pyoptim._cuda.step, what the optimizer classes call)


def test_step_over_a_list_with_one_row_of_scalars_per_group():
    opt = _spec.ADAM
    hp_groups = [opt.hyperparameters(dict(lr=0.01, amsgrad=True)),
                 opt.hyperparameters(dict(lr=0.1, amsgrad=True, weight_decay=0.1))]
    rng = np.random.default_rng(3)
    sizes, dtypes, group_of = (33, 0, 1000, 7), ("float32", "float32", "bfloat16", "float16"), \
        (0, 1, 1, 0)
    values = [{name: (rng.random(n) if name == "exp_avg_sq" else rng.standard_normal(n))
               .astype(DTYPES[dt]) for name in ("param", "grad", *opt.states)}
              for n, dt in zip(sizes, dtypes)]
    device = [{name: cuda.to_device(a) for name, a in v.items()} for v in values]
    flags = opt.flag_mask(hp_groups[0], 2)
    assert flags == opt.flag_mask(hp_groups[1], 2) - 1  # weight decay aside, the same kernel
    table = np.array([opt.scalars(hp, 2) for hp in hp_groups])
    for group, wanted in ((0, flags), (1, flags | 1)):
        members = [i for i in range(len(sizes)) if group_of[i] == group]
        _cuda.step(opt, wanted, [device[i]["param"] for i in members],
                   [device[i]["grad"] for i in members],
                   {name: [device[i][name] for i in members] for name in opt.states},
                   table, rows=[group] * len(members))
    for i, v in enumerate(values):
        expected = {name: a.copy() for name, a in v.items()}
        reference.adam(expected["param"], expected["grad"],
                       **{name: expected[name] for name in opt.states}, step=2,
                       **hp_groups[group_of[i]])
        for name in ("param", *opt.states):
            assert_close(host(device[i][name]), expected[name], EXACT, f"{name}[{i}]")


def test_step_with_one_tuple_of_scalars_for_every_param():
    opt = _spec.SGD
    hp = opt.hyperparameters(dict(lr=0.1, momentum=0.9))
    values = [np.arange(n, dtype=np.float32) for n in (5, 9)]
    grads = [np.ones(n, np.float32) for n in (5, 9)]
    buffers = [np.zeros(n, np.float32) for n in (5, 9)]
    params = [cuda.to_device(v) for v in values]
    momentum = [cuda.to_device(b) for b in buffers]
    _cuda.step(opt, opt.flag_mask(hp, 2), params, [cuda.to_device(g) for g in grads],
               {"momentum_buffer": momentum}, opt.scalars(hp, 2))
    for p, b, v, g, buf in zip(params, momentum, values, grads, buffers):
        reference.sgd(v, g, momentum_buffer=buf, step=2, **hp)
        assert_close(host(p), v, EXACT, "param")
        assert_close(host(b), buf, EXACT, "momentum_buffer")


# ---------------------------------------------------------------------------------------------
# Refusals: each with the C++ backend's message, nothing written


class Interface:
    """A device array's memory seen through __cuda_array_interface__ alone (as from a library
    pyoptim does not know), with some of its entries changed."""

    def __init__(self, array, **changes):
        self.array = array
        own = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
        self.__cuda_array_interface__ = {"shape": own["shape"], "typestr": own["typestr"],
                                         "data": own["data"], "strides": own.get("strides"),
                                         "version": 3, **changes}


def _address(array):
    own = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return own["data"][0]


def _device(dtype=np.float32, n=8, fill=1.0):
    return cuda.to_device(np.full(n, fill, dtype))


REFUSALS = {
    # name: (arguments changed from a valid Adam call, exception, message pattern)
    "shape": (lambda a: dict(grad=_device(n=9)), ValueError, r"grad has shape \(9,\), but param"),
    "non-contiguous": (lambda a: dict(exp_avg=cuda.to_device(np.zeros(16, np.float32))[::2]),
                       ValueError, "exp_avg is not C-contiguous"),
    "read-only": (lambda a: dict(param=Interface(a["param"], data=(_address(a["param"]), True))),
                  ValueError, "param is read-only"),
    "misaligned": (lambda a: dict(exp_avg_sq=Interface(a["exp_avg_sq"], shape=(8,), data=(
        _address(a["exp_avg_sq"]) + 1, False))), ValueError, "exp_avg_sq is not aligned"),
    "masked": (lambda a: dict(grad=Interface(a["grad"], mask=object())), TypeError,
               "grad is a masked array"),
    "integer dtype": (lambda a: dict(grad=_device(np.int32)), TypeError,
                      "grad has dtype int32; supported dtypes are"),
    "uint16 bits": (lambda a: dict(param=Interface(a["param"], typestr="<u2", shape=(16,))),
                    TypeError, "param has dtype uint16"),
    "big-endian": (lambda a: dict(grad=Interface(a["grad"], typestr=">f4")), TypeError,
                   "grad has dtype big-endian float32"),
    "big-endian Numba array": (lambda a: dict(param=_device(">f4")), TypeError,
                               "param has dtype big-endian float32"),
    "combination": (lambda a: dict(grad=_device(np.float64)), TypeError,
                    r"unsupported dtypes \(param float32, grad float64, state float32\); "
                    r"supported \(param, grad, state\): \(float32, float32, float32\)"),
    "state dtypes": (lambda a: dict(exp_avg_sq=_device(np.float64)), TypeError,
                     "exp_avg_sq has dtype float64, but the other state buffers are float32"),
    "same buffer": (lambda a: dict(grad=a["param"]), ValueError,
                    "param and grad share memory|grad and param share memory"),
    "overlap": (lambda a: dict(exp_avg=a["_spare"][0:8], exp_avg_sq=a["_spare"][4:12]),
                ValueError, "share memory"),
    "host grad": (lambda a: dict(grad=np.ones(8, np.float32)), TypeError,
                  "param is a GPU array but grad is a host array"),
    "host state": (lambda a: dict(exp_avg=np.zeros(8, np.float32)), TypeError,
                   "is a GPU array but exp_avg is a host array"),
    "list": (lambda a: dict(grad=[1.0] * 8), TypeError, "is a host array"),
    "missing state": (lambda a: dict(amsgrad=True), ValueError,
                      "max_exp_avg_sq is required with amsgrad but was not given"),
    "lr": (lambda a: dict(lr=-1.0), ValueError, r"invalid lr=-1.0"),
    "beta": (lambda a: dict(betas=(0.9, 1.0)), ValueError, r"invalid betas\[1\]=1.0"),
    "eps": (lambda a: dict(eps=-1e-8), ValueError, "invalid eps"),
    "step": (lambda a: dict(step=0), ValueError, "invalid step=0"),
    "backend": (lambda a: dict(backend="cpu"), ValueError, "backend='cpu' cannot update GPU"),
}


@pytest.mark.parametrize("what", list(REFUSALS))
def test_refusal_changes_nothing(what):
    change, error, pattern = REFUSALS[what]
    arrays = {name: _device(fill=0.5 + k) for k, name in
              enumerate(("param", "grad", "exp_avg", "exp_avg_sq", "_spare"))}
    arrays["_spare"] = cuda.to_device(np.zeros(16, np.float32))
    before = {name: host(a) for name, a in arrays.items()}
    call = dict(param=arrays["param"], grad=arrays["grad"], exp_avg=arrays["exp_avg"],
                exp_avg_sq=arrays["exp_avg_sq"], step=2, lr=0.1)
    call.update(change(arrays))
    param, grad = call.pop("param"), call.pop("grad")
    with pytest.raises(error, match=pattern):
        pyoptim.functional.adam(param, grad, **call)
    for name, a in arrays.items():
        np.testing.assert_array_equal(host(a), before[name], err_msg=f"{what}: {name} changed")


def test_list_refusals():
    opt = _spec.SGD
    hp = opt.hyperparameters(dict(lr=0.1))
    flags, scalars = opt.flag_mask(hp, 2), opt.scalars(hp, 2)
    a, b = _device(), _device()
    shared = cuda.to_device(np.zeros(16, np.float32))
    with pytest.raises(ValueError, match=r"sgd: grads has 1 arrays, expected 2"):
        _cuda.step(opt, flags, [a, b], [a], {}, scalars)
    with pytest.raises(ValueError, match=r"sgd: param\[0\] and param\[1\] share memory"):
        _cuda.step(opt, flags, [shared[0:8], shared[4:12]], [a, b], {}, scalars)
    with pytest.raises(TypeError, match=r"grad\[1\]: expected a GPU array, got list"):
        _cuda.step(opt, flags, [shared[0:8], shared[8:16]], [a, [0.0] * 8], {}, scalars)
    with pytest.raises(ValueError, match="flags 16 out of range"):
        _cuda.step(opt, 16, [a], [b], {}, scalars)
    with pytest.raises(ValueError, match="scalars must have 5 values"):
        _cuda.step(opt, flags, [a], [b], {}, scalars[:4])
    with pytest.raises(ValueError, match="momentum_buffer is required"):
        _cuda.step(opt, opt.flag_mask(dict(hp, momentum=0.9), 2), [a], [b], {}, scalars)
    with pytest.raises(ValueError, match="row out of range"):
        _cuda.step(opt, flags, [a], [b], {}, np.array([scalars]), rows=[1])
    np.testing.assert_array_equal(host(a), np.ones(8, np.float32))
    np.testing.assert_array_equal(host(shared), np.zeros(16, np.float32))


def test_without_numba_cuda_a_gpu_array_says_what_to_install(monkeypatch):
    monkeypatch.setattr(_cuda, "installed", lambda: False)
    values, device = adam_arrays(8)
    with pytest.raises(ImportError, match=r'pip install "pyoptim\[cuda\]"'):
        adam_call(device)
    np.testing.assert_array_equal(host(device["param"]), values["param"])
    assert "cuda" not in pyoptim.available_backends()
    p = values["param"].copy()
    pyoptim.functional.sgd(p, values["grad"], step=1, lr=0.1, backend="numpy")
    assert not np.array_equal(p, values["param"])


def test_importing_pyoptim_does_not_import_numba(tmp_path):
    code = ("import sys, numpy as np, pyoptim; "
            "p = np.ones(4, np.float32); pyoptim.functional.sgd(p, p.copy(), step=1, lr=0.5, "
            "backend='numpy'); assert p[0] == 0.5; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'numba_cuda')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=tmp_path)  # the installed pyoptim, not the checkout's
    assert done.stdout.strip() == "[]"


def test_available_backends_lists_cuda():
    assert "cuda" in pyoptim.available_backends()


def test_every_case_has_a_cuda_rule():
    # the parity suite runs every case; here: every optimizer of _spec has a rule and a kernel
    kernels = {c.spec.kernel for c in CASES} - {k for b, k in PENDING if b == "cuda"}
    from pyoptim import _cuda_rules

    assert kernels == set(_cuda_rules.RULES)
