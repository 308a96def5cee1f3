"""What a benchmark run leaves: the terminal table, bench.json, results.md and the PNG plots.

Every figure lives in the cell results (dicts, as in bench.json); the tables and plots are made
from them, so that `bench/update_tables.py` can remake the tables of a saved run.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .. import __version__
from .._cpu import available, core
from ._contestants import CONTROL, PYOPTIM, ROOFLINE

FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# the machine


def _cpuinfo(*keys: str) -> dict:
    """The first CPU's values of these /proc/cpuinfo keys (those it has; none off Linux)."""
    found: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in keys and key not in found:
                    found[key] = value.strip()
                if not line.strip() and found:  # the end of the first CPU's block
                    break
    except OSError:
        pass
    return found


def _cpu_model() -> str:
    return _cpuinfo("model name").get("model name") or platform.processor() or \
        platform.machine()


def _cpu_id() -> str | None:
    """Family, model and stepping: tells apart CPUs that a virtual machine names alike ("AMD
    EPYC" for Zen 4 and Zen 5)."""
    info = _cpuinfo("cpu family", "model", "stepping")
    if len(info) < 3:
        return None
    return f"family {info['cpu family']} model {info['model']} stepping {info['stepping']}"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parents[2]
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# What a machine description must share with another for their cells to belong in one table
# (`--resume`): the hardware, and the versions of what is timed. Not the commit: a resumed run
# may be measured with a newer pyoptim, and each cell says which (measured_in).
MACHINE_IDENTITY = ("cpu", "cpu_id", "logical_cores", "usable_cores", "memory_bytes",
                    "last_level_cache_bytes", "simd_target", "python", "numpy", "ml_dtypes",
                    "torch", "deepspeed", "omp_num_threads")


