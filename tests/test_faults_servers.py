"""Servers that stop while a stage runs, injected on a real stack (SeaweedFS + MLflow).

* The MLflow server stopped mid-training: train fails within seconds with one line naming the
  server; with the server back, rerunning train resumes from the last checkpointed epoch, in the
  same MLflow run, and the run holds every epoch exactly once.
* S3 (SeaweedFS) stopped during register: one clear line, ``models/`` untouched; with S3 back,
  rerunning register alone succeeds.

The stack here is this module's own (the faults stop its servers) on random ports, started once
with no retry. The measured times are printed (``pytest -s``) for the README and the issue. The
pieces (bounded retries, the one-line error, each epoch logged once) are also checked without
servers, first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import keras
import pytest

from conftest import small_params
from fakeface import FakefaceError, stack
from fakeface.config.runtime import Runtime
from fakeface.stack.process import stop
from fakeface.stages.paths import RegisterPaths, TrainPaths
from fakeface.stages import get_stage
from stacks import running_stack

pytestmark = pytest.mark.timeout(600)

#: What a stage may take, at most, to report a stopped server (measured: see the tests' output).
FAIL_WITHIN_S = 30
METRIC_KEYS = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")


# --------------------------------------------------------------------------- no server needed


def test_configure_bounds_the_mlflow_client_retries_unless_the_user_set_them(mlflow_store, monkeypatch):
    from fakeface import tracking

    for name in tracking.HTTP_DEFAULTS:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's own setting wins
    tracking.configure("bounded")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"


def test_a_stopped_server_is_one_line_naming_it(monkeypatch, tmp_path):
    from mlflow.exceptions import MlflowException

    from fakeface import tracking

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    raw = MlflowException(f"API request to {dead}/api/2.0/mlflow/runs/log-batch failed with exception "
                          "HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded with url: ...\n"
                          "(Caused by NewConnectionError(... [Errno 111] Connection refused))")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead.replace("//", "//user:pw@"))
    with pytest.raises(tracking.TrackingServerError) as caught:
        with tracking.server_errors("training"):
            raise raw
    assert str(caught.value).startswith(f"MLflow tracking server at {dead.replace('//', '//***@')} stopped "
                                        "answering while training (connection refused")
    assert "\n" not in str(caught.value) and "pw" not in str(caught.value)
    # a local store's errors are not a server's: they pass unchanged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(MlflowException):
        with tracking.server_errors("training"):
            raise raw


def test_an_epoch_already_in_the_run_is_not_logged_again(mlflow_store):
    import mlflow

    from fakeface import tracking

    mlflow.set_experiment("epochs-once")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        logged = tracking.logged_steps(run_id, METRIC_KEYS)
        assert logged == set()
        tracking.log_metrics_once({"loss": 1.0, "auc": 0.5}, 1, logged)
        # a resumed training: what the run holds comes from the server, not from memory
        logged = tracking.logged_steps(run_id, METRIC_KEYS)
        assert logged == {("loss", 1), ("auc", 1)}
        tracking.log_metrics_once({"loss": 0.9, "auc": 0.6}, 1, logged)  # epoch 1 rerun
        tracking.log_metrics_once({"loss": 0.8, "auc": 0.7}, 2, logged)
    client = mlflow.MlflowClient()
    for key in ("loss", "auc"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2]


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory):
    with running_stack(tmp_path_factory, "fault-stack") as (cfg, result, _):
        yield cfg, result.credentials


@pytest.fixture()
def client(fault_stack, monkeypatch, tmp_path):
    """This test's MLflow client settings: the stack's URI and login (as `fakeface stack env`),
    MLflow's HTTP settings left to ``tracking.configure``."""
    import mlflow

    from fakeface import tracking

    cfg, _ = fault_stack
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)
    for name, value in login.env().items():
        monkeypatch.setenv(name, value)
    for name in tracking.HTTP_DEFAULTS:  # set by tracking.configure; removed again below
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield cfg
    if mlflow.active_run():
        mlflow.end_run()


def _stop_service(cfg: stack.StackConfig, name: str) -> None:
    assert stop(stack.read_state(cfg)[name]) == "stopped"


class _StopServerAt(keras.callbacks.Callback):
    """Stops the MLflow server as epoch ``epoch`` (0-based) begins; records the epochs begun."""

    def __init__(self, cfg: stack.StackConfig, epoch: int | None) -> None:
        super().__init__()
        self.cfg, self.epoch, self.begun = cfg, epoch, []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch + 1)
        if epoch == self.epoch:
            _stop_service(self.cfg, "mlflow")


