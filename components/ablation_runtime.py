"""Run-time glue of the ablation components (:mod:`components.ablation`).

A separate module because the components import it in the pod, where ``kfp.dsl`` is only the
executor's part (importing :mod:`components.ablation`, which declares components, fails there).
The study logic itself is :mod:`fakeface.ablation`; this only turns KFP inputs into its arguments
and its results into KFP artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakeface.redact import has_credentials


def storage_url(storage: str | None) -> str | None:
    """The ``storage`` argument, or None (then ``$FAKEFACE_ABLATION_STORAGE``, then the default).

    A URL with credentials (``user:password@``) is refused: the password would be a pipeline
    parameter, stored in the run's spec. Put such a URL in the Kubernetes Secret as
    FAKEFACE_ABLATION_STORAGE.
    """
    storage = (storage or "").strip()
    if has_credentials(storage):
        raise ValueError(
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
