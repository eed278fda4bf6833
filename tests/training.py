"""Helpers for tests that kill a training process: run it until its checkpoint state holds some
finished epochs, then SIGKILL it, as a pre-empted node or an out-of-memory kill would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after_epochs(command: list[str], cwd: Path, state_file: Path, epochs: int, timeout: float = 300) -> dict:
    """Start ``command``, SIGKILL it once ``state_file`` records ``epochs`` finished epochs, and
    return that state (the test fails if the run ends, or takes ``timeout`` s, before then)."""
    process = subprocess.Popen(command, cwd=cwd, env=os.environ.copy(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.is_file() and len(json.loads(state_file.read_text())["epochs"]) >= epochs:
                break
            time.sleep(0.2)
        assert process.poll() is None, "training finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    return json.loads(state_file.read_text())
