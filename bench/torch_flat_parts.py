"""Where the time of a pyoptim.torch step with flat_grads=True goes, part by part.

    python bench/torch_flat_parts.py [--optimizer SGD] [--rounds 40]

On gpt-tiny's parameter list (196 tensors, one thread), times round robin, each a median over
rounds of 10 calls after one untimed call: the whole ``opt.step()`` (which takes the grads
from the compiled reader, pyoptim/_torch_reader.py), the step without its
wrapper (the step hooks and the profiler range: pyoptim.torch's own, pyoptim/torch.py
_hooked_step; torch's profile_hook_step before that), the Python check that every .grad is
still its view and nothing moved (what a step does without the reader), the reader's check of
every grad, the engine's step (pyoptim's per-step Python and the kernel), handing
the grads' addresses to the kernel plan, and torch's fused step on tensors of its own. The
tensors stay in place (unlike `pyoptim bench`, which moves them every round), so these are parts
of a warm step, not a replacement for the benchmark's ratios.

Before timing, the flat optimizer is checked against the same optimizer reading p.grad: 7
steps on copies of the same tensors must give the same params bit for bit.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyoptim
import pyoptim.torch as pt
from pyoptim.bench._cells import MODELS

OPTIONS = {"SGD": dict(lr=1e-3, momentum=0.9), "Adam": dict(lr=1e-3),
           "AdamW": dict(lr=1e-3), "Adagrad": dict(lr=1e-2)}


def tensors(seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen))
              for _, shape in MODELS["gpt-tiny"]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def check(name: str) -> None:
    flat_params, plain_params = tensors(0), tensors(0)
    flat = getattr(pt, name)(flat_params, flat_grads=True, **OPTIONS[name])
    plain = getattr(pt, name)(plain_params, **OPTIONS[name])
    for _ in range(7):
        flat.step()
        plain.step()
    for i, (a, b) in enumerate(zip(flat_params, plain_params)):
        if not torch.equal(a, b):
            raise SystemExit(f"flat_grads=True differs from reading p.grad at param {i}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="SGD", choices=sorted(OPTIONS))
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    pyoptim.set_num_threads(1)
    torch.set_num_threads(1)
    check(args.optimizer)

    opt = getattr(pt, args.optimizer)(tensors(1), flat_grads=True, **OPTIONS[args.optimizer])
    fused = getattr(torch.optim, args.optimizer)(tensors(2), fused=True, **OPTIONS[args.optimizer])
    engine, flat = opt._engine, opt._flat
    runner = engine._runner()
    reader = opt._reader  # pyoptim/_torch_reader.py; opt.step() takes it first where built
    if reader is None:
        raise SystemExit("pyoptim.torch's compiled reader of grads is off or not built")
    unwrapped = type(opt).step.__wrapped__  # the wrapper keeps it (functools.wraps)
    parts = {
        "opt.step()": opt.step,
        "without its wrapper": lambda: unwrapped(opt),
        "check: grads are the views": lambda: flat.in_place(engine._params, opt._pointers),
        "check: the compiled reader": lambda: (reader.read(), reader.release()),
        "engine step (Python + kernel)": lambda: engine.step(flat.given),
        "hand over grad addresses": lambda: (runner.set_grads(flat.given), runner.release()),
        "torch fused step": fused.step,
    }
    times = {name: [] for name in parts}
    for _ in range(args.rounds):
        for name, part in parts.items():
            part()  # warm: the previous part's memory traffic evicted this one's
            start = time.perf_counter()
            for _ in range(10):
                part()
            times[name].append((time.perf_counter() - start) / 10 * 1e6)
    print(f"{args.optimizer}, gpt-tiny ({len(opt._pointers)} tensors), 1 thread, "
          f"medians of {args.rounds} rounds of 10 calls:")
    for name, values in times.items():
        print(f"  {name:32s} {statistics.median(values):8.1f} us")


if __name__ == "__main__":
    main()
