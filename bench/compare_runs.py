"""Two saved runs of `pyoptim bench` side by side, cell by cell: pyoptim's % of the roofline and
its speedup over the best peer in each, for the cells both runs hold.

    python bench/compare_runs.py OLD.json NEW.json [--all] [--threshold 0.12]

By default only the cells where either figure moved by more than the threshold (a fraction;
ratios of one run against another move by 10-20% on a shared 2-core machine with nothing
changed) are listed. The last full run's bench.json is in git history, e.g.
``git show 10d3f3f:bench/results/bench.json > old.json``.
"""

from __future__ import annotations

import argparse
import json


def figures(cell: dict) -> tuple[float | None, float | None]:
    """pyoptim's fraction of the roofline and its speedup over the best peer (None: not timed)."""
    timing = next((c.get("timing") for c in cell["contestants"] if c["name"] == "pyoptim"), None)
    return (timing or {}).get("roofline_fraction"), cell.get("speedup_vs_best_peer")


def moved(old: float | None, new: float | None, threshold: float) -> bool:
    return bool(old and new and abs(new / old - 1) > threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--all", action="store_true", help="every cell both runs hold")
    parser.add_argument("--threshold", type=float, default=0.12)
    args = parser.parse_args()
    old = {c["label"]: c for c in json.load(open(args.old))["cells"]}
    new = json.load(open(args.new))["cells"]

    def show(x, percent=False):
        return "-" if x is None else f"{x * 100:.0f}%" if percent else f"{x:.2f}x"

    print(f"{'cell':42s} {'roof old':>8s} {'roof new':>8s} {'spd old':>8s} {'spd new':>8s}  "
          "best peer (new)")
    for cell in new:
        before = old.get(cell["label"])
        if before is None:
            continue
        (roof_old, speed_old), (roof_new, speed_new) = figures(before), figures(cell)
        if args.all or moved(roof_old, roof_new, args.threshold) or moved(
                speed_old, speed_new, args.threshold):
            print(f"{cell['label']:42s} {show(roof_old, True):>8s} {show(roof_new, True):>8s} "
                  f"{show(speed_old):>8s} {show(speed_new):>8s}  {cell.get('best_peer', '-')}")


if __name__ == "__main__":
    main()
