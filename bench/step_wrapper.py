"""What the wrapper around an optimizer's step costs (the step hooks and the profiler range), for
torch.optim's (torch.optim.Optimizer.profile_hook_step) and pyoptim.torch's (pyoptim/torch.py,
_hooked_step), with the caches as a training step leaves them.

    python bench/step_wrapper.py [--rounds 200]

Each contestant is a one-tensor Adam (4 elements, one thread), stepped through `opt.step()` and
through the function its wrapper calls (`type(opt).step.__wrapped__`); a 32 MB pass runs
before every timed call, as a model's forward and backward would, and the calls take turns.
Before timing, the wrapped and unwrapped pyoptim.torch steps are checked to give the same
params bit for bit. Reported: median us per call and the wrapper's cost (the difference).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import pyoptim
import pyoptim.torch as pt


def _adam(cls, seed: int):
    param = torch.nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(seed)))
    opt = cls([param], lr=1e-3, flat_grads=True) if cls is pt.Adam else cls([param], lr=1e-3)
    if param.grad is None:  # torch.optim's; pyoptim.torch's flat_grads made a view already
        param.grad = torch.zeros(4)
    param.grad.fill_(1.0)
    return param, opt


def _check() -> None:
    (a, wrapped), (b, plain) = _adam(pt.Adam, 0), _adam(pt.Adam, 0)
    for _ in range(3):
        wrapped.step()
        type(plain).step.__wrapped__(plain)
    if not torch.equal(a, b):
        raise SystemExit("the wrapped and unwrapped pyoptim.torch steps differ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pyoptim.set_num_threads(1)
    _check()
    ours, theirs = _adam(pt.Adam, 1)[1], _adam(torch.optim.Adam, 2)[1]
    calls = {
        "pyoptim.torch opt.step()": ours.step,
        "pyoptim.torch unwrapped": lambda: type(ours).step.__wrapped__(ours),
        "torch.optim opt.step()": theirs.step,
        "torch.optim unwrapped": lambda: type(theirs).step.__wrapped__(theirs),
    }
    evict = np.zeros(8 << 20, np.float32)
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            evict += 1
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    for name, us in median.items():
        print(f"{name:26s} {us:8.1f} us")
    for who in ("pyoptim.torch", "torch.optim"):
        print(f"{who} wrapper: {median[f'{who} opt.step()'] - median[f'{who} unwrapped']:.1f} us")


if __name__ == "__main__":
    main()
