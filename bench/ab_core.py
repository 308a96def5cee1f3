"""Two builds of pyoptim._core side by side: this checkout's and another (a .so file), timed
interleaved step by step in one process, one thread, on the same buffers.

    python bench/ab_core.py path/to/other/_core.cpython-311-x86_64-linux-gnu.so [--repeats 30]

Build the other one from another commit, e.g.
    git archive <commit> | tar -x -C /tmp/other && pip wheel --no-build-isolation --no-deps \\
        -w /tmp/other/dist /tmp/other && python -m zipfile -e /tmp/other/dist/*.whl /tmp/other/x
Both builds are first checked to compute the same bits. Reported: median ns per element of each
and the ratio this/other (above 1: this build is slower), for optimizer steps and for the global
sum of squares (max_grad_norm's reduction).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import ml_dtypes
import numpy as np

from pyoptim import _cpu, _spec

F32 = np.float32
CASES = [  # (label, optimizer, hyperparameters, param dtype, state dtype)
    ("adam fp32", "adam", {}, F32, F32),
    ("adam bf16 (fp32 state)", "adam", {}, ml_dtypes.bfloat16, F32),
    ("sgd momentum fp32", "sgd", {"momentum": 0.9}, F32, F32),
    ("lamb fp32", "lamb", {}, F32, F32),
    ("lamb fp16 (fp32 state)", "lamb", {}, np.float16, F32),
    ("lamb fp16/fp16/fp16", "lamb", {}, np.float16, np.float16),
    ("lamb bf16 (fp32 state)", "lamb", {}, ml_dtypes.bfloat16, F32),
    ("lamb bf16/bf16/bf16", "lamb", {}, ml_dtypes.bfloat16, ml_dtypes.bfloat16),
]
SUM_OF_SQUARES_DTYPES = (np.float32, np.float16)  # max_grad_norm's reduction over one array


def _load(path):
    spec = importlib.util.spec_from_file_location("other._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stepper(name, given, n, dtype, state_dtype, rng):
    opt = _spec.OPTIMIZERS[name]
    hp = opt.hyperparameters(given)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 0.01).astype(dtype)
    states = [np.zeros(n, state_dtype) if s in opt.needed_states(hp) else None
              for s in opt.states]
    slots = [[s] if s is not None else None for s in states]
    flags, scalars = opt.flag_mask(hp, 5), opt.scalars(hp, 5)
    return p, states, lambda core: core.step(opt.kernel, flags, [p], [g], slots, scalars)


def _time(cores, label, call, n, repeats):
    """call(core) on both builds interleaved, 3 untimed rounds first; prints ns per element."""
    times = {k: [] for k in cores}
    for r in range(repeats + 3):
        for key, core in cores.items():
            start = time.perf_counter()
            call(core)
            if r >= 3:
                times[key].append((time.perf_counter() - start) / n * 1e9)
    this, other = (statistics.median(times[k]) for k in ("this", "other"))
    print(f"{label:24s} 2^{n.bit_length() - 1}: other {other:.3f} ns, this {this:.3f} ns, "
          f"this/other {this / other:.3f}")


def _check_sum_of_squares(cores, dtype):
    """Both builds' global sum of squares (max_grad_norm's reduction) to the bit: sizes across
    the float16 pieces, the SIMD tails and the blocks, 1 and 2 threads, an infinity."""
    rng = np.random.default_rng(2)
    cases = [[(rng.standard_normal(n) * 100).astype(dtype), rng.standard_normal(7).astype(dtype)]
             for n in (0, 1, 7, 31, 513, 1000, 4099, 3_000_017)]
    cases.append([rng.standard_normal(10000).astype(dtype)])
    cases[-1][0][5000] = np.inf
    for threads in (1, 2):
        for core in cores.values():
            core.set_num_threads(threads)
        for arrays in cases:
            this, other = (core.sum_of_squares(arrays) for core in cores.values())
            if repr(this) != repr(other):
                raise SystemExit(f"sum of squares {np.dtype(dtype).name}: the two builds differ")
    for core in cores.values():
        core.set_num_threads(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cores = {"this": _cpu.core(), "other": _load(args.other)}
    for core in cores.values():
        core.set_num_threads(1)
    rng = np.random.default_rng(0)
    for label, name, given, dtype, state_dtype in CASES:
        # same bits from both builds
        results = []
        for core in cores.values():
            p, states, step = _stepper(name, given, 4099, dtype, state_dtype,
                                       np.random.default_rng(1))
            for _ in range(3):
                step(core)
            results.append([p.copy()] + [s.copy() for s in states if s is not None])
        for a, b in zip(*results):
            if not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
                raise SystemExit(f"{label}: the two builds compute different bits")
        for n in (1 << 20, 1 << 24):
            _, _, step = _stepper(name, given, n, dtype, state_dtype, rng)
            _time(cores, label, step, n, args.repeats)
    for dtype in SUM_OF_SQUARES_DTYPES:
        _check_sum_of_squares(cores, dtype)
        for n in (1 << 20, 1 << 24):
            x = rng.standard_normal(n).astype(dtype)
            _time(cores, f"sum of squares {np.dtype(dtype).name}",
                  lambda core, x=x: core.sum_of_squares([x]), n, args.repeats)


if __name__ == "__main__":
    main()
