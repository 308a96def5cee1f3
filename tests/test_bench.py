"""`pyoptim bench`: runs end to end, validates before timing, counts bytes right, refuses bad
options. No timing is asserted (speed is measured by the benchmark, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import pyoptim
from pyoptim import _cpu, bench, cli
from pyoptim.bench import _cells, _contestants, _main, _report, _runner
from pyoptim.bench._cells import VARIANTS, Cell, DTypes, Shape, bytes_per_element, master_data
from pyoptim.bench._runner import validate

needs_core = pytest.mark.skipif(not _cpu.available(), reason="the C++ extension is not built")
TINY = ["--repeat", "2", "--warmup", "1", "--validate-steps", "2", "--sample-time", "0.0002"]


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _load(out) -> dict:
    return json.loads((out / "bench.json").read_text())


def _entry(cell: dict, name: str) -> dict:
    (entry,) = [c for c in cell["contestants"] if c["name"] == name]
    return entry


# ---------------------------------------------------------------------------------------------
# bytes per element, from the optimizer's state buffers and the dtypes


@pytest.mark.parametrize("variant, dtypes, expected", [
    ("adam", "fp32", 28),            # read p g m v, write p m v: 7 x 4
    ("adamw", "fp32", 28),
    ("amsgrad", "fp32", 36),         # + max_exp_avg_sq read and written
    ("sgd", "fp32", 12),             # no momentum: read p g, write p
    ("momentum", "fp32", 20),
    ("adagrad", "fp64", 40),
    ("rmsprop", "fp32", 20),
    ("rmsprop-centered", "fp64", 72),  # square_avg, momentum_buffer, grad_avg: 3 x 8 + 6 x 8
    ("adam", "bf16", 22),            # bf16 p (2 + 2), bf16 g (2), fp32 m v (16)
    ("adam", "bf16/bf16/bf16", 14),  # what torch's bf16 Adam moves
    ("adam", "fp16/fp32/fp16", 16),
    ("adam", "fp64/fp32/fp32", 36),
    ("nadam", "fp32", 28),           # mu_product is one value per array: no bytes per element
    ("asgd", "fp32", 20),            # ax; eta and mu are host scalars
    ("rprop", "fp32", 28),           # prev, step_size
    ("lion", "bf16", 14),
    ("lamb", "fp32", 40),            # pass 1: read p g m v, write m v; pass 2: read p m v, write p
    ("lamb", "bf16/bf16/bf16", 20),
])
def test_bytes_per_element(variant, dtypes, expected):
    assert bytes_per_element(VARIANTS[variant], DTypes.parse(dtypes)) == expected


@needs_core
@pytest.mark.parametrize("dtypes", ["fp32", "fp64", "bf16", "fp16/fp32/fp16", "fp64/fp32/fp32"])
@pytest.mark.parametrize("states", [0, 1, 2, 3])
def test_stream_pass_moves_and_writes_what_it_says(dtypes, states):
    """The roofline pass counts the same bytes as the step and really reads and writes every
    buffer: every element written becomes the mean of the element's inputs."""
    d = DTypes.parse(dtypes)
    n = 4099
    types = [d.param, d.grad] + [d.state] * states
    values = [1.0, 3.0, 5.0, 7.0, 9.0][: len(types)]
    arrays = [np.full(n, v, np.dtype(ml_dtypes.bfloat16) if t == "bfloat16" else t)
              for v, t in zip(values, types)]
    stream = _cpu.core().StreamPass(arrays[0], arrays[1], arrays[2:])
    size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
    assert stream.bytes_per_element == 2 * size[d.param] + size[d.grad] + 2 * states * size[d.state]
    stream.run()
    mean = sum(values) / len(values)
    for k, a in enumerate(arrays):
        expected = values[1] if k == 1 else mean  # the grad is only read
        np.testing.assert_array_equal(a.astype(np.float64), np.full(n, expected))


