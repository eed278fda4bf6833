"""``fakeface <stage>``: a thin command line over the stage functions.

Each subcommand reads ``params.yaml`` once (validated into :class:`fakeface.config.Params`), takes
its input and output paths as options (the defaults are the paths ``dvc.yaml`` uses), and calls
the stage function, the same one the Kubeflow components call. Expected failures (bad params,
unusable data) exit with status 2 and one clear message instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fakeface import FakefaceError
from fakeface.config import Params, load_params
from fakeface.logs import setup_logging

log = logging.getLogger("fakeface")

Handler = Callable[[argparse.Namespace, Params], None]


def _ingest(args: argparse.Namespace, params: Params) -> None:
    from fakeface.ingest import ingest

    ingest(params.data, params.seed, Path(args.raw_dir), Path(args.manifest), Path(args.report))


def _eda(args: argparse.Namespace, params: Params) -> None:
    from fakeface import tracking
    from fakeface.eda import eda

    summary = eda(params.eda, params.seed, Path(args.manifest), Path(args.out))
    tracking.log_side_run("eda", params.tracking.experiment, Path(args.out), summary)


def _augment(args: argparse.Namespace, params: Params) -> None:
    from fakeface.augment import augment

    augment(params.augment, params.seed, Path(args.manifest), Path(args.shards), Path(args.preview))


def _train(args: argparse.Namespace, params: Params) -> None:
    from fakeface.train import train

    train(params, args.shards, args.model, args.run_info, args.history, args.metrics)


def _evaluate(args: argparse.Namespace, params: Params) -> None:
    from fakeface.evaluate import evaluate

    evaluate(
        params.evaluate, args.model, args.shards, args.metrics, args.plots, args.reports,
        run_info_path=args.run_info, experiment=params.tracking.experiment,
        robustness_path=args.robustness, slices_path=args.slices, explain_dir=args.explain,
    )


def _predict(args: argparse.Namespace, params: Params) -> None:
    from fakeface.predict import predict

    ig = params.evaluate.explain
    predict(
        args.paths, args.model, args.out, list_files=args.list, threshold=args.threshold,
        batch_size=args.batch_size or params.evaluate.batch_size, max_pixels=params.data.max_pixels,
        explain_dir=args.explain, explain_max=args.explain_max, ig_steps=args.ig_steps or ig.steps,
        ig_baseline=args.ig_baseline or ig.baseline, ig_batch_size=ig.batch_size,
    )


def _register(args: argparse.Namespace, params: Params) -> None:
    from fakeface.register import register

    register(
        params.register, args.model, args.evaluation, args.run_info, args.out,
        experiment=params.tracking.experiment,
    )


def _params_check(args: argparse.Namespace, params: Params) -> None:
    for key, value in params.flat().items():
        sys.stdout.write(f"{key}: {value}\n")


def _ablate(args: argparse.Namespace, params: Params) -> None:
    from fakeface.ablation import run_study

    summary = run_study(
        params, args.shards, storage=args.storage, study_name=args.study, n_trials=args.n_trials,
        workers=args.workers, out_dir=args.out, metrics_path=args.metrics,
    )
    best = summary["best"]
    sys.stdout.write(f"study {summary['study']}: {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
                     f"{summary['n_failed']} failed; report in {args.out}/report.md\n")
    if best:
        sys.stdout.write(f"best trial #{best['number']}: {summary['objective']} {best['value']:.4f} "
                         f"with {best['overrides']}\n")


def _ablate_report(args: argparse.Namespace, params: Params) -> None:
    from fakeface.ablation import build_spec, default_study_name, load_study, resolve_storage
    from fakeface.ablation_report import write_report

    storage = resolve_storage(params, args.storage)
    name = args.study or params.ablation.study_name or default_study_name(build_spec(params, args.shards))
    write_report(load_study(storage, name), args.out)
    sys.stdout.write(f"{args.out}/report.md\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeface", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env FAKEFACE_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("ingest", _ingest, "scan a source into a manifest, quarantining bad images")
    p.add_argument("--raw-dir", default="data/raw")
    p.add_argument("--manifest", default="data/manifest.csv")
    p.add_argument("--report", default="data/ingest_report.json")

    p = command("eda", _eda, "counts, sizes, pixel statistics, sample grids and Fourier spectra")
    p.add_argument("--manifest", default="data/manifest.csv")
    p.add_argument("--out", default="reports/eda")

    p = command("augment", _augment, "pack the splits into TFRecord shards and preview augmentations")
    p.add_argument("--manifest", default="data/manifest.csv")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--preview", default="reports/augment/preview.png")

    p = command("train", _train, "fine-tune the backbone (two phases, resumable), tracked in MLflow")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--run-info", default="models/run.json")
    p.add_argument("--history", default="plots/train/history.csv")
    p.add_argument("--metrics", default="metrics/train.json")

    p = command(
        "evaluate", _evaluate,
        "test-split metrics at a threshold chosen on valid, calibration, robustness, slices, IG heatmaps",
    )
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--run-info", default="models/run.json")
    p.add_argument("--metrics", default="metrics/evaluate.json")
    p.add_argument("--robustness", default="metrics/robustness.json")
    p.add_argument("--slices", default="metrics/slices.json")
    p.add_argument("--plots", default="plots/evaluate")
    p.add_argument("--reports", default="reports/evaluate")
    p.add_argument("--explain", default="reports/explain", help="integrated-gradients heatmaps")

    p = command("predict", _predict, "score image files with a trained model: p(fake) and a real/fake label")
    p.set_defaults(params_optional=True)
    p.epilog = (
        "Exit status: 0 if at least one file was scored (files that cannot be read or decoded get "
        "a row with their error and never stop the batch), 2 if none was, or on a bad argument. "
        "Without params.yaml the defaults apply."
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders (searched recursively) or @LIST (a file with one path a line)")
    p.add_argument("--list", action="append", default=[], metavar="FILE", help="a file with one path a line")
    p.add_argument("--model", default="models/model.keras",
                   help="a .keras file, runs:/<run_id>/model or models:/<name>@<alias> (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="p(fake) cut (default: the model's MLflow metadata fakeface.threshold, else 0.5)")
    p.add_argument("--out", default="-", help="results.csv or results.json; - prints CSV (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="default: evaluate.batch_size")
    p.add_argument("--explain", metavar="DIR", default=None, help="write integrated-gradients heatmaps here")
    p.add_argument("--explain-max", type=int, default=16, help="files to explain (default: %(default)s)")
    p.add_argument("--ig-steps", type=int, default=None, help="IG steps, 20..1000 (default: evaluate.explain.steps)")
    p.add_argument("--ig-baseline", choices=("black", "noise"), default=None,
                   help="IG baseline (default: evaluate.explain.baseline)")

    p = command("register", _register, "log the model to MLflow and register it if it passes the gate")
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--evaluation", default="metrics/evaluate.json")
    p.add_argument("--run-info", default="models/run.json")
    p.add_argument("--out", default="models/registry.json")

    command("params", _params_check, "validate params.yaml and print every parameter")

    p = command("ablate", _ablate, "ablation / tuning study with Optuna (ablation: in params.yaml), in MLflow")
    p.epilog = "`fakeface ablate report` rewrites the report from the stored study without training."
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: env FAKEFACE_ABLATION_STORAGE, then ablation.storage)")
    p.add_argument("--study", default=None, help="study name (default: ablation.study_name, else derived)")
    p.add_argument("--n-trials", type=int, default=None,
                   help="finished trials the study should have (default: ablation.n_trials, else every config)")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: ablation.workers)")
    p.add_argument("--out", default="reports/ablation", help="report folder (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/ablation.json")
    actions = p.add_subparsers(dest="ablate_action", metavar="ACTION")
    q = actions.add_parser("report", help="write the seed-style tables from the stored study (no training)")
    q.set_defaults(handler=_ablate_report)
    q.add_argument("--shards", default="data/shards", help="to derive the default study name")
    q.add_argument("--storage", default=None)
    q.add_argument("--study", default=None)
    q.add_argument("--out", default="reports/ablation")

    from fakeface.pipeline_cli import add_pipeline_commands  # Kubeflow: compile, submit, run-local

    add_pipeline_commands(sub)

    from fakeface.stack_cli import add_stack_commands  # local MLflow server + S3 store; `runs`

    add_stack_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # An offline-first tool: no usage telemetry from MLflow unless the user opts back in.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    setup_logging(args.log_level)
    try:
        if getattr(args, "params_optional", False) and not Path(args.params).exists():
            params = Params()  # commands that only read defaults (stack, predict) work outside a project
        else:
            params = load_params(args.params)
        args.handler(args, params)
    except FakefaceError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
