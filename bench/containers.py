"""The container engine, for the ``containers`` bench section and tests/test_container.py.

Standard library only at module level. Finds podman (preferred: it needs no daemon) or docker,
tells whether it can run containers here, builds the project image with the repository's scripts
(``docker/base-image.sh``, then ``docker/build.sh`` on that base), and serves the Docker API that
``kfp.local.DockerRunner`` (the Docker Python SDK) talks to: with podman, a
``podman system service`` on a unix socket of a temporary folder, stopped on exit.

Podman runs with ``docker/containers.conf`` (runc, cgroupfs, rlimits this kind of machine allows)
unless ``CONTAINERS_CONF`` already names a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The image the test and the bench build and run (docker/build.sh's tag argument).
IMAGE = "localhost/fakeface:ci"
#: The registry-free base made by docker/base-image.sh from Debian's packages.
BASE_IMAGE = "localhost/fakeface-base:bookworm"
CONTAINERS_CONF = ROOT / "docker" / "containers.conf"


def engine() -> str | None:
    """``podman`` or ``docker`` (full path), whichever is installed; podman first."""
    return shutil.which("podman") or shutil.which("docker")


def is_podman(binary: str | None = None) -> bool:
    return Path(binary or engine() or "").name == "podman"


def engine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run the engine (and the build scripts) in."""
    env = dict(os.environ if base is None else base)
    if is_podman() and not env.get("CONTAINERS_CONF"):
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def why_unusable() -> str | None:
    """None where containers can run here, else the reason (for a skip message)."""
    binary = engine()
    if binary is None:
        return "no container engine: install podman (apt-get install podman runc) or docker"
    try:
        done = subprocess.run([binary, "info"], env=engine_env(), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`{Path(binary).name} info` failed: {error}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"`{Path(binary).name} info` failed (exit {done.returncode}): {' '.join(tail)}"
    if shutil.which("mmdebstrap") is None and not image_exists(BASE_IMAGE):
        return "the base image needs mmdebstrap (apt-get install mmdebstrap): no registry to pull one from"
    return None


def image_exists(tag: str) -> bool:
    binary = engine()
    if binary is None:
        return False
    done = subprocess.run([binary, "image", "inspect", tag], env=engine_env(), capture_output=True, timeout=60)
    return done.returncode == 0


def image_size(tag: str = IMAGE) -> int:
    """The image's size in bytes, as the engine reports it."""
    out = subprocess.run([engine(), "image", "inspect", "--format", "{{.Size}}", tag], env=engine_env(),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return int(out.strip())


def _script(args: list[str], env: dict[str, str], log: Path | None) -> float:
    started = time.perf_counter()
    if log is None:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        output = done.stdout + done.stderr
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as sink:
            done = subprocess.run(args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        output = log.read_text(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}):\n{output[-4000:]}")
    return time.perf_counter() - started


def build_image(tag: str = IMAGE, base: str = BASE_IMAGE, log: Path | None = None) -> dict[str, float]:
    """``docker/base-image.sh BASE`` (kept when it exists), then ``BASE_IMAGE=BASE docker/build.sh TAG``
    (layers reused by the engine's cache). Returns the seconds of each."""
    env = engine_env()
    base_s = _script([str(ROOT / "docker" / "base-image.sh"), base], env, log)
    build_s = _script([str(ROOT / "docker" / "build.sh"), tag], {**env, "BASE_IMAGE": base}, log)
    return {"base_s": base_s, "build_s": build_s}


def remove_image(tag: str) -> None:
    subprocess.run([engine(), "rmi", "--force", tag], env=engine_env(), capture_output=True, timeout=300)


def _ping(url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=10)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - not up yet
        return False


@contextlib.contextmanager
def docker_api(workdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """A Docker API for the Docker SDK while the block runs, as ``DOCKER_HOST`` (set, then restored).

    podman: ``podman system service --time=0`` on ``<workdir>/podman.sock``, stopped (its own pid)
    when the block ends. docker: the daemon's own socket (``DOCKER_HOST`` or the default)."""
    binary = engine()
    if binary is None:
        raise RuntimeError("no container engine")
    previous = os.environ.get("DOCKER_HOST")
    service = None
    if is_podman(binary):
        workdir.mkdir(parents=True, exist_ok=True)
        socket = workdir / "podman.sock"
        url = f"unix://{socket}"
        log = (workdir / "podman-service.log").open("w")
        service = subprocess.Popen([binary, "system", "service", "--time=0", url], env=engine_env(),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
    else:
        url = previous or "unix:///var/run/docker.sock"
    try:
        deadline = time.monotonic() + timeout
        while not _ping(url):
            if service is not None and service.poll() is not None:
                raise RuntimeError(f"podman system service exited {service.returncode}: "
                                   f"{(workdir / 'podman-service.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Docker API at {url} after {timeout:.0f} s")
            time.sleep(0.2)
        os.environ["DOCKER_HOST"] = url
        yield url
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(timeout=30)


def docker_runner():
    """kfp.local's DockerRunner for the pipeline: host network, so the steps reach an MLflow
    server on 127.0.0.1 (extra keyword arguments go to the SDK's ``containers.run``)."""
    from kfp import local

    return local.DockerRunner(network_mode="host")
