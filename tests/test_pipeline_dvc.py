"""End to end: `dvc repro` on the embedded default, in a fresh copy of the project.

This is the README's main command. It asserts that the pipeline learns (test AUC >= 0.9 on the
synthetic test split), that DVC reruns only what changed, and that one MLflow run holds the
params, the curves, the test metrics, the plots and the registered model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project, after one full `dvc repro`."""
    work = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    for name in (".dvc", "src", "data/sources"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__", "config.local"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded default: mlflow.db in the project
    _run(["git", "init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], work, env)
    first = _run(["dvc", "repro"], work, env)
    return work, env, first


def test_repro_runs_every_stage_and_learns(project):
    work, _, first = project
    for stage in ("ingest", "eda", "augment", "preview", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first
    metrics = json.loads((work / "metrics/evaluate.json").read_text())
    assert metrics["auc"] >= 0.9, f"the pipeline did not learn the synthetic fakes: {metrics}"
    assert metrics["n"] == 100
    registry = json.loads((work / "models/registry.json").read_text())
    assert registry["registered"] and registry["model_uri"] == "models:/fakeface-detector@champion"
    for path in ("reports/eda/spectrum.png", "reports/augment/preview.png", "reports/evaluate/roc.png",
                 "plots/evaluate/roc.csv", "plots/evaluate/confusion.csv", "plots/train/history.csv"):
        assert (work / path).stat().st_size > 0, path


def test_second_repro_does_nothing(project):
    work, env, _ = project
    out = _run(["dvc", "repro"], work, env)
    assert "Running stage" not in out


HEADLINE = ("test_auc", "test_acc", "threshold", "real_as_fake", "auc_jpeg_q75")


def test_the_experiments_table_fits_120_columns_with_the_headline(project):
    """`make exps` (its command, read from the Makefile) in a 120-column terminal: every line fits,
    and each headline metric is a whole column name, not an ellipsis."""
    work, env, _ = project
    recipe = next(line.strip() for line in (ROOT / "Makefile").read_text().splitlines()
                  if line.strip().startswith("$(BIN)/dvc exp show"))
    command = recipe.replace("$(BIN)/", "").replace("$$", "$")
    result = subprocess.run(command, shell=True, cwd=work, env={**env, "COLUMNS": "120"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "failed to load" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 120, result.stdout
    header = lines[1].split()
    assert all(name in header for name in HEADLINE), result.stdout
    assert "workspace" in result.stdout


def test_metrics_and_plots_commands_work(project):
    work, env, _ = project
    out = _run(["dvc", "metrics", "show", "--json"], work, env)
    files = json.loads(out[out.index("{"):])[""]["data"]
    # The experiments table's metrics: evaluate's headline, not the details.
    assert set(files) == {"reports/evaluate/headline.json"}, sorted(files)
    headline = files["reports/evaluate/headline.json"]["data"]
    assert set(headline) == set(HEADLINE)
    evaluation = json.loads((work / "metrics/evaluate.json").read_text())
    assert headline["test_auc"] == evaluation["auc"] and headline["threshold"] == evaluation["threshold"]
    assert "best_val_auc" in json.loads((work / "metrics/train.json").read_text())
    _run(["dvc", "plots", "show", "-o", "dvc_plots"], work, env)
    html = (work / "dvc_plots" / "index.html").read_text()
    assert "roc.csv" in html and "confusion.csv" in html and "history.csv" in html


def test_mlflow_run_holds_the_whole_pipeline(project, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    work, _, _ = project
    monkeypatch.chdir(work)
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    run_id = json.loads((work / "models/run.json").read_text())["run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.params["train.backbone"] == "smallcnn"
    assert run.data.params["seed"] == "42"
    assert run.data.tags["git.commit"]
    assert len(client.get_metric_history(run_id, "val_auc")) >= 5
    assert run.data.metrics["test_auc"] >= 0.9
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert {"evaluate/roc.png", "evaluate/pr.png", "evaluate/confusion_matrix.png"} <= artifacts
    version = client.get_model_version_by_alias("fakeface-detector", "champion")
    assert version.run_id == run_id
    model = mlflow.keras.load_model("models:/fakeface-detector@champion")
    assert model.input_shape == (None, 64, 64, 3)
    eda_runs = mlflow.search_runs(experiment_names=["fakeface"], filter_string="tags.`fakeface.stage` = 'eda'")
    assert len(eda_runs) == 1


def test_an_augmentation_switch_reaches_train_not_the_packing(project):
    """Training-time augmentations are read by preview and train only: switching one must not
    repack the shards (64 s at 140k images) nor re-ingest."""
    work, env, _ = project
    params_file = work / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["augment"]["crop"]["enabled"] = True
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_run(["dvc", "status", "--json"], work, env).splitlines()[-1])
    finally:
        params_file.write_text(original)
    assert {"preview", "train"} <= set(status)
    assert not {"ingest", "eda", "augment"} & set(status), status


def test_changing_an_evaluate_param_reruns_only_evaluate_and_register(project):
    work, env, _ = project
    out = _run(["dvc", "exp", "run", "-S", "evaluate.threshold_method=fixed", "-S", "evaluate.threshold=0.3"],
               work, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"evaluate", "register"}
    table = _run(["dvc", "exp", "show", "--csv"], work, env)
    assert "evaluate.threshold" in table and "0.3" in table
