"""Threads: the result never depends on the thread count; OMP_NUM_THREADS and set_num_threads set
it; the GIL is released while the kernel runs; many arrays in one call equal one call each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, _spec
from cases import DTYPES, FULL_CASES
from harness import BIG, initial_state, seed

pytestmark = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")


@pytest.fixture
def threads():
    saved = pyoptim.get_num_threads()
    yield pyoptim.set_num_threads
    pyoptim.set_num_threads(saved)


def _trajectory(case, combo, n, steps=7):
    param_dtype, grad_dtype, state_dtype = (DTYPES[d] for d in combo)
    rng = np.random.default_rng(seed("threads", case.id, combo))
    p = rng.standard_normal(n).astype(param_dtype)
    st = {k: initial_state(case, k, n, state_dtype, rng) for k in case.states()}
    st.update(case.initial_host())
    fn = getattr(pyoptim.functional, case.optimizer)
    for t in range(1, steps + 1):
        fn(p, rng.standard_normal(n).astype(grad_dtype), **st, step=t, backend="cpu",
           **case.hyperparameters)
    return p, st


@pytest.mark.parametrize("case", FULL_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("combo", [("float32",) * 3, ("bfloat16", "bfloat16", "float32"),
                                   ("float64", "float32", "float32")], ids=str)
def test_one_and_two_threads_give_identical_bits(threads, case, combo):
    results = []
    for count in (1, 2):
        threads(count)
        results.append(_trajectory(case, combo, BIG))
    (p1, s1), (p2, s2) = results
    assert p1.tobytes() == p2.tobytes()
    for name in s1:
        assert s1[name].tobytes() == s2[name].tobytes(), name


def test_set_and_get_num_threads(threads):
    threads(1)
    assert pyoptim.get_num_threads() == 1
    threads(3)
    assert pyoptim.get_num_threads() == 3
    for bad in (0, -2):
        with pytest.raises(ValueError, match=r"n must be at least 1"):
            pyoptim.set_num_threads(bad)
    assert pyoptim.get_num_threads() == 3


_TOO_MANY = """
import numpy as np
import pyoptim
from pyoptim import _cpu, functional

core = _cpu.core()
try:
    pyoptim.set_num_threads(1 << 20)
except ValueError as e:
    print(e)
core._set_min_elements_per_thread(1)  # so that a small array asks for as many threads as it can
core._set_calling_thread_num_threads(1 << 20)  # a count from elsewhere (torch's) is capped
p, g = np.ones(1 << 20, np.float32), np.linspace(-1, 1, 1 << 20, dtype=np.float32)
want = p.copy()
functional.sgd(want, g, step=1, lr=0.5, backend="numpy")
functional.sgd(p, g, step=1, lr=0.5)
print("same" if (p == want).all() else "differs")
"""


def test_a_thread_count_beyond_the_bound_is_refused_or_capped(tmp_path):
    """libgomp crashes the process when asked for tens of thousands of threads (its team starts
    from the caller's stack): set_num_threads refuses counts above max(1024, processors), and a
    count that comes from elsewhere is capped at it. In a subprocess: before the bound, this
    crashed."""
    out = subprocess.run([sys.executable, "-c", _TOO_MANY], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    refused, result = out.stdout.strip().splitlines()
    assert re.fullmatch(r"set_num_threads: n must be at most \d+ \(1024, or the number of "
                        r"processors where there are more\), got 1048576", refused), refused
    assert result == "same"


@pytest.mark.parametrize("count", ["1", "3"])
def test_omp_num_threads_sets_the_default(count, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS=count)
    # run from a neutral directory: from the repository root, `import pyoptim` would find the
    # source tree (without the compiled module) instead of the installed package
    out = subprocess.run([sys.executable, "-c", "import pyoptim; print(pyoptim.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == count


_FORKED_CHILD = """
import multiprocessing as mp
import numpy as np
import pyoptim
from pyoptim import functional

n = 1 << 20  # two threads' worth
pyoptim.set_num_threads(2)
p = np.ones(n, np.float32)
functional.adam(p, np.full(n, 0.5, np.float32), exp_avg=np.zeros(n, np.float32),
                exp_avg_sq=np.zeros(n, np.float32), step=1, lr=0.1)  # threads start here


def child(queue):
    q = np.ones(n, np.float32)
    functional.adam(q, np.full(n, 0.5, np.float32), exp_avg=np.zeros(n, np.float32),
                    exp_avg_sq=np.zeros(n, np.float32), step=1, lr=0.1)
    try:
        pyoptim.set_num_threads(2)
        refused = ""
    except RuntimeError as e:
        refused = str(e)
    pyoptim.set_num_threads(1)
    queue.put((bool((q == p).all()), pyoptim.get_num_threads(), refused))


context = mp.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(queue,), daemon=True)
process.start()
process.join(60)
assert not process.is_alive(), "the forked child hangs"
same, threads, refused = queue.get(timeout=5)
assert same and threads == 1, (same, threads)
assert "forked after pyoptim was loaded" in refused and "'spawn'" in refused, refused
assert pyoptim.get_num_threads() == 2
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_steps_on_one_thread_instead_of_hanging(tmp_path):
    """OpenMP (libgomp) cannot start threads in a process forked after a parallel region ran:
    the child's next parallel step waited forever. A child forked after pyoptim was loaded
    steps on one thread (the same bits), reports 1 thread, and refuses more by name; the
    parent keeps its threads."""
    out = subprocess.run([sys.executable, "-c", _FORKED_CHILD], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_gil_is_released_during_a_step():
    """While one thread runs long steps, another Python thread keeps running."""
    n = 1 << 24
    p, g = np.zeros(n), np.ones(n)
    m, v = np.zeros(n), np.zeros(n)
    done = threading.Event()
    inside = []  # (start, end) of each step

    def worker():
        for t in range(1, 6):
            start = time.perf_counter()
            pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, backend="cpu")
            inside.append((start, time.perf_counter()))
        done.set()

    ticks = []
    thread = threading.Thread(target=worker)
    thread.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.0005)
    thread.join()
    during = sum(1 for t in ticks for s, e in inside if s + 0.002 < t < e - 0.002)
    assert during > 5, "the main thread did not run while the kernel ran: the GIL was held"


def test_many_arrays_in_one_call_equal_one_call_each():
    """The segment table: one C++ call over arrays of many sizes, with per-array scalar rows,
    equals separate calls (and crosses thread boundaries inside arrays)."""
    rng = np.random.default_rng(2)
    sizes = [0, 1, 7, 31, 1000, 4099, 70001, 3, 200003]
    lrs = [1e-3, 2e-3, 5e-3]
    opt = _spec.ADAM
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    separate = [(p.copy(), np.zeros_like(p), np.zeros_like(p)) for p in params]
    together = [(p.copy(), np.zeros_like(p), np.zeros_like(p)) for p in params]
    rows = [i % len(lrs) for i in range(len(sizes))]
    for t in range(1, 8):
        hps = [opt.hyperparameters(dict(lr=lr, weight_decay=0.01)) for lr in lrs]
        table = np.array([opt.scalars(hp, t) for hp in hps], np.float64)
        flags = opt.flag_mask(hps[0], t)
        _cpu.step(opt, flags, [a[0] for a in together], grads,
                  {"exp_avg": [a[1] for a in together], "exp_avg_sq": [a[2] for a in together]},
                  table, rows)
        for (p, m, v), g, r in zip(separate, grads, rows):
            pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=lrs[r],
                                    weight_decay=0.01, backend="cpu")
    for a, b in zip(together, separate):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