@needs_core
def test_stream_pass_refuses_bad_buffers():
    core = _cpu.core()
    a = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        core.StreamPass(a, a, [])
    read_only = np.zeros(10, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        core.StreamPass(read_only, np.zeros(10, np.float32), [])
    with pytest.raises(ValueError, match="size"):
        core.StreamPass(a, np.zeros(11, np.float32), [])
    with pytest.raises(TypeError, match="dtype"):
        core.StreamPass(a, np.zeros(10, np.int32), [])
    with pytest.raises(TypeError, match="combination"):
        core.StreamPass(a, np.zeros(10, np.float64), [])
    with pytest.raises(ValueError, match="C-contiguous"):
        core.StreamPass(np.zeros(20, np.float32)[::2], np.zeros(10, np.float32), [])


# ---------------------------------------------------------------------------------------------
# validation before timing


class _Broken(_contestants.NumpyReference):
    """The NumPy reference with a bug: from the second step on, the gradient's sign flipped."""

    def step(self):
        super().step()
        if self.t == 1:  # from now on, ascending
            self._calls = [(p, g, dict(kwargs, maximize=True)) for p, g, kwargs in self._calls]


@needs_core
@pytest.mark.parametrize("variant, dtypes, shape", [
    ("adam", "fp32", "4099"), ("momentum", "bf16", "3x1000"), ("rmsprop", "fp64", "1000"),
    ("nadam", "fp32", "3x1000"), ("rprop", "bf16", "4099"), ("asgd", "fp64", "1000"),
])
def test_validation_passes_pyoptim_exactly_and_fails_a_broken_contestant(variant, dtypes, shape):
    cell = Cell(VARIANTS[variant], DTypes.parse(dtypes), Shape.parse(shape), 1)
    master = master_data(cell.shape, seed=1)
    good = _contestants.Pyoptim(cell, master, "cpu")
    broken = _Broken(cell, master, "cpu")
    broken.name = "broken"
    checks = validate(cell, master, [good, broken], steps=3)
    assert checks["pyoptim"].ok and checks["pyoptim"].exact
    assert not checks["broken"].ok
    assert "tolerance" in checks["broken"].message


@needs_core
@pytest.mark.parametrize("dtypes", ["fp32", "fp16/fp16/fp16"])
def test_lamb_is_validated_against_the_reference_over_each_whole_array(dtypes, monkeypatch):
    """LAMB's trust ratio takes norms over each whole param array, so the validation runs the
    reference on all of an array, not a chunk at a time as for the elementwise optimizers
    (chunked, each chunk got its own ratio: pyoptim's exact step failed LAMB fp16/fp16/fp16 at
    2^24). Chunks of 1000 here, on arrays of 4099."""
    monkeypatch.setattr(_runner, "CHUNK", 1000)
    for variant, shape in (("lamb", "4099"), ("lamb", "2x4099"), ("adam", "4099")):
        cell = Cell(VARIANTS[variant], DTypes.parse(dtypes), Shape.parse(shape), 1)
        master = master_data(cell.shape, seed=3)
        (check,) = validate(cell, master, [_contestants.Pyoptim(cell, master, "cpu")],
                            steps=3).values()
        assert check.ok and check.exact, f"{variant} {shape}: {check.message}"


@needs_core
def test_a_broken_peer_is_reported_failing_and_not_timed(tmp_path, monkeypatch, capsys):
    real = _main.make_peer

    def make_peer(name, cell, master, backend):
        return _Broken(cell, master, backend) if name == "numpy" else real(name, cell, master,
                                                                           backend)

    monkeypatch.setattr(_main, "make_peer", make_peer)
    status = bench.main(["--optimizers", "adam", "--sizes", "1000", "--threads", "1",
                         "--peers", "numpy", "--no-plots", "--out", str(tmp_path), *TINY])
    assert status == 0  # a failing peer is reported; pyoptim itself passed
    out = capsys.readouterr().out
    assert "numpy FAILED validation" in out
    (cell,) = _load(tmp_path)["cells"]
    peer = _entry(cell, "numpy")
    assert peer["validation"]["ok"] is False
    assert "timing" not in peer
    assert "timing" in _entry(cell, "pyoptim")
    assert "best_peer" not in cell


@needs_core
def test_a_contestant_that_raises_is_reported_failing(tmp_path, monkeypatch):
    class Raising(_contestants.NumpyReference):
        def step(self):
            raise RuntimeError("no kernel for this")

    monkeypatch.setattr(_main, "make_peer", lambda name, cell, master, backend:
                        Raising(cell, master, backend))
    status = bench.main(["--optimizers", "adamw", "--sizes", "100", "--threads", "1",
                         "--peers", "numpy", "--no-plots", "--out", str(tmp_path), *TINY])
    assert status == 0
    peer = _entry(_load(tmp_path)["cells"][0], "numpy")
    assert not peer["validation"]["ok"] and "timing" not in peer
    assert peer["validation"]["message"] == "raised RuntimeError: no kernel for this"


@needs_core
def test_a_broken_pyoptim_fails_the_run(tmp_path, monkeypatch, capsys):
    real_step = _contestants.Pyoptim.step

    def step(self):
        real_step(self)
        self.params[0][::97] += 1  # a wrong element here and there

    monkeypatch.setattr(_contestants.Pyoptim, "step", step)
    status = bench.main(["--optimizers", "sgd", "--sizes", "4099", "--threads", "1",
                         "--peers", "none", "--no-plots", "--out", str(tmp_path), *TINY])
    assert status == 1
    assert "FAILED" in capsys.readouterr().out
    (cell,) = _load(tmp_path)["cells"]
    mine = _entry(cell, "pyoptim")
    assert mine["validation"]["ok"] is False and "timing" not in mine


# ---------------------------------------------------------------------------------------------
# end to end


@needs_core
def test_two_pass_roofline_moves_the_two_passes_bytes(tmp_path):
    """LAMB's roofline: the first pass's bytes and a second pass of P + 2S more, for every
    dtype combination (16-bit params with float32 state take a pass of 16-bit buffers)."""
    status = cli.main(["bench", "--optimizers", "lamb", "--dtypes",
                       "fp32,fp64,bf16/bf16/bf16,bf16,fp16,fp16/fp16/fp16,fp16/fp32/fp32",
                       "--sizes", "1000", "--threads", "1", "--peers", "none", "--no-plots",
                       "--out", str(tmp_path), *TINY])
    assert status == 0
    cells = _load(tmp_path)["cells"]
    assert [c["bytes_per_element"] for c in cells] == [40, 80, 20, 32, 32, 20, 34]
    for cell in cells:
        assert _entry(cell, "pyoptim")["validation"]["exact"]
        assert _entry(cell, "roofline")["bytes_per_element"] == cell["bytes_per_element"]
        assert _entry(cell, "pyoptim")["timing"]["roofline_fraction"] > 0


@needs_core
def test_a_cell_without_a_roofline_pass_is_timed_without_one(tmp_path, monkeypatch, capsys):
    """A cell whose bytes no StreamPass moves (none left among the CPU cells: a roofline made
    to fail here) is still validated and timed, without a % of the roofline, and the run says
    why (it used to stop the whole run with a ValueError)."""

    def second_pass(self, n, states):
        raise _contestants.Unavailable("no roofline pass moves a two-pass step's bytes")

    monkeypatch.setattr(_contestants.Roofline, "_second_pass", second_pass)
    status = cli.main(["bench", "--optimizers", "lamb,adam", "--dtypes", "bf16",
                       "--sizes", "1000", "--threads", "1", "--peers", "none", "--no-plots",
                       "--out", str(tmp_path), *TINY])
    assert status == 0
    lamb, adam = _load(tmp_path)["cells"]
    mine = _entry(lamb, "pyoptim")
    assert mine["validation"]["exact"] and mine["timing"]["median_s"] > 0
    assert "roofline_fraction" not in mine["timing"]
    assert [c for c in lamb["contestants"] if c["name"] == "roofline"] == []
    assert "two-pass" in lamb["roofline_unavailable"]
    assert _entry(adam, "pyoptim")["timing"]["roofline_fraction"] > 0  # the next cell has one
    out = capsys.readouterr().out
    assert "roofline: no roofline pass" in out and "(1 cell)" in out
    assert "| lamb | bf16 | 1000 | 1 | 32 |" in (tmp_path / "results.md").read_text()


@needs_core
def test_runs_end_to_end_and_writes_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    peers = "numpy,torch-fused" if _has("torch") else "numpy"
    status = cli.main(["bench", "--optimizers", "adam,momentum", "--dtypes", "fp32,bf16",
                       "--sizes", "1000,3x257", "--threads", "1,2", "--peers", peers,
                       "--out", str(tmp_path), *TINY])
    assert status == 0
    out = capsys.readouterr().out
    assert "adam" in out and "momentum" in out and "Wrote" in out

    data = _load(tmp_path)
    machine = data["machine"]
    assert machine["simd_target"] == _cpu.core().simd_target()
    for key in ("cpu", "logical_cores", "python", "numpy", "pyoptim"):
        assert machine[key]
    assert data["config"]["command"].startswith("pyoptim bench")
    cells = data["cells"]
    assert len(cells) == 2 * 2 * 2 * 2
    assert {c["threads"] for c in cells} == {1, 2}
    for cell in cells:
        mine = _entry(cell, "pyoptim")
        assert mine["validation"]["exact"]
        roof = _entry(cell, "roofline")
        assert roof["bytes_per_element"] == cell["bytes_per_element"]
        for entry in (mine, roof):
            t = entry["timing"]
            assert len(t["samples_s"]) == 2 and t["median_s"] > 0
            assert t["gb_per_s"] == pytest.approx(
                entry["bytes_per_element"] * cell["elements"] / t["median_s"] / 1e9)
        assert mine["timing"]["roofline_fraction"] > 0
        numpy_peer = _entry(cell, "numpy")
        assert numpy_peer["validation"]["ok"] and numpy_peer["timing"]["pyoptim_speedup"] > 0
        assert cell["best_peer"] in ("numpy", "torch-fused")
    if _has("torch"):
        bf16 = [c for c in cells if c["dtypes_label"] == "bf16"][0]
        torch_entry = _entry(bf16, "torch-fused")
        assert torch_entry["dtypes"]["state"] == "bfloat16"  # torch keeps state in the param's
        assert torch_entry["bytes_per_element"] == 14

    import matplotlib.image  # noqa: PLC0415

    for name in ("throughput.png", "peers.png"):
        path = tmp_path / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
    assert "| adam | fp32 | 1000 |" in (tmp_path / "results.md").read_text()


@needs_core
def test_python_dash_m_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyoptim.bench", "--optimizers", "sgd", "--sizes", "100",
         "--threads", "1", "--peers", "none", "--no-plots", "--out", str(tmp_path), *TINY],
        capture_output=True, text=True, timeout=300, check=False,
        cwd=tmp_path)  # not the repository root, whose pyoptim/ has no compiled _core
    assert result.returncode == 0, result.stderr
    (cell,) = _load(tmp_path)["cells"]
    assert cell["label"] == "sgd fp32 100 1t"
    assert _load(tmp_path)["config"]["command"].startswith("python -m pyoptim.bench")


