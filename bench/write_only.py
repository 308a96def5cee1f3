"""ASGD's write-only state buffer against the same step reading it, one thread.

    python bench/write_only.py [--size 16777216] [--rounds 15]

With torch's default t0 = 1e6, ASGD's mu stays 1 and a step sets ax = p: it writes ax without
reading it (csrc/rules.h, Asgd). With t0 = 0, mu < 1 and the step reads ax and writes it back.
`pyoptim bench` counts 20 bytes per element for both (p read and written, g read, ax read and
written: a plain store of a line the core does not hold reads it from memory first). This
times, round robin, the median over rounds of one call each: ASGD with the write-only ax, ASGD
reading ax, and SGD with momentum (the same 20 bytes, every array read and written), on
separate 64-byte-aligned arrays.

Before timing, each of the three is checked against pyoptim.reference (the NumPy
specification) on copies of its arrays: 7 steps, every buffer equal bit for bit.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyoptim
from pyoptim import functional as F
from pyoptim.bench._cells import empty


def filled(n: int, seed: int) -> np.ndarray:
    a = empty(n, np.float32)
    a[:] = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    return a


class Case:
    """One contestant: its arrays and a step that advances its own step count."""

    def __init__(self, name: str, n: int, seed: int):
        self.name, self.t = name, 1
        self.p, self.g, self.s = filled(n, seed), filled(n, seed + 1), filled(n, seed + 2)
        self.host = {"eta": np.array([1e-2], np.float32), "mu": np.array([1.0], np.float32)}

    def step(self, p, g, s, host, t, backend=None):
        if self.name == "sgd momentum":
            F.sgd(p, g, momentum_buffer=s, step=t, lr=1e-3, momentum=0.9, backend=backend)
        else:
            t0 = 1e6 if self.name == "asgd, ax write-only" else 0.0
            F.asgd(p, g, ax=s, **host, step=t, t0=t0, backend=backend)

    def validate(self) -> None:
        runs = []
        for backend in (None, "numpy"):
            arrays = [a.copy() for a in (self.p, self.g, self.s)]
            host = {k: v.copy() for k, v in self.host.items()}
            for t in range(1, 8):
                self.step(*arrays, host, t, backend)
            runs.append(arrays + list(host.values()))
        for got, want in zip(*runs):
            if not np.array_equal(got, want):
                raise SystemExit(f"{self.name}: differs from pyoptim.reference")

    def timed(self) -> float:
        start = time.perf_counter()
        self.step(self.p, self.g, self.s, self.host, self.t)
        self.t += 1
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 24)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    pyoptim.set_num_threads(1)
    cases = [Case(name, args.size, 3 * i) for i, name in
             enumerate(("asgd, ax write-only", "asgd, ax read", "sgd momentum"))]
    for case in cases:
        case.validate()
        for _ in range(3):
            case.timed()
    times = {case.name: [] for case in cases}
    for _ in range(args.rounds):
        for case in cases:
            times[case.name].append(case.timed())
    base = statistics.median(times["sgd momentum"])
    print(f"{args.size} elements, fp32, one thread, median of {args.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:22s} {med * 1e3:8.3f} ms  {20 * args.size / med / 1e9:6.1f} GB/s at 20 B/el"
              f"  {med / base:5.2f}x sgd momentum's time")


if __name__ == "__main__":
    main()
