"""The run loop of `pyoptim bench`: cells in turn, a progress line, files written as it goes."""

from __future__ import annotations

import datetime
import gc
import json
import sys
import time
from pathlib import Path

from .. import _cpu
from . import BenchError, SETTINGS, _cells, _report
from ._cells import TORCH_APIS, Cell, Mover, master_data
from ._contestants import (CONTROL, PYOPTIM, ROOFLINE, Roofline, Unavailable, cuda_torch,
                           import_torch, make_control, make_peer, make_pyoptim)
from ._runner import summarize, time_round_robin, validate


class Progress:
    """One status line on stderr: rewritten in place on a terminal, a line per cell otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.prefix = ""
        self.start = time.monotonic()

    def cell(self, index: int, cell: Cell) -> None:
        elapsed = time.monotonic() - self.start
        self.prefix = f"[{index + 1}/{self.total} {elapsed:4.0f}s] {cell.label}"
        if not self.tty:
            print(self.prefix, file=self.stream, flush=True)
        else:
            self.phase("setting up")

    def phase(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{self.prefix}: {text}")
            self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _set_threads(n: int) -> None:
    _cpu.core().set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def _dtypes_dict(contestant) -> dict:
    d = contestant.dtypes
    return dict(param=d.param, grad=d.grad, state=d.state)


def run_cell(cell: Cell, peers: tuple, args, settings, progress: Progress,
             unavailable: dict) -> dict:
    """Validates, times and summarizes one cell; returns its record for bench.json."""
    rounds, warmup, validate_steps, sample_time = settings
    record = dict(
        label=cell.label, variant=cell.variant.name, optimizer=cell.variant.optimizer,
        api=cell.api,
        options=dict(cell.variant.options), hyperparameters=cell.variant.hyperparameters,
        dtypes=dict(param=cell.dtypes.param, grad=cell.dtypes.grad, state=cell.dtypes.state),
        dtypes_label=cell.dtypes.label,
        shape=dict(count=cell.shape.count, size=cell.shape.size, label=cell.shape.label,
                   model=cell.shape.model or None),
        elements=cell.shape.elements, threads=cell.threads, backend=args.backend,
        bytes_per_element=cell.bytes_per_element, state_buffers=list(cell.variant.states),
        contestants=[],
    )
    master = master_data(cell.shape, args.seed)
    contestants = []
    try:
        contestants.append(make_pyoptim(cell, master, args.backend))
        if getattr(args, "control", False):
            contestants.append(make_control(cell, master, args.backend))
        for name in peers:
            if name == "numpy" and args.backend == "numpy":
                continue  # pyoptim is the reference there
            try:
                contestants.append(make_peer(name, cell, master, args.backend))
            except Unavailable as e:
                unavailable.setdefault((name, str(e)), []).append(cell.label)
                record["contestants"].append(dict(name=name, role="peer", available=False,
                                                  reason=str(e)))
        _set_threads(cell.threads)
        progress.phase(f"validating {len(contestants)} contestants")
        checks = validate(cell, master, contestants, validate_steps)
        del master
        valid = [c for c in contestants if checks[c.name].ok]
        for c in contestants:
            if not checks[c.name].ok:
                c.close()
        timed = list(valid)
        if valid:
            try:
                timed.append(Roofline(cell, args.backend))
            except Unavailable as e:  # the cell is timed without one: no % of it
                unavailable.setdefault((ROOFLINE, str(e)), []).append(cell.label)
                record["roofline_unavailable"] = str(e)
        mover = None if getattr(args, "fixed_layout", False) else Mover(args.seed)
        timings = time_round_robin(timed, cell.shape.elements, rounds, warmup, sample_time,
                                   progress, mover, args.seed) if timed else {}
        figures = summarize(cell, timed, timings)
        for c in contestants + [t for t in timed if t.name == ROOFLINE]:
            entry = dict(name=c.name, role=c.role, available=True, dtypes=_dtypes_dict(c),
                         dtypes_label=c.dtypes.label, compute_dtype=c.compute_dtype,
                         bytes_per_element=c.bytes_per_element)
            if c.name in checks:
                entry["validation"] = checks[c.name].as_dict()
            if c.name in figures:
                entry["timing"] = figures[c.name]
            record["contestants"].append(entry)
        peers = [e for e in record["contestants"]
                 if e["role"] == "peer" and e.get("timing")]
        if peers and PYOPTIM in figures:
            best = min(peers, key=lambda e: e["timing"]["median_s"])
            record["best_peer"] = best["name"]
            record["speedup_vs_best_peer"] = best["timing"]["pyoptim_speedup"]
        control = figures.get(CONTROL)
        if control is not None and PYOPTIM in figures:
            # the control's time over pyoptim's: 1 but for what the arrays' place and the
            # machine do to two identical contestants
            record["control_ratio"] = control["pyoptim_speedup"]
            record["control_ratio_quartiles"] = control["pyoptim_speedup_quartiles"]
    finally:
        for c in contestants:
            c.close()
        contestants.clear()
        gc.collect()
    return record


# The settings that make two runs' cells comparable: --resume keeps cells measured with the same.
RESUME_SETTINGS = ("backend", "alignment_bytes", "rounds", "warmup", "validate_steps",
                   "sample_time_s", "seed", "quick", "control", "relocate_every_round")


def earlier_cells(path: Path, config: dict, machine: dict,
                  plan: list[tuple[Cell, tuple]]) -> tuple[dict, list]:
    """--resume: the records of the run saved in path that this plan runs with the same peers,
    by label, and the machine descriptions of the runs they were measured in. A run made with
    other settings, or on another machine (_report.MACHINE_IDENTITY), is refused: its cells and
    new ones would not be measured alike."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, []  # nothing to go on with: the whole plan runs
    except (OSError, ValueError) as e:
        raise BenchError(f"--resume: cannot read {path}: {e}") from None
    if data.get("tool") != "pyoptim bench" or data.get("format_version") != _report.FORMAT_VERSION:
        raise BenchError(f"--resume: {path} is not a bench.json of this version of pyoptim bench")
    before = data["config"]
    differing = [f"{key} {before.get(key)!r} (now {config[key]!r})" for key in RESUME_SETTINGS
                 if before.get(key) != config[key]]
    if differing:
        raise BenchError(f"--resume: the run in {path} was made with other settings: "
                         f"{', '.join(differing)}; give the same options, or another --out")
    # every run it holds, the first included, on this machine (a key a run did not record is
    # not compared)
    for run in [*data["machine"].get("earlier_runs", []), data["machine"]]:
        other = [f"{key} {run[key]!r} (here {machine[key]!r})" for key in _report.MACHINE_IDENTITY
                 if key in run and key in machine and run[key] != machine[key]]
        if other:
            raise BenchError(f"--resume: the run in {path} was measured on another machine or "
                             f"with other versions: {', '.join(other)}; use another --out")
    peers_before = {c["cell"]: c["peers"] for c in before["cells"]}
    measured_in = dict(git_commit=data["machine"]["git_commit"], date=data["machine"]["date"])
    saved = {r["label"]: r for r in data["cells"]}
    kept = {}
    for cell, peers in plan:
        record = saved.get(cell.label)
        if record is not None and peers_before.get(cell.label) == list(peers):
            record.setdefault("measured_in", measured_in)
            kept[cell.label] = record
    runs = data["machine"].pop("earlier_runs", []) + [data["machine"]] if kept else []
    return kept, runs


