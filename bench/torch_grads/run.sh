#!/usr/bin/env bash
# Builds reader.cpp (a Python module of its own, with the installed pybind11) and runs ab.py.
# Needs pyoptim installed with torch (pip install ".[test]"), and pybind11 (pip install pybind11).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
c++ -O2 -std=c++17 -shared -fPIC $(python -m pybind11 --includes) "$here/reader.cpp" \
  -o "$out/reader$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
PYTHONPATH="$out" python "$here/ab.py" "$@"
rm -rf "$out"
