"""Running one cell: check every contestant against the reference, warm up, time round robin.

Validation: every contestant runs the first steps from the same master data, and its param and
every state buffer are compared element by element with pyoptim.reference run on the same
storage dtypes and in the same compute dtype (chunk by chunk, so that a 2^26-element cell needs
little extra memory). A contestant outside the tolerance of its storage dtype is reported as
failing and is not timed.

Timing: contestants take turns (round robin, in an order drawn at random every round), one
sample each per round, so that every contestant sees the same machine state and the ratios of
one round are fair even when the machine's speed drifts. Before every round, each contestant's
arrays move to new memory (_cells.Mover): where an array lies changes a cache-resident step's
time by up to 50% here, and a contestant left in one place for the whole cell carries that luck
into every ratio (bench/README.md, "Layout"). A sample times a batch of consecutive steps, the
same number for every contestant of the cell (one step at large sizes; enough for the fastest
contestant's sample to last --sample-time at small ones; see batch_sizes). When a
contestant's arrays fit in the last-level cache, one untimed step before each sample brings them
back after the other contestants' turns (the cache-resident steady state a training loop sees).
Ratios are medians of per-round ratios.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import reference
from ._cells import Cell, itemsize, numpy_dtype
from ._contestants import PYOPTIM, ROOFLINE, Contestant

# Relative tolerance of the validation, by storage dtype: a few units in the last place of that
# dtype after a few steps (torch and DeepSpeed round differently from the reference; pyoptim's C++
# backend matches it to the bit). Four times that for a contestant that computes in 16 bits: every
# operation rounds, and it fuses operations differently from the reference (addcmul, addcdiv).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}
SIXTEEN_BIT_COMPUTE = 4
# elements the reference runs at a time during the validation, for an elementwise optimizer (a
# two-pass one, LAMB, takes norms over each whole array: the reference runs on all of it)
CHUNK = 1 << 20


@dataclass
class Validation:
    ok: bool
    exact: bool  # bit-identical to the reference
    worst: float | None  # the largest error, in units of the tolerance (<= 1 passes)
    message: str = ""

    def as_dict(self) -> dict:
        return dict(ok=self.ok, exact=self.exact, worst_error_over_tolerance=self.worst,
                    message=self.message)


def _compare(got: np.ndarray, want: np.ndarray, rtol: float) -> tuple[float, bool]:
    """(worst error over tolerance, bit-identical) of one chunk."""
    if np.array_equal(got, want, equal_nan=True):
        return 0.0, True
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    finite = np.isfinite(w)
    scale = float(np.sqrt(np.mean(np.square(w[finite])))) if finite.any() else 1.0
    atol = rtol * 0.1 * scale  # near zero, the error counts against a tenth of the typical value
    with np.errstate(all="ignore"):
        excess = np.abs(g - w) / (atol + rtol * np.abs(w))
    excess[np.isnan(g) & np.isnan(w)] = 0.0
    excess[np.isnan(excess)] = np.inf  # NaN on one side only
    excess[(g == w)] = 0.0  # equal infinities
    return float(excess.max()), False


def validate(cell: Cell, master: tuple, contestants: list, steps: int) -> dict:
    """Runs `steps` steps of each contestant and compares them with the reference. A contestant
    whose step raises fails with the exception as its message."""
    raised = {}
    for c in contestants:
        try:
            for _ in range(steps):
                c.step()
            c.sync()
        except Exception as e:  # noqa: BLE001 (any failure of a contestant is reported, not fatal)
            raised[c.name] = Validation(False, False, None,
                                        f"raised {type(e).__name__}: {e}")
    contestants = [c for c in contestants if c.name not in raised]
    buffers = {c.name: c.buffers() for c in contestants}
    params, grads = master
    for c in contestants:  # the benchmark reuses the grads: a step must leave them as they were
        for i, g in enumerate(buffers[c.name].grads):
            if not np.array_equal(g, grads[i].astype(numpy_dtype(c.dtypes.grad)), equal_nan=True):
                raised[c.name] = Validation(
                    False, False, None,
                    "writes into its gradients (the benchmark reuses them from step to step, so "
                    "its steps would not compute what the others compute)")
                break
    contestants = [c for c in contestants if c.name not in raised]
    worst = {c.name: 0.0 for c in contestants}
    exact = {c.name: True for c in contestants}
    where = {c.name: "" for c in contestants}
    fn = getattr(reference, cell.variant.optimizer)
    options = cell.variant.options
    elementwise = cell.variant.spec.elementwise
    groups: dict[tuple, list[Contestant]] = {}
    for c in contestants:
        groups.setdefault((c.dtypes, c.compute_dtype), []).append(c)
    for (dtypes, compute), group in groups.items():
        compute_dtype = None if compute is None else numpy_dtype(compute)
        for i, (p0, g0) in enumerate(zip(params, grads)):
            chunk = CHUNK if elementwise else max(p0.size, 1)
            for lo in range(0, p0.size, chunk):
                hi = min(p0.size, lo + chunk)
                p = p0[lo:hi].astype(numpy_dtype(dtypes.param))
                g = g0[lo:hi].astype(numpy_dtype(dtypes.grad))
                states = {name: np.full(hi - lo, cell.variant.initial_value(name),
                                        numpy_dtype(dtypes.state))
                          for name in cell.variant.states}
                host = cell.variant.initial_host()
                for t in range(1, steps + 1):
                    fn(p, g, **states, **host, step=t, compute_dtype=compute_dtype, **options)
                factor = 1 if compute is None or itemsize(compute) > 2 else SIXTEEN_BIT_COMPUTE
                wanted = {"param": (p, TOLERANCE[dtypes.param] * factor),
                          **{name: (s, TOLERANCE[dtypes.state] * factor)
                             for name, s in states.items()}}
                for c in group:
                    b = buffers[c.name]
                    got = {"param": b.params[i], **{n: b.states[n][i] for n in states}}
                    for name, (want, rtol) in wanted.items():
                        error, same = _compare(got[name][lo:hi], want, rtol)
                        exact[c.name] &= same
                        if error > worst[c.name]:
                            worst[c.name] = error
                            index = f"[{i}]" if len(params) > 1 else ""
                            where[c.name] = f"{name}{index}, elements {lo}..{hi - 1}"
    out = dict(raised)
    for c in contestants:
        ok = worst[c.name] <= 1.0
        if ok:
            message = ""
        elif math.isinf(worst[c.name]):
            message = (f"differs from pyoptim.reference after {steps} steps: NaN or Inf where "
                       f"the reference is finite, or the reverse (in {where[c.name]})")
        else:
            message = (f"differs from pyoptim.reference after {steps} steps by "
                       f"{worst[c.name]:.3g} x the {c.dtypes.label} tolerance (worst in "
                       f"{where[c.name]})")
        out[c.name] = Validation(ok, exact[c.name], worst[c.name], message)
    return out


@dataclass
class Timing:
    batch: int  # steps per sample
    primed: bool  # an untimed step before each sample
    samples: list = field(default_factory=list)  # seconds per step, one per round

    def summary(self, elements: int, bytes_per_element: int) -> dict:
        s = np.asarray(self.samples)
        median = float(np.median(s))
        p25, p75 = (float(x) for x in np.percentile(s, [25, 75]))
        return dict(
            batch=self.batch, primed=self.primed, samples_s=[float(x) for x in s],
            median_s=median, p25_s=p25, p75_s=p75, min_s=float(s.min()),
            spread=(p75 - p25) / median,
            elements_per_s=elements / median,
            gb_per_s=bytes_per_element * elements / median / 1e9,
        )


def last_level_cache_bytes() -> int:
    """The size of the largest CPU cache (Linux sysfs), 32 MiB where it cannot be read."""
    best = 0
    for index in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as f:
                text = f.read().strip()
        except OSError:
            continue
        factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * factor)
    return best or 32 << 20


# a sample lasts at most this many times --sample-time (a slow peer at a tiny size)
LONGEST_SAMPLE = 10


def batch_sizes(contestants: list, estimate: dict, sample_time: float) -> dict:
    """Steps per sample, by contestant name: one number for the whole cell, enough for the
    fastest contestant's sample (the roofline aside) to last sample_time. Consecutive steps of
    one contestant get faster over several steps where its working set is about the size of a
    cache (pyoptim.torch on gpt-tiny, Intel Xeon: 1.24 ms a step timed alone after a primed
    one, 0.94 ms over 8), so contestants timed over different numbers of steps are not timed
    alike; sized by each one's own speed, the fastest got the longest batches. A contestant for
    which the cell's batch would last longer than LONGEST_SAMPLE x sample_time takes as many
    steps as fit in that (at least one)."""
    timed = [estimate[c.name] for c in contestants if c.role != ROOFLINE] or list(estimate.values())
    batch = max(1, math.ceil(sample_time / max(min(timed), 1e-9)))
    return {c.name: max(1, min(batch, math.floor(LONGEST_SAMPLE * sample_time
                                                 / max(estimate[c.name], 1e-9))))
            for c in contestants}


def time_round_robin(contestants: list, elements: int, rounds: int, warmup: int,
                     sample_time: float, progress=None, mover=None, seed: int = 0) -> dict:
    """Warms up, then times `rounds` samples of each contestant, taking turns in an order drawn
    (seeded) every round. mover (a _cells.Mover): every contestant's arrays move to new memory
    before each round; None keeps them where they are."""
    cache = last_level_cache_bytes()
    estimate = {}
    for _ in range(max(1, warmup)):
        for c in contestants:
            start = time.perf_counter()
            c.step()
            c.sync()
            elapsed = time.perf_counter() - start
            estimate[c.name] = min(estimate.get(c.name, math.inf), elapsed)
    batches = batch_sizes(contestants, estimate, sample_time)
    timings = {c.name: Timing(batch=batches[c.name], primed=c.bytes_per_element * elements <= cache)
               for c in contestants}
    order = np.random.default_rng([seed, 0x0D0E])
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if progress is not None:
                progress.phase(f"timing, round {r + 1}/{rounds}")
            if mover is not None:  # in an order of its own: no contestant allocates first
                for k in order.permutation(len(contestants)):
                    contestants[k].relocate(mover)
                gc.collect()  # frees the old arrays now, not during a sample
            for k in order.permutation(len(contestants)):
                c = contestants[k]
                timing = timings[c.name]
                if timing.primed:
                    c.step()
                    c.sync()
                start = time.perf_counter()
                for _ in range(timing.batch):
                    c.step()
                c.sync()
                timing.samples.append((time.perf_counter() - start) / timing.batch)
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def paired_median(numerator: list, denominator: list) -> float:
    """The median over rounds of numerator[r] / denominator[r]."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))