def run_cells(plan: list[tuple[Cell, tuple]], args, command: str) -> int:
    settings = list(SETTINGS["quick" if args.quick else "full"])
    for i, value in enumerate((args.repeat, args.warmup, args.validate_steps, args.sample_time)):
        if value is not None:
            settings[i] = value
    if args.backend == "cuda":
        try:
            cuda_torch()
        except Unavailable as e:
            raise BenchError(f"--backend cuda needs torch with CUDA and a GPU: {e}") from None
    if any(cell.api in TORCH_APIS for cell, _ in plan):
        try:
            import_torch()
        except Unavailable as e:
            raise BenchError(f"--api torch needs torch (pip install 'pyoptim[torch]'): {e}") \
                from None
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create the output folder {out}: {e}") from None

    _cells.ALIGNMENT = 0 if args.numpy_alignment else 64
    machine = _report.describe_machine()
    config = dict(
        alignment_bytes=_cells.ALIGNMENT or "numpy",
        command=command, backend=args.backend, peers=list(args.peers),
        rounds=settings[0], warmup=settings[1], validate_steps=settings[2],
        sample_time_s=settings[3], seed=args.seed, quick=args.quick,
        control=bool(getattr(args, "control", False)),
        relocate_every_round=not getattr(args, "fixed_layout", False),
        cells=[dict(cell=cell.label, peers=list(peers)) for cell, peers in plan],
    )
    kept, runs = ({}, [])
    if getattr(args, "resume", False):
        kept, runs = earlier_cells(out / "bench.json", config, machine, plan)
        if runs:
            machine["earlier_runs"] = runs
    print(f"pyoptim bench: {len(plan)} cells, backend {args.backend}, {machine['cpu']}, "
          f"{machine['usable_cores']} cores, SIMD {machine['simd_target']}")
    if kept:
        print(f"--resume: {len(kept)} of them kept from {out / 'bench.json'} (measured at "
              + ", ".join(f"{r['git_commit']} on {r['date'][:16]}" for r in runs) + ")")
    print("speed of pyoptim per step (median over rounds, ± half the interquartile range); "
          "% roof: of a STREAM-like pass moving the same bytes; speedup: over the fastest peer "
          "that passed validation, median of per-round ratios\n")
    widths = None
    progress = Progress(len(plan))
    results: list[dict] = []
    unavailable: dict = {}
    failed = []
    threads_before = _cpu.core().get_num_threads()
    try:
        for index, (cell, peers) in enumerate(plan):
            record = kept.get(cell.label)
            if record is None:
                progress.cell(index, cell)
                record = run_cell(cell, peers, args, settings, progress, unavailable)
                record["measured_in"] = dict(
                    git_commit=machine["git_commit"],
                    date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"))
            results.append(record)
            progress.clear()
            row = _report.headline_row(record)
            if widths is None:  # fixed widths, so that rows line up as they arrive
                widths = [max(len(h), w) for h, w in zip(_report.HEADLINE_COLUMNS,
                                                         _report.HEADLINE_WIDTHS)]
                print("  ".join(h.ljust(w) for h, w in zip(_report.HEADLINE_COLUMNS, widths)))
            print("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip(), flush=True)
            if "control_ratio" in record:
                print("  " + _report.control_line(record), flush=True)
            for entry in record["contestants"]:
                check = entry.get("validation")
                if check and not check["ok"]:
                    failed.append((record["label"], entry["name"], check["message"]))
                    print(f"  ! {entry['name']} FAILED validation, not timed: {check['message']}")
            _report.write_json(out / "bench.json", machine, config, results)
    finally:
        progress.clear()
        _cpu.core().set_num_threads(threads_before)

    _report.write_markdown(out / "results.md", machine, config, results)
    written = [out / "bench.json", out / "results.md"]
    if not args.no_plots:
        try:
            written += _report.write_plots(out, results)
        except ImportError:
            print("(no plots: matplotlib is not installed; pip install 'pyoptim[bench]')")
    if unavailable:
        print("\nNot run:")
        for (name, reason), where in unavailable.items():
            print(f"  {name}: {reason} ({len(where)} cell{'s' if len(where) > 1 else ''})")
    targets = _report.evaluate_targets(results)
    if targets:
        print("\nTargets:\n" + _report.format_targets(targets))
    if failed:
        print(f"\n{len(failed)} contestant(s) FAILED validation:")
        for label, name, message in failed:
            print(f"  {label}: {name}: {message}")
    print("\nWrote " + ", ".join(str(p) for p in written))
    return 1 if any(name == PYOPTIM for _, name, _ in failed) else 0
