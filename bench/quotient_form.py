"""Adam's division by its bias correction, both forms of rules.h's quotient in one build: the
division instruction and the FMA form (the same bits), timed interleaved step by step, one
thread, on the same buffers. This is what decides which CPUs take the FMA form by default
(csrc/kernels.h, auto_quotient_fma).

    python bench/quotient_form.py [--repeats 15]

Both forms are first checked to give the same bits. Reported per param dtype (fp32 state) and
size: median ns per element of each and the ratio fma/division (below 1: the FMA form is
faster), and the form this CPU takes by default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pyoptim import _cpu, _spec

SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 24)
DTYPES = ("float32", "float16")


def _stepper(n, dtype, rng):
    opt = _spec.OPTIMIZERS["adam"]
    hp = opt.hyperparameters({})
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 0.01).astype(dtype)
    states = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
    slots = [[states[0]], [states[1]], None]
    flags, scalars = opt.flag_mask(hp, 5), opt.scalars(hp, 5)
    core = _cpu.core()
    return [p, *states], lambda: core.step(opt.kernel, flags, [p], [g], slots, scalars)


def _same_bits(dtype):
    core, results = _cpu.core(), []
    for form in ("division", "fma"):
        core._set_quotient_form(form)
        arrays, step = _stepper(4099, dtype, np.random.default_rng(1))
        for _ in range(7):
            step()
        results.append([a.copy() for a in arrays])
    core._set_quotient_form("auto")
    return all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(*results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    core = _cpu.core()
    core.set_num_threads(1)
    print(f"{core.simd_target()}; default form here: {core._quotient_form()}")
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        if not _same_bits(dtype):
            raise SystemExit(f"{dtype}: the two forms compute different bits")
        for n in SIZES:
            _, step = _stepper(n, dtype, rng)
            calls = max(1, (1 << 22) // n)
            times = {"division": [], "fma": []}
            for r in range(args.repeats + 2):
                for form, values in times.items():
                    core._set_quotient_form(form)
                    start = time.perf_counter()
                    for _ in range(calls):
                        step()
                    if r >= 2:
                        values.append((time.perf_counter() - start) / calls / n * 1e9)
            core._set_quotient_form("auto")
            division, fma = (statistics.median(times[k]) for k in ("division", "fma"))
            print(f"adam {dtype:8s} 2^{n.bit_length() - 1:<3d} division {division:.3f} ns, "
                  f"fma {fma:.3f} ns, fma/division {fma / division:.3f}")


if __name__ == "__main__":
    main()
