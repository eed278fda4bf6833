"""The batch-scoring pipeline: plan -> ParallelFor(score a share) -> merge.

Scores every file of a folder or an S3 prefix (``source``) with a registered model (``model_uri``,
default ``models:/<register.model_name>@<register.alias>``: the champion) on ``workers`` parallel
tasks, then writes the results table (one row a file: ``path, p_fake, label, error, model,
threshold``; a file that cannot be read or decoded gets its error, never stops the batch) and a
summary beside it, both also logged to an MLflow run in ``<tracking.experiment>-batch``.

The number of workers is fixed when the pipeline is built (``workers``), as the ablation's is.
Scoring tasks take the evaluate stage's cluster settings, plan and merge the register stage's
(both carry the Secret: the S3 keys that read the source and the model). Nothing is cached: the
same source path may hold other files tomorrow.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.

import os
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Markdown

from fakeface.components import batch
from fakeface.config import Params
from fakeface.pipelines.settings import KubeflowSettings, SettingsError, configure_task
from fakeface.pipelines.local_runs import prepare_local_run, write_package
from fakeface.pipelines.typed import StepArguments, run_arguments, typed_pipeline

PIPELINE_NAME = "fakeface-batch-scoring"
DEFAULT_PACKAGE = Path("pipelines") / "batch_pipeline.yaml"
STEPS = ["batch_plan", "batch_score", "batch_merge"]
DEFAULT_WORKERS = 4
#: Which training stage's cluster settings each batch task takes.
SETTINGS_OF = {"batch_plan": "register", "batch_score": "evaluate", "batch_merge": "register"}


class Outputs(NamedTuple):
    results: Dataset
    report: Markdown


def _configure(name: str, task: dsl.PipelineTask, settings: KubeflowSettings) -> None:
    configure_task(SETTINGS_OF[name], task, settings)
    task.set_caching_options(False)


def default_model(params: Params) -> str:
    return f"models:/{params.register.model_name}@{params.register.alias}"


def build_batch_pipeline(settings: KubeflowSettings | None = None, params: Params | None = None,
                         workers: int = DEFAULT_WORKERS, default_source: str = ""):
    """A fresh ``@dsl.pipeline`` scoring on ``workers`` parallel tasks."""
    settings = settings or KubeflowSettings.from_env()
    params = params or Params()
    if workers < 1:
        raise SettingsError(f"workers must be 1 or more, got {workers}")

    def graph(args: StepArguments) -> Outputs:
        source, model_uri = args.values["source"], args.values["model_uri"]
        plan_task = batch.batch_plan(**args("batch_plan"), source=source, workers=workers)
        _configure("batch_plan", plan_task, settings)
        with dsl.ParallelFor(items=list(range(workers)), name="batch-shares") as index:
            score_task = batch.batch_score(**args("batch_score"), model_uri=model_uri, worker_index=index,
                                           plan=plan_task.outputs["plan"])
            _configure("batch_score", score_task, settings)
        merge_task = batch.batch_merge(**args("batch_merge"), model_uri=model_uri, plan=plan_task.outputs["plan"],
                                       scores=dsl.Collected(score_task.outputs["scores"]))
        _configure("batch_merge", merge_task, settings)
        return Outputs(results=merge_task.outputs["results"], report=merge_task.outputs["report"])

    return typed_pipeline(
        PIPELINE_NAME,
        "fakeface batch scoring: list a folder or S3 prefix -> score the shares in parallel -> one results table.",
        STEPS, params, graph, Outputs,
        extra=(("source", str, default_source), ("model_uri", str, default_model(params))),
    )


def compile_batch_pipeline(out_path: str | os.PathLike[str] = DEFAULT_PACKAGE, params: Params | None = None,
                           settings: KubeflowSettings | None = None, workers: int = DEFAULT_WORKERS) -> Path:
    """Write the batch-scoring pipeline YAML (``source`` empty: a run's argument)."""
    return write_package(build_batch_pipeline(settings, params, workers), out_path)


def run_batch_local(source: str, model_uri: str | None = None, params: Params | None = None,
                    workdir: str | os.PathLike[str] | None = None, mlflow_tracking_uri: str | None = None,
                    settings: KubeflowSettings | None = None, workers: int = 2) -> dict[str, Any]:
    """Run the batch pipeline with ``kfp.local`` (a subprocess per task, this Python); MLflow as in
    :func:`fakeface.pipelines.training.run_local`. Returns the outputs: ``results``, ``report``."""
    params = params or Params()
    run = prepare_local_run(f"{params.tracking.experiment}-batch", workdir, mlflow_tracking_uri, settings,
                            prefix="fakeface-kfp-batch-")
    pipeline = build_batch_pipeline(run.settings, params, workers)
    run.start()
    source = str(Path(source).resolve()) if not str(source).startswith("s3://") else str(source)
    task = pipeline(**run_arguments(params, STEPS), source=source, model_uri=model_uri or default_model(params))
    return dict(task.outputs)
