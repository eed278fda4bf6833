"""The ablation pipeline (issue 5): ingest -> augment -> prepare -> ParallelFor(worker) -> finalize
-> retrain the best config on train + valid and evaluate it on test.

Parameters: ``params`` (the whole of ``params.yaml`` as JSON, as in the training pipeline; its
``ablation`` section is the study) and ``storage`` (the Optuna RDB URL every worker shares). On a
cluster leave ``storage`` empty: the URL, password included, comes from the Kubernetes Secret as
``FAKEFACE_ABLATION_STORAGE`` (a key that may be absent, mounted on the ablation tasks only); a
``storage`` holding ``user:password@`` is refused. Locally it is an absolute ``sqlite:///`` file,
shared because every ``kfp.local`` task runs on this machine.

The number of workers is fixed when the pipeline is built (``workers``, default
``ablation.workers``): a ``dsl.ParallelFor`` over ``range(workers)``. Workers and the retrain task
get the train stage's cluster settings (resources, GPU, node selector, tolerations, Secret); prepare
and finalize the register stage's. Nothing in this pipeline is cached: a study is state in storage.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.

import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp import kubernetes as k8s
from kfp.dsl import Artifact, Markdown

from components import ablation as ablation_components
from components import stages
from pipelines.settings import KubeflowSettings
from pipelines.training import configure_task, ensure_experiment, params_json

PIPELINE_NAME = "fakeface-ablation"
DEFAULT_PACKAGE = Path("pipelines") / "ablation_pipeline.yaml"
STORAGE_ENV = "FAKEFACE_ABLATION_STORAGE"

#: Which training stage's cluster settings each ablation task takes.
SETTINGS_OF = {"ablation-prepare": "register", "ablation-worker": "train",
               "ablation-finalize": "register", "retrain-best": "train"}


def _workers(params_argument: str, workers: int | None) -> int:
    n = workers if workers is not None else json.loads(params_argument)["ablation"]["workers"]
    if int(n) < 1:
        raise ValueError(f"workers must be 1 or more, got {n}")
    return int(n)


def _configure_ablation(name: str, task: dsl.PipelineTask, settings: KubeflowSettings) -> None:
    configure_task(SETTINGS_OF[name], task, settings)
    task.set_caching_options(False)
    k8s.use_secret_as_env(
        task, secret_name=settings.secret_name, secret_key_to_env={STORAGE_ENV: STORAGE_ENV}, optional=True
    )


def build_ablation_pipeline(
    settings: KubeflowSettings | None = None,
    default_params: str | None = None,
    workers: int | None = None,
    default_storage: str = "",
):
    """A fresh ``@dsl.pipeline``: ``workers`` parallel workers (default ``ablation.workers``)."""
    settings = settings or KubeflowSettings.from_env()
    default = default_params if default_params is not None else params_json()
    n_workers = _workers(default, workers)
    ablation_components.storage_url(default_storage)  # refuses a password in the default

    class Outputs(NamedTuple):
        study: Artifact
        report: Markdown
        evaluation: Artifact

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="fakeface ablation: ingest -> augment -> Optuna study on parallel workers -> "
                    "retrain the best config on train+valid -> test.",
    )
    def ablation_pipeline(params: str = default, storage: str = default_storage) -> Outputs:
        ingest_task = stages.ingest(params=params)
        augment_task = stages.augment(params=params, data=ingest_task.outputs["data"])
        shards = augment_task.outputs["shards"]
        prepare_task = ablation_components.ablation_prepare(
            params=params, storage=storage, workers=n_workers, shards=shards
        )
        study_name = prepare_task.outputs["Output"]
        with dsl.ParallelFor(items=list(range(n_workers)), name="ablation-workers") as index:
            # The study name and shares travel in the plan artifact (see components.ablation).
            worker_task = ablation_components.ablation_worker(
                params=params, storage=storage, plan=prepare_task.outputs["plan"], worker_index=index,
                shards=shards,
            )
            _configure_ablation("ablation-worker", worker_task, settings)
        finalize_task = ablation_components.ablation_finalize(
            params=params, storage=storage, study_name=study_name
        ).after(worker_task)
        retrain_task = ablation_components.retrain_best(
            params=params, storage=storage, study_name=study_name, shards=shards
        ).after(finalize_task)
        configure_task("ingest", ingest_task, settings)
        configure_task("augment", augment_task, settings)
        _configure_ablation("ablation-prepare", prepare_task, settings)
        _configure_ablation("ablation-finalize", finalize_task, settings)
        _configure_ablation("retrain-best", retrain_task, settings)
        return Outputs(
            study=finalize_task.outputs["study"],
            report=finalize_task.outputs["report"],
            evaluation=retrain_task.outputs["evaluation"],
        )

    return ablation_pipeline


def compile_ablation_pipeline(
    out_path: str | os.PathLike[str] = DEFAULT_PACKAGE,
    params: Any = None,
    settings: KubeflowSettings | None = None,
    workers: int | None = None,
) -> Path:
    """Write the ablation pipeline YAML (``params`` as the default, ``storage`` empty: the Secret)."""
    from kfp import compiler

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_ablation_pipeline(settings, default_params=params_json(params), workers=workers)
    compiler.Compiler().compile(pipeline, str(out_path))
    return out_path


def run_ablation_local(
    params: Any = None,
    workdir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    settings: KubeflowSettings | None = None,
    workers: int | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Run the ablation pipeline with ``kfp.local`` (a subprocess per task, this Python).

    ``storage`` defaults to ``sqlite:///<workdir>/optuna.db``; MLflow as in
    :func:`pipelines.training.run_local`. Returns the outputs: ``study``, ``report``, ``evaluation``.
    """
    from kfp import local

    from fakeface import tracking

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fakeface-kfp-ablation-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = mlflow_tracking_uri or tracking.tracking_uri()
    settings = (settings or KubeflowSettings.from_env()).for_local(uri)
    argument = params_json(params)
    url = storage or f"sqlite:///{root / 'optuna.db'}"
    ensure_experiment(uri, json.loads(argument)["tracking"]["experiment"])
    pipeline = build_ablation_pipeline(settings, default_params=argument, workers=workers, default_storage=url)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    task = pipeline(params=argument, storage=url)
    return dict(task.outputs)