def describe_machine() -> dict:
    """CPU, cores, memory, cache, versions and SIMD target: what a reader needs to weigh the
    numbers. The load average at the start tells how busy the machine was."""
    from ._runner import last_level_cache_bytes  # noqa: PLC0415

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return dict(
        cpu=_cpu_model(),
        cpu_id=_cpu_id(),
        logical_cores=os.cpu_count(),
        usable_cores=usable,
        memory_bytes=_memory_bytes(),
        last_level_cache_bytes=last_level_cache_bytes(),
        simd_target=core().simd_target() if available() else None,
        os=platform.platform(),
        python=platform.python_version(),
        pyoptim=__version__,
        git_commit=_git_commit(),
        numpy=_version("numpy"),
        ml_dtypes=_version("ml_dtypes"),
        torch=_version("torch"),
        deepspeed=_version("deepspeed"),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        load_average_at_start=load,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


# ---------------------------------------------------------------------------------------------
# tables


def _pyoptim(cell: dict) -> dict | None:
    for c in cell["contestants"]:
        if c["name"] == PYOPTIM:
            return c
    return None


def _entry(cell: dict, name: str) -> dict | None:
    for c in cell["contestants"]:
        if c["name"] == name:
            return c
    return None


HEADLINE_COLUMNS = ("optimizer", "dtypes", "size", "thr", "B/el", "ms", "spread", "Gelem/s",
                    "GB/s", "roof GB/s", "% roof", "best peer", "speedup")
HEADLINE_WIDTHS = (9, 6, 10, 3, 4, 8, 7, 7, 6, 9, 6, 13, 7)  # terminal columns


def optimizer_label(cell: dict) -> str:
    """The variant, and the API pyoptim was called through when it is not the array API."""
    api = cell.get("api", "arrays")
    return cell["variant"] if api == "arrays" else f"{cell['variant']} ({api})"


def headline_row(cell: dict) -> list[str]:
    """One line per cell: pyoptim's speed, its % of the roofline and its speedup over the best
    peer (the fastest peer that passed its validation)."""
    head = [optimizer_label(cell), cell["dtypes_label"], cell["shape"]["label"],
            str(cell["threads"]), str(cell["bytes_per_element"])]
    mine = _pyoptim(cell)
    if mine is None or not mine["validation"]["ok"]:
        message = mine["validation"]["message"] if mine else cell.get("error", "not run")
        return head + [f"FAILED: {message}"] + [""] * (len(HEADLINE_COLUMNS) - len(head) - 1)
    t = mine["timing"]
    roof = _entry(cell, ROOFLINE)
    best = cell.get("best_peer")
    return head + [
        f"{t['median_s'] * 1e3:.4g}",
        f"±{t['spread'] * 50:.1f}%",
        f"{t['elements_per_s'] / 1e9:.3g}",
        f"{t['gb_per_s']:.3g}",
        f"{roof['timing']['gb_per_s']:.3g}" if roof else "-",
        f"{t['roofline_fraction'] * 100:.0f}%" if "roofline_fraction" in t else "-",
        best or "-",
        f"{cell['speedup_vs_best_peer']:.2f}x" if best else "-",
    ]


def control_line(cell: dict) -> str:
    """What the A/A control of a cell (--control) shows: a second pyoptim contestant's time over
    pyoptim's, median and quartiles of the per-round ratios."""
    low, high = cell["control_ratio_quartiles"]
    return (f"A/A control: a second pyoptim took {cell['control_ratio']:.3f}x pyoptim's time "
            f"(per-round quartiles {low:.3f}..{high:.3f})")


CONTROL_COLUMNS = ("cell", "control / pyoptim", "quartiles over rounds")


def control_rows(cells: list[dict]) -> list[list[str]]:
    return [[c["label"], f"{c['control_ratio']:.3f}",
             "{:.3f}..{:.3f}".format(*c["control_ratio_quartiles"])]
            for c in cells if "control_ratio" in c]


def format_table(columns, rows) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(columns, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows]
    return "\n".join(lines)


DETAIL_COLUMNS = ("cell", "contestant", "dtypes", "B/el", "ms", "spread", "Gelem/s", "GB/s",
                  "% roof", "pyoptim speedup", "validation")


def detail_rows(cell: dict) -> list[list[str]]:
    rows = []
    for c in cell["contestants"]:
        if not c["available"]:
            continue
        v = c.get("validation")
        check = "-" if v is None else ("exact" if v["exact"] else
                                       f"ok ({v['worst_error_over_tolerance']:.2g} tol)"
                                       if v["ok"] else "FAILED")
        t = c.get("timing")
        if t is None:
            rows.append([cell["label"], c["name"], c["dtypes_label"], str(c["bytes_per_element"])]
                        + ["-"] * 6 + [check])
            continue
        rows.append([
            cell["label"], c["name"], c["dtypes_label"], str(c["bytes_per_element"]),
            f"{t['median_s'] * 1e3:.4g}", f"±{t['spread'] * 50:.1f}%",
            f"{t['elements_per_s'] / 1e9:.3g}", f"{t['gb_per_s']:.3g}",
            f"{t['roofline_fraction'] * 100:.0f}%" if "roofline_fraction" in t else "-",
            f"{t['pyoptim_speedup']:.2f}x" if "pyoptim_speedup" in t else "-",
            check,
        ])
    return rows


SHORT_COLUMNS = ("optimizer", "dtypes", "size", "threads", "pyoptim Gelem/s", "GB/s",
                 "% of roofline", "best peer", "speedup")


def short_rows(cells: list[dict], labels) -> list[list[str]]:
    """The README's table: the given cells (by label), in that order, where they ran."""
    by_label = {c["label"]: c for c in cells}
    rows = []
    for label in labels:
        cell = by_label.get(label)
        if cell is None:
            continue
        row = headline_row(cell)
        rows.append([row[0], row[1], row[2], row[3], row[7], row[8], row[10], row[11], row[12]])
    return rows


TORCH_COLUMNS = ("optimizer", "dtypes", "params", "threads", "grads", "pyoptim.torch ms",
                 "array API ms", "torch fused ms", "torch fused / pyoptim.torch")
_GRADS = {"torch": "p.grad", "torch-flat": "flat_grads=True"}


def torch_rows(cells: list[dict]) -> list[list[str]]:
    """pyoptim.torch (the cells of api "torch": grads as torch makes them; "torch-flat": with
    flat_grads=True) against torch fused, with the same cell through pyoptim's array API where
    the run has it (the floor: no per-tensor work in Python)."""
    arrays = {(c["variant"], c["dtypes_label"], c["shape"]["label"], c["threads"]): c
              for c in cells if c.get("api", "arrays") == "arrays"}
    rows = []
    for cell in cells:
        if cell.get("api") not in _GRADS:
            continue
        key = (cell["variant"], cell["dtypes_label"], cell["shape"]["label"], cell["threads"])

        def ms(c, name):
            entry = _entry(c, name) if c else None
            timing = entry.get("timing") if entry else None
            return f"{timing['median_s'] * 1e3:.3g}" if timing else "-"

        fused = (_entry(cell, "torch-fused") or {}).get("timing") or {}
        speedup = fused.get("pyoptim_speedup")
        rows.append([cell["variant"], cell["dtypes_label"],
                     f"{cell['shape']['label']} ({cell['shape']['count']} tensors)",
                     str(cell["threads"]), _GRADS[cell["api"]], ms(cell, PYOPTIM),
                     ms(arrays.get(key), PYOPTIM),
                     ms(cell, "torch-fused"), f"{speedup:.2f}x" if speedup else "-"])
    return rows


def bytes_rows(variants, dtypes) -> list[list[str]]:
    """Bytes moved per element for each optimizer variant and dtype combination."""
    from ._cells import DTypes, bytes_per_element  # noqa: PLC0415

    combos = [DTypes.parse(d) for d in dtypes]
    return [[v.name, ", ".join(v.states) or "-"]
            + [str(bytes_per_element(v, d)) for d in combos] for v in variants]


# ---------------------------------------------------------------------------------------------
# targets (pyoptim's, for the machine it is developed on; issue 5)


def _find(cells, variant, dtypes, size, threads=None, api="arrays"):
    return [c for c in cells if c["variant"] == variant and c["dtypes_label"] == dtypes
            and c["shape"]["label"] == size and (threads is None or c["threads"] == threads)
            and c.get("api", "arrays") == api]


def evaluate_targets(cells: list[dict]) -> list[dict]:
    """pyoptim's performance targets, checked on the cells of this run that they concern."""
    out = []

    def add(what, cell, value, threshold, unit):
        if value is None:
            return
        out.append(dict(target=what, cell=cell["label"], value=value, threshold=threshold,
                        unit=unit, met=value >= threshold))

    def roof(cell):
        mine = _pyoptim(cell)
        return mine["timing"].get("roofline_fraction") if mine and "timing" in mine else None

    def over(cell, peer):
        entry = _entry(cell, peer)
        if entry is None or "timing" not in entry:
            return None
        return entry["timing"].get("pyoptim_speedup")

    ok_cells = [c for c in cells if (_pyoptim(c) or {}).get("timing")]
    torch_api = [c for c in ok_cells if c.get("api") in _GRADS]
    ok_cells = [c for c in ok_cells if c.get("api", "arrays") == "arrays"]
    for size in ("2^24", "2^26"):
        for cell in _find(ok_cells, "adam", "fp32", size):
            add("Adam fp32 >= 95% of the roofline", cell, roof(cell), 0.95, "fraction")
            add("Adam fp32 no slower than torch fused - 5%", cell, over(cell, "torch-fused"),
                0.95, "x")
    for cell in _find(ok_cells, "adam", "fp32", "2^20"):
        add("Adam fp32 at 2^20 >= 1.5x torch fused", cell, over(cell, "torch-fused"), 1.5, "x")
    for cell in [c for c in ok_cells if c["dtypes_label"] == "fp32"
                 and c["shape"]["label"] == "2^24"]:
        add("every optimizer fp32 at 2^24 >= 90% of its roofline", cell, roof(cell), 0.90,
            "fraction")
    for cell in [c for c in ok_cells if c["variant"] == "adam" and c["dtypes_label"] == "bf16"]:
        add("bf16 params, fp32 state >= 1.5x torch fused bf16 Adam", cell,
            over(cell, "torch-fused"), 1.5, "x")
    for cell in _find(ok_cells, "adam", "fp32", "2000x1000"):
        add("2000 x 1000 arrays >= 5x torch fused", cell, over(cell, "torch-fused"), 5.0, "x")
    for cell in [c for c in torch_api if c["shape"].get("model") and c["threads"] == 1]:
        add("pyoptim.torch on a model's params, 1 thread >= 2x torch fused", cell,
            over(cell, "torch-fused"), 2.0, "x")
    return out


def format_targets(targets: list[dict]) -> str:
    def value(t):
        return f"{t['value'] * 100:.0f}%" if t["unit"] == "fraction" else f"{t['value']:.2f}x"

    def threshold(t):
        return f"{t['threshold'] * 100:.0f}%" if t["unit"] == "fraction" else \
            f"{t['threshold']:.2f}x"

    rows = [[t["target"], t["cell"], value(t), threshold(t), "met" if t["met"] else "MISSED"]
            for t in targets]
    return format_table(("target", "cell", "measured", "needed", ""), rows)


# ---------------------------------------------------------------------------------------------
# files


def _strict(value):
    """value with every NaN or infinity replaced by None: bench.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: Path, machine: dict, config: dict, cells: list[dict]) -> None:
    data = dict(format_version=FORMAT_VERSION, tool="pyoptim bench", machine=machine,
                config=config, cells=cells, targets=evaluate_targets(cells))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_strict(data), indent=1, allow_nan=False))
    tmp.replace(path)


def load_average(machine: dict) -> str:
    """The load average at the start of a run, as '1.2, 0.8, 0.5'."""
    return ", ".join(f"{x:.1f}" for x in machine["load_average_at_start"] or [])


def resumed_line(machine: dict, cells: list[dict]) -> str:
    """Where the cells of a resumed run (--resume) were measured: how many in each run."""
    counts: dict = {}
    for c in cells:
        where = c.get("measured_in") or {}
        key = (where.get("git_commit"), (where.get("date") or "")[:10])
        counts[key] = counts.get(key, 0) + 1
    return ("Resumed (`--resume`) from " + "; ".join(
        f"a run started {m['date'][:16]} at {m['git_commit']} (load average at start "
        f"{load_average(m)})" for m in machine["earlier_runs"])
        + ". Cells by the commit and day they were measured on: "
        + ", ".join(f"{n} at {commit} on {day}" for (commit, day), n in counts.items()) + ".")


def write_markdown(path: Path, machine: dict, config: dict, cells: list[dict]) -> None:
    lines = [
        "# pyoptim bench",
        "",
        f"Command: `{config['command']}`",
        "",
        f"Machine: {machine['cpu']}"
        + (f" ({machine['cpu_id']})" if machine.get("cpu_id") else "")
        + f", {machine['usable_cores']} usable cores, SIMD "
        f"{machine['simd_target']}, Python {machine['python']}, NumPy {machine['numpy']}, "
        f"torch {machine['torch']}, pyoptim {machine['pyoptim']} ({machine['git_commit']}), "
        f"{machine['date']}, load average at start {machine['load_average_at_start']}.",
        "",
        *([resumed_line(machine, cells), ""] if machine.get("earlier_runs") else []),
        "## Headline (pyoptim per cell)",
        "",
        markdown_table(HEADLINE_COLUMNS, [headline_row(c) for c in cells]),
        "",
        "## Every contestant",
        "",
        markdown_table(DETAIL_COLUMNS, [r for c in cells for r in detail_rows(c)]),
        "",
    ]
    rows = torch_rows(cells)
    if rows:
        lines += ["## pyoptim.torch against torch fused", "", markdown_table(TORCH_COLUMNS, rows),
                  ""]
    rows = control_rows(cells)
    if rows:
        lines += ["## A/A control", "",
                  "A second pyoptim contestant, identical but for its own arrays, timed in the "
                  "same rounds (--control): its time over pyoptim's is what two identical "
                  "contestants differ by in that cell.", "",
                  markdown_table(CONTROL_COLUMNS, rows), ""]
    targets = evaluate_targets(cells)
    if targets:
        lines += ["## Targets", "", "```", format_targets(targets), "```", ""]
    path.write_text("\n".join(lines))


def write_plots(folder: Path, cells: list[dict]) -> list[Path]:
    """throughput.png: pyoptim's elements/s against size per optimizer, with the roofline;
    peers.png: pyoptim and its peers against size per optimizer and thread count. Flat-buffer
    cells only (many-array cells are in the tables)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    flat = [c for c in cells if c["shape"]["count"] == 1 and (_pyoptim(c) or {}).get("timing")]
    if not flat:
        return []
    variants = list(dict.fromkeys(optimizer_label(c) for c in flat))

    def series(cells_, name):
        points = sorted((c["elements"], e["timing"]["elements_per_s"]) for c in cells_
                        for e in c["contestants"] if e["name"] == name and e.get("timing"))
        return [p[0] for p in points], [p[1] for p in points]

    def grid(panels, title):
        columns = min(3, panels)
        rows = -(-panels // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows + 0.6),
                                 squeeze=False, sharey=True)
        fig.suptitle(title)
        for ax in axes.flat[panels:]:
            ax.set_visible(False)
        for ax in axes.flat[:panels]:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("elements")
        for row in axes:
            row[0].set_ylabel("elements / s")
        return fig, list(axes.flat)

    def save(fig, name):
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    # pyoptim against the roofline: one colour per (dtypes, threads), the roofline dashed
    fig, axes = grid(len(variants), "pyoptim: elements/s against size (dashed: the roofline "
                                    "of the same bytes, same run)")
    for ax, variant in zip(axes, variants):
        mine = [c for c in flat if optimizer_label(c) == variant]
        for k, key in enumerate(dict.fromkeys((c["dtypes_label"], c["threads"]) for c in mine)):
            group = [c for c in mine if (c["dtypes_label"], c["threads"]) == key]
            x, y = series(group, PYOPTIM)
            ax.plot(x, y, "o-", color=f"C{k}",
                    label=f"{key[0]}, {key[1]}t ({group[0]['bytes_per_element']} B/el)")
            x, y = series(group, ROOFLINE)
            ax.plot(x, y, "--", color=f"C{k}", alpha=0.6)
        ax.set_title(variant)
        ax.legend(fontsize=7)
    written = [save(fig, "throughput.png")]

    # pyoptim against its peers, on the most common dtypes: one panel per (optimizer, threads)
    dtypes = max(sorted(set(c["dtypes_label"] for c in flat)),
                 key=lambda d: sum(c["dtypes_label"] == d for c in flat))
    mine = [c for c in flat if c["dtypes_label"] == dtypes]
    panels = list(dict.fromkeys((optimizer_label(c), c["threads"]) for c in mine))
    names = list(dict.fromkeys(e["name"] for c in mine for e in c["contestants"]
                               if e.get("timing") and e["name"] not in (ROOFLINE, CONTROL)))
    fig, axes = grid(len(panels), f"pyoptim and its peers, {dtypes}: elements/s against size")
    for ax, (variant, threads) in zip(axes, panels):
        group = [c for c in mine if optimizer_label(c) == variant and c["threads"] == threads]
        for k, name in enumerate(names):
            x, y = series(group, name)
            if x:
                ax.plot(x, y, "o-" if name == PYOPTIM else ".-", color=f"C{k}", label=name,
                        linewidth=2.5 if name == PYOPTIM else 1.2)
        ax.set_title(f"{variant}, {threads} thread{'s' if threads > 1 else ''}")
        ax.legend(fontsize=7)
    written.append(save(fig, "peers.png"))
    return written
