"""The training pipeline on Kubeflow: ingest -> (eda, augment, preview) -> train -> evaluate -> register.

Its parameters are typed, one per params leaf a step reads (``train_backbone``, ``train_dropout``,
``augment_crop_enabled``, ...; see :mod:`fakeface.components.parameters`), with the compiled params
(``params.yaml`` and ``-S`` overrides) as defaults, so the KFP run form and run comparison show
the knobs, and each step receives only the ones it reads: a change of ``train.dropout`` changes
the cache key of train and what follows, never that of ingest, eda, augment or preview.

Cluster settings (image, MLflow URI, Secret, resources, GPU, retries, timeouts, the checkpoint
volume) are compile-time (:class:`fakeface.pipelines.settings.KubeflowSettings`). Caching is on
for ingest, eda, augment and preview (pure functions of their params and inputs) and off for
train, evaluate and register (each run must produce its own MLflow run and registered version).
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.

import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from kfp.dsl import Artifact

from fakeface.components import stages
from fakeface.config import Params
from fakeface.pipelines.local_runs import prepare_local_run, write_package
from fakeface.pipelines.settings import KubeflowSettings, configure_task
from fakeface.pipelines.typed import StepArguments, run_arguments, typed_pipeline

PIPELINE_NAME = "fakeface-training"
DEFAULT_PACKAGE = Path("pipelines") / "training_pipeline.yaml"
#: The steps, in pipeline order (their typed parameters make the pipeline's).
STEPS = ["ingest", "eda", "augment", "preview", "train", "evaluate", "register"]
#: Environment variables read by ``submit`` for the Kubeflow API (never written anywhere).
TOKEN_ENV = "KFP_TOKEN"
COOKIES_ENV = "KFP_COOKIES"


class Outputs(NamedTuple):
    evaluation: Artifact
    registration: Artifact


def build_pipeline(settings: KubeflowSettings | None = None, params: Params | None = None):
    """A fresh ``@dsl.pipeline`` for these settings, with ``params`` as the parameters' defaults."""
    settings = settings or KubeflowSettings.from_env()

    def graph(args: StepArguments) -> Outputs:
        ingest = stages.ingest(**args("ingest"))
        data = ingest.outputs["data"]
        eda = stages.eda(**args("eda"), data=data)
        augment = stages.augment(**args("augment"), data=data)
        preview = stages.preview(**args("preview"), data=data)
        shards = augment.outputs["shards"]
        train = stages.train(**args("train"), shards=shards)
        evaluate = stages.evaluate(**args("evaluate"), model=train.outputs["model"], shards=shards)
        register = stages.register(
            **args("register"), model=train.outputs["model"], evaluation=evaluate.outputs["evaluation"],
            shards=shards,
        )
        tasks = {"ingest": ingest, "eda": eda, "augment": augment, "preview": preview, "train": train,
                 "evaluate": evaluate, "register": register}
        for name, task in tasks.items():
            configure_task(name, task, settings)
        return Outputs(evaluation=evaluate.outputs["evaluation"], registration=register.outputs["registration"])

    return typed_pipeline(
        PIPELINE_NAME,
        "fakeface: GAN-face detector. ingest -> eda, augment, preview -> train -> evaluate -> register.",
        STEPS, params or Params(), graph, Outputs,
    )


def compile_pipeline(
    out_path: str | os.PathLike[str] = DEFAULT_PACKAGE,
    params: Params | None = None,
    settings: KubeflowSettings | None = None,
) -> Path:
    """Write the pipeline YAML (``params`` as the defaults of its parameters)."""
    return write_package(build_pipeline(settings, params), out_path)


def run_local(
    params: Params | None = None,
    workdir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    settings: KubeflowSettings | None = None,
    runner: Any = None,
    enable_caching: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the pipeline on this machine with ``kfp.local``.

    ``runner``: ``kfp.local.SubprocessRunner(use_venv=False)`` (default: every step a process of
    this Python) or a ``kfp.local.DockerRunner`` (every step in the project image). ``workdir``
    holds the outputs of every step (``<workdir>/<pipeline>-<time>/<task>/<output>``) and, with
    ``enable_caching``, the cache (``<workdir>/.kfp_cache``). MLflow: ``mlflow_tracking_uri`` or,
    unset, ``MLFLOW_TRACKING_URI`` / the project's ``sqlite:///<cwd>/mlflow.db`` (absolute, so
    every step finds the same store). ``env``: more environment of every step. Returns the
    pipeline outputs: ``evaluation`` and ``registration`` artifacts.
    """
    params = params or Params()
    run = prepare_local_run(params.tracking.experiment, workdir, mlflow_tracking_uri, settings, env)
    pipeline = build_pipeline(run.settings, params)
    run.start(runner, enable_caching)
    task = pipeline(**run_arguments(params, STEPS))
    return dict(task.outputs)


def submit(
    host: str,
    params: Params | None = None,
    settings: KubeflowSettings | None = None,
    experiment: str = "fakeface",
    run_name: str | None = None,
    namespace: str | None = None,
    package: str | os.PathLike[str] | None = None,
) -> str:
    """Compile (or take ``package``) and start a run on a Kubeflow Pipelines API; returns its id.

    The run's arguments are ``params``' values of every typed parameter. The API token comes only
    from the environment (``KFP_TOKEN``; ``KFP_COOKIES`` for a session cookie behind
    Dex/oauth2-proxy); without either, ``kfp.Client`` uses what it finds itself (an in-cluster
    service account token, a kube config).
    """
    import kfp

    params = params or Params()
    with tempfile.TemporaryDirectory(prefix="fakeface-kfp-") as scratch:
        path = Path(package) if package else compile_pipeline(Path(scratch) / "pipeline.yaml", params, settings)
        client = kfp.Client(
            host=host,
            namespace=namespace or "kubeflow",
            existing_token=os.environ.get(TOKEN_ENV) or None,
            cookies=os.environ.get(COOKIES_ENV) or None,
        )
        result = client.create_run_from_pipeline_package(
            str(path),
            arguments=run_arguments(params, STEPS),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
        )
    return result.run_id
