"""pyoptim.torch's compiled reader of grads (pyoptim/_torch_reader.py, .cpp): it must accept
exactly the grads the Python checks accept (Optimizer._grad_addresses), give the same addresses,
hold the grads while a step runs, move the version counters torch.autograd.graph.increment_version
moves, and, where it cannot be built, leave pyoptim.torch stepping as without it. Training
parity with and without it: test_torch_optim.py, test_torch_flat.py and test_torch_amp.py run
every test both ways (the grad_reader fixture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from test_torch_optim import make_model, needs_core, pt, torch

from pyoptim import _torch_reader

pytestmark = needs_core


def _params():
    """Params of every dtype pyoptim.torch takes, each with a grad but the last."""
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.float32)
    params = [torch.nn.Parameter(torch.randn(3, 5).to(d)) for d in dtypes]
    for p in params[:-1]:
        p.grad = torch.randn_like(p)
    return params


def _reader(opt):
    assert opt._reader is not None, "the compiled reader is built in CI"
    return opt._reader


def test_read_gives_the_grads_addresses_as_the_python_checks_do():
    params = _params()
    opt = pt.SGD(params, lr=0.1)
    reader = _reader(opt)
    python = opt._grad_addresses()
    assert python is not None
    assert reader.read()
    try:
        assert opt._reader_addresses.tolist() == python.addresses
        assert python.addresses == [p.grad.data_ptr() for p in params[:-1]] + [0]
    finally:
        reader.release()


def _other_dtype(p):
    p.grad_dtype = None  # torch 2.13 refuses a grad of another dtype unless told
    p.grad = p.grad.double()


# what may happen to a grad or param between steps, each of which the Python checks decline
CHANGES = {
    "param moved": lambda p: setattr(p, "data", p.data.clone()),
    "grad of another dtype": _other_dtype,
    "grad transposed": lambda p: setattr(p, "grad", p.grad.t().contiguous().t()),
    "grad resized in place": lambda p: p.grad.resize_(2, 2),
    "grad with a negative bit": lambda p: setattr(p, "grad", torch._neg_view(p.grad)),
    "sparse grad": lambda p: setattr(p, "grad", p.grad.to_sparse()),
    "grad without memory": lambda p: setattr(p, "grad", torch._efficientzerotensor(p.shape, dtype=p.dtype)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_read_declines_what_the_python_checks_decline(change):
    """Declined, the step goes the general way, which views, copies or refuses each grad by
    name; the reader never holds grads after declining."""
    params = _params()
    opt = pt.SGD(params, lr=0.1)
    reader = _reader(opt)
    with torch.no_grad():
        CHANGES[change](params[2])
    assert opt._grad_addresses() is None
    grads = [p.grad for p in params[:-1]]
    counts = [g._use_count() for g in grads]
    assert not reader.read()
    assert [g._use_count() for g in grads] == counts


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_declined_step_is_the_step_without_the_reader(change, monkeypatch):
    """The same params, or the same error, as pyoptim.torch with the Python checks alone."""
    outcomes = []
    for reader in (True, False):
        if not reader:
            monkeypatch.setattr(_torch_reader, "_loaded", None)
        torch.manual_seed(0)
        params = _params()
        opt = pt.SGD(params, lr=0.1, momentum=0.9)
        assert (opt._reader is not None) == reader
        opt.step()
        with torch.no_grad():
            CHANGES[change](params[2])
        try:
            opt.step()
            outcomes.append([p.detach().float().clone() for p in params])
        except (TypeError, ValueError, RuntimeError) as e:
            outcomes.append(f"{type(e).__name__}: {e}")
    if isinstance(outcomes[0], str):
        assert outcomes[0] == outcomes[1]
    else:
        assert all(torch.equal(a, b) for a, b in zip(*outcomes))


def test_grads_are_held_from_read_to_release_and_one_read_at_a_time():
    """The kernels run without the GIL: a grad dropped by another thread meanwhile (zero_grad)
    must keep its memory. A second read before release declines (that step then goes the
    general way, where the engine's lock refuses it)."""
    params = _params()
    opt = pt.SGD(params, lr=0.1)
    reader = _reader(opt)
    grads = [p.grad for p in params[:-1]]
    counts = [g._use_count() for g in grads]
    assert reader.read()
    assert [g._use_count() for g in grads] == [c + 1 for c in counts]
    assert not reader.read()
    reader.release()
    assert [g._use_count() for g in grads] == counts
    assert reader.read()
    reader.release()


def test_a_step_moves_the_version_counters_of_the_params_it_wrote():
    """As torch.autograd.graph.increment_version: the params with a grad, once; a backward
    through a graph that saved one before the step then raises."""
    params = _params()
    opt = pt.SGD(params, lr=0.1)
    before = [p._version for p in params]
    opt.step()
    assert [p._version - b for p, b in zip(params, before)] == [1, 1, 1, 1, 0]
    w = params[0]
    loss = (w * w).sum()
    w.grad = torch.ones_like(w)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_params_of_a_tensor_subclass_are_read_from_python():
    """A subclass's .grad may be its own (__torch_function__): only torch.Tensor and
    torch.nn.Parameter params get the reader."""
    class Tagged(torch.Tensor):
        pass

    tagged = torch.randn(4).as_subclass(Tagged).requires_grad_()
    tagged.grad = torch.ones(4)
    plain = torch.nn.Parameter(torch.randn(4))
    plain.grad = torch.ones(4)
    assert pt.SGD([plain], lr=0.1)._reader is not None
    opt = pt.SGD([tagged, plain], lr=0.1)
    assert opt._reader is None
    before = tagged.detach().clone()
    opt.step()
    assert torch.equal(tagged.detach(), before - 0.1)


def test_the_module_name_is_a_hash_of_the_source_and_torch(monkeypatch, tmp_path):
    name = _torch_reader.module_name()
    assert name.isidentifier() and name.startswith("_torch_reader_")
    source = tmp_path / "_torch_reader.cpp"
    source.write_bytes(_torch_reader.SOURCE.read_bytes() + b"\n")
    monkeypatch.setattr(_torch_reader, "SOURCE", source)
    assert _torch_reader.module_name() != name


_TRAIN = """
import json, warnings, torch, pyoptim.torch as pt
from test_torch_optim import make_model, make_data, loss_of
torch.manual_seed(0)
model = make_model()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    opts = [pt.Adam(model.parameters(), lr=0.01), pt.Adam(model.parameters(), lr=0.01)]
opt = opts[0]
for _ in range(7):
    opt.zero_grad()
    loss_of(model, make_data()).backward()
    opt.step()
print(json.dumps({"reader": opt._reader is not None,
                  "warnings": [str(w.message) for w in caught],
                  "params": [p.detach().tolist() for p in model.parameters()]}))
"""


def _train(tmp_path, **env):
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(__file__), **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_a_compiler_it_warns_once_and_steps_as_when_off(tmp_path):
    """CXX that fails: one RuntimeWarning naming the way out, then the Python checks, with the
    params PYOPTIM_TORCH_READER=0 gives (which builds nothing and warns nothing)."""
    cache = tmp_path / "cache"
    failed = _train(tmp_path, CXX="false", PYOPTIM_CACHE_DIR=str(cache))
    off = _train(tmp_path, PYOPTIM_TORCH_READER="0", PYOPTIM_CACHE_DIR=str(cache))
    assert failed["reader"] is off["reader"] is False
    warnings = failed["warnings"]
    assert len(warnings) == 1 and "could not be built" in warnings[0] and \
        "PYOPTIM_TORCH_READER=0" in warnings[0]
    assert off["warnings"] == []
    assert failed["params"] == off["params"]
    assert not any(cache.glob("*.so")), "a failed build leaves no file behind"


def test_with_the_reader_the_params_are_those_without(tmp_path):
    """A fresh process loads the reader built before (no build, no warning)."""
    on, off = _train(tmp_path), _train(tmp_path, PYOPTIM_TORCH_READER="0")
    assert (on["reader"], off["reader"]) == (True, False)
    assert on["warnings"] == off["warnings"] == []
    assert on["params"] == off["params"]


_FAKE_COMPILER = """
import sys
open(sys.argv[sys.argv.index("-o") + 1], "wb").write(b"not a library")
"""


def _age(path, days):
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def test_a_build_prunes_other_builds_left_unloaded_for_a_month(tmp_path):
    """Each pyoptim source change or torch upgrade adds a build to the cache: building one
    removes the files of other builds not loaded for KEEP_DAYS days, and keeps the recent ones
    (another environment may load them). A compiler that writes a file that is no library: the
    build is renamed into place and prunes; loading it then fails (one warning)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old = [cache / "_torch_reader_00000000000000000000.cpython-311-x86_64-linux-gnu.so",
           cache / "_torch_reader_00000000000000000000.lock",
           cache / "_torch_reader_11111111111111111111abcd.tmp.so"]
    recent = cache / "_torch_reader_22222222222222222222.cpython-311-x86_64-linux-gnu.so"
    mine = cache / "notes.txt"  # not a build's
    for path, days in [*((p, _torch_reader.KEEP_DAYS + 1) for p in old),
                       (recent, _torch_reader.KEEP_DAYS - 1), (mine, 400)]:
        path.write_bytes(b"x")
        _age(path, days)
    compiler = tmp_path / "fake_cc.py"
    compiler.write_text(_FAKE_COMPILER)
    failed = _train(tmp_path, CXX=f"{sys.executable} {compiler}", PYOPTIM_CACHE_DIR=str(cache))
    assert failed["reader"] is False and len(failed["warnings"]) == 1
    left = {p.name for p in cache.iterdir()}
    assert not left & {p.name for p in old}
    assert {recent.name, mine.name} <= left
    name = _torch_reader.module_name()
    assert {p for p in left if p.startswith(name)} == {
        name + sysconfig.get_config_var("EXT_SUFFIX"), name + ".lock"}


def test_loading_a_build_renews_its_time(tmp_path):
    """A build loaded is in use: a load renews its time (once a day), so that builds of
    other environments do not prune it."""
    assert _torch_reader.reader_type() is not None
    name = _torch_reader.module_name() + sysconfig.get_config_var("EXT_SUFFIX")
    cache = tmp_path / "cache"
    cache.mkdir()
    build = cache / name
    shutil.copy(_torch_reader.cache_dir() / name, build)
    _age(build, _torch_reader.KEEP_DAYS - 2)
    assert _train(tmp_path, PYOPTIM_CACHE_DIR=str(cache))["reader"] is True
    assert time.time() - build.stat().st_mtime < 3600


@pytest.mark.slow
def test_processes_that_start_together_build_once(tmp_path):
    """A fresh cache: two processes (data-parallel ranks) make an optimizer at once; one builds
    (one message on stderr), the other waits on the lock and loads that build; no temporary
    file is left."""
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__),
           "PYOPTIM_CACHE_DIR": str(cache)}
    runs = [subprocess.Popen([sys.executable, "-c", _TRAIN], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    results = [json.loads(out) for out, _ in outputs]
    assert [r["reader"] for r in results] == [True, True]
    assert results[0]["params"] == results[1]["params"]
    assert sum(err.count("building its reader") for _, err in outputs) == 1
    assert [f.suffix for f in cache.iterdir() if f.suffix != ".lock"] == [".so"]
