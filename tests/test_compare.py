"""`pyoptim compare`: the NumPy MLP's gradient, the training loop, the command end to end (tiny
sizes), its files, its refusals and its determinism."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyoptim
from pyoptim.compare import main
from pyoptim.compare import _data, _mlp, _progress, _train, tune
from pyoptim.compare._optimizers import CONTESTANTS, FULL_BATCH, PER_LAYER

TINY = ["--epochs", "2", "--hidden", "16"]
FAST = [*TINY, "--no-plot"]  # matplotlib takes a second or two

# scikit-learn (the data) and matplotlib (the plot) come with the test and demo extras; without
# them the tests that train or plot skip, the others (the model, the options) still run
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="scikit-learn is not installed (pip install '.[demo]')")
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (pip install '.[demo]')")


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return _data.load()


def _run(tmp_path, *argv, capsys=None):
    """main() with --out in tmp_path; (exit status, compare.json as a dict or None)."""
    out = tmp_path / "out"
    status = main([*argv, "--out", str(out)])
    path = out / "compare.json"
    return status, (json.loads(path.read_text(), parse_constant=_no_constant)
                    if path.exists() else None)


def _no_constant(name):
    raise ValueError(f"compare.json holds {name}, which is not JSON")


def _deterministic(report: dict) -> dict:
    """All but the timings, and the command line (its --out differs)."""
    config = {k: v for k, v in report["config"].items() if k != "command"}
    return {**{k: v for k, v in report.items() if k != "timings"}, "config": config}


# ---------------------------------------------------------------------------------------------
# the model and the data


def test_mlp_gradient_matches_central_finite_differences():
    rng = np.random.default_rng(3)
    model = _mlp.MLP((6, 9, 7, 4), rng, dtype=np.float64)
    for b in model.params.views[1::2]:  # non-zero biases, so that they are tested too
        b[...] = 0.1 * rng.standard_normal(b.shape)
    x = rng.standard_normal((11, 6))
    y = rng.integers(0, 4, 11)
    model.loss_and_grad(x, y)
    analytic = model.grads.buffer.copy()
    params = model.params.buffer
    numeric = np.zeros_like(analytic)
    h = 1e-6
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + h
        up, _ = model.evaluate(x, y)
        params[i] = saved - h
        down, _ = model.evaluate(x, y)
        params[i] = saved
        numeric[i] = (up - down) / (2 * h)
    assert model.n_params == 6 * 9 + 9 + 9 * 7 + 7 + 7 * 4 + 4
    assert np.count_nonzero(analytic) > 0.5 * model.n_params  # most units alive
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_mlp_loss_is_the_mean_cross_entropy():
    rng = np.random.default_rng(0)
    model = _mlp.MLP((5, 3), rng, dtype=np.float64)  # one linear layer: logits = x W + b
    x, y = rng.standard_normal((4, 5)), np.array([0, 2, 1, 2])
    w, b = model.params.views
    logits = x @ w + b
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(4), y])
    loss = model.loss_and_grad(x, y)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert model.evaluate(x, y)[1] == np.mean(logits.argmax(axis=1) == y)


def test_mlp_parameters_live_in_one_flat_buffer():
    model = _mlp.MLP((64, 128, 64, 10), np.random.default_rng(0))
    assert isinstance(model.params, pyoptim.flat.FlatBuffer)
    assert [v.shape for v in model.params.views] == [(64, 128), (128,), (128, 64), (64,),
                                                     (64, 10), (10,)]
    for view in model.params.views + model.grads.views:  # views, not copies
        assert np.shares_memory(view, model.params.buffer) or \
            np.shares_memory(view, model.grads.buffer)
    w0 = model.params.views[0]
    assert abs(w0.std() - math.sqrt(2 / 64)) < 0.01  # He initialization
    assert not model.params.views[1].any()  # zero biases


def test_the_split_is_fixed_stratified_and_standardized(digits):
    assert len(digits.y_train) + len(digits.y_val) == 1797
    assert len(digits.y_val) == 359
    again = _data.load()
    np.testing.assert_array_equal(again.x_val, digits.x_val)
    np.testing.assert_array_equal(again.y_train, digits.y_train)
    counts_val = np.bincount(digits.y_val, minlength=10)
    counts_all = counts_val + np.bincount(digits.y_train, minlength=10)
    np.testing.assert_allclose(counts_val / counts_all, 0.2, atol=0.01)
    assert digits.x_train.dtype == np.float32
    np.testing.assert_allclose(digits.x_train.mean(axis=0), 0, atol=1e-5)


def test_the_tuning_split_holds_out_training_data_only(digits):
    tuning = _data.tuning_split(digits)
    assert len(tuning.y_train) + len(tuning.y_val) == len(digits.y_train)
    assert len(tuning.y_val) == 287
    train_rows = {row.tobytes() for row in digits.x_train}
    assert all(row.tobytes() in train_rows for row in tuning.x_val)
    val_rows = {row.tobytes() for row in digits.x_val}
    assert not any(row.tobytes() in val_rows for row in tuning.x_train)


# ---------------------------------------------------------------------------------------------
# training


def test_every_pyoptim_optimizer_is_a_contestant_with_a_tuned_lr():
    """A new optimizer in pyoptim.create shows up in the comparison with the class's default lr:
    this fails until its lr is tuned (python -m pyoptim.compare.tune) and added to TUNED_LR."""
    assert set(pyoptim.optim.OPTIMIZER_NAMES) | {"gd"} == set(CONTESTANTS)
    untuned = [c.name for c in CONTESTANTS.values() if not c.tuned]
    assert not untuned, f"no tuned default lr for {untuned}"
    assert CONTESTANTS["gd"].full_batch and CONTESTANTS["gd"].optimizer == "sgd"
    assert [c.name for c in CONTESTANTS.values() if c.full_batch] == list(FULL_BATCH)


@pytest.mark.parametrize("name", list(CONTESTANTS))
def test_every_optimizer_lowers_the_training_loss(digits, name):
    curves = _train.train(CONTESTANTS[name], digits, sizes=(64, 32, 10), epochs=2,
                          batch_size=32, lr=CONTESTANTS[name].lr, seed=0)
    assert curves.diverged_at is None
    assert len(curves.train_loss) == 3
    assert curves.train_loss[2] < curves.train_loss[0]
    assert curves.steps == (2 if CONTESTANTS[name].full_batch else 2 * math.ceil(1438 / 32))
    assert curves.step_time > 0


def test_adam_reaches_95_percent_with_the_defaults(digits):
    adam = CONTESTANTS["adam"]
    with _train.threads(1):
        curves = _train.train(adam, digits, sizes=(64, 128, 64, 10), epochs=30, batch_size=32,
                              lr=adam.lr, seed=0)
    assert curves.final_val_accuracy >= 0.95
    assert curves.epochs_to(0.9) is not None


def test_the_steps_go_through_pyoptim(digits, monkeypatch):
    """Every batch is one opt.step(grads) of a pyoptim optimizer over the flat buffer."""
    calls = []
    original = pyoptim.Optimizer.step

    def spy(self, grads, **kwargs):
        calls.append((type(self).__name__, grads))
        return original(self, grads, **kwargs)

    monkeypatch.setattr(pyoptim.Optimizer, "step", spy)
    _train.train(CONTESTANTS["nesterov"], digits, sizes=(64, 8, 10), epochs=1, batch_size=100,
                 lr=0.01, seed=0)
    assert len(calls) == math.ceil(1438 / 100)
    assert all(kind == "SGD" and isinstance(g, pyoptim.flat.FlatBuffer) for kind, g in calls)


def test_lamb_gets_one_param_per_layer_tensor(digits, monkeypatch):
    """LAMB's trust ratio is per param: it steps over the flat buffer's views (one ratio per
    weight matrix and bias vector), the other optimizers over the buffer as one param."""
    made = []
    original = pyoptim.optim.create

    def spy(name, params, **kwargs):
        made.append((name, params))
        return original(name, params, **kwargs)

    monkeypatch.setattr(pyoptim.optim, "create", spy)
    for name in ("lamb", "adam"):
        _train.train(CONTESTANTS[name], digits, sizes=(64, 8, 10), epochs=1, batch_size=500,
                     lr=1e-3, seed=0)
    (_, lamb_params), (_, adam_params) = made
    assert PER_LAYER == ("lamb",) and CONTESTANTS["lamb"].per_layer
    assert [p.shape for p in lamb_params] == [(64, 8), (8,), (8, 10), (10,)]
    assert all(np.shares_memory(p, lamb_params[0].base) for p in lamb_params)
    assert isinstance(adam_params, pyoptim.flat.FlatBuffer)


def test_schedules():
    assert _train.make_lr("constant", 0.1, 100) == 0.1
    cosine = _train.make_lr("cosine", 0.1, 100)
    assert cosine(0) == 0.1 and cosine(50) == pytest.approx(0.05) and cosine(99) < 1e-4
    warmup = _train.make_lr("warmup-cosine", 0.1, 100)  # 5 warmup steps
    assert warmup(0) == pytest.approx(0.02) and warmup(5) == pytest.approx(0.1)
    assert warmup(4) < 0.1 and warmup(99) < 1e-3
    linear = _train.make_lr("linear", 0.1, 100)
    assert linear(0) == 0.1 and linear(50) == pytest.approx(0.05)
    onecycle = _train.make_lr("onecycle", 0.1, 100)
    assert onecycle(0) == pytest.approx(0.004) and max(onecycle(k) for k in range(100)) == \
        pytest.approx(0.1, rel=1e-3)
    for name in _train.SCHEDULES:  # one step in all
        assert _train.make_lr(name, 0.1, 1) is not None


def test_a_schedule_changes_the_trajectory(digits):
    runs = {s: _train.train(CONTESTANTS["sgd"], digits, sizes=(64, 16, 10), epochs=2,
                            batch_size=64, lr=0.1, schedule=s, seed=0)
            for s in ("constant", "cosine")}
    assert runs["constant"].train_loss[0] == runs["cosine"].train_loss[0]
    assert runs["constant"].train_loss[2] != runs["cosine"].train_loss[2]


# ---------------------------------------------------------------------------------------------
# the command


@needs_sklearn
@needs_matplotlib
def test_end_to_end_tiny(tmp_path, capsys):
    status, report = _run(tmp_path, "--optimizers", "gd,adam,rprop", *TINY,
                          "--lr", "adam=0.01")
    assert status == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| optimizer"))
    for column in ("final train loss", "val accuracy", "epochs to 90%",
                   "time in optimizer steps"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith(("| gd", "| adam", "| rprop"))]
    assert len(rows) == 3 and "0.01" in rows[1]

    assert list(report["optimizers"]) == ["gd", "adam", "rprop"]
    assert report["config"]["epochs"] == 2 and report["config"]["model"]["sizes"] == [64, 16, 10]
    for name, entry in report["optimizers"].items():
        assert len(entry["train_loss"]) == len(entry["val_accuracy"]) == 3
        assert entry["final_train_loss"] == entry["train_loss"][-1]
        assert 0 <= entry["final_val_accuracy"] <= 1
        assert entry["steps"] == report["timings"][name]["steps"]
        assert report["timings"][name]["step_time_s"] > 0
    assert report["optimizers"]["adam"]["hyperparameters"]["lr"] == 0.01
    assert report["optimizers"]["adam"]["hyperparameters"]["betas"] == [0.9, 0.999]
    assert report["optimizers"]["gd"]["steps"] == 2

    png = tmp_path / "out" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image  # noqa: PLC0415

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not blank


@needs_sklearn
def test_deterministic_for_a_seed(tmp_path):
    args = ["--optimizers", "sgd,adamw", *FAST, "--schedule", "warmup-cosine"]
    _, first = _run(tmp_path / "a", *args, "--seed", "5")
    _, second = _run(tmp_path / "b", *args, "--seed", "5")
    _, other = _run(tmp_path / "c", *args, "--seed", "6")
    assert _deterministic(first) == _deterministic(second)
    assert first["optimizers"]["sgd"]["train_loss"] != other["optimizers"]["sgd"]["train_loss"]


@needs_sklearn
def test_a_diverging_optimizer_is_reported_not_fatal(tmp_path, capsys):
    status, report = _run(tmp_path, "--optimizers", "sgd", *FAST, "--lr", "sgd=1e6")
    assert status == 0
    entry = report["optimizers"]["sgd"]
    assert entry["diverged_at_epoch"] == 1
    assert entry["train_loss"][1:] == [None, None] and entry["final_val_accuracy"] is None
    assert "diverged (epoch 1)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "adam,nope"], "unknown optimizer(s) nope"),
    (["--optimizers", ""], "unknown optimizer"),
    (["--epochs", "-3"], "expected a number of epochs, an integer >= 1, got '-3'"),
    (["--epochs", "0"], "an integer >= 1"),
    (["--epochs", "many"], "an integer >= 1, got 'many'"),
    (["--batch-size", "0"], "expected a batch size"),
    (["--lr", "adam"], "malformed --lr 'adam': expected NAME=VALUE"),
    (["--lr", "adam=fast"], "the learning rate must be a number > 0, got 'fast'"),
    (["--lr", "adam=-1"], "must be a number > 0"),
    (["--lr", "adam=nan"], "must be a number > 0"),
    (["--lr", "sgdd=0.1"], "unknown optimizer 'sgdd'"),
    (["--optimizers", "sgd", "--lr", "adam=0.1"], "--lr sets adam, which --optimizers does not "
                                                  "select (sgd)"),
    (["--schedule", "sometimes"], "invalid choice: 'sometimes'"),
    (["--hidden", "12,x"], "bad --hidden '12,x'"),
    (["--seed", "-1"], "expected a seed"),
])
def test_bad_options_get_a_message_and_exit_status_2(tmp_path, capsys, argv, message):
    status, report = _run(tmp_path, *argv)
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert report is None


@needs_sklearn
@needs_matplotlib
def test_missing_dependencies_are_named(tmp_path, capsys, monkeypatch):
    import importlib.util  # noqa: PLC0415

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else find_spec(name, *a))
    assert _run(tmp_path, *TINY)[0] == 2
    assert 'needs scikit-learn: pip install "pyoptim[demo]"' in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    assert _run(tmp_path, *TINY)[0] == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert _run(tmp_path, "--optimizers", "sgd", *FAST)[0] == 0  # without the plot: no need


@needs_sklearn
def test_lr_syntax_variants(tmp_path):
    _, report = _run(tmp_path, "--optimizers", "sgd,momentum", "--epochs", "1", "--hidden", "8",
                     "--no-plot", "--lr", "sgd=0.2,momentum=2e-3")
    assert not (tmp_path / "out" / "compare.png").exists()
    assert report["optimizers"]["sgd"]["hyperparameters"]["lr"] == 0.2
    assert report["optimizers"]["momentum"]["hyperparameters"]["lr"] == 0.002
    assert report["optimizers"]["momentum"]["hyperparameters"]["momentum"] == 0.9


def _subprocess(cwd, *argv):
    """python -m pyoptim.compare, run in cwd: not the repository root, whose pyoptim/ (no
    compiled _core unless installed editable) would shadow the installed one."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([sys.executable, "-m", "pyoptim.compare", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_sklearn
