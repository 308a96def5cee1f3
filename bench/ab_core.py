"""Two builds of pyoptim._core side by side: this checkout's and another (a .so file), timed
interleaved step by step in one process, one thread, on the same buffers.

    python bench/ab_core.py path/to/other/_core.cpython-311-x86_64-linux-gnu.so [--repeats 30]

Build the other one from another commit, e.g.
    git archive <commit> | tar -x -C /tmp/other && pip wheel --no-build-isolation --no-deps \\
        -w /tmp/other/dist /tmp/other && python -m zipfile -e /tmp/other/dist/*.whl /tmp/other/x
Both builds are first checked to compute the same bits. Reported: median ns per element of each
and the ratio this/other (above 1: this build is slower).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import ml_dtypes
import numpy as np

from pyoptim import _cpu, _spec

CASES = [  # (label, optimizer, hyperparameters, param dtype)
    ("adam fp32", "adam", {}, np.float32),
    ("adam bf16 (fp32 state)", "adam", {}, ml_dtypes.bfloat16),
    ("sgd momentum fp32", "sgd", {"momentum": 0.9}, np.float32),
    ("lamb fp32", "lamb", {}, np.float32),
    ("lamb fp16 (fp32 state)", "lamb", {}, np.float16),
]


def _load(path):
    spec = importlib.util.spec_from_file_location("other._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stepper(name, given, n, dtype, rng):
    opt = _spec.OPTIMIZERS[name]
    hp = opt.hyperparameters(given)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 0.01).astype(dtype)
    states = [np.zeros(n, np.float32) if s in opt.needed_states(hp) else None
              for s in opt.states]
    slots = [[s] if s is not None else None for s in states]
    flags, scalars = opt.flag_mask(hp, 5), opt.scalars(hp, 5)
    return p, states, lambda core: core.step(opt.kernel, flags, [p], [g], slots, scalars)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cores = {"this": _cpu.core(), "other": _load(args.other)}
    for core in cores.values():
        core.set_num_threads(1)
    rng = np.random.default_rng(0)
    for label, name, given, dtype in CASES:
        # same bits from both builds
        results = []
        for core in cores.values():
            p, states, step = _stepper(name, given, 4099, dtype, np.random.default_rng(1))
            for _ in range(3):
                step(core)
            results.append([p.copy()] + [s.copy() for s in states if s is not None])
        for a, b in zip(*results):
            if not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
                raise SystemExit(f"{label}: the two builds compute different bits")
        for n in (1 << 20, 1 << 24):
            _, _, step = _stepper(name, given, n, dtype, rng)
            times = {k: [] for k in cores}
            for r in range(args.repeats + 3):
                for key, core in cores.items():
                    start = time.perf_counter()
                    step(core)
                    if r >= 3:
                        times[key].append((time.perf_counter() - start) / n * 1e9)
            this, other = (statistics.median(times[k]) for k in ("this", "other"))
            print(f"{label:24s} 2^{n.bit_length() - 1}: other {other:.3f} ns, this {this:.3f} ns, "
                  f"this/other {this / other:.3f}")


if __name__ == "__main__":
    main()
