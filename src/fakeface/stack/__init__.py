"""A real tracking stack on this machine: SeaweedFS (S3) + an MLflow server + a DVC remote.

``fakeface stack up`` starts, all on 127.0.0.1 only:

* **SeaweedFS** (``weed mini``): an S3-compatible object store on port 8333, with one S3 identity
  whose keys come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or, unset, a random pair
  generated once and kept in ``.stack/credentials``, mode 0600). A wrong key is rejected. Its
  other ports (master, volume, filer, admin, gRPC) require the stack's TLS client certificate
  (:mod:`~fakeface.stack.tls`).
* **an MLflow tracking server** on port 5000 with MLflow's basic-auth app (the admin login is
  generated once into ``.stack/mlflow-login``, 0600), its backend store
  ``sqlite:///.stack/mlflow.db`` (or a PostgreSQL URL), serving artifacts itself from
  ``s3://<bucket>/mlartifacts``: clients need ``MLFLOW_TRACKING_URI`` and the login
  (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``), no S3 keys.
* the **DVC remote** ``fakeface-s3`` = ``s3://<bucket>/dvc`` on the same store (URL and endpoint
  in ``.dvc/config``; the keys only in the gitignored ``.dvc/config.local`` or the environment).

Everything lives in ``.stack/`` (gitignored) and survives a restart. ``down`` stops what ``up``
started and nothing else: each service's pid, start time and command line are kept in
``.stack/state.json`` and checked before a signal is sent. Secret values are never logged;
``fakeface stack env`` prints them, on purpose, for ``eval "$(fakeface stack env)"``.

The package, one job a module (each imports only the standard library at module level, so that
:func:`check_tracking_server` is cheap to call from ``fakeface.tracking.configure``):

* :mod:`~fakeface.stack.config`: settings, ports, :class:`StackError`;
* :mod:`~fakeface.stack.credentials`: the S3 key pair, the MLflow login, private files, the
  services' environment;
* :mod:`~fakeface.stack.tls`: SeaweedFS' certificates and security.toml;
* :mod:`~fakeface.stack.process`: spawn, record (pid + start time + command line), stop;
* :mod:`~fakeface.tracking.health`: the tracking-server check and HTTP probes;
* :mod:`~fakeface.stack.s3`: boto3 client, key check, bucket;
* :mod:`~fakeface.stack.seaweedfs` and :mod:`~fakeface.stack.mlflow_server`: the two services;
* :mod:`~fakeface.stack.lifecycle`: ``up``, ``down``, ``status``;
* :mod:`~fakeface.stack.dvc_remote`: the DVC remote.

The names below are the public API (``from fakeface import stack; stack.up(cfg)``).
"""

from fakeface.stack.config import (
    BACKEND_ENV,
    DEFAULT_DIR,
    DIR_ENV,
    DVC_REMOTE,
    GRPC_OFFSET,
    HOST,
    REGION,
    WEED_ENV,
    StackConfig,
    StackError,
    load_config,
)
from fakeface.stack.credentials import (
    Credentials,
    MlflowLogin,
    credentials_file,
    env_lines,
    mask,
    mlflow_login_file,
    resolve_credentials,
    resolve_mlflow_login,
)
from fakeface.stack.dvc_remote import configure_dvc_remote
from fakeface.tracking.health import check_tracking_server
from fakeface.stack.lifecycle import ServiceStatus, UpResult, down, status, up
from fakeface.stack.mlflow_server import postgres_driver_uri
from fakeface.stack.process import Service, read_state
from fakeface.stack.s3 import check_s3, ensure_bucket, explain_s3_error, s3_client
from fakeface.stack.seaweedfs import weed_binary

__all__ = [
    "BACKEND_ENV", "DEFAULT_DIR", "DIR_ENV", "DVC_REMOTE", "GRPC_OFFSET", "HOST", "REGION", "WEED_ENV",
    "Credentials", "MlflowLogin", "Service", "ServiceStatus", "StackConfig", "StackError", "UpResult",
    "check_s3", "check_tracking_server", "configure_dvc_remote", "credentials_file", "down",
    "ensure_bucket", "env_lines", "explain_s3_error", "load_config", "mask", "mlflow_login_file",
    "postgres_driver_uri", "read_state", "resolve_credentials", "resolve_mlflow_login", "s3_client",
    "status", "up", "weed_binary",
]
