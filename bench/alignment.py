"""Adam fp32, 2^24 elements, 1 thread: pyoptim on arrays starting at various byte offsets past a
64-byte boundary (all four arrays at the same offset, as one allocator places them), interleaved,
median of 25 rounds, as a ratio to offset 0. Offset 64 is aligned again: its ratio shows the noise.

    python bench/alignment.py [threads]
"""
import time, numpy as np, pyoptim, sys
pyoptim.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
n = 1 << 24
OFFS = (0, 64, 16, 32, 48, 4)
def arr(offset):
    raw = np.empty(n * 4 + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    a = raw[start:start + n * 4].view(np.float32)
    a[:] = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    return a
sets = {off: [arr(off) for _ in range(4)] for off in OFFS}
def run(off):
    p, g, m, v = sets[off]
    t = time.perf_counter()
    pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=5, lr=1e-3)
    return time.perf_counter() - t
times = {o: [] for o in OFFS}
for r in range(25):
    for off in OFFS:
        times[off].append(run(off))
med = {k: np.median(v) for k, v in times.items()}
print({k: f"{v/med[0]:.3f}" for k, v in med.items()})
