"""The processes ``up`` starts: spawn them, record them, find them again, stop them.

A service is recorded in ``<root>/state.json`` with its pid, start time and a string its command
line must contain; a signal goes to a recorded pid only while all three still match, so a pid
reused by another process is left alone. psutil is imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fakeface.data import atomic
from fakeface.tracking.redact import redact
from fakeface.stack.config import HOST, StackConfig, StackError

log = logging.getLogger("fakeface.stack")


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


def state_path(cfg: StackConfig) -> Path:
    return cfg.root / "state.json"


def read_state(cfg: StackConfig) -> dict[str, Service]:
    path = state_path(cfg)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: Service(**svc) for name, svc in raw.get("services", {}).items()}
    except (ValueError, TypeError):
        log.warning("%s is unreadable; ignoring it", path)
        return {}


def write_state(cfg: StackConfig, services: dict[str, Service]) -> None:
    """Record ``services`` in ``<root>/state.json`` (none: the file is removed)."""
    path = state_path(cfg)
    if not services:
        path.unlink(missing_ok=True)
        return
    atomic.write_text(path, json.dumps({"services": {n: asdict(s) for n, s in services.items()}}, indent=2) + "\n")


def spawn(name: str, cmd: list[str], env: dict[str, str], cfg: StackConfig, marker: str, url: str,
          cwd: Path | None = None) -> Service:
    """Start ``cmd`` in its own process group, its output appended to ``<root>/logs/<name>.log``.

    Files and sockets the service creates are its owner's alone (umask 077).
    """
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} fakeface stack up: {name}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            cwd=cwd or cfg.root, start_new_session=True,  # its own process group: `down` stops it all
            umask=0o077,
        )
    _CHILDREN[proc.pid] = proc
    return Service(name, proc.pid, _await_exec(proc, marker), marker, url, str(log_path))


def _await_exec(proc: subprocess.Popen, marker: str, timeout: float = 5.0) -> float:
    """The start time of the program ``proc`` runs, once the kernel shows its command line.

    ``Popen`` returns as soon as execve() is past its point of no return, but the kernel sets up
    the new program's argument area a moment later: /proc/<pid>/cmdline reads empty meanwhile
    (2-14 % of starts of the 150 MB ``weed`` binary, the more the busier the machine).
    :meth:`Service.process` checks the command line, so a check in that window took a process
    that had just started for one that had exited ("exited during start-up" with an empty log).
    Waiting here closes the window.
    """
    import psutil

    deadline = time.monotonic() + timeout
    create_time = 0.0
    while True:
        try:
            process = psutil.Process(proc.pid)
            create_time = process.create_time()
            if marker in " ".join(process.cmdline()):
                return create_time
        except psutil.Error:  # gone or a zombie: wait_until reports the exit status
            return create_time
        if proc.poll() is not None or time.monotonic() > deadline:
            return create_time
        time.sleep(0.002)


def stop(service: Service, timeout: float = 20.0) -> str:
    """SIGTERM the service's process group, wait, then SIGKILL what is left. Returns what happened."""
    return await_stop(signal_stop(service), timeout)


@dataclass
class Stopping:
    """A service that was sent SIGTERM: what to wait for (see :func:`await_stop`)."""

    service: Service
    members: list  # psutil.Process: the service and its children, as found before the signal
    own_group: bool


def signal_stop(service: Service) -> Stopping | None:
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
    return Stopping(service, members, own_group)


def await_stop(stopping: Stopping | None, timeout: float = 20.0) -> str:
    """Wait for a service :func:`signal_stop` signalled; SIGKILL it after ``timeout``."""
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


def check_ports(ports: dict[str, int]) -> None:
    """Raise :class:`StackError` naming every one of ``ports`` that is in use on 127.0.0.1."""
    busy = {name: port for name, port in ports.items() if not _port_free(port)}
    if busy:
        listing = ", ".join(f"{port} ({name})" for name, port in busy.items())
        raise StackError(
            f"port(s) already in use on {HOST}: {listing}. Stop what uses them, or pick other ports "
            "(fakeface stack up --s3-port/--mlflow-port/--weed-ports)"
        )


def how_it_ended(service: Service) -> str | None:
    """None while the service runs; else how it ended ("exited with status 1", "was killed by
    signal 9"): the kernel's word for a service this process started (``Popen.poll``), else
    whether the recorded process is gone."""
    child = _CHILDREN.get(service.pid)
    if child is None:
        return None if service.process() is not None else "exited"
    code = child.poll()
    if code is None:
        return None
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


def wait_until(check, proc_service: Service, what: str, timeout: float) -> None:
    """Poll ``check()`` until true; fail, naming the log and showing its tail, if the service
    exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        how = how_it_ended(proc_service)
        if how is not None:
            raise StackError(f"{what} {how} during start-up; see its log {proc_service.log}, "
                             f"which ends:\n{_log_tail(proc_service.log)}")
        time.sleep(0.1)
    raise StackError(f"{what} did not become healthy within {timeout:.0f} s; see its log "
                     f"{proc_service.log}, which ends:\n{_log_tail(proc_service.log)}")


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {redact(line)}" for line in text)
