"""The train stage: outputs, MLflow logging, determinism, and resume after a kill."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import small_params
from training import kill_after_epochs
from fakeface.stages import train
from fakeface.config.runtime import Runtime
from fakeface.stages.paths import TrainPaths

keras = pytest.importorskip("keras")


def run_train(params, shards, out: Path, runtime: Runtime | None = None):
    """The train stage with every output in ``out`` (model.keras, run.json, history.csv, train.json)."""
    return train.run(params, TrainPaths.in_artifacts(out, shards=shards), runtime)


def test_train_writes_outputs_and_logs_the_run(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, shards = synthetic_shards
    result = run_train(params, shards, tmp_path)

    assert (tmp_path / "model.keras").is_file()
    run_info = json.loads((tmp_path / "run.json").read_text())
    assert run_info["run_id"] == result.run_id
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,phase,loss")
    assert len(history) - 1 == result.epochs_run == 3  # 1 head + 2 fine-tune epochs
    assert json.loads((tmp_path / "train.json").read_text())["epochs"] == 3
    assert not Path(Runtime().checkpoint_dir).exists(), "checkpoints are removed after success"

    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["train.backbone"] == "smallcnn"
    assert run.data.params["augment.flip.enabled"] == "True"
    assert "evaluate.threshold" not in run.data.params  # rerunnable stages log tags instead
    assert len(run.data.tags["data.shards_index_sha256"]) == 64
    steps = [m.step for m in MlflowClient().get_metric_history(result.run_id, "val_auc")]
    assert steps == [1, 2, 3]
    for key in ("loss", "accuracy", "auc", "val_loss", "val_accuracy"):
        assert len(MlflowClient().get_metric_history(result.run_id, key)) == 3
    assert run.inputs.dataset_inputs[0].dataset.name == "face-shards"


def test_same_seed_gives_the_same_weights(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = small_params(train={"head_epochs": 0, "fine_tune_epochs": 1})
    weights = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        run_train(params, shards, tmp_path / name)
        weights.append(keras.models.load_model(tmp_path / name / "model.keras").get_weights())
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)


def test_killed_training_resumes_in_the_same_run(synthetic_shards, mlflow_store, tmp_path):
    """SIGKILL the training process mid-run; the rerun continues from the last finished epoch."""
    _, shards = synthetic_shards
    params = small_params(train={"head_epochs": 1, "fine_tune_epochs": 5, "early_stopping_patience": 10})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump()))
    state_file = tmp_path / "ck" / "state.json"  # the runtime option, not a param
    command = [sys.executable, "-m", "fakeface", "--params", str(params_file), "train", "--shards", str(shards),
               "--model", "m.keras", "--run-info", "run.json", "--history", "h.csv", "--metrics", "t.json",
               "--checkpoint-dir", "ck"]
    killed_state = kill_after_epochs(command, tmp_path, state_file, 3, timeout=240)
    done_before_kill = len(killed_state["epochs"])
    assert 3 <= done_before_kill < 6
    assert not (tmp_path / "m.keras").exists()

    os.chdir(tmp_path)
    try:
        result = run_train(params, shards, tmp_path, Runtime(checkpoint_dir=Path("ck")))
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
    assert result.run_id == killed_state["run_id"], "the rerun continues the same MLflow run"
    assert result.resumed_from_epoch >= done_before_kill - 1
    assert result.epochs_run == 6
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5, 6]
    steps = sorted({m.step for m in MlflowClient().get_metric_history(result.run_id, "val_auc")})
    assert steps == [1, 2, 3, 4, 5, 6]
    assert mlflow.get_run(result.run_id).info.status == "FINISHED"


def test_changed_params_do_not_resume_stale_checkpoints(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    from fakeface.stages.train import CheckpointState, fingerprint

    monkeypatch.chdir(tmp_path)
    params, shards = synthetic_shards
    state = CheckpointState(tmp_path / "ck", fingerprint(params, shards))
    state.data["run_id"] = "stale"
    state.record_epoch(0, {"epoch": 1})
    other = small_params(train={"dropout": 0.3})
    fresh = CheckpointState(tmp_path / "ck", fingerprint(other, shards))
    assert fresh.data["run_id"] is None and fresh.last_epoch == 0
