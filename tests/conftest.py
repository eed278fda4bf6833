"""Shared fixtures: a small synthetic data set packed into shards, a throwaway MLflow store, and a
PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "faces-sample"

#: Fake credentials tests put in the environment, to check that none of them leaks anywhere.
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": "AKIA-fake-id-xyz",
    "AWS_SECRET_ACCESS_KEY": "supersecret-xyz",
    "MLFLOW_TRACKING_USERNAME": "mlflow-user-xyz",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-xyz",
    "KFP_TOKEN": "kfp-token-xyz",
}

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


@pytest.fixture()
def drop_cli_log_handler():
    """``fakeface.cli.main.main`` installs a stderr handler once per process, bound to the stream
    of the moment (a pytest capture); remove it after the test so later tests' capsys and caplog
    see their own logs. Modules that call ``main`` use it for every test (``pytestmark``)."""
    import logging

    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_fakeface", False)]:
        root.removeHandler(handler)


def port_free(port: int) -> bool:
    """Bindable the way the servers bind (SO_REUSEADDR: a closed connection in TIME_WAIT is fine)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (tests/postgres.py), stopped at its end; skipped only
    where Debian's PostgreSQL binaries are absent (.ci/run installs them)."""
    import postgres

    if postgres.binaries() is None:
        pytest.skip("no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    server = postgres.start(port_free)
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server):
    """A fresh database of the session's PostgreSQL server, for one test: its URL (with the
    test role's password; put it in the environment, never on a command line)."""
    return postgres_server.create_database()


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
    from fakeface.stages.paths import AugmentPaths, IngestPaths
    from fakeface.stages import get_stage

    root = tmp_path_factory.mktemp("synthetic")
    params = small_params()
    ingested = IngestPaths.in_artifacts(root)
    get_stage("ingest").run(params, ingested)
    get_stage("augment").run(params, AugmentPaths(manifest=ingested.manifest, shards=root / "shards"))
    return params, root / "shards"


@pytest.fixture()
def shared_sample():
    """The 200 real FFHQ / StyleGAN2 faces in ../shared, or a clean skip where it is absent."""
    if not (SHARED_SAMPLE / "real").is_dir():
        pytest.skip("../shared/data/faces-sample is not present (a fresh clone has none)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def tiny_model(synthetic_shards, tmp_path_factory):
    """The small CNN trained once per session (two epochs) on the synthetic shards.

    Returns ``(model_path, shards, params)``. Tests that need a trained model share this one
    (training it costs most of their time); those that also need an MLflow run of their own use
    :func:`tracked_model`, which copies it.
    """
    from fakeface.stages import train
    from fakeface.config.runtime import Runtime
    from fakeface.stages.paths import TrainPaths

    _, shards = synthetic_shards
    root = tmp_path_factory.mktemp("tiny-model")
    params = small_params(train={"head_epochs": 0, "fine_tune_epochs": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        train.run(params, TrainPaths.in_artifacts(root, shards=shards), Runtime(checkpoint_dir=root / "checkpoints"))
    return root / "model.keras", shards, params


@pytest.fixture(scope="module")
def tracked_model(tiny_model, tmp_path_factory):
    """The session's tiny model in a folder of this module's own, with an MLflow run in a store
    of its own (``mlflow.db`` there), so modules that log to or register from it cannot see each
    other. Returns ``(root, shards, params)``: ``root`` holds model.keras, run.json, mlflow.db."""
    import mlflow

    from fakeface import tracking

    model, shards, params = tiny_model
    root = tmp_path_factory.mktemp("tracked")
    shutil.copyfile(model, root / "model.keras")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        experiment = mlflow.set_experiment(params.tracking.experiment)
        with mlflow.start_run(run_name="tiny-model") as run:
            tracking.write_run_info(root / "run.json", run.info.run_id, experiment.experiment_id)
    return root, shards, params


def register_tiny_model(tracked_model, model_name: str):
    """Evaluate (Youden threshold on valid, no robustness or explanations) and register the tiny
    model in its module's store, as the pipeline does: returns ``(root, tracking URI, shards,
    evaluation, register result)``; the model must have been registered."""
    from fakeface.config import EvaluateConfig, Params, RegisterConfig
    from fakeface.stages import evaluate
    from fakeface.stages import register
    from fakeface.stages.paths import EvaluatePaths, RegisterPaths

    root, shards, _ = tracked_model
    params = Params(
        evaluate=EvaluateConfig(threshold_method="youden", robustness={}, explain={"enabled": False}),
        register=RegisterConfig(model_name=model_name, min_test_auc=0.0),
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        evaluated = EvaluatePaths.in_artifacts(root / "eval", model=root / "model.keras",
                                               run_info=root / "run.json", shards=shards)
        evaluation = evaluate.run(params, evaluated)
        result = register.run(params, RegisterPaths.in_artifacts(
            root / "registered", model=evaluated.detector, evaluation=evaluated.metrics, run_info=root / "run.json",
            robustness=evaluated.robustness, slices=evaluated.slices, external_metrics=evaluated.external_metrics,
        ))
    assert result.registered
    return root, uri, shards, evaluation, result


def write_scoring_images(shards, folder):
    """The images the scoring tests send: a fake and a real JPEG of the test split (bytes as
    stored), a PNG of another size and a greyscale JPEG; returns the test split's records."""
    from PIL import Image

    from fakeface.analysis.robustness import iter_records

    records = list(iter_records(shards, "test"))
    folder.mkdir(exist_ok=True)
    (folder / "a_fake.jpg").write_bytes(records[-1]["image"])
    (folder / "b_real.jpg").write_bytes(records[0]["image"])
    with Image.open(folder / "a_fake.jpg") as image:
        image.resize((40, 30)).save(folder / "c.png")
        image.convert("L").save(folder / "d_grey.jpg", quality=95)
    return records
