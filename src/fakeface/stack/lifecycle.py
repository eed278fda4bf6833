"""``up``, ``down`` and ``status``: the whole stack (SeaweedFS, then the MLflow server) at once."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from fakeface import FakefaceError
from fakeface.stack.config import StackConfig
from fakeface.stack.credentials import Credentials, MlflowLogin, resolve_credentials, resolve_mlflow_login
from fakeface.tracking.health import http_status
from fakeface.stack.mlflow_server import login_status, postgres_driver_uri, start_mlflow, wait_mlflow
from fakeface.stack.process import await_stop, check_ports, read_state, signal_stop, stop, write_state
from fakeface.stack.s3 import check_s3, ensure_bucket
from fakeface.stack.seaweedfs import remove_stale_sockets, start_seaweedfs, wait_seaweedfs

log = logging.getLogger("fakeface.stack")


@dataclass
class UpResult:
    config: StackConfig
    credentials: Credentials
    started: list[str]
    already_running: list[str]
    bucket_created: bool
    seconds: float
    login: MlflowLogin | None = None


def up(cfg: StackConfig) -> UpResult:
    """Start SeaweedFS and the MLflow server (those not already running), create the bucket.

    On any failure, what this call started is stopped again before the error is raised.
    """
    t0 = time.monotonic()
    cfg.root.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.root, 0o700)
    postgres_driver_uri(cfg.backend_uri())  # a missing database driver fails before anything starts
    creds = resolve_credentials(cfg.root, create=True)
    login = resolve_mlflow_login(cfg.root, create=True)
    services = {n: s for n, s in read_state(cfg).items() if s.process() is not None}
    running = sorted(services)
    needed = [n for n in ("seaweedfs", "mlflow") if n not in services]
    ports = {}
    if "seaweedfs" in needed:
        ports.update(cfg.weed_ports())
    if "mlflow" in needed:
        ports["mlflow"] = cfg.mlflow_port
    check_ports(ports)
    (cfg.root / "config.json").write_text(json.dumps(cfg.saved(), indent=2) + "\n")

    started: list[str] = []
    try:
        # Both start at once (the MLflow server needs the store only when artifacts move); the
        # bucket is created before the server is reported up.
        for name, start in (("seaweedfs", lambda: start_seaweedfs(cfg, creds)),
                            ("mlflow", lambda: start_mlflow(cfg, creds, login))):
            if name in needed:
                services[name] = start()
                started.append(name)
                write_state(cfg, services)
        if "seaweedfs" in started:
            wait_seaweedfs(cfg, services["seaweedfs"])
        created = ensure_bucket(cfg.s3_endpoint, creds, cfg.bucket)
        if "mlflow" in started:
            wait_mlflow(cfg, services["mlflow"], login)
    except BaseException:
        for name in reversed(started):
            stop(services.pop(name))
        write_state(cfg, services)
        raise
    seconds = time.monotonic() - t0
    log.info("stack up in %.1f s: S3 %s, MLflow %s (started: %s)", seconds, cfg.s3_endpoint,
             cfg.tracking_uri, ", ".join(started) or "nothing, already running")
    return UpResult(cfg, creds, started, running, created, seconds, login)


def down(cfg: StackConfig) -> dict[str, str]:
    """Stop the services this stack's ``up`` started; returns what happened to each.

    A recorded pid is signalled only while it is still the process ``up`` started (same start
    time, same command line); a pid reused by another process is left alone ("not running").
    """
    services = read_state(cfg)
    order = [n for n in ("mlflow", "seaweedfs") if n in services] + [
        n for n in services if n not in ("mlflow", "seaweedfs")]
    # Signal all first (MLflow first), then wait for all: the shutdowns overlap.
    stopping = {name: signal_stop(services[name]) for name in order}
    outcome = {name: await_stop(stopping[name]) for name in order}
    write_state(cfg, {})
    if "seaweedfs" in outcome:
        remove_stale_sockets(cfg)  # weed leaves some of its sockets behind (or died leaving all)
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
            code = http_status(url + "/health", timeout=5)
            ok = code == 200
            health = "ok" if ok else ("no answer" if code is None else f"HTTP {code} from /health")
            if ok:
                try:
                    login = resolve_mlflow_login(cfg.root, create=False)
                    answer = login_status(cfg, login)
                    ok = answer == 200
                    health = (f"ok: login {login.username!r} accepted" if ok else
                              f"login {login.username!r} from {login.source} not accepted (HTTP {answer})")
                except FakefaceError as error:
                    health, ok = str(error), False
        rows.append(ServiceStatus(name, svc.pid, True, url, health, ok))
    return rows
