"""Adam fp32 on a GPU: pyoptim's CUDA kernel against torch's fused CUDA Adam and the GPU's
device-to-device copy bandwidth, measured in the same run.

    python bench/bench_cuda.py [--sizes 24,26,28] [--repeats 21] [--steps 10]
                               [--threads-per-block N] [--max-blocks N] [--json FILE]

Needs a CUDA GPU, torch with CUDA and pyoptim installed with its cuda extra
(pip install ".[cuda]"). For each size 2^k (fp32 elements):

1. Validation. pyoptim's step (through pyoptim.functional.adam on torch CUDA tensors) is compared
   with the NumPy reference element by element, param and both moments, over the whole buffer,
   for two steps; it must be equal to the bit. torch fused's step is compared with the reference
   too and its largest difference printed (it uses FMA: equal to a few ulps, not to the bit).
2. Warm-up: every contestant runs a few steps (kernels compiled, caches and clocks settled).
3. Timing, contestants interleaved (the order rotates each repeat): each contestant runs
   `--steps` steps back to back between two CUDA events, so that the GPU does not wait on the
   host between steps whenever the host keeps up; ms per step is the elapsed time / steps, and
   the median over `--repeats` is reported. Contestants:
     copy           dst.copy_(src) moving the same bytes as an Adam step (3.5 fp32 per element
                    read and written: 28 B/element), the bandwidth reference
     pyoptim        pyoptim.functional.adam on torch tensors (checks, zero-copy wrapping, launch)
     pyoptim-kernel the same compiled kernel launched directly, its arguments prepared once: the
                    kernel alone, without pyoptim's per-call host work
     torch-fused    torch.optim.Adam(fused=True).step()
   The buffers (4 x 2^k fp32 per Adam contestant, 1 GiB each at 2^28) are far larger than any
   L2 cache, so no flush is needed between repetitions.

Bytes per element for Adam fp32 without amsgrad: read p, g, m, v (16 B), write p, m, v (12 B):
28 B. GB/s = 28 * n / time; "% copy" compares with the copy's GB/s (read + written) at the same
size in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

BYTES_PER_ELEMENT = 28
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="24,26,28", help="log2 of the element counts")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads-per-block", type=int, default=None)
    parser.add_argument("--max-blocks", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the results to this file")
    return parser.parse_args()


def require():
    try:
        import torch
    except ImportError:
        sys.exit("bench_cuda: needs torch with CUDA")
    if not torch.cuda.is_available():
        sys.exit("bench_cuda: no CUDA GPU visible to torch")
    import pyoptim
    from pyoptim import _cuda

    if "cuda" not in pyoptim.available_backends():
        sys.exit('bench_cuda: pyoptim\'s CUDA backend is not available (pip install ".[cuda]")')
    return torch, pyoptim, _cuda


def host(t):
    return t.detach().cpu().numpy()


def validate(torch, pyoptim, n, rng):
    """Two steps of pyoptim and of torch fused against the NumPy reference (float32)."""
    from pyoptim import reference

    values = {"param": rng.standard_normal(n, dtype=np.float32),
              "exp_avg": np.zeros(n, np.float32), "exp_avg_sq": np.zeros(n, np.float32)}
    ours = {k: torch.from_numpy(v).cuda() for k, v in values.items()}
    theirs = torch.nn.Parameter(torch.from_numpy(values["param"]).cuda())
    fused = torch.optim.Adam([theirs], lr=LR, betas=BETAS, eps=EPS, fused=True)
    worst_torch = 0.0
    for t in (1, 2):
        grad = rng.standard_normal(n, dtype=np.float32)
        g = torch.from_numpy(grad).cuda()
        pyoptim.functional.adam(ours["param"], g, exp_avg=ours["exp_avg"],
                                exp_avg_sq=ours["exp_avg_sq"], step=t, lr=LR, betas=BETAS,
                                eps=EPS)
        theirs.grad = g.clone()
        fused.step()
        reference.adam(values["param"], grad, exp_avg=values["exp_avg"],
                       exp_avg_sq=values["exp_avg_sq"], step=t, lr=LR, betas=BETAS, eps=EPS)
        torch.cuda.synchronize()
        for name, expected in values.items():
            got = host(ours[name])
            if not np.array_equal(got, expected, equal_nan=True):
                bad = np.flatnonzero(got != expected)
                sys.exit(f"bench_cuda: VALIDATION FAILED at n={n}, step {t}: {name} differs from "
                         f"the reference at {bad.size} elements (first {bad[0]}: {got[bad[0]]!r} "
                         f"!= {expected[bad[0]]!r})")
        diff = np.abs(host(theirs).astype(np.float64) - values["param"])
        worst_torch = max(worst_torch, float(diff.max()))
    return worst_torch


def contestants(torch, pyoptim, _cuda, n):
    """name -> a function running one step (on buffers made here)."""
    from pyoptim import _cuda_kernels, _spec

    def buffers():
        return [torch.randn(n, device="cuda"), torch.randn(n, device="cuda"),
                torch.zeros(n, device="cuda"), torch.zeros(n, device="cuda")]

    p, g, m, v = buffers()
    step = [0]

    def ours():
        step[0] += 1
        pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=step[0], lr=LR, betas=BETAS,
                                eps=EPS)

    kp, kg, km, kv = buffers()
    opt = _spec.ADAM
    hp = opt.hyperparameters(dict(lr=LR, betas=BETAS, eps=EPS))
    key = _cuda_kernels.Key(opt.kernel, opt.flag_mask(hp, 2), "float32", "float32", "float32")
    flat = {name: _cuda.describe(name, t).flat(np.dtype(np.float32))
            for name, t in zip(("param", "grad", "exp_avg", "exp_avg_sq"), (kp, kg, km, kv))}
    arguments = _cuda_kernels.arguments(opt, key, flat["param"], flat["grad"],
                                        {"exp_avg": flat["exp_avg"],
                                         "exp_avg_sq": flat["exp_avg_sq"]},
                                        opt.scalars(hp, 2))
    blocks, threads = _cuda.launch_config(n)
    kernel = _cuda_kernels.kernel(opt, key)
    from numba import cuda

    stream = cuda.external_stream(torch.cuda.current_stream().cuda_stream) \
        if torch.cuda.current_stream().cuda_stream else 0
    launch = kernel[blocks, threads, stream]

    def kernel_only():
        launch(*arguments)

    tp, tg, _, _ = buffers()
    tp = torch.nn.Parameter(tp)
    tp.grad = tg
    fused = torch.optim.Adam([tp], lr=LR, betas=BETAS, eps=EPS, fused=True)

    def torch_fused():
        fused.step()

    src = torch.empty(n * 7 // 2, device="cuda")
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)

    return {"copy": copy, "pyoptim": ours, "pyoptim-kernel": kernel_only,
            "torch-fused": torch_fused}, (blocks, threads)


def time_steps(torch, run, steps):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


def main():
    args = parse()
    torch, pyoptim, _cuda = require()
    _cuda.set_launch_config(args.threads_per_block, args.max_blocks)
    import numba_cuda

    device = torch.cuda.get_device_name()
    print(f"# {device}; torch {torch.__version__}, numba-cuda {numba_cuda.__version__}, "
          f"pyoptim {pyoptim.__version__}")
    print(f"# command: python bench/bench_cuda.py {' '.join(sys.argv[1:])}".rstrip())
    print("| n | contestant | ms/step (median) | GB/s at 28 B/elem | % of copy | vs torch fused |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    results = []
    for k in (int(s) for s in args.sizes.split(",")):
        n = 1 << k
        worst_torch = validate(torch, pyoptim, n, rng)
        runs, grid = contestants(torch, pyoptim, _cuda, n)
        names = list(runs)
        for name in names:
            for _ in range(args.warmup):
                runs[name]()
        torch.cuda.synchronize()
        times = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(time_steps(torch, runs[name], args.steps))
        median = {name: statistics.median(ts) for name, ts in times.items()}
        gbs = {name: BYTES_PER_ELEMENT * n / (ms * 1e-3) / 1e9 for name, ms in median.items()}
        for name in names:
            versus = median["torch-fused"] / median[name]
            print(f"| 2^{k} | {name} | {median[name]:.4f} | {gbs[name]:.0f} | "
                  f"{100 * gbs[name] / gbs['copy']:.1f}% | {versus:.2f}x |")
        print(f"# 2^{k}: pyoptim equal to the reference to the bit; torch fused's largest param "
              f"difference from it {worst_torch:.3g}; launch {grid[0]} blocks x {grid[1]} threads")
        results.append({"log2_n": k, "device": device, "ms": median, "gb_per_s": gbs,
                        "grid": grid, "torch_fused_max_abs_diff": worst_torch})
        del runs
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
