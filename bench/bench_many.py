"""Many arrays, one call: what a step over thousands of small arrays costs more than a step over
one flat buffer of the same size.

    python bench/bench_many.py [--arrays 2000] [--size 1000] [--threads 1] [--repeats 30]

Contestants (Adam, float32, lr=1e-3), timed interleaved step by step in one run, median of the
repeats after a warm-up:

  flat        pyoptim.Adam over one buffer of arrays * size elements
  many        pyoptim.Adam over `arrays` separate arrays of `size` elements (one Plan call)
  many-views  pyoptim.Adam over `arrays` views of one flat buffer (params and grads)
  flat-clip / many-clip   `flat` / `many` with max_grad_norm=1.0 (one more read pass over the
              grads, for the global norm)
  torch-flat / torch-many   torch.optim.Adam(fused=True) on the same layouts (if torch is
              installed)
  empty       pyoptim.Adam over `arrays` empty arrays: the per-step cost without elements

Before timing, every pyoptim contestant is validated against pyoptim.reference (3 steps, param
and state compared elementwise, bit for bit). Reported: ms per step, the overhead per array over
the flat buffer in us, GB/s at 28 bytes per element (Adam reads p, g, m, v and writes p, m, v),
against the bandwidth of an Adam-shaped NumPy in-place pass measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyoptim
from pyoptim import reference

BYTES_PER_ELEMENT = 28


def _validate(make, arrays, size, rng):
    """Three steps of a contestant against the reference, bit for bit."""
    params, grads_fn, opt = make()
    views = list(params)
    copies = [p.copy() for p in views]
    states = [(np.zeros_like(p), np.zeros_like(p)) for p in copies]
    for t in range(1, 4):
        grads = grads_fn()
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        opt.step(grads if len(grads) > 1 else grads[0])
        flat_grads = grads if len(grads) == len(copies) else [grads[0]]
        for p, g, (m, v) in zip(copies, flat_grads, states):
            reference.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=1e-3)
    for i, (p, (m, v)) in enumerate(zip(copies, states)):
        for got, want in ((views[i], p), (opt.state[i]["exp_avg"], m),
                          (opt.state[i]["exp_avg_sq"], v)):
            if not np.array_equal(got, want):
                raise SystemExit(f"validation failed: array {i} differs from the reference")


def _bandwidth(n, repeats):
    """GB/s of an in-place NumPy pass shaped like Adam's traffic: p += g; m *= 0.9; v += m
    (reads p, g, m, v, m; writes p, m, v), counted as 28 bytes per element."""
    p, g, m, v = (np.ones(n, np.float32) for _ in range(4))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.add(p, g, out=p)
        np.multiply(m, 0.9, out=m)
        np.add(v, m, out=v)
        times.append(time.perf_counter() - t)
    return n * BYTES_PER_ELEMENT / statistics.median(times) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrays", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    pyoptim.set_num_threads(args.threads)
    n, k = args.arrays, args.size
    rng = np.random.default_rng(0)

    def separate():
        params = [rng.standard_normal(k).astype(np.float32) for _ in range(n)]
        grads = [rng.standard_normal(k).astype(np.float32) for _ in range(n)]
        return params, grads

    def views():
        params = pyoptim.flat.FlatBuffer([(k,)] * n, np.float32, align=4)
        params.buffer[...] = rng.standard_normal(n * k)
        grads = params.zeros_like()
        grads.buffer[...] = rng.standard_normal(n * k)
        return params.views, grads.views

    def flat():
        return [rng.standard_normal(n * k).astype(np.float32)], \
            [rng.standard_normal(n * k).astype(np.float32)]

    def contestant(layout, **options):
        params, grads = layout()
        opt = pyoptim.Adam(params, lr=1e-3, **options)
        return params, grads, opt

    def maker(layout, **options):
        def make():
            params, grads, opt = contestant(layout, **options)
            return params, (lambda: grads), opt
        return make

    for layout in (flat, separate, views):
        _validate(maker(layout), n, k, rng)

    steps = {}
    for name, layout, options in (("flat", flat, {}), ("many", separate, {}),
                                  ("many-views", views, {}),
                                  ("flat-clip", flat, {"max_grad_norm": 1.0}),
                                  ("many-clip", separate, {"max_grad_norm": 1.0})):
        params, grads, opt = contestant(layout, **options)
        steps[name] = (lambda o, g: lambda: o.step(g))(opt, grads)
    empty = pyoptim.Adam([np.zeros(0, np.float32) for _ in range(n)])
    empty_grads = [np.zeros(0, np.float32) for _ in range(n)]
    steps["empty"] = lambda: empty.step(empty_grads)

    try:
        import torch

        torch.set_num_threads(args.threads)

        def torch_step(tensors):
            params = [torch.nn.Parameter(t) for t in tensors]
            opt = torch.optim.Adam(params, lr=1e-3, fused=True)
            for p in params:
                p.grad = torch.randn_like(p)
            return opt.step

        steps["torch-flat"] = torch_step([torch.randn(n * k)])
        steps["torch-many"] = torch_step([torch.randn(k) for _ in range(n)])
    except ImportError:
        pass

    times = {name: [] for name in steps}
    for _ in range(3):  # warm-up
        for step in steps.values():
            step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    bandwidth = _bandwidth(n * k, 10)

    median = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"Adam float32, {n} arrays x {k} elements ({n * k} elements), {args.threads} thread(s), "
          f"median of {args.repeats}; simd: {pyoptim._cpu.core().simd_target()}")
    print(f"NumPy in-place Adam-shaped pass: {bandwidth:.1f} GB/s")
    print(f"{'contestant':<12} {'ms/step':>9} {'GB/s':>7} {'% of NumPy':>10} "
          f"{'us/array over its flat':>23}")
    for name, t in median.items():
        flat_name = "torch-flat" if name.startswith("torch") else \
            "flat-clip" if name.endswith("clip") else "flat"
        gbs = n * k * BYTES_PER_ELEMENT / t / 1e9 if name != "empty" else float("nan")
        over = (t - median[flat_name]) / n * 1e6 if name != flat_name and name != "empty" \
            else float("nan")
        extra = f"{over:23.3f}" if over == over else f"{'':>23}"
        if name == "empty":
            extra = f"{t / n * 1e6:19.3f} /array"
        print(f"{name:<12} {t * 1e3:9.3f} {gbs:7.1f} {100 * gbs / bandwidth:9.0f}% {extra}")


if __name__ == "__main__":
    main()
