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