@needs_core
def test_numpy_backend_runs_the_reference(tmp_path):
    status = bench.main(["--backend", "numpy", "--optimizers", "adagrad", "--sizes", "500",
                         "--threads", "1", "--peers", "none", "--no-plots",
                         "--out", str(tmp_path), *TINY])
    assert status == 0
    (cell,) = _load(tmp_path)["cells"]
    assert cell["backend"] == "numpy" and _entry(cell, "pyoptim")["validation"]["exact"]


def test_quick_plan_covers_the_targets():
    parser = _parser()
    args = parser.parse_args(["--quick"])
    labels = [cell.label for cell, _ in bench.plan(args)]
    for label in ("adam fp32 2^20 1t", "adam fp32 2^24 1t", "adam bf16 2^22 1t",
                  "adam fp32 2000x1000 1t"):
        assert label in labels
    assert {label.split()[0] for label in labels} >= set(bench.CORE_VARIANTS)


def test_targets_are_evaluated_from_the_cells():
    def cell(label_size, fraction, speedup):
        return dict(label=f"adam fp32 {label_size} 1t", variant="adam", dtypes_label="fp32",
                    shape=dict(label=label_size, count=1), threads=1, contestants=[
                        dict(name="pyoptim", timing=dict(roofline_fraction=fraction)),
                        dict(name="torch-fused", timing=dict(pyoptim_speedup=speedup))])

    targets = _report.evaluate_targets([cell("2^24", 0.97, 0.9), cell("2^20", 0.5, 1.6)])
    met = {(t["target"], t["cell"]): t["met"] for t in targets}
    assert met[("Adam fp32 >= 95% of the roofline", "adam fp32 2^24 1t")] is True
    assert met[("Adam fp32 no slower than torch fused - 5%", "adam fp32 2^24 1t")] is False
    assert met[("Adam fp32 at 2^20 >= 1.5x torch fused", "adam fp32 2^20 1t")] is True


