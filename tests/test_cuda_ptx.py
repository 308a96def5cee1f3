"""No hidden float64, no FMA: the CUDA kernels compiled to PTX for a real GPU (sm_80).

A Python float literal in a float32 kernel makes Numba compute in float64 on a GPU, which the
simulator hides; a product fused into an FMA rounds once where the reference rounds twice. So the
kernels are compiled to PTX, as a GPU would run them, and their instructions are read:
float32-compute kernels (float32, float16 and bfloat16 params) have no ``.f64`` instruction at all,
and no kernel has an ``fma``/``mad``, an approximate (``.approx``) or flush-to-zero (``.ftz``)
instruction (pyoptim/_cuda_rules.py, Note [exact on the GPU]).

Compiling needs NVVM and NVRTC (the ``cuda`` extra brings them: numba-cuda[cu13]) but no GPU. The
simulator and the real target cannot share a process, so the compilation runs in a subprocess
without NUMBA_ENABLE_CUDASIM. Kernels checked: every flag combination of every optimizer with
float32 storage (every code path of every rule), and the kernel with all flags on for six dtype
combinations that put float64, float16 and bfloat16 in every role (every load and store).
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


def instructions(ptx):
    lines = (line.split("//")[0].strip() for line in ptx.splitlines())
    return [line for line in lines if line and not line.startswith((".", "{", "}", "$", ")"))]


def compile_to_ptx(function, signature):
    ptx, _ = cuda.compile_ptx(function, signature, cc=CC)
    return instructions(ptx)


# The check itself: a float32 kernel with a Python float literal must show float64 instructions.
def literal(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = x[i] * 0.5 + 1.0


seen = compile_to_ptx(literal, (types.float32[::1],))
report = {"literal_f64": sum(bool(F64.search(line)) for line in seen), "kernels": []}

keys = []
for opt in {o.kernel: o for o in _spec.OPTIMIZERS.values()}.values():
    if opt.kernel not in _cuda_kernels.RULES:  # refused on the GPU (tests/harness.py: PENDING)
        continue
    every = (1 << len(opt.flags)) - 1
    keys += [(opt, _cuda_kernels.Key(opt.kernel, flags, "float32", "float32", "float32"))
             for flags in range(every + 1)]
    keys += [(opt, _cuda_kernels.Key(opt.kernel, every, *combo)) for combo in STORAGE]
for opt, key in keys:
    lines = compile_to_ptx(_cuda_kernels.kernel(opt, key).py_func,
                           _cuda_kernels.signature(opt, key))
    report["kernels"].append({
        "key": list(key),
        "instructions": len(lines),
        "f64": [line for line in lines if F64.search(line)][:5],
        "inexact": [line for line in lines if INEXACT.search(line)][:5],
        "mul_rn": sum("mul.rn." in line for line in lines),
    })
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


def test_float32_kernels_have_no_float64(report):
    float32 = [k for k in report["kernels"] if k["key"][2] != "float64"]
    from pyoptim._cuda_rules import RULES  # noqa: PLC0415 (needs numba-cuda: after the skip)

    kernels = [o for o in {o.kernel: o for o in _spec.OPTIMIZERS.values()}.values()
               if o.kernel in RULES]
    assert len(float32) == sum((1 << len(o.flags)) + 4 for o in kernels)  # + 4 16-bit combinations
    offenders = [(k["key"], k["f64"]) for k in float32 if k["f64"]]
    assert not offenders, offenders


def test_no_fma_approximation_or_flush_to_zero(report):
    offenders = [(k["key"], k["inexact"]) for k in report["kernels"] if k["inexact"]]
    assert not offenders, offenders
    # the products are there, rounded on their own
    assert all(k["mul_rn"] > 0 for k in report["kernels"])
