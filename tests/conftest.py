"""Shared fixtures: a small synthetic data set packed into shards, and a throwaway MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "faces-sample"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """An empty SQLite tracking store for one test; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


def small_params(**sections):
    """Params for fast tests: a small synthetic set at 32 px and the small CNN."""
    from fakeface.config import parse_params

    base = {
        "data": {"synthetic": {"images_per_class": 60, "image_size": 32}},
        "augment": {"shard_size": 40},
        "train": {
            "backbone": "smallcnn",
            "image_size": 32,
            "batch_size": 16,
            "optimizer": "adam",
            "learning_rate": 0.002,
            "fine_tune_learning_rate": 0.002,
            "head_epochs": 1,
            "fine_tune_epochs": 2,
        },
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return parse_params(base)


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory):
    """Ingest + pack a 120-image synthetic set once per session; returns (params, shards_dir)."""
    from fakeface.ingest import ingest
    from fakeface.manifest import read_manifest
    from fakeface.shards import write_shards

    root = tmp_path_factory.mktemp("synthetic")
    params = small_params()
    ingest(params.data, params.seed, root / "raw", root / "manifest.csv", root / "report.json")
    write_shards(read_manifest(root / "manifest.csv"), root / "shards", params.augment.shard_size)
    return params, root / "shards"


@pytest.fixture()
def shared_sample():
    """The 200 real FFHQ / StyleGAN2 faces in ../shared, or a clean skip where it is absent."""
    if not (SHARED_SAMPLE / "real").is_dir():
        pytest.skip("../shared/data/faces-sample is not present (a fresh clone has none)")
    return SHARED_SAMPLE


def train_tiny(root: Path, shards: Path):
    """Train the small CNN for two epochs in ``root`` with a tracking store of its own.

    For test modules that need a trained model and its MLflow run; returns the params. The
    caller's fixture keeps ``root`` (model.keras, run.json, mlflow.db) for its tests.
    """
    from fakeface.train import train

    params = small_params(train={"head_epochs": 0, "fine_tune_epochs": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        train(params, shards, root / "model.keras", root / "run.json", root / "h.csv", root / "t.json")
    return params
