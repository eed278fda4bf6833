"""What each ablation-pipeline component does in its pod (:mod:`fakeface.components.ablation`
calls these with its validated params and KFP artifacts).

The study logic itself is :mod:`fakeface.ablation`; this only turns KFP inputs into its arguments
and its results into KFP artifacts.

``storage`` is the Optuna RDB URL every task shares. Locally (``kfp.local``) it is an absolute
``sqlite:///`` file, since every task runs on this machine. On a cluster leave it empty: the URL
(with its password) then comes from the Kubernetes Secret as ``FAKEFACE_ABLATION_STORAGE``; a
``storage`` argument holding ``user:password@`` is refused, so no password is ever a parameter.

The shares are decided once, by the prepare step (:func:`fakeface.ablation.plan_study`). They
reach the workers in the ``plan`` artifact, not as parameters: kfp.local (2.17) replaces every
task-output *parameter* of a task inside a ``ParallelFor`` with the loop item
(``create_parameter_loop_iteration_task_spec``), while artifacts pass through. Trial folders and
the retrain's checkpoints go to ``FAKEFACE_ABLATION_WORKDIR`` if set, else a scratch folder of
each pod.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakeface import FakefaceError
from fakeface.components import runtime as rt
from fakeface.tracking.redact import has_credentials


class StorageArgumentError(FakefaceError):
    """A storage URL with credentials given where it would be stored in plain sight."""


def storage_url(storage: str | None) -> str | None:
    """The ``storage`` argument, or None (then ``$FAKEFACE_ABLATION_STORAGE``, then the default).

    A URL with credentials (``user:password@``) is refused: the password would be a pipeline
    parameter, stored in the run's spec. Put such a URL in the Kubernetes Secret as
    FAKEFACE_ABLATION_STORAGE.
    """
    storage = (storage or "").strip()
    if has_credentials(storage):
        raise StorageArgumentError(
            "the storage argument holds credentials (user:password@); leave it empty and put the URL "
            "in the Kubernetes Secret as FAKEFACE_ABLATION_STORAGE"
        )
    return storage or None


def write_plan(plan, planned: dict[str, Any]) -> None:
    """The study name and each worker's share, as the ``plan`` artifact (file and metadata)."""
    Path(plan.path).write_text(json.dumps(planned) + "\n")
    plan.metadata.update(planned)


def read_plan(plan) -> dict[str, Any]:
    return json.loads(Path(plan.path).read_text())


def record_study(summary: dict[str, Any], study, report, study_metrics) -> None:
    """The finalized study as KFP outputs: the report page, its numbers, the artifact's metadata."""
    from fakeface.ablation.report import summary_metrics

    Path(report.path).write_text((Path(study.path) / "report.md").read_text())
    for key, value in summary_metrics(summary).items():
        study_metrics.log_metric(key, value)
    study.metadata.update({"study_name": summary["study"], "n_complete": summary["n_complete"]})


def retrain_model_metadata(result) -> dict[str, Any]:
    """The retrained Model artifact's metadata (``result``: :class:`fakeface.ablation.retrain.RetrainResult`)."""
    return {
        "framework": "keras",
        "file": "model.keras",
        "backbone": result.params.train.backbone,
        "mlflow_run_id": result.run_id,
        "epochs": result.epochs,
        "train_splits": "train+valid",
        "study_name": result.study_name,
    }


def ablation_prepare_step(params, storage: str, workers: int, shards, plan) -> str:
    from fakeface.ablation.workers import plan_study

    planned = plan_study(params, rt.absolute(shards.path), storage_url(storage), workers=workers)
    write_plan(plan, planned)
    return planned["study_name"]


def ablation_worker_step(params, storage: str, worker_index: int, plan, shards) -> int:
    from fakeface.ablation.workers import run_worker

    planned = read_plan(plan)
    shards_dir = rt.absolute(shards.path)
    # Trial folders: FAKEFACE_ABLATION_WORKDIR (e.g. a mounted volume), else a scratch folder.
    with rt.working_dir(rt.scratch("ablation")):
        return run_worker(params, shards_dir, storage_url(storage), planned["study_name"],
                          planned["shares"][worker_index], worker_index=worker_index)


def ablation_finalize_step(params, storage: str, study_name: str, study, report, study_metrics) -> None:
    from fakeface.ablation.report import finalize_study

    out = Path(study.path)
    summary = finalize_study(storage_url(storage), study_name, out, out / "summary.json")
    record_study(summary, study, report, study_metrics)


def retrain_best_step(params, storage: str, study_name: str, shards, model, evaluation, metrics,
                      classification, report) -> None:
    from fakeface.ablation.retrain import retrain_best
    from fakeface.stages.paths import EvaluatePaths, TrainPaths

    train_paths = TrainPaths.in_artifacts(rt.absolute(model.path), shards=rt.absolute(shards.path))
    evaluate_paths = EvaluatePaths.in_artifacts(rt.absolute(evaluation.path))
    # Checkpoints: in FAKEFACE_ABLATION_WORKDIR (e.g. a mounted volume), else a scratch folder.
    with rt.working_dir(rt.scratch("retrain")):
        result = retrain_best(params, storage_url(storage), study_name, train_paths, evaluate_paths)
    model.metadata.update(retrain_model_metadata(result))
    rt.record_evaluation(result.test, evaluate_paths, evaluation, metrics, classification, report)
