"""``fakeface ui``: the MLflow UI, opened on the experiment's training runs.

MLflow 3's UI opens an experiment in its GenAI view (traces, an overview of token usage) unless
told otherwise, whatever the experiment's kind tag says; the page takes the view from its URL
(``workflowType=machine_learning``) before the browser's remembered choice. So this command
prints that URL for the project's experiment and, for the embedded SQLite store, starts ``mlflow
ui`` on 127.0.0.1 (a tracking server elsewhere serves its own UI: the URL is printed for it).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from fakeface.config import Params

log = logging.getLogger(__name__)


def training_runs_url(base_url: str, experiment_id: str | None) -> str:
    """The UI page that lists an experiment's training runs (the experiments list without one)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the experiment ``name`` in the store at ``uri`` (None before the first run)."""
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def run_ui(args: Any, params: Params) -> None:
    from fakeface import tracking
    from fakeface.tracking.redact import strip_credentials

    uri = tracking.tracking_uri()
    found = experiment_id(uri, params.tracking.experiment)
    if urlsplit(uri).scheme in ("http", "https"):
        sys.stdout.write(training_runs_url(strip_credentials(uri), found) + "\n")
        return
    url = training_runs_url(f"http://127.0.0.1:{args.port}", found)
    sys.stdout.write(f"MLflow UI for {params.tracking.experiment!r}: {url}\n")
    sys.stdout.flush()
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(args.port),
               "--backend-store-uri", uri]
    raise SystemExit(subprocess.call(command))


def add_ui_command(sub: Any) -> None:
    p = sub.add_parser("ui", help="the MLflow UI on the experiment's training runs", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=5000, help="for the embedded store's UI (default: %(default)s)")
    p.set_defaults(handler=run_ui, params_optional=True)
