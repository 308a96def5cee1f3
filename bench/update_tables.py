"""Writes a saved run's tables into bench/README.md and README.md.

    python bench/update_tables.py bench/results/bench.json [TABLE ...]

TABLEs: full, short, bytes (bench/README.md's full table and bytes per element, README.md's
short table) and torch (pyoptim.torch against torch fused, in both files); default: all of them,
torch only if the run has pyoptim.torch cells.

Each table goes between its markers (<!-- bench:NAME:start --> and <!-- bench:NAME:end -->),
with the command that produced the run, the machine and the date. bench/full.sh calls this after
the full run.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pyoptim.bench import DEFAULT_VARIANTS, _report
from pyoptim.bench._cells import VARIANTS

ROOT = Path(__file__).resolve().parents[1]

# The README's short table: the cells behind pyoptim's headline claims, one thread.
SHORT = ("adam fp32 2^20 1t", "adam fp32 2^24 1t", "adam fp32 2^26 1t", "adam fp32 2^26 2t",
         "adam bf16 2^24 1t", "adam fp32 2000x1000 1t", "momentum fp32 2^24 1t",
         "adagrad fp32 2^24 1t", "rmsprop fp32 2^24 1t", "adam fp32 gpt-tiny 1t torch")


def splice(path: Path, name: str, text: str) -> None:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    content = path.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    path.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", content))


def provenance(data: dict) -> str:
    m = data["machine"]
    return (f"Measured with `{data['config']['command']}` on {m['cpu']} ({m['usable_cores']} "
            f"cores, SIMD {m['simd_target']}), torch {m['torch']}, pyoptim {m['pyoptim']} "
            f"({m['git_commit']}), {m['date'][:10]}; load average at start "
            f"{_report.load_average(m)}."
            + (" " + _report.resumed_line(m, data["cells"]) if m.get("earlier_runs") else ""))


TABLES = ("full", "short", "bytes", "torch")


def main(argv) -> int:
    if not argv or any(t not in TABLES for t in argv[1:]):
        raise SystemExit(__doc__)
    data = json.loads(Path(argv[0]).read_text())
    cells = data["cells"]
    torch_rows = _report.torch_rows(cells)
    tables = argv[1:] or [t for t in TABLES if t != "torch" or torch_rows]
    if "full" in tables:
        full = "\n\n".join([
            provenance(data),
            _report.markdown_table(_report.HEADLINE_COLUMNS,
                                   [_report.headline_row(c) for c in cells]),
        ])
        if data.get("targets"):
            targets = _report.format_targets(data["targets"])
            full += f"\n\nTargets, same run:\n\n```\n{targets}\n```"
        splice(ROOT / "bench" / "README.md", "full", full)
    if "short" in tables:
        short = "\n\n".join([
            _report.markdown_table(_report.SHORT_COLUMNS, _report.short_rows(cells, SHORT)),
            provenance(data) + " Full table: [bench/README.md](bench/README.md).",
        ])
        splice(ROOT / "README.md", "short", short)
    if "bytes" in tables:
        dtypes = ("fp32", "fp64", "bf16", "fp16", "bf16/bf16/bf16")
        splice(ROOT / "bench" / "README.md", "bytes", _report.markdown_table(
            ("optimizer", "state buffers", *dtypes),
            _report.bytes_rows([VARIANTS[v] for v in VARIANTS], dtypes)))
    if "torch" in tables:
        if not torch_rows:
            raise SystemExit(f"{argv[0]}: the run has no pyoptim.torch cells (--api torch)")
        table = "\n\n".join([_report.markdown_table(_report.TORCH_COLUMNS, torch_rows),
                              provenance(data)])
        splice(ROOT / "bench" / "README.md", "torch", table)
        splice(ROOT / "README.md", "torch", table)
    print(f"updated {', '.join(tables)} in bench/README.md and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