# ---------------------------------------------------------------------------------------------
# bad options: a clear message and a non-zero exit


def _parser():
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="pyoptim bench")
    bench.add_arguments(parser)
    return parser


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "adamx"], "unknown optimizer(s) 'adamx'"),
    (["--sizes", "2^x"], "bad size '2^x'"),
    (["--sizes", "0"], "at least 1"),
    (["--dtypes", "int8"], "bad dtype combination 'int8'"),
    (["--dtypes", "fp32/fp16"], "unsupported dtype combination"),
    (["--threads", "0"], "bad thread counts '0'"),
    (["--peers", "jax"], "unknown peer(s) 'jax'"),
    (["--repeat", "0"], "expected an integer >= 1"),
    (["--backend", "tpu"], "invalid choice: 'tpu'"),
    (["--sample-time", "-1"], "seconds > 0"),
])
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "bench" in capsys.readouterr().err


@needs_core
def test_cuda_backend_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    status = bench.main(["--backend", "cuda", "--sizes", "100", "--out", str(tmp_path)])
    assert status == 2
    assert "--backend cuda needs torch with CUDA and a GPU" in capsys.readouterr().err


def test_set_num_threads_is_restored(tmp_path):
    if not _cpu.available():
        pytest.skip("the C++ extension is not built")
    before = pyoptim.get_num_threads()
    bench.main(["--optimizers", "sgd", "--sizes", "100", "--threads", "1", "--peers", "none",
                "--no-plots", "--out", str(tmp_path), *TINY])
    assert pyoptim.get_num_threads() == before


@needs_core
@pytest.mark.parametrize("dtypes", ["fp32", "bf16", "fp64/fp32/fp32"])
def test_arrays_start_on_cache_lines(dtypes, monkeypatch):
    """Every contestant's arrays start at 64-byte boundaries, unless NumPy's placement is asked
    for (misaligned AVX-512 loads and stores cost up to 1.6x at DRAM sizes; bench/README.md)."""
    cell = Cell(VARIANTS["adam"], DTypes.parse(dtypes), Shape.parse("3x1001"), 1)
    master = master_data(cell.shape, seed=2)
    mine = _contestants.Pyoptim(cell, master, "cpu")
    arrays = mine.params + mine.grads + [a for arrays in mine.states.values() for a in arrays]
    assert all(a.ctypes.data % 64 == 0 for a in arrays)
    np.testing.assert_array_equal(mine.params[1], master[0][1].astype(arrays[0].dtype))
    assert all(not a.any() for arrays in mine.states.values() for a in arrays)
    monkeypatch.setattr(_cells, "ALIGNMENT", 0)
    plain = _contestants.Pyoptim(cell, master, "cpu")
    np.testing.assert_array_equal(plain.params[2], mine.params[2])


# ---------------------------------------------------------------------------------------------
# layout: arrays move to new memory between rounds; the A/A control


def test_mover_copies_to_cache_lines_at_varying_places_in_a_page(monkeypatch):
    """A moved array of a page or more starts at a random cache line of a page (seeded); a
    smaller one at the next cache line."""
    move = _cells.Mover(seed=3)
    big = np.arange(2000, dtype=np.float32)  # 8000 bytes
    small = np.arange(7, dtype=np.float64).reshape(7, 1)
    copies = [move(big) for _ in range(40)]
    for values, c in [(big, c) for c in copies] + [(small, move(small)) for _ in range(5)]:
        np.testing.assert_array_equal(c, values)
        assert c.shape == values.shape and c.dtype == values.dtype
        assert c.ctypes.data % 64 == 0 and c.flags.c_contiguous and c.flags.writeable
        assert not np.shares_memory(c, values)
    offsets = [c.ctypes.data % _cells.PAGE for c in copies]
    assert len(set(offsets)) > 20  # 64 places in a page, drawn at random
    monkeypatch.setattr(_cells, "ALIGNMENT", 0)  # --numpy-alignment: NumPy's own placement
    plain = _cells.Mover(seed=3)(big.reshape(8, 250))
    assert plain.shape == (8, 250) and np.array_equal(plain.ravel(), big)


