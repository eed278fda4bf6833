"""Logging a pipeline execution to MLflow: the run, its params, metrics, tags and retries (see
:mod:`fakeface.tracking`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow

from fakeface import FakefaceError, read_json
from fakeface.tracking.redact import redact, strip_credentials
from fakeface.tracking.health import TrackingServerError, check_tracking_server, http_status

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
#: MLflow 3's UI opens an experiment by its kind: without this tag it guesses, and shows the
#: GenAI overview (traces, prompts) for a project that trains models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class RunInfoError(FakefaceError):
    """The run-info file train leaves for evaluate and register is missing or not train's."""


#: The MLflow client's HTTP settings unless the environment sets them. MLflow's own (7 retries,
#: backoff factor 2, 120 s timeout) ride out minutes of rate limiting on a hosted server, and make
#: a stage wait minutes on a server that has stopped. With these, a request to a stopped server
#: fails after 3 retries, 0 + 2 + 4 s of backoff (+ up to 1 s jitter each): under 10 s; a server
#: that accepts but never answers, after 4 x 30 s.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def tracking_uri() -> str:
    """The tracking URI in force: the environment's, or the embedded SQLite default."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path(DEFAULT_DB).resolve()}"
    return uri


def apply_http_defaults() -> None:
    """:data:`HTTP_DEFAULTS` into the environment (where the MLflow client reads them), each
    unless already set there."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def configure(experiment: str) -> str:
    """Point MLflow at the tracking store and select the experiment; returns the experiment id."""
    apply_http_defaults()
    uri = tracking_uri()
    check_tracking_server(uri)  # a dead server: a clear error in seconds, not minutes of retries
    mlflow.set_tracking_uri(uri)
    with server_errors(f"selecting experiment {experiment!r}"):
        experiment_obj = mlflow.set_experiment(experiment)
        if EXPERIMENT_KIND_TAG not in experiment_obj.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment_obj.experiment_id, EXPERIMENT_KIND_TAG,
                                                     EXPERIMENT_KIND)
    log.info("MLflow: %s, experiment %r", redact(uri), experiment)
    return experiment_obj.experiment_id


#: Words of the MLflow client's errors for a request the server did not answer.
_UNANSWERED = ("Connection refused", "Failed to establish a new connection", "RemoteDisconnected",
               "Connection aborted", "Connection reset", "Max retries exceeded", "timed out")


def explain_server_error(error: BaseException, action: str) -> TrackingServerError:
    """What the MLflow client raised, as one line naming the server and what failed.

    Whether the server is still there (its /health, 2 s) tells "the server stopped" from "the
    server failed the request"; a failed request to its artifact proxy means its artifact store
    (S3) did not answer it.
    """
    uri = tracking_uri()
    shown = redact(uri)
    text = " ".join(str(error).split())
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
    alive = http_status(strip_credentials(uri).rstrip("/") + "/health", timeout=2, local=False) == 200
    if not alive:
        how = "timed out" if "timed out" in text.lower() else "connection refused"
        return TrackingServerError(
            f"MLflow tracking server at {shown} stopped answering while {action} ({how}, {retries} "
            "retries); start it again (`fakeface stack up`) and rerun the stage"
        )
    if "mlflow-artifacts" in text:
        return TrackingServerError(
            f"MLflow tracking server at {shown} could not store or fetch artifacts while {action}: its "
            "artifact store (S3) did not answer; check it (`fakeface stack status`), start it again "
            "(`fakeface stack up`) and rerun the stage"
        )
    if any(word in text for word in _UNANSWERED):
        return TrackingServerError(
            f"MLflow tracking server at {shown} dropped requests while {action} ({retries} retries) "
            "but answers again now: rerun the stage"
        )
    return TrackingServerError(f"MLflow tracking server at {shown} failed while {action}: {text[:300]}")


@contextmanager
def server_errors(action: str) -> Iterator[None]:
    """Turn what the MLflow client raises against a tracking *server* into one line naming it
    (a :class:`TrackingServerError`); with a local store (SQLite, files) errors pass unchanged.

    Usable as a decorator too: ``@tracking.server_errors("training")``.
    """
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        if not tracking_uri().lower().startswith(("http://", "https://")):
            raise
        raise explain_server_error(error, action) from error


def logged_steps(run_id: str, keys: Iterable[str]) -> set[tuple[str, int]]:
    """The (metric, step) pairs run ``run_id`` already holds among ``keys``: a resumed training
    logs an epoch only if it is not there, so each epoch is in the run's history exactly once."""
    client = mlflow.MlflowClient()
    present = set(client.get_run(run_id).data.metrics) & set(keys)
    return {(key, m.step) for key in present for m in client.get_metric_history(run_id, key)}


