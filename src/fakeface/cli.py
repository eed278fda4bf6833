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

    p = command("evaluate", _evaluate, "test-split metrics, ROC/PR curves and confusion matrix")
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--shards", default="data/shards")
    p.add_argument("--run-info", default="models/run.json")
    p.add_argument("--metrics", default="metrics/evaluate.json")
    p.add_argument("--plots", default="plots/evaluate")
    p.add_argument("--reports", default="reports/evaluate")

    p = command("register", _register, "log the model to MLflow and register it if it passes the gate")
    p.add_argument("--model", default="models/model.keras")
    p.add_argument("--evaluation", default="metrics/evaluate.json")
    p.add_argument("--run-info", default="models/run.json")
    p.add_argument("--out", default="models/registry.json")

    command("params", _params_check, "validate params.yaml and print every parameter")

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
        params = load_params(args.params)
        args.handler(args, params)
    except FakefaceError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
