"""The run of `pyoptim compare`: every selected optimizer in turn, then the table and the files."""

from __future__ import annotations

from .. import __version__
from . import _data, _report
from ._optimizers import CONTESTANTS
from ._progress import ProgressBar
from ._train import threads, train


def compare(args, lrs: dict[str, float], command: str) -> int:
    data = _data.load()
    sizes = (data.n_features, *args.hidden, data.n_classes)
    contestants = [CONTESTANTS[name] for name in args.optimizers]
    n_train = len(data.y_train)
    architecture = "-".join(map(str, sizes))
    print(f"pyoptim compare: MLP {architecture} on scikit-learn's digits ({n_train} training, "
          f"{len(data.y_val)} validation samples), {args.epochs} epochs, batch {args.batch_size}, "
          f"schedule {args.schedule}, seed {args.seed}, {len(contestants)} optimizers", flush=True)

    progress = ProgressBar(args.epochs * len(contestants))
    results = []
    with threads(args.threads):
        try:
            for index, contestant in enumerate(contestants):
                results.append(_run_one(contestant, index, args, data, sizes, lrs, progress,
                                        len(contestants)))
        finally:
            progress.close()

    print()
    print(_report.markdown_table(results))
    config = dict(
        command=command, pyoptim_version=__version__, model=dict(sizes=list(sizes),
        params=sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])), activation="relu",
        loss="softmax cross-entropy", buffer="one pyoptim.flat.FlatBuffer, float32"),
        data=dict(name="sklearn.datasets.load_digits", train=n_train, validation=len(data.y_val),
                  split_seed=_data.SPLIT_SEED),
        epochs=args.epochs, batch_size=args.batch_size, schedule=args.schedule, seed=args.seed,
        threads=args.threads,
    )
    content = _report.report(results, config)
    written = [args.out / "compare.json"]
    _report.write_json(written[0], content)
    if not args.no_plot:
        written.append(args.out / "compare.png")
        _report.write_plot(written[1], results, title=(
            f"MLP {architecture} on scikit-learn digits: {args.epochs} epochs, batch "
            f"{args.batch_size}, schedule {args.schedule}, seed {args.seed} (pyoptim compare)"))
    print("\nWrote " + " and ".join(map(str, written)))
    return 0


def _run_one(contestant, index, args, data, sizes, lrs, progress, count):
    done = index * args.epochs

    def on_epoch(epoch, curves):
        progress.update(done + epoch, f"{contestant.name}: epoch {epoch}/{args.epochs}, "
                        f"val accuracy {curves.val_accuracy[-1]:.1%}")

    progress.update(done, f"{contestant.name}: starting")
    curves = train(contestant, data, sizes=sizes, epochs=args.epochs,
                   batch_size=args.batch_size, lr=lrs[contestant.name],
                   schedule=args.schedule, seed=args.seed, on_epoch=on_epoch)
    progress.item_done(f"[{index + 1}/{count}] {contestant.name}: val accuracy "
                       f"{curves.final_val_accuracy:.1%}, {curves.wall_time:.1f} s")
    return curves
