"""The training pipeline: ingest -> (eda, augment) -> train -> evaluate -> register, on Kubeflow.

One pipeline parameter, ``params``: the whole of ``params.yaml`` as a JSON object (a string, so
``null`` values such as ``train.image_size`` survive; KFP's struct defaults cannot hold them).
Compiled defaults are the project's ``params.yaml``; a run may pass other params. Every component
validates them with :func:`fakeface.config.parse_params` before doing anything.

Cluster settings (image, MLflow URI, Secret, resources, GPU) are compile-time
(:class:`pipelines.settings.KubeflowSettings`). Caching is on for ingest, eda and augment (pure
functions of params + inputs) and off for train, evaluate and register (each run must produce
its own MLflow run and registered version).
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.

import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp import kubernetes as k8s
from kfp.dsl import Artifact

from components import stages
from pipelines.settings import (
    CACHED_STAGES,
    MLFLOW_STAGES,
    SECRET_KEYS,
    KubeflowSettings,
)

PIPELINE_NAME = "fakeface-training"
DEFAULT_PACKAGE = Path("pipelines") / "training_pipeline.yaml"
#: Environment variables read by ``submit`` for the Kubeflow API (never written anywhere).
TOKEN_ENV = "KFP_TOKEN"
COOKIES_ENV = "KFP_COOKIES"


def params_json(params: Any = None) -> str:
    """The ``params`` argument: validated params as one JSON object (all keys, params.yaml order)."""
    from fakeface.config import Params, parse_params

    if params is None:
        params = Params()
    elif isinstance(params, str):
        params = parse_params(json.loads(params))
    elif isinstance(params, dict):
        params = parse_params(params)
    return json.dumps(params.model_dump(mode="json"))


def configure_task(name: str, task: dsl.PipelineTask, settings: KubeflowSettings) -> None:
    """Image, requests, env, caching, and (train) the GPU; the Secret for MLflow stages."""
    resources = settings.resources[name]
    task.set_container_image(settings.image)
    task.set_cpu_request(resources.cpu)
    task.set_memory_request(resources.memory)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    for key, value in settings.env().items():
        task.set_env_variable(key, value)
    task.set_caching_options(name in CACHED_STAGES)

    if name == "train" and settings.gpu_count > 0:
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.gpu_count)
        for label, value in settings.gpu_node_selector:
            k8s.add_node_selector(task, label_key=label, label_value=value)
        for toleration in settings.gpu_tolerations:
            k8s.add_toleration(
                task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                effect=toleration.effect,
            )
    if name in MLFLOW_STAGES:
        # Key names only: the values stay in the cluster. Two mounts, so that the MLflow login may
        # be absent from the Secret while the S3 keys must be there.
        for required in (True, False):
            keys = {key: key for key, must in SECRET_KEYS if must is required}
            if keys:
                k8s.use_secret_as_env(
                    task, secret_name=settings.secret_name, secret_key_to_env=keys, optional=not required
                )


def build_pipeline(settings: KubeflowSettings | None = None, default_params: str | None = None):
    """A fresh ``@dsl.pipeline`` for these settings, with ``default_params`` (JSON) as default."""
    settings = settings or KubeflowSettings.from_env()
    default = default_params if default_params is not None else params_json()

    class Outputs(NamedTuple):
        evaluation: Artifact
        registration: Artifact

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="fakeface: GAN-face detector. ingest -> eda, augment, preview -> train -> evaluate -> register.",
    )
    def training_pipeline(params: str = default) -> Outputs:
        ingest_task = stages.ingest(params=params)
        eda_task = stages.eda(params=params, data=ingest_task.outputs["data"])
        augment_task = stages.augment(params=params, data=ingest_task.outputs["data"])
        preview_task = stages.preview(params=params, data=ingest_task.outputs["data"])
        train_task = stages.train(params=params, shards=augment_task.outputs["shards"])
        evaluate_task = stages.evaluate(
            params=params, model=train_task.outputs["model"], shards=augment_task.outputs["shards"]
        )
        register_task = stages.register(
            params=params, model=train_task.outputs["model"], evaluation=evaluate_task.outputs["evaluation"]
        )
        tasks = {
            "ingest": ingest_task, "eda": eda_task, "augment": augment_task, "preview": preview_task,
            "train": train_task,
            "evaluate": evaluate_task, "register": register_task,
        }
        for name, task in tasks.items():
            configure_task(name, task, settings)
        return Outputs(
            evaluation=evaluate_task.outputs["evaluation"],
            registration=register_task.outputs["registration"],
        )

    return training_pipeline


def compile_pipeline(
    out_path: str | os.PathLike[str] = DEFAULT_PACKAGE,
    params: Any = None,
    settings: KubeflowSettings | None = None,
) -> Path:
    """Write the pipeline YAML (``params`` as the default of the ``params`` parameter)."""
    from kfp import compiler

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(settings, default_params=params_json(params))
    compiler.Compiler().compile(pipeline, str(out_path))
    return out_path


def run_local(
    params: Any = None,
    workdir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    settings: KubeflowSettings | None = None,
) -> dict[str, Any]:
    """Run the pipeline on this machine: ``kfp.local`` with a subprocess per step, this Python.

    ``workdir`` holds the outputs of every step (``<workdir>/<pipeline>-<time>/<task>/<output>``).
    MLflow: ``mlflow_tracking_uri`` or, unset, ``MLFLOW_TRACKING_URI`` / the project's
    ``sqlite:///<cwd>/mlflow.db`` (absolute, so every step's process finds the same store).
    Returns the pipeline outputs: ``evaluation`` and ``registration`` artifacts.
    """
    from kfp import local

    from fakeface import tracking

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fakeface-kfp-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = mlflow_tracking_uri or tracking.tracking_uri()
    settings = (settings or KubeflowSettings.from_env()).for_local(uri)
    argument = params_json(params)
    ensure_experiment(uri, json.loads(argument)["tracking"]["experiment"])
    pipeline = build_pipeline(settings, default_params=argument)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    task = pipeline(params=argument)
    return dict(task.outputs)


def ensure_experiment(uri: str, name: str) -> None:
    """Create the MLflow experiment from here, before any step does.

    With a local store (SQLite, a folder) MLflow puts a new experiment's artifacts under
    ``./mlruns`` of the process that creates it. The steps run in scratch folders, so the first
    one would put them in its own temporary folder; created here they go where ``dvc repro``'s
    go: ``mlruns/`` in the current directory. An existing experiment is left as it is.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name)


def submit(
    host: str,
    params: Any = None,
    settings: KubeflowSettings | None = None,
    experiment: str = "fakeface",
    run_name: str | None = None,
    namespace: str | None = None,
    package: str | os.PathLike[str] | None = None,
) -> str:
    """Compile (or take ``package``) and start a run on a Kubeflow Pipelines API; returns its id.

    The API token comes only from the environment (``KFP_TOKEN``; ``KFP_COOKIES`` for a session
    cookie behind Dex/oauth2-proxy); without either, ``kfp.Client`` uses what it finds itself (an
    in-cluster service account token, a kube config).
    """
    import kfp

    argument = params_json(params)
    with tempfile.TemporaryDirectory(prefix="fakeface-kfp-") as scratch:
        path = Path(package) if package else compile_pipeline(Path(scratch) / "pipeline.yaml", argument, settings)
        client = kfp.Client(
            host=host,
            namespace=namespace or "kubeflow",
            existing_token=os.environ.get(TOKEN_ENV) or None,
            cookies=os.environ.get(COOKIES_ENV) or None,
        )
        result = client.create_run_from_pipeline_package(
            str(path),
            arguments={"params": argument},
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
        )
    return result.run_id
