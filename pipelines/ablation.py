"""The ablation pipeline: ingest -> augment -> prepare -> ParallelFor(worker) -> finalize
-> retrain the best config on train + valid and evaluate it on test.

Parameters: typed, one per params leaf the steps read (as in the training pipeline; the
``ablation_*`` ones are the study), and ``storage`` (the Optuna RDB URL every worker shares). On a
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

import os
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp import kubernetes as k8s
from kfp.dsl import Artifact, Markdown

from fakeface.components import ablation, stages
from fakeface.components.ablation_steps import storage_url
from fakeface.config import Params
from fakeface.pipelines.settings import KubeflowSettings, SettingsError, configure_task
from fakeface.pipelines.local_runs import prepare_local_run, write_package
from fakeface.pipelines.typed import StepArguments, run_arguments, typed_pipeline

PIPELINE_NAME = "fakeface-ablation"
DEFAULT_PACKAGE = Path("pipelines") / "ablation_pipeline.yaml"
STORAGE_ENV = "FAKEFACE_ABLATION_STORAGE"
STEPS = ["ingest", "augment", "ablation_prepare", "ablation_worker", "ablation_finalize", "retrain_best"]

#: Which training stage's cluster settings each ablation task takes.
SETTINGS_OF = {"ablation-prepare": "register", "ablation-worker": "train",
               "ablation-finalize": "register", "retrain-best": "train"}


def _configure_ablation(name: str, task: dsl.PipelineTask, settings: KubeflowSettings) -> None:
    configure_task(SETTINGS_OF[name], task, settings)
    task.set_caching_options(False)
    k8s.use_secret_as_env(
        task, secret_name=settings.secret_name, secret_key_to_env={STORAGE_ENV: STORAGE_ENV}, optional=True
    )


class Outputs(NamedTuple):
    study: Artifact
    report: Markdown
    evaluation: Artifact


def build_ablation_pipeline(
    settings: KubeflowSettings | None = None,
    params: Params | None = None,
    workers: int | None = None,
    default_storage: str = "",
):
    """A fresh ``@dsl.pipeline``: ``workers`` parallel workers (default ``ablation.workers``)."""
    settings = settings or KubeflowSettings.from_env()
    params = params or Params()
    n_workers = workers if workers is not None else params.ablation.workers
    if n_workers < 1:
        raise SettingsError(f"workers must be 1 or more, got {n_workers}")
    storage_url(default_storage)  # refuses a password in the default

    def graph(args: StepArguments) -> Outputs:
        storage = args.values["storage"]
        ingest_task = stages.ingest(**args("ingest"))
        augment_task = stages.augment(**args("augment"), data=ingest_task.outputs["data"])
        shards = augment_task.outputs["shards"]
        prepare_task = ablation.ablation_prepare(
            **args("ablation_prepare"), storage=storage, workers=n_workers, shards=shards
        )
        study_name = prepare_task.outputs["Output"]
        with dsl.ParallelFor(items=list(range(n_workers)), name="ablation-workers") as index:
            # The study name and shares travel in the plan artifact (see components.ablation_steps).
            worker_task = ablation.ablation_worker(
                **args("ablation_worker"), storage=storage, worker_index=index,
                plan=prepare_task.outputs["plan"], shards=shards,
            )
            _configure_ablation("ablation-worker", worker_task, settings)
        finalize_task = ablation.ablation_finalize(
            **args("ablation_finalize"), storage=storage, study_name=study_name
        ).after(worker_task)
        retrain_task = ablation.retrain_best(
            **args("retrain_best"), storage=storage, study_name=study_name, shards=shards
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

    return typed_pipeline(
        PIPELINE_NAME,
        "fakeface ablation: ingest -> augment -> Optuna study on parallel workers -> "
        "retrain the best config on train+valid -> test.",
        STEPS, params, graph, Outputs, extra=(("storage", str, default_storage),),
    )


def compile_ablation_pipeline(
    out_path: str | os.PathLike[str] = DEFAULT_PACKAGE,
    params: Params | None = None,
    settings: KubeflowSettings | None = None,
    workers: int | None = None,
) -> Path:
    """Write the ablation pipeline YAML (``params`` as the default, ``storage`` empty: the Secret)."""
    return write_package(build_ablation_pipeline(settings, params, workers=workers), out_path)


def run_ablation_local(
    params: Params | None = None,
    workdir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    settings: KubeflowSettings | None = None,
    workers: int | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Run the ablation pipeline with ``kfp.local`` (a subprocess per task, this Python).

    ``storage`` defaults to ``sqlite:///<workdir>/optuna.db``; MLflow as in
    :func:`fakeface.pipelines.training.run_local`. Returns the outputs: ``study``, ``report``, ``evaluation``.
    """
    params = params or Params()
    run = prepare_local_run(params.tracking.experiment, workdir, mlflow_tracking_uri, settings,
                            prefix="fakeface-kfp-ablation-")
    url = storage or f"sqlite:///{run.root / 'optuna.db'}"
    pipeline = build_ablation_pipeline(run.settings, params, workers=workers, default_storage=url)
    run.start()
    task = pipeline(**run_arguments(params, STEPS), storage=url)
    return dict(task.outputs)
