"""``fakeface <stage>``: a thin command line over the stage functions.

Each stage subcommand is built from the stage registry (:mod:`fakeface.stages`): it reads
``params.yaml`` once (validated into :class:`fakeface.config.Params`), takes the stage's paths as
options (the defaults are the paths ``dvc.yaml`` uses) and calls the stage's ``run``, the same one
the Kubeflow components call. Expected failures (bad params,
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
from fakeface.logs import preload_tensorflow, setup_logging
from fakeface.config.runtime import ENV as RUNTIME_ENV
from fakeface.config.runtime import Runtime
from fakeface.stages import Stage, get_stage, list_stages

log = logging.getLogger("fakeface")

Handler = Callable[[argparse.Namespace, Params], None]


def _stage_handler(stage: Stage) -> Handler:
    def handler(args: argparse.Namespace, params: Params) -> None:
        paths = stage.paths(**{name: Path(getattr(args, name)) for name in stage.paths().as_dict()})
        options = {name: getattr(args, name) for name in stage.runtime}
        stage.check_inputs(paths)  # a missing input fails here, before TensorFlow's start-up
        if stage.tensorflow:
            preload_tensorflow(args.log_level)
        stage.run(params, paths, runtime=Runtime.from_env(**options))

    return handler


def add_stage_command(sub: argparse._SubParsersAction, stage: Stage) -> argparse.ArgumentParser:  # noqa: SLF001
    """``fakeface <stage>``: one option per path of the stage (default: the DVC layout), plus its
    runtime settings (default: the environment, see :mod:`fakeface.config.runtime`)."""
    p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
    p.set_defaults(handler=_stage_handler(stage))
    for name, default in stage.paths().as_dict().items():
        p.add_argument(stage.paths.option(name), dest=name, default=str(default),
                       help=f"{stage.paths.help(name)} (default: %(default)s)")
    for name in stage.runtime:
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                       help=f"default: env {RUNTIME_ENV[name]}, else {getattr(Runtime(), name)}")
    return p


def _add_external_options(p: argparse.ArgumentParser) -> None:
    """``fakeface evaluate --external [NAME=]SOURCE``: score a model (any --model: a file or an
    MLflow URI) on labelled sets from elsewhere, instead of running the stage."""
    stage_handler = p.get_default("handler")
    p.add_argument("--external", action="append", default=[], metavar="[NAME=]SOURCE",
                   help="score --model (a .keras file, runs:/..., models:/name@alias) on this labelled set "
                        "(any layout ingest reads) instead of running the stage; repeatable")
    p.add_argument("--external-out", default="reports/external", help="where external.json/.md go (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None, help="with --external: the cut (default: the model's)")

    def handler(args: argparse.Namespace, params: Params) -> None:
        if not args.external:
            stage_handler(args, params)
            return
        from fakeface.analysis.external import evaluate_external, parse_external

        preload_tensorflow(args.log_level)
        defaults = get_stage("evaluate").paths()
        # Without --model, the evaluated detector (it carries its threshold), not train's raw model.
        model = str(defaults.detector) if args.model == str(defaults.model) else args.model
        results = evaluate_external(model, parse_external(args.external), params.evaluate,
                                    Path(args.external_out), threshold=args.threshold, seed=params.seed,
                                    max_pixels=params.data.max_pixels)
        for name, result in results.items():
            sys.stdout.write(f"{name}: AUC {result['auc']:.4f}, accuracy {result['accuracy']:.4f} at "
                             f"{result['threshold']:.4f}, real flagged fake {100 * result['false_positive_rate']:.1f}%, "
                             f"{result['kept']}/{result['seen']} files scored\n")

    p.set_defaults(handler=handler, params_optional=True)


def _predict(args: argparse.Namespace, params: Params) -> None:
    from fakeface.inference.predict import predict

    ig = params.evaluate.explain
    predict(
        args.paths, args.model, args.out, list_files=args.list, threshold=args.threshold,
        batch_size=args.batch_size or params.evaluate.batch_size, max_pixels=params.data.max_pixels,
        explain_dir=args.explain, explain_max=args.explain_max, ig_steps=args.ig_steps or ig.steps,
        ig_baseline=args.ig_baseline or ig.baseline, ig_batch_size=ig.batch_size,
    )


def _params_check(args: argparse.Namespace, params: Params) -> None:
    if args.markdown:
        from fakeface.config.docs import params_table

        sys.stdout.write(params_table(params))
        return
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

    for name in list_stages():
        stage_parser = add_stage_command(sub, get_stage(name))
        if name == "evaluate":
            _add_external_options(stage_parser)

    p = command("predict", _predict, "score image files with a trained model: p(fake) and a real/fake label")
    p.set_defaults(params_optional=True, uses_tensorflow=True)
    p.epilog = (
        "Exit status: 0 if at least one file was scored (files that cannot be read or decoded get "
        "a row with their error and never stop the batch), 2 if none was, or on a bad argument. "
        "Without params.yaml the defaults apply."
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders (searched recursively) or @LIST (a file with one path a line)")
    p.add_argument("--list", action="append", default=[], metavar="FILE", help="a file with one path a line")
    p.add_argument("--model", default="models/detector.keras",
                   help="a .keras file, runs:/<run_id>/model or models:/<name>@<alias> (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="p(fake) cut (default: the threshold stored with the model, else 0.5)")
    p.add_argument("--out", default="-", help="results.csv or results.json; - prints CSV (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="default: evaluate.batch_size")
    p.add_argument("--explain", metavar="DIR", default=None, help="write integrated-gradients heatmaps here")
    p.add_argument("--explain-max", type=int, default=16, help="files to explain (default: %(default)s)")
    p.add_argument("--ig-steps", type=int, default=None, help="IG steps, 20..1000 (default: evaluate.explain.steps)")
    p.add_argument("--ig-baseline", choices=("black", "noise"), default=None,
                   help="IG baseline (default: evaluate.explain.baseline)")

    p = command("params", _params_check, "validate params.yaml and print every parameter")
    p.add_argument("--markdown", action="store_true", help="the README's parameter table (defaults and meanings)")

    from fakeface.cli.ablation import add_ablate_commands  # Optuna studies: ablate, report, retrain

    add_ablate_commands(sub).set_defaults(uses_tensorflow=True)

    from fakeface.cli.recipes import add_recipe_commands  # named parameter profiles

    add_recipe_commands(sub)

    from fakeface.cli.pipeline import add_pipeline_commands  # Kubeflow: compile, submit, run-local

    add_pipeline_commands(sub)

    from fakeface.cli.stack import add_stack_commands  # local MLflow server + S3 store; `runs`

    add_stack_commands(sub)

    from fakeface.cli.serve import add_serve_commands  # serve, deploy kserve: the image-in model

    add_serve_commands(sub)

    from fakeface.cli.registry import add_registry_commands  # alias history, promote, rollback
    add_registry_commands(sub)
    from fakeface.cli.ui import add_ui_command  # the MLflow UI on the training runs

    add_ui_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # An offline-first tool: no usage telemetry from MLflow unless the user opts back in.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    setup_logging(args.log_level)
    if getattr(args, "uses_tensorflow", False):
        preload_tensorflow(args.log_level)
    try:
        if getattr(args, "params_optional", False) and not Path(args.params).exists():
            params = Params()  # commands that only read defaults (stack, predict) work outside a project
        else:
            params = load_params(args.params)
        status = args.handler(args, params)  # a handler may return a status of its own (monitor: 1 on drift)
    except FakefaceError as error:
        log.error("%s", error)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
