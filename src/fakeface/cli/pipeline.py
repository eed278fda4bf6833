"""``fakeface pipeline ...``: compile, submit and run the Kubeflow pipeline.

::

    fakeface pipeline compile   [--pipeline training|ablation|batch] [--out pipelines/<pipeline>_pipeline.yaml]
    fakeface pipeline submit    --host URL [--experiment NAME] [--run-name NAME] [--namespace NS]
    fakeface pipeline run-local [--pipeline training|ablation|batch] [--workdir DIR] [--mlflow-uri URI]
                                [--source DIR|s3://... --model URI --workers N]   (batch)

Each takes the params from ``--params`` (default ``params.yaml``), optionally changed with
``-S/--set section.key=value`` (repeatable, values in YAML syntax): the defaults of the compiled
pipeline's typed parameters (``train_dropout``, ...), or the submitted run's arguments.
``fakeface pipeline golden`` regenerates the components and the committed compiled pipelines.

``compile`` and ``submit`` also take the cluster settings (``--image``, ``--mlflow-uri``,
``--s3-endpoint``, ``--secret``, ``--gpus``, ``--node-selector``, ``--toleration``); defaults come
from ``FAKEFACE_*`` environment variables (see :mod:`fakeface.pipelines.settings`). Credentials are never
options: the Kubeflow API token is read from ``KFP_TOKEN`` (or a session cookie from
``KFP_COOKIES``), and the pods get S3 and MLflow credentials from a Kubernetes Secret.

``--pipeline ablation`` is the Optuna study on ``ablation.workers`` parallel workers, then
the best config retrained on train + valid and tested. Its storage URL is a run parameter, left
empty when compiled: pods read it, password included, from the Secret's
``FAKEFACE_ABLATION_STORAGE``; ``run-local`` uses ``sqlite:///<workdir>/optuna.db``.

``--pipeline batch`` scores every file of a folder or S3 prefix (``--source``, a run argument) with
a registered model (``--model``, default the champion) on ``--workers`` parallel tasks
(:mod:`fakeface.pipelines.batch`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from fakeface import FakefaceError

log = logging.getLogger("fakeface")

DEFAULT_OUT = "pipelines/training_pipeline.yaml"
DEFAULT_OUTS = {"training": DEFAULT_OUT, "ablation": "pipelines/ablation_pipeline.yaml",
                "batch": "pipelines/batch_pipeline.yaml"}
PIPELINES = tuple(DEFAULT_OUTS)


class PipelineCommandError(FakefaceError):
    """A pipeline command that cannot go ahead (bad setting or override, unreachable API)."""


# --------------------------------------------------------------------------- helpers


def apply_overrides(params: Any, assignments: list[str] | None) -> Any:
    """``section.key=value`` assignments (YAML values) applied to validated params, revalidated."""
    import yaml

    from fakeface.config import parse_params

    if not assignments:
        return params
    tree = params.model_dump(mode="json")
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise PipelineCommandError(f"--set {assignment!r}: expected section.key=value")
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PipelineCommandError(f"--set {assignment!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PipelineCommandError(f"--set {assignment!r}: value is not valid YAML: {error}") from None
    return parse_params(tree, "params with --set overrides")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _settings(args: argparse.Namespace):
    from fakeface.pipelines.settings import KubeflowSettings, SettingsError, Toleration

    overrides: dict[str, Any] = {
        "image": args.image,
        "mlflow_tracking_uri": args.mlflow_uri,
        "s3_endpoint_url": args.s3_endpoint,
        "secret_name": args.secret,
        "gpu_count": args.gpus,
        "retries": args.retries,
    }
    try:
        if args.node_selector is not None:
            overrides["gpu_node_selector"] = tuple(args.node_selector)
        if args.toleration is not None:
            overrides["gpu_tolerations"] = tuple(Toleration.parse(t) for t in args.toleration)
        settings = KubeflowSettings.from_env(**overrides)
        if args.checkpoint_pvc is not None:
            settings = replace(settings, checkpoint_pvc=args.checkpoint_pvc or None)
        return settings
    except SettingsError as error:
        raise PipelineCommandError(str(error)) from None


# --------------------------------------------------------------------------- handlers


def _compile(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines.ablation import compile_ablation_pipeline
    from fakeface.pipelines.batch import DEFAULT_WORKERS, compile_batch_pipeline
    from fakeface.pipelines.training import compile_pipeline

    params = apply_overrides(params, args.set)
    out_path = args.out or DEFAULT_OUTS[args.pipeline]
    if args.pipeline == "batch":
        out = compile_batch_pipeline(out_path, params, _settings(args), workers=args.workers or DEFAULT_WORKERS)
    else:
        compile_fn = compile_ablation_pipeline if args.pipeline == "ablation" else compile_pipeline
        out = compile_fn(out_path, params, _settings(args))
    log.info("compiled the %s pipeline to %s", args.pipeline, out)
    sys.stdout.write(f"{out}\n")


def _submit(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines.training import submit

    params = apply_overrides(params, args.set)
    settings = _settings(args)
    try:
        run_id = submit(
            args.host, params, settings, experiment=args.experiment, run_name=args.run_name,
            namespace=args.namespace, package=args.package,
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise PipelineCommandError(f"submit to {args.host} failed: {type(error).__name__}: {error}") from None
    except Exception as error:  # kfp_server_api.ApiException and friends: say what, not a traceback
        if type(error).__module__.startswith(("kfp", "urllib3", "kfp_server_api")):
            raise PipelineCommandError(
                f"submit to {args.host} failed: {type(error).__name__}: {error}"
            ) from None
        raise
    log.info("submitted run %s (experiment %r)", run_id, args.experiment)
    sys.stdout.write(f"{run_id}\n")


def _run_local(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines.training import run_local

    params = apply_overrides(params, args.set)
    if args.pipeline == "ablation":
        _run_ablation_local(args, params)
        return
    if args.pipeline == "batch":
        _run_batch_local(args, params)
        return
    outputs = run_local(params, workdir=args.workdir, mlflow_tracking_uri=args.mlflow_uri)
    evaluation = Path(outputs["evaluation"].path) / "evaluate.json"
    registration = Path(outputs["registration"].path)
    metrics = json.loads(evaluation.read_text())
    registry = json.loads(registration.read_text())
    sys.stdout.write(
        f"test accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f}, "
        f"AP {metrics['average_precision']:.4f} on {metrics['n']} images\n"
        f"registration: {registry['reason']} ({registry['model_uri']})\n"
        f"outputs: {evaluation.parent.parent.parent}\n"
    )


def _golden(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines import golden

    changed = golden.write(Path(args.params))
    for path in changed:
        log.info("rewrote %s", path)
    sys.stdout.write(f"{len(changed)} file(s) changed\n")


def _run_batch_local(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines.batch import run_batch_local

    if not args.source:
        raise PipelineCommandError("--pipeline batch needs --source (a folder or s3://bucket/prefix)")
    outputs = run_batch_local(args.source, args.model, params, workdir=args.workdir,
                              mlflow_tracking_uri=args.mlflow_uri, workers=args.workers or 2)
    results = Path(outputs["results"].path)
    summary = json.loads((results / "summary.json").read_text())
    sys.stdout.write(
        f"{summary['files']} files: {summary['scored']} scored ({summary['labelled_fake']} fake), "
        f"{summary['failed']} without a score {summary['errors'] or ''}\nresults: {results / 'results.csv'}\n"
    )


def _run_ablation_local(args: argparse.Namespace, params: Any) -> None:
    from fakeface.pipelines.ablation import run_ablation_local

    outputs = run_ablation_local(params, workdir=args.workdir, mlflow_tracking_uri=args.mlflow_uri)
    study = json.loads((Path(outputs["study"].path) / "summary.json").read_text())
    evaluation = Path(outputs["evaluation"].path) / "evaluate.json"
    metrics = json.loads(evaluation.read_text())
    best = study.get("best") or {}
    sys.stdout.write(
        f"study: {study['n_complete']} complete, {study['n_pruned']} pruned, {study['n_failed']} failed; "
        f"best trial {best.get('number')} ({best.get('value')}): {best.get('overrides')}\n"
        f"best config retrained on train+valid: test accuracy {metrics['accuracy']:.4f}, "
        f"AUC {metrics['auc']:.4f}, AP {metrics['average_precision']:.4f} on {metrics['n']} images\n"
        f"outputs: {evaluation.parent.parent.parent}\n"
    )


# --------------------------------------------------------------------------- parser


def _pipeline_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", choices=PIPELINES, default="training",
                   help="training, ablation (Optuna study on ablation.workers parallel workers, then the "
                        "best config retrained on train+valid and tested), or batch (score a folder or S3 "
                        "prefix with a registered model) (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="batch: parallel scoring tasks (default: 4 compiled, 2 run here)")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster settings (default: FAKEFACE_* environment, then built-in)")
    g.add_argument("--image", help="project image for every step (env FAKEFACE_IMAGE)")
    g.add_argument("--mlflow-uri", help="MLflow tracking URI as the pods reach it, no credentials "
                                        "(env FAKEFACE_MLFLOW_URI)")
    g.add_argument("--s3-endpoint", help="S3 endpoint for MLflow artifacts, e.g. MinIO "
                                         "(env FAKEFACE_S3_ENDPOINT_URL)")
    g.add_argument("--secret", help="Kubernetes Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                                    "[, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD] "
                                    "(env FAKEFACE_K8S_SECRET; default fakeface-credentials)")
    g.add_argument("--gpus", type=int, help="GPUs for the train step; 0 trains on CPU (env FAKEFACE_GPUS; default 1)")
    g.add_argument("--node-selector", action="append", type=_key_value, metavar="LABEL=VALUE",
                   help="node label the train step needs (repeatable; default nvidia.com/gpu.present=true)")
    g.add_argument("--toleration", action="append", metavar="KEY[=VALUE][:EFFECT]",
                   help="taint the train step tolerates (repeatable; default nvidia.com/gpu:NoSchedule)")
    g.add_argument("--checkpoint-pvc", default=None, metavar="CLAIM",
                   help="PersistentVolumeClaim for train's checkpoints, so a restarted pod resumes "
                        "(default fakeface-checkpoints; '' keeps them in the pod)")
    g.add_argument("--retries", type=int, default=None,
                   help="retries of the steps that reach the network, with exponential backoff (default 3)")


def _set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-S", "--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one param for this pipeline (repeatable), e.g. -S train.fine_tune_epochs=3")


def _command(commands: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace, Any], None],  # noqa: SLF001
             help_text: str, description: str, *options: Callable[[argparse.ArgumentParser], None]
             ) -> argparse.ArgumentParser:
    """One ``pipeline`` action: its parser, the shared option groups it takes, its handler."""
    p = commands.add_parser(name, help=help_text, description=description)
    for add_options in options:
        add_options(p)
    p.set_defaults(handler=handler)
    return p


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Register the ``pipeline`` subcommand group: compile, submit, run-local, golden."""
    group = sub.add_parser(
        "pipeline",
        help="Kubeflow pipeline: compile to YAML, submit to a cluster, or run it locally",
        description=__doc__.split("\n\n")[0],
    )
    commands = group.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    p = _command(commands, "compile", _compile, "write the pipeline YAML (params as the default)",
                 "Compile the pipeline to YAML, params.yaml as the params default.",
                 _pipeline_option, _set_option, _cluster_options)
    p.add_argument("--out", default=None, help=f"output file (default: {DEFAULT_OUT}, or "
                                               f"{DEFAULT_OUTS['ablation']} for the ablation pipeline)")

    p = _command(commands, "submit", _submit, "start a run on a Kubeflow Pipelines API",
                 "Compile and start a run. The API token comes from KFP_TOKEN (or a session cookie from "
                 "KFP_COOKIES), never from an option.", _set_option, _cluster_options)
    p.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. https://kubeflow.example.com/pipeline")
    p.add_argument("--experiment", default="fakeface", help="KFP experiment (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run name (default: KFP's)")
    p.add_argument("--namespace", default=None, help="profile namespace (multi-user Kubeflow)")
    p.add_argument("--package", default=None, help="submit this compiled YAML instead of compiling now")

    p = _command(commands, "run-local", _run_local, "run the pipeline here with kfp.local (a process per step)",
                 "Run every step in a subprocess of this Python (kfp.local SubprocessRunner, no containers); "
                 "cluster settings are ignored.", _pipeline_option, _set_option)
    p.add_argument("--workdir", default=None, help="where step outputs go (default: a new temporary folder)")
    p.add_argument("--mlflow-uri", default=None,
                   help="tracking URI for the steps (default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--source", default=None, help="batch: the folder or s3://bucket/prefix to score")
    p.add_argument("--model", default=None,
                   help="batch: the model (default: models:/<register.model_name>@<register.alias>)")

    _command(commands, "golden", _golden, "regenerate the components and the committed compiled pipelines",
             "Rewrite components/stages.py, components/ablation.py (generated from the stage registry and "
             "the config) and pipelines/compiled/*.yaml (params.yaml, default cluster settings); a test "
             "fails when they are stale.")
