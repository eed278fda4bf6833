"""The DVC remote ``fakeface-s3`` on the stack's store (dvc is imported inside the function)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fakeface.stack.config import DVC_REMOTE, REGION, StackConfig, StackError
from fakeface.stack.credentials import Credentials


def configure_dvc_remote(repo: str | Path, cfg: StackConfig, creds: Credentials | None = None,
                         make_default: bool | None = None) -> dict[str, Any]:
    """Add or update the DVC remote ``fakeface-s3`` = ``s3://<bucket>/dvc`` on the stack's store.

    Everything goes to ``.dvc/config.local`` (gitignored by DVC, made 0600), never to the tracked
    ``.dvc/config``: the stack is one machine's 127.0.0.1, so a committed remote would point every
    clone at a server it does not have. With ``creds`` the keys go there too; without, DVC takes
    them from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``eval "$(fakeface stack env)"``).
    The remote becomes this clone's default when no default is set (``make_default=None``). A
    ``fakeface-s3`` an older version wrote to ``.dvc/config`` is moved out of it.
    """
    from dvc.config import Config, ConfigError

    dvc_dir = Path(repo) / ".dvc"
    if not dvc_dir.is_dir():
        raise StackError(f"{Path(repo).absolute()} is not a DVC project (no .dvc/); run `dvc init` first")
    config = Config(dvc_dir=str(dvc_dir))
    try:
        with config.edit("repo") as conf:
            conf["remote"].pop(DVC_REMOTE, None)
            if conf["core"].get("remote") == DVC_REMOTE:
                conf["core"].pop("remote")
            tracked_default = conf["core"].get("remote")
        local = dvc_dir / "config.local"
        with config.edit("local") as conf:
            remote = conf["remote"].setdefault(DVC_REMOTE, {})
            remote["url"] = cfg.dvc_url
            remote["endpointurl"] = cfg.s3_endpoint
            remote["region"] = REGION
            if creds is not None:
                remote["access_key_id"] = creds.access_key_id
                remote["secret_access_key"] = creds.secret_access_key
            else:
                remote.pop("access_key_id", None)
                remote.pop("secret_access_key", None)
            current = conf["core"].get("remote") or tracked_default
            if make_default or (make_default is None and not current):
                conf["core"]["remote"] = DVC_REMOTE
            default = conf["core"].get("remote") or tracked_default
        if local.exists():
            os.chmod(local, 0o600)
    except ConfigError as error:
        raise StackError(f"DVC config: {error}") from None
    return {"remote": DVC_REMOTE, "url": cfg.dvc_url, "endpointurl": cfg.s3_endpoint,
            "default": default == DVC_REMOTE, "credentials": "config.local" if creds else "environment"}
