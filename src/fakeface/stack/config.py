"""The stack's settings: where it lives, which ports it uses, and the error it raises.

Standard library only (see :mod:`fakeface.stack`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fakeface import FakefaceError

HOST = "127.0.0.1"
DEFAULT_DIR = ".stack"
DIR_ENV = "FAKEFACE_STACK_DIR"
BACKEND_ENV = "FAKEFACE_BACKEND_STORE_URI"
WEED_ENV = "FAKEFACE_WEED"
DVC_REMOTE = "fakeface-s3"
GRPC_OFFSET = 10000
REGION = "us-east-1"  # SeaweedFS ignores it; the S3 clients want one to sign with


class StackError(FakefaceError):
    """The stack cannot start, is not running, or a client cannot use it."""


@dataclass
class StackConfig:
    """Where the stack lives and which ports it uses (all on 127.0.0.1).

    ``up`` saves the ports and bucket in ``<root>/config.json`` so that a later ``up`` without
    options reuses them (the DVC remote and users' shells point at them). The backend store URI
    is not saved (a PostgreSQL URL carries a password): it comes from the option or
    ``FAKEFACE_BACKEND_STORE_URI`` each time, else the SQLite file under ``root``.
    """

    root: Path = Path(DEFAULT_DIR)
    s3_port: int = 8333
    mlflow_port: int = 5000
    # SeaweedFS' internal servers (master, volume, filer, admin). Each (and S3) also listens on
    # its port + 10000 for gRPC: weed's fixed convention (its components assume it). All of them
    # below Linux' ephemeral range (32768-60999): weed's own default admin port, 23646, has its
    # gRPC port 33646 there, where any outgoing connection may hold it at the moment weed binds.
    master_port: int = 9333
    volume_port: int = 9340
    filer_port: int = 8888
    admin_port: int = 9346
    bucket: str = "fakeface"
    mlflow_workers: int = 1
    backend_store_uri: str | None = field(default=None, repr=False)

    SAVED = ("s3_port", "mlflow_port", "master_port", "volume_port", "filer_port", "admin_port",
             "bucket", "mlflow_workers")

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise StackError(f"bucket {self.bucket!r}: use 3-63 lower-case letters, digits, '.', '-'")
        ports = self.ports()
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise StackError(f"{name} port {port} is out of range 1..65535 (gRPC ports are "
                                 f"the HTTP port + {GRPC_OFFSET})")
        if len(set(ports.values())) < len(ports):
            clash = sorted(f"{n}={p}" for n, p in ports.items() if list(ports.values()).count(p) > 1)
            raise StackError(f"two services on one port: {', '.join(clash)} (gRPC ports are the HTTP "
                             f"port + {GRPC_OFFSET})")

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/mlartifacts"

    @property
    def dvc_url(self) -> str:
        return f"s3://{self.bucket}/dvc"

    @property
    def weed_dir(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def tls_dir(self) -> Path:
        """SeaweedFS' private CA certificate and the one key pair its servers and clients share."""
        return self.weed_dir / "tls"

    @property
    def mlflow_auth_config(self) -> Path:
        """The basic-auth app's settings (``MLFLOW_AUTH_CONFIG_PATH``): admin login, user database."""
        return self.root / "mlflow-auth.ini"

    @property
    def mlflow_auth_db(self) -> Path:
        """The basic-auth app's users and permissions (password hashes only)."""
        return self.root / "mlflow-auth.db"

    def backend_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    def weed_ports(self) -> dict[str, int]:
        ports = {"s3": self.s3_port, "master": self.master_port, "volume": self.volume_port,
                 "filer": self.filer_port, "admin": self.admin_port}
        ports.update({f"{k} grpc": v + GRPC_OFFSET for k, v in list(ports.items())})
        return ports

    def ports(self) -> dict[str, int]:
        return {**self.weed_ports(), "mlflow": self.mlflow_port}

    def saved(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SAVED}


def load_config(root: str | Path | None = None, **overrides: Any) -> StackConfig:
    """The stack's settings: options given here, else ``<root>/config.json``, else defaults.

    ``root`` defaults to ``$FAKEFACE_STACK_DIR`` or ``.stack`` in the working directory; the
    backend store URI to the option, else ``$FAKEFACE_BACKEND_STORE_URI``, else SQLite.
    """
    root = Path(root or os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute()
    values: dict[str, Any] = {}
    saved = root / "config.json"
    if saved.is_file():
        try:
            values.update({k: v for k, v in json.loads(saved.read_text()).items()
                           if k in StackConfig.SAVED})
        except ValueError as error:
            raise StackError(f"{saved}: not valid JSON ({error}); fix or delete it") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(StackConfig)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown stack settings: {sorted(unknown)}")
    if not values.get("backend_store_uri"):
        values["backend_store_uri"] = os.environ.get(BACKEND_ENV) or None
    return StackConfig(root=root, **{k: v for k, v in values.items() if k != "root"})
