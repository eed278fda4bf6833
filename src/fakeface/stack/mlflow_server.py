"""The MLflow tracking server: its backend store, its login, its environment, its start.

The server runs MLflow's own basic-auth app (``mlflow server --app-name basic-auth``): every
request but ``/health`` and the UI's static files needs the admin login of
``<root>/mlflow-login``. The app's settings (``<root>/mlflow-auth.ini``, 0600: the admin user and
password, its user database ``<root>/mlflow-auth.db``) reach it through ``MLFLOW_AUTH_CONFIG_PATH``
and its session secret through ``MLFLOW_FLASK_SERVER_SECRET_KEY``: nothing secret on its command
line. The admin user is created at the first start; later starts leave the database alone.
"""

from __future__ import annotations

import re
import sys

from fakeface.tracking.redact import redact
from fakeface.stack.config import HOST, REGION, StackConfig, StackError
from fakeface.stack.credentials import Credentials, MlflowLogin, clean_env, mlflow_server_secret, write_private
from fakeface.tracking.health import http_status
from fakeface.stack.process import Service, spawn, wait_until

#: How long ``up`` waits for the server's /health (importing MLflow takes 5-15 s on a busy machine).
START_TIMEOUT_S = 120
AUTH_APP = "basic-auth"
#: An authenticated read only the admin may do: the login check after a start.
ADMIN_PROBE = "/api/2.0/mlflow/users/get?username={user}"


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


def auth_config(cfg: StackConfig, login: MlflowLogin) -> str:
    """The basic-auth app's settings file: the admin login and where the users are kept."""
    return "\n".join([
        "# Written by `fakeface stack up` at each start (mode 0600: it holds the admin password).",
        "[mlflow]",
        # Only the admin exists; a user added later sees nothing until given permissions.
        "default_permission = NO_PERMISSIONS",
        f"database_uri = sqlite:///{cfg.mlflow_auth_db}",
        f"admin_username = {login.username}",
        f"admin_password = {login.password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # A checked login is remembered for 5 minutes: without, every request pays a PBKDF2 hash
        # (about 0.5 s of CPU on a busy machine). One worker, one user: nothing goes stale.
        "auth_cache_ttl_seconds = 300",
        "",
    ])


def start_mlflow(cfg: StackConfig, creds: Credentials, login: MlflowLogin) -> Service:
    if not importable("flask_wtf"):
        raise StackError("the MLflow server's login (its basic-auth app) needs Flask-WTF: "
                         "pip install 'mlflow[auth]' (in the dev extra: make setup)")
    backend = postgres_driver_uri(cfg.backend_uri())
    write_private(cfg.mlflow_auth_config, auth_config(cfg, login))
    env = clean_env({
        **creds.env(),
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_DEFAULT_REGION": REGION,
        # Passed by environment, not on the command line: `ps` would show a database password.
        "MLFLOW_BACKEND_STORE_URI": backend,
        "MLFLOW_ARTIFACTS_DESTINATION": cfg.artifacts_destination,
        "MLFLOW_AUTH_CONFIG_PATH": str(cfg.mlflow_auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_server_secret(cfg.root),
        # S3 on this machine: when it is down, fail an artifact request in about a second (boto3's
        # default, 5 tries with backoff, takes ~10 s, and the client retries the 500 three times).
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "2",
    })
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # GenAI job execution (a huey consumer beside the server) is not used by this project.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(cfg.mlflow_port),
           "--workers", str(cfg.mlflow_workers), "--serve-artifacts", "--app-name", AUTH_APP]
    service = spawn("mlflow", cmd, env, cfg, marker=f"--port {cfg.mlflow_port} --workers", url=cfg.tracking_uri)
    return service


def login_status(cfg: StackConfig, login: MlflowLogin, timeout: float = 10.0) -> int | None:
    """The server's answer to an admin-only request with ``login`` (200: accepted)."""
    return http_status(cfg.tracking_uri + ADMIN_PROBE.format(user=login.username), timeout, login.header())


def wait_mlflow(cfg: StackConfig, service: Service, login: MlflowLogin) -> None:
    wait_until(lambda: http_status(cfg.tracking_uri + "/health") == 200, service, "MLflow server",
               START_TIMEOUT_S)
    status = login_status(cfg, login, timeout=10)
    if status in (401, 403):
        raise StackError(
            f"the MLflow server at {cfg.tracking_uri} rejects the login in {login.source}: its user "
            f"database {cfg.mlflow_auth_db} was made with another admin password. Delete that file "
            "to start the login afresh (runs and models are not in it)"
        )
    if status != 200:
        raise StackError(f"the MLflow server at {cfg.tracking_uri} answered HTTP {status} to a login "
                         f"check; see its log {service.log}")
