"""Where a second thread starts to pay: the serial-path threshold of the CPU kernels.

For each size, times one step on 1 thread and on 2 threads (the minimum per thread lowered to 1,
so that 2 threads really run), interleaved step by step, and prints the medians and their ratio.
The default minimum per thread (csrc/threads.h kMinElementsPerThread) is set from this: a step
runs serially below twice that minimum. Usage: python bench/threshold.py [--reps 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyoptim
from pyoptim import _cpu, _spec


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--optimizers", default="sgd,adam")
    args = parser.parse_args()
    core = _cpu.core()
    default_min = core.min_elements_per_thread()
    saved_threads = pyoptim.get_num_threads()
    print(f"SIMD target: {core.simd_target()}; default minimum per thread: {default_min}")
    print(f"{'optimizer':9s} {'elements':>9s} {'1 thread us':>12s} {'2 threads us':>13s} "
          f"{'1t/2t':>6s}")
    try:
        core._set_min_elements_per_thread(1)
        for name in args.optimizers.split(","):
            opt = _spec.OPTIMIZERS[name]
            hp = opt.hyperparameters({"momentum": 0.9} if name == "sgd" else {})
            for k in range(10, 21):
                n = 1 << k
                p, g = np.ones(n, np.float32), np.full(n, 1e-3, np.float32)
                states = {s: [np.zeros(n, np.float32)] for s in opt.needed_states(hp)}
                scalars, flags = opt.scalars(hp, 2), opt.flag_mask(hp, 2)

                def run():
                    _cpu.step(opt, flags, [p], [g], states, scalars)

                times = {1: [], 2: []}
                for rep in range(args.reps + 20):
                    for count in (1, 2):
                        pyoptim.set_num_threads(count)
                        start = time.perf_counter()
                        run()
                        if rep >= 20:  # warm-up
                            times[count].append(time.perf_counter() - start)
                one, two = (np.median(times[c]) * 1e6 for c in (1, 2))
                print(f"{name:9s} {n:9d} {one:12.2f} {two:13.2f} {one / two:6.2f}")
    finally:
        core._set_min_elements_per_thread(default_min)
        pyoptim.set_num_threads(saved_threads)


if __name__ == "__main__":
    main()