def log_metrics_once(metrics: dict[str, float], step: int, logged: set[tuple[str, int]]) -> None:
    """``mlflow.log_metrics`` of those ``metrics`` not yet ``logged`` at ``step``; records them."""
    new = {k: v for k, v in metrics.items() if (k, step) not in logged}
    if new:
        mlflow.log_metrics(new, step=step)
        logged.update((k, step) for k in new)


def write_run_info(path: str | Path, run_id: str, experiment_id: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "experiment_id": experiment_id}, indent=2) + "\n")


def read_run_info(path: str | Path) -> dict[str, str]:
    info = read_json(path, RunInfoError, "train's run info", "run the train stage first")
    if not isinstance(info, dict) or "run_id" not in info:
        raise RunInfoError(f"{path}: no run_id in run info (rerun the train stage)")
    return info


@contextmanager
def resume_run(run_info_path: str | Path, experiment: str) -> Iterator[mlflow.ActiveRun]:
    """Reopen the pipeline's run (written by train) to add to it. What the MLflow client raises
    inside (a server or artifact store that stopped) becomes a :class:`TrackingServerError`."""
    configure(experiment)
    info = read_run_info(run_info_path)
    with server_errors(f"logging to run {info['run_id']}"), mlflow.start_run(run_id=info["run_id"]) as run:
        yield run


def log_side_run(stage: str, experiment: str, artifacts_dir: Path, summary: dict[str, Any]) -> str:
    """A stage that runs before training (eda) logs to a run of its own, tagged with the stage.

    It cannot join the pipeline's run, which train opens later (and DVC may rerun train without
    rerunning eda); its numeric summary values become metrics, its files artifacts.
    """
    configure(experiment)
    with server_errors(f"logging the {stage} run"), \
            mlflow.start_run(run_name=stage, tags={"fakeface.stage": stage}) as run:
        numbers = {
            k.replace("/", "_"): float(v)
            for k, v in _flatten_numbers(summary).items()
        }
        for start in range(0, len(numbers), 500):
            mlflow.log_metrics(dict(list(numbers.items())[start : start + 500]))
        mlflow.log_artifacts(str(artifacts_dir), stage)
        commit = git_commit()
        if commit:
            mlflow.set_tag("git.commit", commit)
        return run.info.run_id


def _flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten_numbers(value, f"{prefix}{key}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix.rstrip(".")] = tree
    return out


def git_commit() -> str | None:
    """The commit the code ran at (``-dirty`` when the tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        # No git (a container): the image records the commit it was built from.
        return os.environ.get("FAKEFACE_GIT_COMMIT") or None
    return f"{commit}-dirty" if dirty else commit


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_version(shards_dir: str | Path) -> dict[str, str]:
    """Tags that pin the data a run saw: the shards' content digest and, under DVC, its md5."""
    shards_dir = Path(shards_dir)
    tags: dict[str, str] = {}
    index = shards_dir / "index.json"
    if index.is_file():
        tags["data.shards_index_sha256"] = file_digest(index)
    lock = Path("dvc.lock")
    if lock.is_file():
        import yaml

        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if Path(out.get("path", "")) == shards_dir and "md5" in out:
                    tags["data.dvc_md5"] = out["md5"]
    return tags


def log_dict_params(params: dict[str, Any]) -> None:
    """Log params in chunks (the REST API takes at most 100 per call)."""
    items = [(k, "null" if v is None else v) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


#: Sections whose stages may rerun inside an existing run (DVC reruns only evaluate and register
#: when only their params change). MLflow params are immutable, so these are tags instead.
RERUNNABLE_SECTIONS = ("evaluate", "register")
#: Sections that describe a study of many runs, not one run: kept off each run's params.
STUDY_SECTIONS = ("ablation",)


def log_run_params(flat_params: dict[str, Any]) -> None:
    """The params fixed for a run's life: everything but the rerunnable sections."""
    log_dict_params(
        {k: v for k, v in flat_params.items() if k.split(".", 1)[0] not in (*RERUNNABLE_SECTIONS, *STUDY_SECTIONS)}
    )


def log_stage_settings(section: str, settings: dict[str, Any], tagged: tuple[str, ...] = ()) -> None:
    """A rerunnable stage's settings: all of them as one artifact, ``settings/<section>.json``,
    and the few that people filter runs on (``tagged``) as tags ``<section>.<key>``.

    Not params: DVC may rerun the stage in the same MLflow run with other settings, and a param
    cannot change; an artifact and a tag can. Not dozens of tags: they would bury the few tags
    people filter on in the MLflow UI.
    """
    mlflow.log_dict(settings, f"settings/{section}.json")
    mlflow.set_tags({f"{section}.{key}": str(settings[key]) for key in tagged if key in settings})