@pytest.mark.slow
def test_mlflow_server_stopped_mid_training_then_train_resumes(client, synthetic_shards, tmp_path):
    import mlflow

    cfg = client
    _, shards = synthetic_shards
    params = small_params(train={"head_epochs": 2, "fine_tune_epochs": 2})  # epochs 1-2, 3-4
    paths = TrainPaths.in_artifacts(tmp_path / "models", shards=shards)
    runtime = Runtime(checkpoint_dir=tmp_path / "checkpoints")
    state_file = runtime.checkpoint_dir / "state.json"

    # --- the server stops as epoch 3 (the first of the fine-tuning phase) begins
    killer = _StopServerAt(cfg, epoch=2)
    with pytest.raises(FakefaceError) as caught:
        get_stage("train").run(params, paths, runtime, extra_callbacks=[killer])
    failed_at = time.time()
    message = str(caught.value)
    assert "\n" not in message and f"MLflow tracking server at {cfg.tracking_uri} stopped answering" in message
    assert "while training" in message and "fakeface stack up" in message
    # epoch 3 finished and was recorded (state.json, its last write) just before its metrics
    # went to the server: from there to the error is what the stage spent on a dead server
    seconds = failed_at - state_file.stat().st_mtime
    print(f"\ntrain: MLflow server stopped; a clear error {seconds:.1f} s after the first request failed")
    assert seconds < FAIL_WITHIN_S
    state = json.loads(state_file.read_text())
    assert sorted(state["epochs"], key=int) == ["0", "1", "2"] and state["phases_done"] == ["head"]
    assert not Path(paths.model).exists() and not Path(paths.run_info).exists()

    # --- the server is back; rerunning train resumes the same run at the epoch in progress
    assert stack.up(cfg).started == ["mlflow"]
    again = _StopServerAt(cfg, epoch=None)
    result = get_stage("train").run(params, paths, runtime, extra_callbacks=[again])
    assert result.run_id == state["run_id"] and result.epochs_run == 4
    lost = [e for e in again.begun if e <= len(state["epochs"])]
    print(f"train: resumed at epoch {again.begun[0]}; epochs trained again: {len(lost)} ({lost})")
    assert again.begun == [3, 4] and lost == [3]
    client_ = mlflow.MlflowClient()
    run = client_.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in METRIC_KEYS:
        steps = sorted(m.step for m in client_.get_metric_history(result.run_id, key))
        assert steps == [1, 2, 3, 4], (key, steps)  # every epoch, each once
    assert Path(paths.model).is_file() and json.loads(Path(paths.run_info).read_text())["run_id"] == result.run_id
    assert not runtime.checkpoint_dir.exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_s3_stopped_during_register_then_register_alone_succeeds(client, tiny_model, tmp_path, monkeypatch):
    import mlflow

    from fakeface import tracking
    from fakeface.stages import register

    cfg = client
    model_file, _, params = tiny_model
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(model_file, models / "model.keras")
    shutil.copyfile(model_file, models / "detector.keras")
    evaluation = tmp_path / "evaluate.json"
    per_class = {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 6}
    evaluation.write_text(json.dumps({  # what evaluate writes, as far as register and its card read it
        "auc": 0.9, "threshold": 0.5, "accuracy": 0.85, "average_precision": 0.9, "n": 12,
        "real": per_class, "fake": per_class, "threshold_0_5": {"accuracy": 0.85},
        "threshold_selection": {"method": "fixed"},
    }))
    tracking.configure(params.tracking.experiment)
    with mlflow.start_run(run_name="fault-register") as run:
        tracking.write_run_info(models / "run.json", run.info.run_id, run.info.experiment_id)
    params = small_params(register={"min_test_auc": 0.0, "model_name": "fault-detector"})
    absent = tmp_path / "absent.json"  # no robustness, slices or external metrics: the card says so
    paths = RegisterPaths(model=models / "detector.keras", evaluation=evaluation, run_info=models / "run.json",
                          robustness=absent, slices=absent, external_metrics=absent,
                          registry=models / "registry.json", card=models / "model_card.md")
    before = {p.name: _sha256(p) for p in models.iterdir()}

    # --- S3 stops once register has begun (its settings logged, the model not yet uploaded)
    original = tracking.log_stage_settings
    stopped: list[float] = []

    def settings_then_stop_s3(*args, **kwargs):
        original(*args, **kwargs)
        _stop_service(cfg, "seaweedfs")
        stopped.append(time.monotonic())

    monkeypatch.setattr(tracking, "log_stage_settings", settings_then_stop_s3)
    with pytest.raises(FakefaceError) as caught:
        register.run(params, paths)
    assert stopped, f"register failed before S3 was stopped: {caught.value}"
    seconds = time.monotonic() - stopped[0]
    message = str(caught.value)
    print(f"\nregister: S3 stopped; a clear error after {seconds:.1f} s: {message}")
    assert "\n" not in message and f"MLflow tracking server at {cfg.tracking_uri}" in message
    assert "artifact store (S3)" in message and "fakeface stack up" in message
    assert seconds < FAIL_WITHIN_S
    assert {p.name: _sha256(p) for p in models.iterdir()} == before  # models/ untouched: no registry.json, no card

    # --- S3 is back: register alone, rerun, succeeds
    monkeypatch.setattr(tracking, "log_stage_settings", original)
    assert stack.up(cfg).started == ["seaweedfs"]
    registration = register.run(params, paths)
    assert registration.registered and registration.version
    assert json.loads(Path(paths.registry).read_text())["version"] == registration.version
    assert Path(paths.card).is_file()
    assert {p.name: _sha256(p) for p in models.iterdir() if p.name in before} == before
    local = mlflow.artifacts.download_artifacts(f"models:/fault-detector@{registration.alias}",
                                                dst_path=str(tmp_path / "dl"))
    assert (Path(local) / "MLmodel").is_file()
