"""The study's MLflow parent run: created with the study, reopened by every launch.

One parent run per study (tagged ``fakeface.stage=ablate``) holds the search space and base params
as params; each trial is a child run under it (``mlflow.parentRunId``), and finalizing puts the
best params, the parameter importances and the report on it. Its id lives in the study's user
attrs (:data:`~fakeface.ablation.space.MLFLOW_ATTR`), so every worker, on any machine, finds it.

A trial's child run carries its trial's tags (``optuna.trial_number`` ...) from its creation, so
a run whose worker died is found and ended by :func:`end_trial_run`, in whichever worker
notices the death: one child run per Optuna trial, none left RUNNING by a dead worker.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna

from fakeface.ablation.space import MLFLOW_ATTR, SPEC_ATTR
from fakeface.config import parse_params
from fakeface.tracking.redact import redact

log = logging.getLogger(__name__)


def create_parent_run(study: optuna.Study, storage: str, spec: dict[str, Any]) -> dict[str, str]:
    """Open the parent run (with the space and base params); returns what goes in the study attrs."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    experiment_id = tracking.configure(spec["experiment"])
    commit = tracking.git_commit()
    client = MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=study.study_name,
        tags={
            "fakeface.stage": "ablate",
            "optuna.study_name": study.study_name,
            "optuna.storage": redact(storage),
            "optuna.sampler": spec["sampler"],
            "optuna.objective": f"{spec['objective']} ({spec['direction']})",
            **({"git.commit": commit} if commit else {}),
        },
    )
    base = parse_params(spec["base"]).flat()
    values: dict[str, Any] = {
        "ablation.sampler": spec["sampler"],
        "ablation.objective": spec["objective"],
        "ablation.direction": spec["direction"],
        "ablation.n_configs": spec["n_configs"],
        **{f"ablation.space.{f['path']}": _space_text(f) for f in spec["factors"]},
        **{f"ablation.fixed.{k}": v for k, v in spec["fixed"].items()},
        **{k: v for k, v in base.items() if k.split(".")[0] in ("seed", "augment", "train")},
    }
    items = [Param(k, "null" if v is None else str(v)[:6000]) for k, v in sorted(values.items())]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return {"parent_run_id": run.info.run_id, "experiment_id": experiment_id}


def _space_text(factor: dict[str, Any]) -> str:
    if factor["kind"] == "categorical":
        return json.dumps(factor["choices"])
    text = f"[{factor['low']}, {factor['high']}]{' log' if factor['log'] else ''}"
    return text + (f" values {factor['values']}" if factor["values"] else "")


def parent_run(study: optuna.Study) -> tuple[Any, str]:
    """An ``MlflowClient`` on the study's experiment, and the parent run's id."""
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    tracking.configure(study.user_attrs[SPEC_ATTR]["experiment"])
    return MlflowClient(), study.user_attrs[MLFLOW_ATTR]["parent_run_id"]


def reopen_parent_run(study: optuna.Study) -> None:
    """Mark the parent run RUNNING again (a resumed study was FINISHED by its last launch)."""
    client, parent = parent_run(study)
    if client.get_run(parent).info.status != "RUNNING":
        client.update_run(parent, status="RUNNING")


def end_trial_run(study: optuna.Study, number: int, reason: str, retried_by: int | None = None) -> None:
    """End the child run of failed trial ``number`` if its worker left it RUNNING; tag its retry.

    A worker that was lost (killed, out of memory, its machine gone) leaves its trial's run
    RUNNING. It becomes FAILED with the tags of a failed trial (``optuna.state=FAIL``,
    ``optuna.error``: ``reason``), and ``optuna.retried_by`` names the trial that runs its
    configuration again, whose own run carries ``optuna.retry_of``. So in the MLflow UI each trial
    is one child run, none looks alive after its worker died, and a configuration's result is its
    run tagged ``optuna.state=COMPLETE``: the lost attempt stays visible, FAILED, never a second
    result. A trial that failed with an error ended its run itself: it only gets the tag.

    The run is found by the trial's tags, which it has from its creation. Bookkeeping only: an
    MLflow error is logged, never raised (it must not stop the retry).
    """
    from mlflow.entities import RunTag

    try:
        client, parent = parent_run(study)
        runs = client.search_runs(
            [study.user_attrs[MLFLOW_ATTR]["experiment_id"]],
            filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.`optuna.trial_number` = '{number}'",
        )
        for run in runs:
            lost = run.info.status == "RUNNING"
            tags = {"optuna.retried_by": str(retried_by)} if retried_by is not None else {}
            if lost:
                tags.update({"optuna.state": "FAIL", "optuna.error": f"trial {number} {reason}"[:500]})
            if tags:
                client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if lost:
                client.set_terminated(run.info.run_id, status="FAILED")
                log.info("trial %d: MLflow run %s, left RUNNING by its worker, marked FAILED", number, run.info.run_id)
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("could not end or tag the MLflow run of failed trial %d: %s", number, error)
