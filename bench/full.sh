#!/usr/bin/env bash
# The full benchmark, for a quiet machine (over two hours on 2 cores since every contestant of a cell runs the same steps per sample): every optimizer, dtype
# combination, size and thread count of `pyoptim bench`'s default suites, against every installed
# peer; then its tables go into bench/README.md and README.md. Extra options pass to pyoptim bench.
#
#   pip install ".[bench,test]"   # matplotlib for the plots, torch for the torch.optim peers
#   bash bench/full.sh             # bash bench/full.sh --resume goes on with a stopped run
set -euo pipefail
cd "$(dirname "$0")/.."
pyoptim bench --out bench/results "$@"
python bench/update_tables.py bench/results/bench.json