def test_python_m_pyoptim_compare(tmp_path):
    done = _subprocess(tmp_path, "--optimizers", "momentum", *FAST, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| momentum" in done.stdout
    assert "[1/1] momentum: val accuracy" in done.stderr  # the progress line, off a terminal
    assert (tmp_path / "compare.json").exists()

    bad = _subprocess(tmp_path, "--optimizers", "adam,nope", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert "unknown optimizer(s) nope" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


@needs_sklearn
def test_pyoptim_compare_subcommand(tmp_path, capsys):
    from pyoptim import cli  # noqa: PLC0415

    assert cli.main(["compare", "--optimizers", "adagrad", *FAST, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["config"]["command"].startswith("pyoptim compare --optimizers adagrad")
    assert {"bench", "compare"} <= set(cli.COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare", "--epochs", "-1"])
    assert exit_.value.code == 2
    assert "pyoptim compare: error: argument --epochs" in capsys.readouterr().err


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "pyoptim"
    if not script.exists():
        pytest.skip("the pyoptim console script is not installed (pip install .)")
    for argv, message in ((["--optimizers", "nope"], "unknown optimizer(s) nope"),
                          (["--epochs", "-2"], "an integer >= 1, got '-2'"),
                          (["--lr", "adam=-1"], "the learning rate must be a number > 0")):
        done = subprocess.run([str(script), "compare", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 2
        assert message in done.stderr and "Traceback" not in done.stderr


def test_help_lists_every_optimizer_and_the_lr_syntax(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--lr adam=3e-3 sgd=0.1" in out
    for name in CONTESTANTS:
        assert f"\n  {name} " in out


# ---------------------------------------------------------------------------------------------
# the progress bar and the tuning script


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_off():
    terminal = _Terminal()
    bar = _progress.ProgressBar(4, terminal)
    bar.update(1, "adam: epoch 1/4")
    bar.item_done("not shown on a terminal")
    bar.update(4, "done")
    bar.close()
    text = terminal.getvalue()
    assert "[" + "#" * 7 + "-" * 21 + "]  25%" in text and "adam: epoch 1/4" in text
    assert "#" * 28 + "] 100%" in text and text.endswith("\r\033[K")
    assert "not shown" not in text

    log = io.StringIO()
    bar = _progress.ProgressBar(4, log)
    bar.update(1, "not shown in a log")
    bar.item_done("[1/2] adam: done")
    bar.close()
    assert log.getvalue() == "[1/2] adam: done\n"


@needs_sklearn
def test_tune_runs_on_the_tuning_split(monkeypatch, capsys):
    seen = []
    original = _train.train

    def spy(contestant, data, **kwargs):
        seen.append((contestant.name, len(data.y_train), len(data.y_val), kwargs["lr"]))
        return original(contestant, data, **kwargs)

    monkeypatch.setattr(_train, "train", spy)
    assert tune.main(["--optimizers", "gd", "--epochs", "1", "--seeds", "0",
                      "--hidden", "8"]) == 0
    assert seen == [("gd", 1151, 287, lr) for lr in tune.GRID]
    out = capsys.readouterr().out
    assert "| gd | " in out and "Chosen: gd=" in out


def test_tune_picks_the_lowest_held_out_loss():
    row = {0.1: (0.5, 0.9), 0.3: (0.2, 0.95), 1.0: (math.inf, 0.1)}
    assert tune.best(row) == 0.3
    text = tune.markdown({"sgd": row}, grid=(0.1, 0.3, 1.0))
    assert "| sgd | 0.5 | **0.2** | div. | 0.3 |" in text
    assert "| sgd | 90.0% | **95.0%** | 10.0% | 0.3 |" in text
