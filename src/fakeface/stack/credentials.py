"""The stack's secrets: the S3 key pair and the MLflow server's login.

* S3 keys: from the environment, else generated once into ``<root>/credentials``;
* the MLflow login (the basic-auth app's admin user) and the server's own session secret:
  generated once into ``<root>/mlflow-login``. Clients get the login from
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (``fakeface stack env``).

Also what goes with them: private files (mode 0600), ``export`` lines for a shell, and the
environment for the processes the stack starts (without AWS settings that would point elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from fakeface.data import atomic
from fakeface.stack.config import StackConfig, StackError

log = logging.getLogger("fakeface.stack")

#: Environment variables that would make the S3 clients we start talk to something else (a real
#: AWS profile, a session token for real AWS) instead of the local store with the stack's keys.
AWS_NOISE = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class Credentials:
    """The S3 key pair. ``repr``/``str`` never show the secret (nor the whole key id)."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    source: str = "environment"

    @property
    def masked_id(self) -> str:
        return mask(self.access_key_id)

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.masked_id}, secret_access_key=***, source={self.source!r})"

    __str__ = __repr__

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


def mask(value: str) -> str:
    """Enough of a key id to tell two apart in a message, not enough to use it."""
    return f"{value[:2]}…{value[-2:]}" if len(value) > 8 else "***"


def credentials_file(root: Path) -> Path:
    return Path(root) / "credentials"


def resolve_credentials(root: str | Path, create: bool = True) -> Credentials:
    """The keys from the environment; else from ``<root>/credentials``; else (``create``) new ones.

    A new pair is random (160-bit id, 240-bit secret), generated once and written with mode 0600.
    """
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        return Credentials(key_id, secret, "environment")
    if key_id or secret:
        raise StackError(
            "only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY is set: set both, or neither "
            "(then the stack's own generated keys are used)"
        )
    path = credentials_file(Path(root))
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return Credentials(data["access_key_id"], data["secret_access_key"], str(path))
        except (ValueError, KeyError):
            raise StackError(f"{path}: unreadable credentials file; delete it to generate new keys") from None
    if not create:
        raise StackError(
            f"no S3 credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are unset and {path} does "
            "not exist (run `fakeface stack up` first)"
        )
    alphabet = string.ascii_uppercase + string.digits
    creds = Credentials(
        "FF" + "".join(secrets.choice(alphabet) for _ in range(18)),
        secrets.token_urlsafe(30),
        str(path),
    )
    write_private(path, json.dumps({"access_key_id": creds.access_key_id,
                                    "secret_access_key": creds.secret_access_key}) + "\n")
    log.info("generated S3 credentials for the stack in %s (mode 0600)", path)
    return creds


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600: no moment it is world-readable)."""
    atomic.write_text(path, text, mode=0o600)


@dataclass(frozen=True)
class MlflowLogin:
    """The MLflow server's admin login. ``repr``/``str`` never show the password."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        return f"MlflowLogin(username={self.username!r}, password=***, source={self.source!r})"

    __str__ = __repr__

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}

    def header(self) -> dict[str, str]:
        """An HTTP ``Authorization`` header for this login (basic auth, as the MLflow client sends)."""
        import base64

        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


#: The MLflow server's admin user (one user: the stack is one person's).
MLFLOW_ADMIN = "admin"


def mlflow_login_file(root: Path) -> Path:
    return Path(root) / "mlflow-login"


def _mlflow_secrets(root: Path, create: bool) -> dict[str, str]:
    path = mlflow_login_file(root)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if all(isinstance(data.get(k), str) and data[k] for k in ("username", "password", "server_secret")):
                return data
        except ValueError:
            pass
        raise StackError(f"{path}: unreadable MLflow login file; delete it and {Path(root) / 'mlflow-auth.db'} "
                         "to generate a new login")
    if not create:
        raise StackError(f"no MLflow login: {path} does not exist (run `fakeface stack up` first)")
    data = {"username": MLFLOW_ADMIN, "password": secrets.token_urlsafe(24),
            # Flask's secret key (sessions, CSRF tokens of the login app): the server's alone
            "server_secret": secrets.token_hex(32)}
    write_private(path, json.dumps(data) + "\n")
    log.info("generated the MLflow server's login in %s (mode 0600)", path)
    return data


def resolve_mlflow_login(root: str | Path, create: bool = True) -> MlflowLogin:
    """The MLflow server's admin login: from ``<root>/mlflow-login``, else (``create``) a new one
    (a random 192-bit password), written once with mode 0600."""
    data = _mlflow_secrets(Path(root), create)
    return MlflowLogin(data["username"], data["password"], str(mlflow_login_file(Path(root))))


def mlflow_server_secret(root: str | Path) -> str:
    """The secret key the MLflow server signs its sessions and CSRF tokens with."""
    return _mlflow_secrets(Path(root), create=True)["server_secret"]


def env_lines(cfg: StackConfig, creds: Credentials, login: MlflowLogin | None = None) -> list[str]:
    """``export`` lines for a shell: the tracking URI and the MLflow login (for the MLflow
    client), and the S3 keys (for DVC and boto3)."""
    import shlex

    values = {"MLFLOW_TRACKING_URI": cfg.tracking_uri, **(login.env() if login else {}), **creds.env()}
    return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]


#: Settings in our environment that would change what a service we start does: another login for
#: the MLflow server's admin, another SeaweedFS security configuration (``WEED_*`` overrides
#: security.toml), the client side of a tracking server.
SERVICE_NOISE_PREFIXES = ("WEED_", "MLFLOW_AUTH_", "MLFLOW_TRACKING_")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process' environment for a service: no keys, logins or settings of ours, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in AWS_NOISE and k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
           and not k.startswith(SERVICE_NOISE_PREFIXES)}
    env.update(extra)
    return env