class _Relocating:
    """A contestant that moves its arrays before every step, as the timing does between rounds."""

    def __init__(self, inner, move):
        self._inner, self._move = inner, move

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def step(self):
        self._inner.relocate(self._move)
        self._inner.step()


def _arrays_of(contestant) -> list:
    b = contestant.buffers()
    return b.params + b.grads + [a for arrays in b.states.values() for a in arrays]


def _addresses(contestant) -> list[int]:
    return [a.ctypes.data for a in _arrays_of(contestant)]


_CONTESTANT_KINDS = [
    ("pyoptim", None), ("numpy", None),
    pytest.param("torch-forloop", "torch", marks=pytest.mark.skipif(not _has("torch"),
                                                                     reason="no torch")),
    pytest.param("torch-foreach", "torch", marks=pytest.mark.skipif(not _has("torch"),
                                                                     reason="no torch")),
    pytest.param("torch-fused", "torch", marks=pytest.mark.skipif(not _has("torch"),
                                                                   reason="no torch")),
    pytest.param("pyoptim.torch", "torch", marks=pytest.mark.skipif(not _has("torch"),
                                                                     reason="no torch")),
    pytest.param("pyoptim.torch-flat", "torch", marks=pytest.mark.skipif(not _has("torch"),
                                                                          reason="no torch")),
    pytest.param("deepspeed", "deepspeed", marks=pytest.mark.skipif(not _has("deepspeed"),
                                                                     reason="no deepspeed")),
]


@needs_core
@pytest.mark.parametrize("kind, needs", _CONTESTANT_KINDS)
@pytest.mark.parametrize("variant, dtypes, shape", [
    ("adam", "fp32", "4099"), ("momentum", "bf16", "3x1000"), ("nadam", "fp32", "3x1000"),
    ("asgd", "fp64", "1000"), ("rprop", "fp32", "2x31"),
])
def test_a_contestant_moved_before_every_step_computes_what_it_did(kind, needs, variant, dtypes,
                                                                     shape):
    """relocate() moves every array the step touches (params, grads, state) and keeps the
    values: a contestant moved before each of its steps gets the validation that one left in
    place gets (pyoptim: bit for bit), and none of its arrays is where it was. One thread:
    torch 2.13's fused 16-bit SGD races between threads (bench/README.md)."""
    cell = Cell(VARIANTS[variant], DTypes.parse(dtypes), Shape.parse(shape), 1,
                kind.removeprefix("pyoptim.") if kind.startswith("pyoptim.") else "arrays")
    master = master_data(cell.shape, seed=4)

    def make():
        if kind.startswith("pyoptim"):
            return _contestants.make_pyoptim(cell, master, "cpu")
        return _contestants.make_peer(kind, cell, master, "cpu")

    try:
        contestant = make()
    except _contestants.Unavailable as e:
        pytest.skip(str(e))
    threads = _cpu.core().get_num_threads()
    _main._set_threads(1)
    try:
        contestant.step()
        before = _addresses(contestant)
        values = [a.copy() for a in _arrays_of(contestant)]
        contestant.relocate(_cells.Mover(seed=5))
        assert all(a != b for a, b in zip(before, _addresses(contestant), strict=True))
        for was, now in zip(values, _arrays_of(contestant), strict=True):
            np.testing.assert_array_equal(now, was)
        (left,) = validate(cell, master, [make()], steps=4).values()
        (moved,) = validate(cell, master, [_Relocating(make(), _cells.Mover(seed=7))],
                            steps=4).values()
    finally:
        _main._set_threads(threads)
    assert (moved.ok, moved.exact, moved.worst) == (left.ok, left.exact, left.worst)
    if kind.startswith("pyoptim"):
        assert moved.exact


@needs_core
@pytest.mark.parametrize("variant, dtypes", [("adam", "fp32"), ("lamb", "fp32"),
                                             ("lamb", "bf16/bf16/bf16")])
def test_the_roofline_moves_its_arrays(variant, dtypes):
    cell = Cell(VARIANTS[variant], DTypes.parse(dtypes), Shape.parse("1000"), 1)
    roof = _contestants.Roofline(cell, "cpu")
    before = [a.ctypes.data for arrays in roof._arrays
              for a in (arrays[0], arrays[1], *arrays[2])]
    roof.relocate(_cells.Mover(seed=8))
    after = [a.ctypes.data for arrays in roof._arrays
             for a in (arrays[0], arrays[1], *arrays[2])]
    assert all(a != b for a, b in zip(before, after, strict=True))
    assert sum(p.bytes_per_element for p in roof._passes) == cell.bytes_per_element
    roof.step()
    assert all(np.all(a == 1) for arrays in roof._arrays
               for a in (arrays[0], arrays[1], *arrays[2]))  # ones stay ones