def paired_quartiles(numerator: list, denominator: list) -> list[float]:
    """The 25th and 75th percentiles over rounds of numerator[r] / denominator[r]."""
    ratios = np.asarray(numerator) / np.asarray(denominator)
    return [float(x) for x in np.percentile(ratios, [25, 75])]


def summarize(cell: Cell, contestants: list, timings: dict) -> dict:
    """The figures of every timed contestant: speed, % of the roofline, pyoptim's speedup."""
    n = cell.shape.elements
    by_name = {c.name: c for c in contestants}
    out = {}
    roof = timings.get(ROOFLINE)
    mine = timings.get(PYOPTIM)
    for name, timing in timings.items():
        c = by_name[name]
        figures = timing.summary(n, c.bytes_per_element)
        if roof is not None and name != ROOFLINE:
            # GB/s over the roofline's GB/s, round by round
            ratios = (np.asarray(roof.samples) / np.asarray(timing.samples)
                      * c.bytes_per_element / by_name[ROOFLINE].bytes_per_element)
            figures["roofline_fraction"] = float(np.median(ratios))
            # the same from the fastest samples: what an undisturbed machine would show
            figures["roofline_fraction_best"] = (
                min(roof.samples) / min(timing.samples)
                * c.bytes_per_element / by_name[ROOFLINE].bytes_per_element)
        if mine is not None and name not in (PYOPTIM, ROOFLINE):
            figures["pyoptim_speedup"] = paired_median(timing.samples, mine.samples)
            figures["pyoptim_speedup_quartiles"] = paired_quartiles(timing.samples,
                                                                    mine.samples)
            figures["pyoptim_speedup_best"] = min(timing.samples) / min(mine.samples)
        out[name] = figures
    return out
