"""The build: what C++ and Python must agree on, the 16-bit conversions, the error without the
extension, and the portability of what users install."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap
import warnings

import ml_dtypes
import numpy as np
import pytest

from pyoptim import _cpu, _spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_core = pytest.mark.skipif(not _cpu.available(), reason="the compiled extension is not built")


@needs_core
def test_python_and_cpp_agree_on_every_optimizer():
    """pyoptim/_spec.py passes flags and scalars by position: the names must match csrc/rules.h."""
    core = _cpu.core().optimizers()
    for opt in _spec.OPTIMIZERS.values():
        assert core[opt.kernel]["states"] == list(opt.states), opt.name
        assert core[opt.kernel]["flags"] == list(opt.flags), opt.name
        assert core[opt.kernel]["scalars"] == list(opt.scalar_type._fields), opt.name


@needs_core
def test_python_and_cpp_agree_on_the_dtype_combinations():
    assert [tuple(c) for c in _cpu.core().supported_dtypes()] == list(_spec.DTYPE_COMBINATIONS)


def _convert(values, dtype, blocks=False):
    out = np.empty(values.shape, dtype)
    _cpu.core()._convert(values, out, blocks=blocks)
    return out


# The 16-bit types are converted two ways: element by element (storage.h, inside the update
# loops) and a block at a time (csrc/halves.cpp: the update loops of float16 params, with F16C
# where the CPU has it, which every x86-64-v3 CPU does; LAMB's pieces of float16 and bfloat16).
# Both must give NumPy's (ml_dtypes') bits.
TWO_WAYS = pytest.mark.parametrize("blocks", [False, True], ids=["elements", "blocks"])


@needs_core
@TWO_WAYS
def test_float16_to_float32_is_exact_for_every_half(blocks):
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16)
    got = _convert(halves, np.float32, blocks)
    want = halves.astype(np.float32)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(want))


@needs_core
@TWO_WAYS
def test_bfloat16_to_float32_is_exact_for_every_value(blocks):
    """bfloat16 too: element by element, and a block at a time (LAMB's pieces)."""
    values = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    got = _convert(values, np.float32, blocks)
    assert np.array_equal(got, values.astype(np.float32), equal_nan=True)


def _rounding_cases(target):
    """Every value of the 16-bit type, the float32s halfway to its neighbours (ties) and one ulp
    either side of those, plus random floats over the whole range."""
    values = np.arange(2**16, dtype=np.uint16).view(target).astype(np.float32)
    values = np.sort(values[np.isfinite(values)])
    mid = values[:-1] + (values[1:] - values[:-1]) / 2  # exact: float32 has room for the tie
    ties = np.concatenate([mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf)])
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**32, size=2**22, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 65536, 1e-8,
                        2**-24, 2**-25, 3 * 2**-26, 2**-14, 3.4e38, 1e-45], np.float32)
    return np.concatenate([values, ties, random, special, -special])


@needs_core
@pytest.mark.parametrize("target, blocks", [(np.float16, False), (np.float16, True),
                                            (ml_dtypes.bfloat16, False),
                                            (ml_dtypes.bfloat16, True)],
                         ids=["float16-elements", "float16-blocks", "bfloat16-elements",
                              "bfloat16-blocks"])
def test_float32_rounds_to_16_bits_to_nearest_even(target, blocks):
    values = _rounding_cases(target)
    got = _convert(values, target, blocks)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow to infinity is the point
        want = values.astype(target)
    same = (got.view(np.uint16) == want.view(np.uint16)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{np.count_nonzero(~same)} mismatches, e.g. {values[~same][:5]}"


@needs_core
@TWO_WAYS
def test_float32_nans_round_to_quiet_bfloat16_nans_of_the_same_sign_and_top_payload(blocks):
    """A NaN keeps its sign and the top bits of its payload, made quiet (bit 6 of the bfloat16
    set), whatever its low bits: signalling NaNs whose payload lies only in the bits rounding
    drops included (a rounding carry must not turn them into infinities or other values)."""
    bits = np.array([0x7F800001, 0x7F80FFFF, 0x7FBFFFFF, 0x7FC00000, 0x7FFFFFFF, 0x7FA12345,
                     0xFF800001, 0xFFC00000, 0xFFFFFFFF, 0xFFA18000], np.uint32)
    got = _convert(np.tile(bits, 5).view(np.float32), ml_dtypes.bfloat16, blocks).view(np.uint16)
    want = np.tile((bits >> 16) | 0x40, 5).astype(np.uint16)
    assert np.array_equal(got, want), [hex(v) for v in got[:10]]


@needs_core
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 31, 33, 1000])
def test_16_bit_blocks_convert_exactly_n_elements(n, dtype):
    """The block conversions' tails (float16: the last n % 8 or n % 16 through a padded vector;
    bfloat16: the SIMD loop's remainder): exactly n elements are read and written, none beyond."""
    values = np.arange(1, n + 3, dtype=np.float32) / 4
    halves = np.full(n + 2, 7, dtype)
    _cpu.core()._convert(values[:n], halves[:n], blocks=True)
    assert np.array_equal(halves[:n], values[:n].astype(dtype))
    assert (halves[n:] == 7).all()
    back = np.full(n + 2, -1, np.float32)
    _cpu.core()._convert(halves[:n], back[:n], blocks=True)
    assert np.array_equal(back[:n], halves[:n].astype(np.float32)) and (back[n:] == -1).all()


