"""No hidden float64, no FMA: the CUDA kernels compiled to PTX for a real GPU (sm_80).

A Python float literal in a float32 kernel makes Numba compute in float64 on a GPU, which the
simulator hides; a product fused into an FMA rounds once where the reference rounds twice. So the
kernels are compiled to PTX, as a GPU would run them, and their instructions are read:
float32-compute kernels (float32, float16 and bfloat16 params) have no ``.f64`` instruction at all,
and no kernel has an ``fma``/``mad``, an approximate (``.approx``) or flush-to-zero (``.ftz``)
instruction (pyoptim/_cuda_rules.py, Note [exact on the GPU]).

One exemption, narrow: sums of squares are float64 by definition (pyoptim/_cuda_sums.py, as the
C++ backend's), so LAMB's first pass, a float32 kernel that also adds up the squares of the param
and of the update direction, may widen float32 values to float64 (``cvt.f64.f32``), multiply
(``mul.rn.f64``), add, move, and load and store them in shared memory and store the block's sums
(``st.global.f64``), and nothing else: no float64 value is read from global memory, divided,
compared, or narrowed back to float32, which a float literal leaking into the float32 math would
need (its result ends in a float32 store). The direction it sums is also computed by LAMB's second
pass, whose kernel has no float64 at all. The reduction kernels that only add float64 sums (the
trust ratio, the global sum of squares) are float64 kernels: checked for FMA and the rest only.

Compiling needs NVVM and NVRTC (the ``cuda`` extra brings them: numba-cuda[cu13]) but no GPU. The
simulator and the real target cannot share a process, so the compilation runs in a subprocess
without NUMBA_ENABLE_CUDASIM. Kernels checked: every flag combination of every optimizer with
float32 storage (every code path of every rule), the kernel with all flags on for six dtype
combinations that put float64, float16 and bfloat16 in every role (every load and store), and
the sum-of-squares kernels of every storage dtype.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyoptim import _cuda, _spec

SCRIPT = r"""
import json, re, sys

from numba.cuda.cudadrv import nvvm

if not nvvm.is_available():
    print(json.dumps({"skip": "NVVM (libnvvm) is not installed; pip install 'pyoptim[cuda]'"}))
    sys.exit(0)

# cuda.compile_ptx compiles a kernel for the compute capability it is given, but numba-cuda 0.30
# compiles the device functions a kernel calls for the current device, which needs a GPU: stand
# in a device of the target's compute capability.
import numba.cuda.dispatcher as dispatcher


class Target:
    compute_capability = (8, 0)


dispatcher.get_current_device = lambda: Target()

import numpy as np
from numba import cuda, types

from pyoptim import _spec, _cuda_kernels

CC = (8, 0)
# every storage dtype in every role (param, grad, state)
STORAGE = [("float64", "float64", "float64"), ("float64", "float32", "float32"),
           ("float16", "float16", "float16"), ("float16", "float32", "float32"),
           ("bfloat16", "bfloat16", "bfloat16"), ("bfloat16", "float32", "float32")]
F64 = re.compile(r"\.f64\b")
INEXACT = re.compile(r"\b(fma|mad)\.|\.approx\b|\.ftz\b")
# what a float32 kernel may do in float64 to add up squares (module docstring)
SUMS_F64 = re.compile(r"(cvt\.f64\.f32|mul\.rn\.f64|add(\.rn)?\.f64|mov\.f64|"
                      r"(ld|st)\.shared\.f64|st\.global\.f64)\s")


def instructions(ptx):
    lines = (line.split("//")[0].strip() for line in ptx.splitlines())
    return [line for line in lines if line and not line.startswith((".", "{", "}", "$", ")"))]


def compile_to_ptx(function, signature):
    ptx, _ = cuda.compile_ptx(function, signature, cc=CC)
    return instructions(ptx)


# The check itself: a float32 kernel with a Python float literal must show float64 instructions,
# and ones that the exemption for sums does not allow.
def literal(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = x[i] * 0.5 + 1.0


seen = compile_to_ptx(literal, (types.float32[::1],))
report = {"literal_f64": sum(bool(F64.search(line)) for line in seen),
          "literal_outside_sums": sum(bool(F64.search(line)) and not SUMS_F64.match(line)
                                      for line in seen),
          "kernels": []}


def record(key, kernel):
    lines = compile_to_ptx(kernel.function, kernel.signature)
    f64 = [line for line in lines if F64.search(line)]
    if kernel.float64 == "sums":
        f64 = [line for line in f64 if not SUMS_F64.match(line)]
    report["kernels"].append({
        "key": list(key) + [kernel.role],
        "float64": kernel.float64,
        "instructions": len(lines),
        "f64": f64[:5] if kernel.float64 != "all" else [],
        "inexact": [line for line in lines if INEXACT.search(line)][:5],
        "mul_rn": sum("mul.rn." in line for line in lines),
    })


for opt in {o.kernel: o for o in _spec.OPTIMIZERS.values()}.values():
    every = (1 << len(opt.flags)) - 1
    keys = [_cuda_kernels.Key(opt.kernel, flags, "float32", "float32", "float32")
            for flags in range(every + 1)]
    keys += [_cuda_kernels.Key(opt.kernel, every, *combo) for combo in STORAGE]
    for key in keys:
        for kernel in _cuda_kernels.compiled(opt, key):
            record(key, kernel)
for kernel in _cuda_kernels.compiled_reductions():
    record(("sum_of_squares",), kernel)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not _cuda.installed():
        pytest.skip("numba-cuda is not installed (pip install 'pyoptim[cuda]')")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=900, cwd=tmp_path_factory.mktemp("ptx"))  # the installed pyoptim
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


def test_the_check_sees_float64(report):
    assert report["literal_f64"] > 0
    assert report["literal_outside_sums"] > 0  # the exemption for sums would not hide it


def test_float32_kernels_have_no_float64(report):
    kernels = [k for k in report["kernels"] if k["key"][0] != "sum_of_squares"]
    optimizers = {o.kernel: o for o in _spec.OPTIMIZERS.values()}.values()
    # every flag combination with float32 storage, and 6 dtype combinations (4 of float32 compute)
    steps = {(k["key"][0], k["key"][1], *k["key"][2:5]) for k in kernels}
    assert len(steps) == sum((1 << len(o.flags)) + 6 for o in optimizers)
    float32 = [k for k in kernels if k["key"][2] != "float64" and k["float64"] != "all"]
    assert {k["key"][-1] for k in float32} == {"update", "moments", "apply"}
    offenders = [(k["key"], k["f64"]) for k in float32 if k["f64"]]
    assert not offenders, offenders


def test_no_fma_approximation_or_flush_to_zero(report):
    offenders = [(k["key"], k["inexact"]) for k in report["kernels"] if k["inexact"]]
    assert not offenders, offenders
    # the products are there, rounded on their own (the tree sums only add)
    assert all(k["mul_rn"] > 0 for k in report["kernels"]
               if k["key"][-1] not in ("ratio", "total"))
    assert {k["key"][-1] for k in report["kernels"]} >= {"squares", "total", "ratio"}
