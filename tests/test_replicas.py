"""Multi-replica training, run on the CPU split into two logical devices (``--cpu-replicas 2``):
the MirroredStrategy code a multi-GPU node runs, with batches split, metrics aggregated, and a
killed run resumed. Each run is its own process: TensorFlow fixes its devices when it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import small_params
from training import kill_after_epochs

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.slow


def _command(params, shards: Path, out: Path, replicas: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return [sys.executable, "-m", "fakeface", "--params", str(params_file), "train", "--shards", str(shards),
            "--model", str(out / "m.keras"), "--run-info", str(out / "run.json"), "--history",
            str(out / "h.csv"), "--metrics", str(out / "t.json"), "--checkpoint-dir", str(out / "ck"),
            "--cpu-replicas", str(replicas)]


def _train(params, shards: Path, out: Path, replicas: int, cwd: Path) -> dict:
    done = subprocess.run(_command(params, shards, out, replicas), cwd=cwd, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "run.json").read_text())


def _history(out: Path) -> list[dict[str, float]]:
    lines = (out / "h.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [{k: float(v) for k, v in zip(header, line.split(",")) if v and k != "phase"} for line in lines[1:]]


def test_two_cpu_replicas_train_like_one_with_the_same_global_batch(tiny_model, mlflow_store, tmp_path):
    """Two replicas each take half of every 16-image batch; their gradients are summed and the
    metrics aggregated, so the run matches one replica on the whole batch. Plain SGD (whose step
    would double if a batch were counted twice), no dropout (it draws per replica), and a trained
    base loaded from a weights file, so its BatchNorm keeps its statistics (per-replica batch
    statistics would differ by design) while the whole network learns. The images come in file
    order (no shuffle, no random flip): under a strategy Keras draws one batch before the first
    epoch to build the model, which advances a seeded reshuffle, so a shuffled multi-replica run
    sees each epoch's images in another order than a single-replica run."""
    import mlflow

    model_path, shards, _ = tiny_model
    base_weights = tmp_path / "base.weights.h5"
    keras.models.load_model(model_path).get_layer("smallcnn").save_weights(base_weights)
    params = small_params(train={"weights": str(base_weights), "head_epochs": 1, "fine_tune_epochs": 1,
                                 "dropout": 0.0, "optimizer": "sgd", "momentum": 0.0, "learning_rate": 0.05,
                                 "fine_tune_learning_rate": 0.01, "batch_size": 16, "shuffle_buffer": 1},
                          augment={"flip": {"enabled": False}})
    one = _train(params, shards, tmp_path / "one", 1, tmp_path)
    two = _train(params, shards, tmp_path / "two", 2, tmp_path)

    tags = mlflow.get_run(two["run_id"]).data.tags
    assert (tags["fakeface.strategy"], tags["fakeface.replicas"]) == ("MirroredStrategy", "2")
    assert tags["fakeface.devices"].count("device:CPU") == 2
    assert mlflow.get_run(one["run_id"]).data.tags["fakeface.replicas"] == "1"
    for first, second in zip(_history(tmp_path / "one"), _history(tmp_path / "two")):
        for key in ("loss", "accuracy", "val_loss", "val_auc"):
            assert second[key] == pytest.approx(first[key], rel=1e-4, abs=1e-5), key
    history = _history(tmp_path / "one")
    assert history[-1]["loss"] < history[0]["loss"], "the network learnt something to compare"
    reference_model = keras.models.load_model(tmp_path / "one" / "m.keras")
    start = keras.models.load_model(model_path).get_layer("smallcnn").get_weights()
    tuned = reference_model.get_layer("smallcnn").get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(start, tuned)) > 1e-3, "the base was fine-tuned"
    reference = reference_model.get_weights()
    replicated = keras.models.load_model(tmp_path / "two" / "m.keras").get_weights()
    for first, second in zip(reference, replicated):
        np.testing.assert_allclose(second, first, atol=1e-5)


def test_a_killed_two_replica_run_resumes_from_its_last_epoch(synthetic_shards, mlflow_store, tmp_path):
    import mlflow

    _, shards = synthetic_shards
    params = small_params(train={"head_epochs": 1, "fine_tune_epochs": 5, "early_stopping_patience": 10,
                                 "augment_on": "device"}, augment={"crop": {"enabled": True}})
    out = tmp_path / "run"
    state_file = out / "ck" / "state.json"
    killed = kill_after_epochs(_command(params, shards, out, 2), tmp_path, state_file, 3)
    assert 3 <= len(killed["epochs"]) < 6 and not (out / "m.keras").exists()

    resumed = _train(params, shards, out, 2, tmp_path)
    assert resumed["run_id"] == killed["run_id"], "the rerun continues the same MLflow run"
    assert [int(row["epoch"]) for row in _history(out)] == [1, 2, 3, 4, 5, 6]
    steps = sorted({m.step for m in mlflow.MlflowClient().get_metric_history(resumed["run_id"], "val_auc")})
    assert steps == [1, 2, 3, 4, 5, 6]
    run = mlflow.get_run(resumed["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["fakeface.augmentations"] == "flip:input-uint8 crop:step"
    assert run.data.tags["fakeface.replicas"] == "2"
