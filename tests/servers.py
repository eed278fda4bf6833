"""A server subprocess under test (``fakeface serve``, MLServer): started with its output in a log
file, ready when a URL answers 200, and stopped by its pid, its workers too."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import requests


class ServerProcess:
    """Start ``argv`` and wait until ``ready_url`` answers 200 (the test fails, with the log's
    tail, if the process exits or ``timeout`` s pass first)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, ready_url: str,
                 timeout: float, what: str = "server") -> None:
        self.log = log
        self.what = what
        self.handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.handle, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        while time.monotonic() < self.started + timeout:
            assert self.process.poll() is None, f"{what} exited {self.process.returncode}:\n{self.tail()}"
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - self.started
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"{what} not ready in {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> list[int]:
        """SIGTERM to the server's pid, then to its workers if any outlived it; returns the pids
        still alive afterwards (none)."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        _, alive = psutil.wait_procs(children, timeout=15)
        for child in alive:
            child.kill()
        self.handle.close()
        return [child.pid for child in psutil.wait_procs(alive, timeout=5)[1]]
