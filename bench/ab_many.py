"""Two builds of pyoptim._core side by side on the many-array step (_core.step over lists of
arrays): this checkout's and another (a .so file), one thread, Adam float32, the arrays moved to
new memory every round as `pyoptim bench` moves them (pyoptim.bench._cells.Mover), and a 32 MB
pass between rounds so that each timed step starts from caches another contestant has used.

    python bench/ab_many.py path/to/other/_core.cpython-311-x86_64-linux-gnu.so \\
        [--shapes 2000x1,2000x1000] [--rounds 60]

Build the other one as bench/ab_core.py says. 2000x1 shows the per-array cost of a step (its
checks), 2000x1000 the whole step. Before timing, this build is checked against
pyoptim.reference over 3 steps of 7 arrays (bit for bit) and the two builds against each other
on the first shape. Reported per shape: median ms of each build and the median of the
per-round ratios this/other (below 1: this build is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ab_core import _load
from many_layout import _step, check_reference
from pyoptim import _cpu
from pyoptim.bench._cells import Mover


def _arrays(count: int, size: int, rng) -> list:
    """params, grads, exp_avg, exp_avg_sq: `count` arrays of `size` elements each."""
    return [[rng.standard_normal(size).astype(np.float32) for _ in range(count)],
            [rng.standard_normal(size).astype(np.float32) for _ in range(count)],
            [np.zeros(size, np.float32) for _ in range(count)],
            [np.zeros(size, np.float32) for _ in range(count)]]


def _validate(cores: dict, count: int, size: int) -> None:
    check_reference(cores["this"], "this build", _arrays(7, 1000, np.random.default_rng(1)))
    results = []
    for core in cores.values():
        arrays = _arrays(count, size, np.random.default_rng(2))
        for t in range(1, 4):
            _step(core, arrays, t)
        results.append(arrays)
    for a, b in zip(sum(results[0], []), sum(results[1], [])):
        if not np.array_equal(a.view(np.uint8), b.view(np.uint8)):
            raise SystemExit("the two builds compute different bits")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other")
    parser.add_argument("--shapes", default="2000x1,2000x1000")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    cores = {"this": _cpu.core(), "other": _load(args.other)}
    for core in cores.values():
        core.set_num_threads(1)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    _validate(cores, *shapes[0])
    evict = np.zeros(8 << 20, np.float32)
    for count, size in shapes:
        arrays = _arrays(count, size, np.random.default_rng(3))
        move = Mover(0)
        times = {key: [] for key in cores}
        t = 0
        for r in range(args.rounds):
            arrays = [[move(a) for a in group] for group in arrays]
            for key in (("this", "other") if r % 2 else ("other", "this")):
                t += 1
                _step(cores[key], arrays, t)  # untimed, as the bench's primed step
                evict += 1
                t += 1
                start = time.perf_counter()
                _step(cores[key], arrays, t)
                times[key].append(time.perf_counter() - start)
        ratio = statistics.median(np.array(times["this"]) / np.array(times["other"]))
        this, other = (statistics.median(times[k]) * 1e3 for k in ("this", "other"))
        print(f"adam fp32 {count}x{size}: other {other:.3f} ms, this {this:.3f} ms, "
              f"this/other {ratio:.3f}")


if __name__ == "__main__":
    main()
