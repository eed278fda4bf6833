"""The stack's S3 key pair: from the environment, else generated once into ``<root>/credentials``.

Also what goes with keys: private files (mode 0600), ``export`` lines for a shell, and the
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def env_lines(cfg: StackConfig, creds: Credentials) -> list[str]:
    """``export`` lines for a shell: the tracking URI, and the S3 keys (for DVC and boto3)."""
    import shlex

    values = {"MLFLOW_TRACKING_URI": cfg.tracking_uri, **creds.env()}
    return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process' environment for a service: no AWS keys or settings of ours, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in AWS_NOISE and k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(extra)
    return env
