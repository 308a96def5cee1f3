"""Where 2000 arrays lie, and what it costs the many-array step: _core.step (Adam float32, one
thread) over the same 2,000,000 elements in different layouts, timed round robin in one run.

    python bench/many_layout.py [--count 2000] [--size 1000] [--rounds 40]

Layouts (each a set of params, grads, exp_avg and exp_avg_sq):
  flat              one array of count * size elements each (the kernel alone, for reference)
  separate          count arrays each, allocated one after another (as a model is built)
  separate-shuffled the same kind of arrays, handed to the step in an order unrelated to where
                    they lie (as after many allocations and frees: pyoptim bench's Mover)
  views             count views of one buffer each, in order
  views-shuffled    count views of one buffer each, in shuffled order
  empty-separate    count arrays of 1 element each, shuffled: the per-array cost alone
A 32 MB pass runs before each timed step, as another contestant's step would. Before timing,
each layout's step is checked against pyoptim.reference (3 steps, bit for bit, on its first
arrays). Reported: median ms per step and the median per-round ratio to `flat`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pyoptim import _cpu, _spec, reference

ADAM = _spec.OPTIMIZERS["adam"]
HP = ADAM.hyperparameters({})
BUFFERS = 4  # params, grads, exp_avg, exp_avg_sq


def _step(core, arrays: list, t: int) -> None:
    params, grads, exp_avg, exp_avg_sq = arrays
    slots = [exp_avg if s == "exp_avg" else exp_avg_sq if s == "exp_avg_sq" else None
             for s in ADAM.states]
    core.step(ADAM.kernel, ADAM.flag_mask(HP, t), params, grads, slots, ADAM.scalars(HP, t))


def _fill(arrays: list, rng) -> list:
    for k, group in enumerate(arrays):
        for a in group:
            a[...] = rng.standard_normal(a.size) if k < 2 else 0.0
    return arrays


def _layouts(count: int, size: int, rng) -> dict:
    out = {"flat": [[np.empty(count * size, np.float32)] for _ in range(BUFFERS)]}
    out["separate"] = [[np.empty(size, np.float32) for _ in range(count)]
                       for _ in range(BUFFERS)]
    pool = [np.empty(size, np.float32) for _ in range(BUFFERS * count)]
    order = rng.permutation(BUFFERS * count)
    out["separate-shuffled"] = [[pool[j] for j in order[k * count:(k + 1) * count]]
                                for k in range(BUFFERS)]
    stride = size + 16  # elements: each view starts 64 bytes after the last one ends
    buffer = np.empty(BUFFERS * count * stride, np.float32)
    out["views"] = [[buffer[(k * count + i) * stride:][:size] for i in range(count)]
                    for k in range(BUFFERS)]
    other = np.empty_like(buffer)  # its own: two layouts over one buffer would fill each other
    out["views-shuffled"] = [[other[j * stride:][:size] for j in order[k * count:(k + 1) * count]]
                             for k in range(BUFFERS)]
    tiny = [np.empty(1, np.float32) for _ in range(BUFFERS * count)]
    out["empty-separate"] = [[tiny[j] for j in order[k * count:(k + 1) * count]]
                             for k in range(BUFFERS)]
    return {name: _fill(arrays, rng) for name, arrays in out.items()}


def check_reference(core, name: str, arrays: list) -> None:
    """Three steps of `core` over arrays (params, grads, exp_avg, exp_avg_sq lists) against
    pyoptim.reference on copies, bit for bit (bench/ab_many.py uses it too)."""
    want = [[a.copy() for a in group] for group in arrays]
    for t in range(1, 4):
        _step(core, arrays, t)
        for p, g, m, v in zip(*want):
            reference.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, **HP)
    for got, expected in zip(arrays, want):
        for a, b in zip(got, expected):
            if not np.array_equal(a, b):
                raise SystemExit(f"{name}: the step differs from pyoptim.reference")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    core = _cpu.core()
    core.set_num_threads(1)
    rng = np.random.default_rng(0)
    layouts = _layouts(args.count, args.size, rng)
    for name, arrays in layouts.items():
        check_reference(core, name, [group[:3] for group in arrays])
    evict = np.zeros(8 << 20, np.float32)
    times = {name: [] for name in layouts}
    t = 3
    for _ in range(args.rounds):
        for name in rng.permutation(list(layouts)):
            t += 1
            _step(core, layouts[name], t)
            evict += 1
            start = time.perf_counter()
            _step(core, layouts[name], t)
            times[name].append(time.perf_counter() - start)
    flat = np.array(times["flat"])
    print(f"adam fp32, {args.count} x {args.size} elements, one thread, {args.rounds} rounds")
    for name, samples in times.items():
        ratio = statistics.median(np.array(samples) / flat)
        print(f"{name:18s} {statistics.median(samples) * 1e3:7.3f} ms   {ratio:5.2f}x flat")


if __name__ == "__main__":
    main()
