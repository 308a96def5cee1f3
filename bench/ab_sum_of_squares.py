"""Two builds of pyoptim._core side by side on the global sum of squares (max_grad_norm's
reduction): this checkout's and another's _core .so, one thread, interleaved, after checking
that both give the same bits (float16 over sizes across pieces and blocks, 1 and 2 threads, an
infinity). Reported: median ns per element and the ratio this/other.

    python bench/ab_sum_of_squares.py path/to/other/_core.cpython-311-x86_64-linux-gnu.so
"""
import importlib.util, statistics, time, sys
import numpy as np
from pyoptim import _cpu
spec = importlib.util.spec_from_file_location("other._core", sys.argv[1])
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
cores = {"this": _cpu.core(), "other": old}
for c in cores.values(): c.set_num_threads(1)
rng = np.random.default_rng(0)
# same bits over sizes across pieces, tails, blocks, threads; NaN/Inf too
for threads in (1, 2):
    for c in cores.values(): c.set_num_threads(threads)
    for n in (0, 1, 7, 31, 513, 1000, 4099, 3_000_017):
        arrs = [(rng.standard_normal(n) * 100).astype(np.float16), rng.standard_normal(7).astype(np.float16)]
        a, b = (cores[k].sum_of_squares(arrs) for k in ("this", "other"))
        assert repr(a) == repr(b), (n, a, b)
    x = rng.standard_normal(10000).astype(np.float16); x[5000] = np.inf
    assert repr(cores["this"].sum_of_squares([x])) == repr(cores["other"].sum_of_squares([x]))
print("same bits")
for c in cores.values(): c.set_num_threads(1)
for dtype in (np.float16, np.float32):
    for n in (1 << 20, 1 << 24):
        x = rng.standard_normal(n).astype(dtype)
        t = {k: [] for k in cores}
        for r in range(23):
            for k, c in cores.items():
                s = time.perf_counter(); c.sum_of_squares([x]); d = time.perf_counter() - s
                if r >= 3: t[k].append(d / n * 1e9)
        th, ot = statistics.median(t["this"]), statistics.median(t["other"])
        print(f"{np.dtype(dtype).name} 2^{n.bit_length()-1}: other {ot:.3f} ns, this {th:.3f} ns, this/other {th/ot:.3f}")