@needs_core
def test_the_timing_moves_every_contestant_before_every_round(monkeypatch):
    from pyoptim.bench import _runner  # noqa: PLC0415

    cell = Cell(VARIANTS["adam"], DTypes.parse("fp32"), Shape.parse("1000"), 1)
    master = master_data(cell.shape, seed=9)
    contestants = [_contestants.make_pyoptim(cell, master, "cpu"),
                   _contestants.make_peer("numpy", cell, master, "cpu"),
                   _contestants.Roofline(cell, "cpu")]
    events = []
    for c in contestants:
        for method in ("relocate", "step"):
            real = getattr(c, method)
            monkeypatch.setattr(c, method, lambda *a, _real=real, _m=method, _n=c.name:
                                (events.append((_m, _n)), _real(*a))[1])
    timings = _runner.time_round_robin(contestants, 1000, rounds=5, warmup=1, sample_time=1e-4,
                                       mover=_cells.Mover(seed=1))
    assert timings["roofline"].batch == timings["pyoptim"].batch  # the cell's one batch
    moves = [i for i, (method, _) in enumerate(events) if method == "relocate"]
    assert len(moves) == 5 * len(contestants)
    # each round: every contestant moved, then every contestant stepped
    names = {c.name for c in contestants}
    for r in range(5):
        first = moves[r * len(contestants)]
        assert {n for _, n in events[first:first + len(contestants)]} == names
    events.clear()
    _runner.time_round_robin(contestants, 1000, rounds=3, warmup=1, sample_time=1e-4)
    assert not [e for e in events if e[0] == "relocate"]  # mover None: --fixed-layout


def test_every_contestant_of_a_cell_times_the_same_number_of_steps_per_sample():
    """One batch for the cell, from the fastest contestant that is not the roofline (the
    roofline takes it too); a slow one whose sample would outlast LONGEST_SAMPLE x sample_time
    takes as many steps as fit in that, at least one."""
    from types import SimpleNamespace  # noqa: PLC0415

    from pyoptim.bench import _runner  # noqa: PLC0415

    contestants = [SimpleNamespace(name=n, role=r) for n, r in (
        ("pyoptim", "pyoptim"), ("pyoptim-control", "control"), ("torch-fused", "peer"),
        ("torch-forloop", "peer"), ("roofline", "roofline"))]
    ms = 1e-3
    estimate = {"pyoptim": 0.9 * ms, "pyoptim-control": 0.8 * ms, "torch-fused": 1.6 * ms,
                "torch-forloop": 12 * ms, "roofline": 0.3 * ms}
    assert _runner.batch_sizes(contestants, estimate, 5 * ms) == {
        "pyoptim": 7, "pyoptim-control": 7, "torch-fused": 7, "torch-forloop": 4, "roofline": 7}
    estimate["torch-forloop"] = 80 * ms  # longer than 10 x 5 ms: one step
    assert _runner.batch_sizes(contestants, estimate, 5 * ms)["torch-forloop"] == 1
    assert _runner.batch_sizes(contestants[-1:], {"roofline": 0.3 * ms}, 5 * ms) == \
        {"roofline": 17}


@needs_core
def test_control_and_fixed_layout_options(tmp_path, capsys):
    status = cli.main(["bench", "--optimizers", "momentum", "--sizes", "1000,2x300",
                       "--threads", "1", "--peers", "numpy", "--control", "--no-plots",
                       "--out", str(tmp_path), *TINY])
    assert status == 0
    out = capsys.readouterr().out
    assert out.count("A/A control:") == 2
    data = _load(tmp_path)
    assert data["config"]["control"] is True and data["config"]["relocate_every_round"] is True
    for cell in data["cells"]:
        control = _entry(cell, _contestants.CONTROL)
        assert control["role"] == "control" and control["validation"]["exact"]
        t = control["timing"]
        assert cell["control_ratio"] == t["pyoptim_speedup"]
        mine = np.asarray(_entry(cell, "pyoptim")["timing"]["samples_s"])
        ratios = np.asarray(t["samples_s"]) / mine
        assert cell["control_ratio"] == pytest.approx(np.median(ratios))
        assert cell["control_ratio_quartiles"] == pytest.approx(np.percentile(ratios, [25, 75]))
        assert cell["best_peer"] == "numpy"  # the control is no peer
    assert "## A/A control" in (tmp_path / "results.md").read_text()
    status = cli.main(["bench", "--optimizers", "sgd", "--sizes", "100", "--threads", "1",
                       "--peers", "none", "--fixed-layout", "--no-plots",
                       "--out", str(tmp_path), *TINY])
    assert status == 0
    data = _load(tmp_path)
    assert data["config"]["relocate_every_round"] is False and data["config"]["control"] is False
    assert "control_ratio" not in data["cells"][0]
    assert "A/A control" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# pyoptim.torch against torch.optim on a model's parameter list (--api torch)


