"""The MLflow tracking server: its backend store, its environment, its start."""

from __future__ import annotations

import re
import sys

from fakeface.redact import redact
from fakeface.stack.config import HOST, REGION, StackConfig, StackError
from fakeface.stack.credentials import Credentials, clean_env
from fakeface.stack.health import http_status
from fakeface.stack.process import Service, spawn, wait_until


def importable(module: str) -> bool:
    """Whether ``module`` is installed (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def postgres_driver_uri(uri: str) -> str:
    """A PostgreSQL URL with a driver that is installed; other URIs unchanged.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; with only psycopg2 installed
    (``pip install psycopg2-binary``) the server would crash at start, so the URL then names
    ``+psycopg2``. ``postgres://`` (Heroku style) becomes ``postgresql://``.
    """
    match = re.match(r"(postgres(?:ql)?)(\+\w+)?://", uri)
    if not match:
        return uri
    rest = uri[match.end():]
    driver = (match.group(2) or "").lstrip("+")
    if not driver:
        driver = "psycopg" if importable("psycopg") else "psycopg2" if importable("psycopg2") else ""
    module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000", "asyncpg": "asyncpg"}.get(
        driver, driver)
    if not driver or not importable(module):
        raise StackError(
            f"a PostgreSQL backend store needs a driver: pip install psycopg2-binary (or "
            f"psycopg[binary]); {redact(uri)} names {driver or 'none'}"
        )
    return f"postgresql+{driver}://{rest}"


def start_mlflow(cfg: StackConfig, creds: Credentials) -> Service:
    backend = postgres_driver_uri(cfg.backend_uri())
    env = clean_env({
        **creds.env(),
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_DEFAULT_REGION": REGION,
        # Passed by environment, not on the command line: `ps` would show a database password.
        "MLFLOW_BACKEND_STORE_URI": backend,
        "MLFLOW_ARTIFACTS_DESTINATION": cfg.artifacts_destination,
    })
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # GenAI job execution (a huey consumer beside the server) is not used by this project.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(cfg.mlflow_port),
           "--workers", str(cfg.mlflow_workers), "--serve-artifacts"]
    service = spawn("mlflow", cmd, env, cfg, marker=f"--port {cfg.mlflow_port} --workers", url=cfg.tracking_uri)
    return service


def wait_mlflow(cfg: StackConfig, service: Service) -> None:
    wait_until(lambda: http_status(cfg.tracking_uri + "/health") == 200, service, "MLflow server", 120)
