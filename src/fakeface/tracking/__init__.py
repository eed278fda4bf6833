"""MLflow plumbing shared by the stages: where runs go, and one run per pipeline execution.

The train stage opens the pipeline's run and writes its id to a small JSON file (a DVC output and
a KFP artifact); evaluate and register reopen that run by id, so one run holds the params, the
curves, the test metrics, the plots and the model, and runs compare side by side in the MLflow UI.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` only (a URI can hold credentials, so it is
never a param and never written to disk by us). Unset, it is the embedded default: a SQLite file
``mlflow.db`` in the working directory, which ``mlflow ui`` opens.

A tracking *server* that stops (or whose artifact store stops) while a stage runs is a one-line
:class:`TrackingServerError` naming it, within seconds: :func:`configure` bounds the MLflow
client's retries (:data:`HTTP_DEFAULTS`, unless the environment sets them) and
:func:`server_errors` translates what the client raises.

The package is light: :mod:`fakeface.tracking.health` (what the stack uses too) imports only the
standard library, and the MLflow client is imported when a stage first uses one of the names
below (they live in :mod:`fakeface.tracking.mlflow_run`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("_") or name in ("mlflow_run", "health", "runs", "redact"):
        # a submodule not imported yet: the import system asks here first, then loads it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from fakeface.tracking import mlflow_run

    try:
        return getattr(mlflow_run, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
