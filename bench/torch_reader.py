"""How long pyoptim.torch's compiled reader of grads (pyoptim/_torch_reader.py) takes to check
the grads of gpt-tiny's 196 params, warm and cold, against the Python checks it replaces.

    python bench/torch_reader.py [--rounds 200]

Each round times one call right after writing a 64 MiB buffer (cold: the caches hold that
buffer, not the tensors' objects, as after a step's kernel has streamed its megabytes), then one
more call (warm). Medians over the rounds. Before timing, both checks must give the same
addresses.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import pyoptim.torch as pt
from pyoptim.bench._cells import MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = [torch.nn.Parameter(torch.randn(shape)) for _, shape in MODELS["gpt-tiny"]]
    for p in params:
        p.grad = torch.randn(p.shape)
    opt = pt.SGD(params, lr=1e-3, momentum=0.9)
    reader = opt._reader
    if reader is None:
        raise SystemExit("pyoptim.torch's compiled reader of grads is off or not built")

    def compiled():
        reader.read()
        reader.release()

    python = opt._grad_addresses
    assert reader.read()
    reader.release()
    if opt._reader_addresses.tolist() != python().addresses:
        raise SystemExit("the reader and the Python checks give different addresses")
    evict = np.ones(64 << 20, np.uint8)
    times = {(name, state): [] for name in ("compiled reader", "Python checks")
             for state in ("cold", "warm")}
    for _ in range(args.rounds):
        for name, check in (("compiled reader", compiled), ("Python checks", python)):
            for state in ("cold", "warm"):
                if state == "cold":
                    evict += 1
                start = time.perf_counter_ns()
                check()
                times[name, state].append(time.perf_counter_ns() - start)
    print(f"gpt-tiny ({len(params)} params), medians of {args.rounds} rounds:")
    for (name, state), values in times.items():
        print(f"  {name:16s} {state}  {statistics.median(values) / 1e3:7.1f} us")


if __name__ == "__main__":
    main()