def test_gpt_tiny_is_the_parameter_list_of_a_gpt2_module():
    """The gpt-tiny shape is what a GPT-2 decoder written as nanoGPT writes it (tied head)
    lists as its parameters: the same names, shapes and order."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.attn = nn.Module()
            self.attn.c_attn, self.attn.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln_2 = nn.LayerNorm(d)
            self.mlp = nn.Module()
            self.mlp.c_fc, self.mlp.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    class GPT(nn.Module):
        def __init__(self, layers, d, vocab, context):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, d), wpe=nn.Embedding(context, d),
                h=nn.ModuleList(Block(d) for _ in range(layers)), ln_f=nn.LayerNorm(d)))
            self.lm_head = nn.Linear(d, vocab, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied

    model = GPT(16, 64, 2048, 256)
    expected = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    assert list(_cells.MODELS["gpt-tiny"]) == expected
    shape = Shape.parse("gpt-tiny")
    assert shape.count == len(expected) == 196 and shape.label == "gpt-tiny"
    assert shape.sizes == tuple(p.numel() for p in model.parameters())
    assert shape.elements == sum(p.numel() for p in model.parameters()) == 947328
    assert not shape.flat


@needs_core
def test_pyoptim_torch_runs_against_torch_fused_on_a_models_parameters(tmp_path, capsys):
    """--api all: the same cell through pyoptim's array API, through pyoptim.torch and through
    pyoptim.torch with flat_grads=True, each validated (bit for bit) and timed against torch
    fused on the same tensors; both torch cells' targets are evaluated, and the torch table has
    a row for each."""
    pytest.importorskip("torch")
    status = cli.main(["bench", "--optimizers", "adamw", "--sizes", "gpt-tiny",
                       "--threads", "1", "--api", "all", "--peers", "torch-fused",
                       "--no-plots", "--out", str(tmp_path), *TINY])
    assert status == 0
    out = capsys.readouterr().out
    assert "adamw (torch)" in out and "adamw (torch-flat)" in out and "gpt-tiny" in out
    data = _load(tmp_path)
    arrays, torch_api, flat_api = data["cells"]
    assert [c["label"] for c in data["cells"]] == [
        "adamw fp32 gpt-tiny 1t", "adamw fp32 gpt-tiny 1t torch",
        "adamw fp32 gpt-tiny 1t torch-flat"]
    assert [c["api"] for c in data["cells"]] == ["arrays", "torch", "torch-flat"]
    for cell in data["cells"]:
        assert cell["elements"] == 947328 and cell["shape"]["model"] == "gpt-tiny"
        assert _entry(cell, "pyoptim")["validation"]["exact"]
        fused = _entry(cell, "torch-fused")
        assert fused["validation"]["ok"] and fused["timing"]["pyoptim_speedup"] > 0
    for cell in (torch_api, flat_api):
        (target,) = [t for t in data["targets"] if t["cell"] == cell["label"]]
        assert target["threshold"] == 2.0
        assert target["value"] == _entry(cell, "torch-fused")["timing"]["pyoptim_speedup"]
    rows = _report.torch_rows(data["cells"])
    assert [row[4] for row in rows] == ["p.grad", "flat_grads=True"]
    assert all(row[6] == rows[0][6] != "-" for row in rows)  # the array API's cell, both


@needs_core
def test_pyoptim_torch_contestant_fails_validation_when_broken(monkeypatch):
    torch = pytest.importorskip("torch")
    cell = Cell(VARIANTS["momentum"], DTypes.parse("bf16"), Shape.parse("3x1000"), 1, "torch")
    master = master_data(cell.shape, seed=1)
    good = _contestants.make_pyoptim(cell, master, "cpu")
    broken = _contestants.make_pyoptim(cell, master, "cpu")
    broken.name = "broken"
    real_step = broken.opt.step
    broken.step = lambda: (real_step(), broken.params[1].data.mul_(1.01))
    assert isinstance(good, _contestants.PyoptimTorch)
    assert good.opt.state_dict()["param_groups"][0]["momentum"] == 0.9
    checks = validate(cell, master, [good, broken], steps=3)
    assert checks["pyoptim"].ok and checks["pyoptim"].exact
    assert not checks["broken"].ok
    # bf16 params, fp32 state: pyoptim's choice, also through pyoptim.torch
    assert good.opt.state[good.params[0]]["momentum_buffer"].dtype == torch.float32


@needs_core
def test_the_torch_flat_contestant_steps_on_flat_grads():
    pytest.importorskip("torch")
    cell = Cell(VARIANTS["adam"], DTypes.parse("fp32"), Shape.parse("gpt-tiny"), 1, "torch-flat")
    master = master_data(cell.shape, seed=1)
    contestant = _contestants.make_pyoptim(cell, master, "cpu")
    base = contestant.params[0].grad._base
    assert base is not None and all(p.grad._base is base for p in contestant.params)
    for p, g in zip(contestant.params, master[1]):
        np.testing.assert_array_equal(p.grad.numpy().ravel(), np.asarray(g).ravel())
    contestant.relocate(_cells.Mover(seed=3))
    assert contestant.opt._flat.in_place(contestant.params, contestant.opt._pointers)


def test_api_torch_refuses_grads_of_another_dtype(capsys):
    status = bench.main(["--api", "torch", "--dtypes", "fp16/fp32/fp16", "--sizes", "100"])
    assert status == 2
    assert "torch keeps a grad in its param's dtype" in capsys.readouterr().err


def test_api_torch_without_torch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def no_torch():
        raise _contestants.Unavailable("torch is not installed")

    monkeypatch.setattr(_main, "import_torch", no_torch)
    status = bench.main(["--api", "torch", "--sizes", "100", "--out", str(tmp_path)])
    assert status == 2
    assert "--api torch needs torch" in capsys.readouterr().err


def test_quick_and_full_plans_run_pyoptim_torch_against_torch_fused():
    parser = _parser()
    for argv in (["--quick"], []):
        planned = dict(bench.plan(parser.parse_args(argv)))
        by_label = {cell.label: peers for cell, peers in planned.items()}
        assert "torch-fused" in by_label["adam fp32 gpt-tiny 1t torch"]
        assert "torch-fused" in by_label["adam fp32 gpt-tiny 1t torch-flat"]
        assert "adam fp32 gpt-tiny 1t" in by_label  # the array API on the same tensors


def test_the_pyoptim_torch_target_is_evaluated_on_one_thread_model_cells():
    def cell(threads, api, speedup):
        return dict(label=f"adam fp32 gpt-tiny {threads}t", variant="adam", api=api,
                    dtypes_label="fp32", shape=dict(label="gpt-tiny", count=196,
                                                    model="gpt-tiny"),
                    threads=threads, contestants=[
                        dict(name="pyoptim", timing=dict(roofline_fraction=0.5)),
                        dict(name="torch-fused", timing=dict(pyoptim_speedup=speedup))])

    targets = _report.evaluate_targets([cell(1, "torch", 2.5), cell(2, "torch", 1.0),
                                        cell(1, "arrays", 1.0)])
    assert [(t["cell"], t["met"]) for t in targets] == [("adam fp32 gpt-tiny 1t", True)]


def test_default_plans_leave_pyoptim_torch_out_without_torch(monkeypatch):
    """Without torch the default suites run without their pyoptim.torch cells (as without the
    torch peers); asked for explicitly, --api torch is an error (test above)."""
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    for argv in (["--quick"], []):
        cells = [cell for cell, _ in bench.plan(_parser().parse_args(argv))]
        assert cells and all(cell.api == "arrays" for cell in cells)
        assert "adam fp32 gpt-tiny 1t" in [cell.label for cell in cells]


@needs_core
def test_resume_keeps_the_cells_measured_and_runs_the_rest(tmp_path, monkeypatch, capsys):
    """--resume: a stopped run goes on where it stopped; the cells it kept are the earlier run's
    records, every cell says where it was measured, and a run made with other settings is
    refused rather than mixed with new cells."""

    def run(sizes, *extra, peers="numpy", out=tmp_path):
        return bench.main(["--optimizers", "sgd", "--threads", "1", "--peers", peers,
                           "--sizes", sizes, "--no-plots", "--out", str(out), *TINY, *extra])

    assert run("100,300") == 0
    first = _load(tmp_path)
    first["cells"] = first["cells"][:1]  # stopped after its first cell
    del first["cells"][0]["measured_in"]  # as before --resume existed
    (tmp_path / "bench.json").write_text(json.dumps(first))

    ran = []
    run_cell = _main.run_cell
    monkeypatch.setattr(_main, "run_cell", lambda cell, *a: ran.append(cell.label)
                        or run_cell(cell, *a))
    assert run("100,300,1000", "--resume") == 0
    assert ran == ["sgd fp32 300 1t", "sgd fp32 1000 1t"]
    data = _load(tmp_path)
    assert [c["label"] for c in data["cells"]] == ["sgd fp32 100 1t", *ran]
    assert all(c["measured_in"]["date"] for c in data["cells"])
    kept = data["cells"][0]
    assert kept.pop("measured_in") == dict(git_commit=first["machine"]["git_commit"],
                                           date=first["machine"]["date"])
    assert kept == first["cells"][0]  # kept as it was measured
    assert [m["date"] for m in data["machine"]["earlier_runs"]] == [first["machine"]["date"]]
    assert "1 of them kept" in capsys.readouterr().out
    assert "Resumed (`--resume`)" in (tmp_path / "results.md").read_text()

    # other peers for a cell: that cell runs again
    ran.clear()
    assert run("100", "--resume", peers="none") == 0
    assert ran == ["sgd fp32 100 1t"]

    # other settings: refused, and the saved run is left as it was
    saved = (tmp_path / "bench.json").read_text()
    assert run("100", "--resume", "--seed", "3") == 2
    assert "other settings: seed 0 (now 3)" in capsys.readouterr().err
    assert (tmp_path / "bench.json").read_text() == saved

    # another machine, or other versions of what is timed, in the saved run or in a run it was
    # resumed from: refused, the saved run untouched
    for key, value in (("cpu", "Another CPU"), ("cpu_id", "family 1 model 2 stepping 3"),
                       ("torch", "0.1")):
        data = _load(tmp_path)
        where = data["machine"].get("earlier_runs", [data["machine"]])[0]
        where[key] = value
        (tmp_path / "bench.json").write_text(json.dumps(data))
        saved = (tmp_path / "bench.json").read_text()
        assert run("100", "--resume", peers="none") == 2
        assert f"another machine or with other versions: {key} {value!r}" in \
            capsys.readouterr().err
        assert (tmp_path / "bench.json").read_text() == saved
        del where[key]  # not recorded: not compared
        (tmp_path / "bench.json").write_text(json.dumps(data))
        assert run("100", "--resume", peers="none") == 0
        assert "1 of them kept" in capsys.readouterr().out

    # nothing to resume: a fresh run
    assert run("100", "--resume", out=tmp_path / "fresh") == 0
    assert "earlier_runs" not in _load(tmp_path / "fresh")["machine"]
