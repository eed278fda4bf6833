"""``fakeface monitor``: a window of the prediction log against the model's reference distribution.

The served model's p(fake) on recent traffic (:mod:`fakeface.inference.prediction_log`) is held
against the validation distribution stored in the model's contract at evaluate time, by the checks
of :mod:`fakeface.analysis.drift`. It writes ``report.json`` and ``drift.png`` to ``--out``, logs
both (and the numbers) to an MLflow run in the experiment ``<tracking.experiment>-monitor``, and
exits 1 on drift, so a cron job or a Kubeflow recurring run fails visibly. Too few scored images in
the window is not a verdict: the report says so and the exit status is 0.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fakeface import FakefaceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorReport:
    status: str  # drift | ok | insufficient
    summary: dict[str, Any]
    report: Path


def model_contract(spec: str) -> tuple[dict[str, Any], str | None]:
    """The contract of ``spec`` (a detector .keras file, or a registered Keras or image-in model
    URI) and the registered version it names (None for a file)."""
    path = Path(spec)
    if path.suffix == ".keras":
        from fakeface.model.contract import read_contract

        if not path.is_file():
            raise FakefaceError(f"model file {spec} not found")
        contract = read_contract(path)
        version = None
    else:
        import mlflow

        from fakeface import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            info = mlflow.models.get_model_info(spec)
        except mlflow.exceptions.MlflowException as error:
            raise FakefaceError(f"cannot read model {spec}: {error.message}") from None
        contract = (info.metadata or {}).get("fakeface")
        version = _registered_version(spec)
    if not contract:
        raise FakefaceError(f"{spec} carries no fakeface contract: monitor the detector evaluate wrote "
                            "(models/detector.keras) or a registered model")
    if "reference" not in contract:
        raise FakefaceError(f"{spec} has no reference p(fake) distribution (evaluated before models stored one): "
                            "run the evaluate stage again and register the new detector")
    return contract, version


def _registered_version(spec: str) -> str | None:
    """The detector version behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (for the
    image-in model, the version it wraps: that is what its prediction records name)."""
    from mlflow.tracking import MlflowClient

    from fakeface.tracking.aliases import DETECTOR_VERSION_TAG

    if not spec.startswith("models:/"):
        return None
    name, _, rest = spec[len("models:/"):].partition("/")
    client = MlflowClient()
    if "@" in name:
        name, _, alias = name.partition("@")
        entry = client.get_model_version_by_alias(name, alias)
    elif rest.isdigit():
        entry = client.get_model_version(name, rest)
    else:
        return None
    return str(entry.tags.get(DETECTOR_VERSION_TAG, entry.version))


def monitor(log_target: str, model: str, out_dir: Path, *, last: int | None = None, since_hours: float | None = None,
            all_versions: bool = False, alpha: float = 0.01, max_psi: float = 0.25, min_images: int = 100,
            experiment: str = "fakeface") -> MonitorReport:
    from fakeface.analysis.drift import compare, write_plot
    from fakeface.inference.prediction_log import read_records

    contract, version = model_contract(model)
    since = datetime.now(timezone.utc) - timedelta(hours=since_hours) if since_hours else None
    records, broken = read_records(log_target, since=since, last=last,
                                   model_version=None if all_versions or version is None else version)
    out_dir.mkdir(parents=True, exist_ok=True)
    window = np.array([float(r["p_fake"]) for r in records])
    summary: dict[str, Any] = {
        "model": model, "model_version": version, "log": log_target, "window": {
            "records": len(records), "unreadable_lines": broken, "last": last, "since_hours": since_hours,
            "first": records[0]["time"] if records else None, "latest": records[-1]["time"] if records else None},
        "reference": {key: contract["reference"][key] for key in ("split", "n")},
        "alpha": alpha, "max_psi": max_psi, "min_images": min_images,
    }
    if len(window) < min_images:
        status = "insufficient"
        summary["status"] = status
        log.warning("%d scored image(s) in the window, fewer than %d: no verdict", len(window), min_images)
    else:
        result = compare(contract["reference"], window, float(contract["threshold"]), alpha, max_psi)
        status = "drift" if result.drift else "ok"
        summary.update(status=status, result=result.as_dict())
        write_plot(contract["reference"], window, result, out_dir / "drift.png")
    report = out_dir / "report.json"
    report.write_text(json.dumps(summary, indent=2) + "\n")
    _log_to_mlflow(summary, out_dir, experiment)
    return MonitorReport(status=status, summary=summary, report=report)


def _log_to_mlflow(summary: dict[str, Any], out_dir: Path, experiment: str) -> None:
    import mlflow

    from fakeface import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_experiment(f"{experiment}-monitor")
    with mlflow.start_run(run_name=f"monitor {summary['status']}"):
        mlflow.set_tags({"fakeface.monitor.status": summary["status"], "fakeface.monitor.model": summary["model"]})
        metrics = {"window_records": summary["window"]["records"]}
        for key in ("ks_statistic", "ks_p_value", "psi", "mean_window", "fake_share_window"):
            if "result" in summary:
                metrics[key] = summary["result"][key]
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), "monitor")