def test_without_the_extension_a_host_step_says_how_to_build_it(tmp_path):
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "pyoptim._core":
                    raise ImportError("simulated: no compiled extension")
        sys.meta_path.insert(0, Block())
        import numpy as np, pyoptim
        # no 'cpu' ('cuda' may be there: numba-cuda's simulator under tests/conftest.py)
        assert "cpu" not in pyoptim.available_backends(), pyoptim.available_backends()
        p, g = np.ones(4, np.float32), np.ones(4, np.float32)
        pyoptim.functional.sgd(p, g, step=1, lr=0.5, backend="numpy")
        assert (p == 0.5).all()
        try:
            pyoptim.functional.sgd(p, g, step=1)
        except ImportError as e:
            print(e)
        else:
            raise SystemExit("no error")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)  # not the repository root: see test_threads
    assert out.returncode == 0, out.stderr
    assert "pip install ." in out.stdout and "backend='numpy'" in out.stdout


def test_nothing_users_install_is_built_non_portably_or_with_fast_math():
    pattern = re.compile(r"-march=native|-mtune=native|-ffast-math|-Ofast|fastmath\s*=\s*True|"
                         r"--use_fast_math|-funsafe-math-optimizations")
    sources = [ROOT / "CMakeLists.txt", ROOT / "pyproject.toml",
               *(ROOT / "csrc").glob("*"), *(ROOT / "pyoptim").rglob("*.py")]
    offenders = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in sources if path.is_file()
                 for m in pattern.finditer(path.read_text())]
    assert not offenders


@needs_core
def test_the_simd_target_is_reported():
    assert re.match(r"x86-64|build target", _cpu.core().simd_target())


@needs_core
def test_ml_dtypes_is_imported_only_for_bfloat16(tmp_path):
    """Importing ml_dtypes takes longer than all of pyoptim (it registers a dozen dtypes), and
    a bfloat16 array exists only once its caller imported it: pyoptim imports it only where
    bfloat16 is asked for by name. The compiled module, loaded before ml_dtypes, then recognizes
    its bfloat16 arrays (the reference's bits), and 'bfloat16' as a state dtype imports it."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import pyoptim, pyoptim.functional, pyoptim.optim, pyoptim.flat, pyoptim.reference
        from pyoptim import _cpu

        p = np.ones(1000, np.float32)
        opt = pyoptim.Adam([p], lr=1e-2)
        opt.step([np.full(1000, 0.5, np.float32)])
        pyoptim.functional.sgd(p, p.copy(), step=1, lr=0.1)
        assert _cpu.available() and "ml_dtypes" not in sys.modules, "ml_dtypes imported"

        import ml_dtypes
        rng = np.random.default_rng(0)
        p = rng.standard_normal(1031).astype(ml_dtypes.bfloat16)
        want = p.copy()
        m, v, m_ref, v_ref = (np.zeros(1031, np.float32) for _ in range(4))
        for t in range(1, 8):
            g = rng.standard_normal(1031).astype(ml_dtypes.bfloat16)
            pyoptim.functional.adam(p, g, exp_avg=m, exp_avg_sq=v, step=t, lr=1e-2)
            pyoptim.reference.adam(want, g, exp_avg=m_ref, exp_avg_sq=v_ref, step=t, lr=1e-2)
        for got, ref in ((p, want), (m, m_ref), (v, v_ref)):
            assert np.array_equal(got.view(np.uint8), ref.view(np.uint8))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)  # not the repository root: see test_threads
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

    by_name = textwrap.dedent("""
        import sys
        import numpy as np
        import pyoptim
        flat = pyoptim.flat.FlatBuffer([(100,)], "bfloat16")
        assert "ml_dtypes" in sys.modules and flat.buffer.dtype.name == "bfloat16"
        p = flat.views[0]
        p[...] = 1
        opt = pyoptim.Adam([p], lr=1e-2, state_dtype="bfloat16")
        opt.step([np.full(100, 0.5, np.float32)])
        assert opt.state_dict()["state"][0]["exp_avg"].dtype.name == "bfloat16"
        assert pyoptim.reference.compute_dtype_for("bfloat16") == np.float32
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", by_name], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
