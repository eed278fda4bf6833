"""``fakeface ablate [report|retrain]``: the command line of the ablation study.

:func:`add_ablate_commands` adds the whole ``ablate`` command to the ``fakeface`` parser; its
handlers take ``(args, params)`` like every other subcommand's. Where the study and its scratch
files live are runtime settings (:class:`fakeface.config.runtime.Runtime`): ``--storage`` and
``--workdir`` default to None, then ``FAKEFACE_ABLATION_STORAGE`` / ``FAKEFACE_ABLATION_WORKDIR``,
then the runtime defaults. A storage URL with a password belongs in the environment, not on a
command line, where ``ps`` shows it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakeface.config import Params
from fakeface.config.runtime import ENV, Runtime
from fakeface.stages.paths import OUTPUT, EvaluatePaths, TrainPaths

#: Where ``fakeface ablate retrain`` writes by default (the DVC stage ``retrain`` spells them out).
BEST_TRAIN_PATHS = TrainPaths(
    model=Path("models/best/model.keras"),
    run_info=Path("models/best/run.json"),
    history=Path("reports/best/history.csv"),
    metrics=Path("metrics/best/train.json"),
)
BEST_EVALUATE_PATHS = EvaluatePaths(
    model=BEST_TRAIN_PATHS.model,
    run_info=BEST_TRAIN_PATHS.run_info,
    metrics=Path("metrics/best/evaluate.json"),
    robustness=Path("metrics/best/robustness.json"),
    slices=Path("metrics/best/slices.json"),
    plots=Path("reports/best/plots"),
    reports=Path("reports/best/evaluate"),
    explain=Path("reports/best/explain"),
)


def ablate(args: argparse.Namespace, params: Params) -> None:
    """``fakeface ablate``: run (or resume) the study, write its report, print the best trial."""
    from fakeface.ablation.workers import run_study

    summary = run_study(
        params, args.shards, storage=args.storage, study_name=args.study, n_trials=args.n_trials,
        workers=args.workers, out_dir=args.out, metrics_path=args.metrics, workdir=args.workdir,
    )
    best = summary["best"]
    sys.stdout.write(f"study {summary['study']}: {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
                     f"{summary['n_failed']} failed; report in {args.out}/report.md\n")
    if best:
        sys.stdout.write(f"best trial #{best['number']}: {summary['objective']} {best['value']:.4f} "
                         f"with {best['overrides']}\n")


def ablate_report(args: argparse.Namespace, params: Params) -> None:
    """``fakeface ablate report``: the report from the stored study, without training."""
    from fakeface.ablation.report import write_report
    from fakeface.ablation.space import study_name
    from fakeface.ablation.study import load_study, resolve_storage

    write_report(load_study(resolve_storage(args.storage), study_name(params, args.shards, args.study)), args.out)
    sys.stdout.write(f"{args.out}/report.md\n")


def ablate_retrain(args: argparse.Namespace, params: Params) -> None:
    """``fakeface ablate retrain``: the best configuration on train + valid, tested on test."""
    from fakeface.ablation.retrain import retrain_best, retrain_runtime

    train_paths = TrainPaths(shards=Path(args.shards), **_outputs(args, TrainPaths))
    evaluate_paths = EvaluatePaths(model=train_paths.model, run_info=train_paths.run_info,
                                   shards=train_paths.shards, **_outputs(args, EvaluatePaths))
    result = retrain_best(params, args.storage, args.study, train_paths, evaluate_paths, retrain_runtime(args.workdir))
    sys.stdout.write(f"study {result.study_name}: best configuration retrained on train+valid "
                     f"({result.epochs} epochs, MLflow run {result.run_id}); test AUC {result.test['auc']:.4f}, "
                     f"accuracy {result.test['accuracy']:.4f} at threshold {result.test['threshold']:g}\n")


def _dest(paths: type[TrainPaths | EvaluatePaths], name: str) -> str:
    """The argparse dest of an output path: the train summary's ``metrics`` is ``train_metrics``
    (``--train-metrics``), since ``--metrics`` is the test metrics, as in ``fakeface evaluate``."""
    return "train_metrics" if paths is TrainPaths and name == "metrics" else name


def _outputs(args: argparse.Namespace, paths: type[TrainPaths | EvaluatePaths]) -> dict[str, Path]:
    return {name: Path(getattr(args, _dest(paths, name))) for name in paths.roles(OUTPUT)}


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    defaults = Runtime()
    parser.add_argument("--storage", default=None, help=(
        f"Optuna storage URL (default: env {ENV['ablation_storage']}, then {defaults.ablation_storage}; "
        "put a URL with a password in the environment)"))
    parser.add_argument("--workdir", default=None, help=(
        f"scratch folder of the trials and the retrain's checkpoints (default: env {ENV['ablation_workdir']}, "
        f"then {defaults.ablation_workdir})"))


def add_ablate_commands(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # noqa: SLF001
    """Add ``ablate`` (with its actions ``report`` and ``retrain``) to the ``fakeface`` subcommands."""
    help_text = "ablation / tuning study with Optuna (ablation: in params.yaml), in MLflow"
    p = sub.add_parser("ablate", help=help_text, description=help_text)
    p.set_defaults(handler=ablate)
    p.epilog = ("`fakeface ablate report` rewrites the report from the stored study without training; "
                "`fakeface ablate retrain` trains the best configuration on train+valid and tests it.")
    p.add_argument("--shards", default="data/shards")
    _runtime_options(p)
    p.add_argument("--study", default=None, help="study name (default: ablation.study_name, else derived)")
    p.add_argument("--n-trials", type=int, default=None,
                   help="finished trials the study should have (default: ablation.n_trials, else every config)")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: ablation.workers)")
    p.add_argument("--out", default="reports/ablation", help="report folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/ablation.json")
    actions = p.add_subparsers(dest="ablate_action", metavar="ACTION")

    q = actions.add_parser("report", help="write the seed-style tables from the stored study (no training)")
    q.set_defaults(handler=ablate_report)
    q.add_argument("--shards", default="data/shards", help="to derive the default study name")
    q.add_argument("--storage", default=None, help="as for ablate")
    q.add_argument("--study", default=None)
    q.add_argument("--out", default="reports/ablation")

    help_text = "retrain the study's best configuration on train+valid and evaluate it on test"
    q = actions.add_parser("retrain", help=help_text, description=help_text)
    q.set_defaults(handler=ablate_retrain)
    q.add_argument("--shards", default=str(BEST_TRAIN_PATHS.shards), help="the packed shards (also derive the study name)")
    _runtime_options(q)
    q.add_argument("--study", default=None, help="study name (default: ablation.study_name, else derived)")
    for paths, defaults in ((TrainPaths, BEST_TRAIN_PATHS), (EvaluatePaths, BEST_EVALUATE_PATHS)):
        for name in paths.roles(OUTPUT):
            dest = _dest(paths, name)
            q.add_argument("--" + dest.replace("_", "-"), dest=dest, default=str(getattr(defaults, name)),
                           help=f"{paths.help(name)} (default: %(default)s)")
    return p
