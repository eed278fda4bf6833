"""Every command's expected failures: one line naming what and why, exit 2, no traceback.

The missing-input cases run the real ``fakeface`` command in a subprocess (as a user or DVC
would) and read what reaches the terminal; the broken-input cases call the same ``main`` in this
process (each subprocess costs seconds of imports), where an unexpected exception would fail the
test as a traceback would. Ingest's own case, a source whose fakes are all unreadable, is in
test_ingest_cli.py.

Each case runs the real ``fakeface`` command in a subprocess (as a user or DVC would), in a
folder holding the broken input, and reads what reaches the terminal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import small_params


def fakeface(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The command at log level WARNING: what is left on stderr is the failure alone (at the
    default level a stage's progress lines come before it)."""
    return subprocess.run(
        [sys.executable, "-m", "fakeface", "--log-level", "WARNING", *args],
        cwd=cwd, capture_output=True, text=True, timeout=180,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def project(tmp_path):
    """A folder with a valid params.yaml (small settings) and broken stage inputs."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(small_params().model_dump(mode="json")))
    for folder in ("data/raw", "data/shards", "models", "metrics"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data/manifest.csv").write_text("this,is,not\na,manifest,\n")
    (tmp_path / "data/shards/index.json").write_text("{not json")
    (tmp_path / "models/model.keras").write_text("not a model")
    (tmp_path / "models/detector.keras").write_text("not a model either")
    (tmp_path / "models/run.json").write_text(json.dumps({"run_id": "0" * 32, "experiment_id": "0"}))
    (tmp_path / "metrics/evaluate.json").write_text("nope")
    for name in ("robustness", "slices", "external"):
        (tmp_path / f"metrics/{name}.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("eda", "data/manifest.csv: missing columns"),
        ("augment", "data/manifest.csv: missing columns"),
        ("preview", "data/manifest.csv: missing columns"),
        ("train", "data/shards/index.json: not a shard index"),
        ("evaluate", "cannot load model models/model.keras"),
        ("register", "metrics/evaluate.json: not evaluate's metrics"),
    ],
)
def test_stage_on_a_broken_input(project, stage, expected, capsys, monkeypatch):
    from fakeface.cli.main import main

    monkeypatch.chdir(project)
    capsys.readouterr()
    code = main(["--log-level", "WARNING", stage])
    captured = capsys.readouterr()
    assert_one_line_exit_2(subprocess.CompletedProcess([], code, captured.out, captured.err), expected)


@pytest.mark.parametrize("stage", ["eda", "augment", "preview", "train", "evaluate", "register"])
def test_stage_with_its_input_missing_names_the_stage_that_makes_it(tmp_path, stage):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    assert_one_line_exit_2(fakeface(tmp_path, stage), f"{stage}: ", "not found at", "run it first")


def test_bad_params_name_the_key(project):
    (project / "params.yaml").write_text("train:\n  dropout: 1.5\n")
    result = fakeface(project, "params")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.dropout = 1.5" in result.stderr


def test_predict_with_a_missing_model(project):
    assert_one_line_exit_2(fakeface(project, "predict", str(project), "--model", "no/such.keras"),
                           "model 'no/such.keras' not found")
