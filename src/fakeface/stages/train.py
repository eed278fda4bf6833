"""The train stage: fine-tune a backbone on the shards, in two phases, resumable, tracked.

Phase 1 trains the head on a frozen base; phase 2 unfreezes the top ``fine_tune_layers`` at a
lower learning rate, BatchNorm kept frozen. Early stopping watches validation AUC and restores the
best weights. Every epoch is checkpointed with Keras' ``BackupAndRestore`` under
the runtime's checkpoint folder (:class:`fakeface.config.runtime.Runtime`), so a killed run (a pre-empted GPU node, Ctrl-C) restarted with the same
params resumes at its last finished epoch, in the same MLflow run. A run with other params or data
starts afresh.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import tensorflow as tf
from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException

from fakeface.data import atomic
from fakeface import CLASS_NAMES
from fakeface.model import devices
from fakeface import tracking
from fakeface.config import Params, TrainConfig
from fakeface.data.pipeline import make_dataset, plan_augmentations
from fakeface.model.classifier import build_classifier, freeze_base, pretrained, scoring_model, unfreeze_top
from fakeface.config.runtime import Runtime
from fakeface.model.train_step import AugmentingTrainer
from fakeface.data.shards import read_index, shard_files
from fakeface.stages.paths import TrainPaths

log = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "phase", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")


@dataclass
class TrainResult:
    run_id: str
    epochs_run: int
    best_val_auc: float
    resumed_from_epoch: int
    history: list[dict[str, Any]]


# --------------------------------------------------------------------------- runtime set-up


def make_optimizer(cfg: TrainConfig, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    schedule: Any = learning_rate
    if cfg.lr_schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    elif cfg.lr_schedule == "exponential":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=max(steps // 4, 1), decay_rate=0.5
        )
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    return keras.optimizers.SGD(schedule, momentum=cfg.momentum)


class FakeAUC(keras.metrics.AUC):
    """ROC AUC of p(fake) for either head (a two-way softmax's fake column)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if y_pred.shape[-1] == 2:
            y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
        return super().update_state(y_true, y_pred, sample_weight)


def compile_model(model: keras.Model, cfg: TrainConfig, learning_rate: float, steps: int, xla: bool) -> None:
    softmax = cfg.head_activation == "softmax"
    model.compile(
        optimizer=make_optimizer(cfg, learning_rate, steps),
        loss=keras.losses.CategoricalCrossentropy() if softmax else keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy")
            if softmax
            else keras.metrics.BinaryAccuracy(name="accuracy"),
            FakeAUC(name="auc"),
        ],
        jit_compile=xla,
    )


# --------------------------------------------------------------------------- checkpoints


def fingerprint(params: Params, shards_dir: Path, splits: dict[str, Any] | None = None) -> str:
    """What makes two training runs the same run: train/augment params, seed, data (and splits)."""
    payload: dict[str, Any] = {
        "seed": params.seed,
        "train": params.train.model_dump(),
        "augment": params.augment.model_dump(exclude={"shard_size", "preview_images"}),
        "data": read_index(shards_dir),
    }
    if splits:
        payload["splits"] = splits
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CheckpointState:
    """``state.json`` in the checkpoint dir: the run id, finished phases, and each epoch's logs."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.path = root / "state.json"
        self.key = key
        self.data: dict[str, Any] = {"fingerprint": key, "run_id": None, "phases_done": [], "epochs": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("fingerprint") == key:
                self.data = saved
            else:
                log.info("checkpoints in %s are for other params or data: starting afresh", root)
                shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        atomic.write_text(self.path, json.dumps(self.data, indent=1))

    def record_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.data["epochs"][str(epoch)] = row
        self.save()

    @property
    def last_epoch(self) -> int:
        return max((int(e) + 1 for e in self.data["epochs"]), default=0)


class EpochRecorder(keras.callbacks.Callback):
    """Keeps each finished epoch's metrics in the checkpoint state (survives a kill)."""

    def __init__(self, state: CheckpointState, phase: str) -> None:
        super().__init__()
        self.state = state
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"epoch": epoch + 1, "phase": self.phase}
        row.update({k: float(v) for k, v in (logs or {}).items() if k in HISTORY_FIELDS})
        self.state.record_epoch(epoch, row)


class EpochMetricsToMlflow(keras.callbacks.Callback):
    """Per-epoch train and validation metrics, stepped by the absolute epoch.

    (``mlflow.keras.MlflowCallback`` also logs the optimizer's settings as params at the start of
    every ``fit``; the second phase's learning rate would then collide with the first's, and MLflow
    params are immutable. The phases' rates are already params: ``train.*learning_rate``.)
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # A resumed run may hold an epoch already (logged, then killed before its checkpoint).
        self.logged = tracking.logged_steps(mlflow.active_run().info.run_id, HISTORY_FIELDS)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in HISTORY_FIELDS}
        tracking.log_metrics_once(metrics, epoch + 1, self.logged)


# --------------------------------------------------------------------------- the stage


@tracking.server_errors("training")
def run(
    params: Params,
    paths: TrainPaths,
    runtime: Runtime | None = None,
    *,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    parent_run_id: str | None = None,
    train_splits: Sequence[str] = ("train",),
    validation_split: str | None = "valid",
) -> TrainResult:
    """Train, save the model, and leave the MLflow run id for evaluate and register.

    ``parent_run_id`` nests the run under another (an ablation study's parent run).
    ``train_splits`` are read together for training (``("train", "valid")`` retrains a chosen
    config on both). With ``validation_split`` None the configured epochs all run: no early
    stopping, no ``val_*`` metrics, and ``best_val_auc`` is NaN (``null`` in ``paths.metrics``).
    Checkpoints go to ``runtime.checkpoint_dir`` (default: :meth:`Runtime.from_env`).
    """
    cfg = params.train
    runtime = runtime or Runtime.from_env()
    checkpoint_dir = Path(runtime.checkpoint_dir)
    shards_dir = Path(paths.shards)
    train_splits = (train_splits,) if isinstance(train_splits, str) else tuple(train_splits)
    default_splits = train_splits == ("train",) and validation_split == "valid"
    splits = None if default_splits else {"train": list(train_splits), "valid": validation_split}
    settings = devices.resolve(cfg, len(tf.config.list_physical_devices("GPU")), runtime.cpu_replicas)
    strategy = devices.apply(settings, params.seed)
    plan = plan_augmentations(params.augment, settings.augment_on_device)

    for split in dict.fromkeys((*train_splits, *([validation_split] if validation_split else []))):
        shard_files(shards_dir, split)  # every shard's size and sha256, before a run or checkpoint starts
    state = CheckpointState(checkpoint_dir, fingerprint(params, shards_dir, splits))
    resumed_from = state.last_epoch
    experiment_id = tracking.configure(params.tracking.experiment)
    run = mlflow.start_run(run_id=state.data["run_id"]) if state.data["run_id"] else mlflow.start_run(
        run_name=f"{cfg.backbone}-{cfg.optimizer}-{cfg.head_activation}", parent_run_id=parent_run_id
    )
    with run:
        if state.data["run_id"] is None:
            state.data["run_id"] = run.info.run_id
            state.save()
            _log_run_inputs(params, shards_dir)
            if splits:
                mlflow.set_tags({"fakeface.train_splits": "+".join(train_splits),
                                 "fakeface.validation_split": validation_split or "none"})
        else:
            log.info("resuming MLflow run %s from epoch %d", run.info.run_id, resumed_from)
        with strategy.scope():
            classifier = build_classifier(cfg)
        model = classifier.model
        datasets = _datasets(params, shards_dir, classifier.image_size, train_splits, validation_split,
                             runtime, settings.augment_on_device)
        if plan.device is not None:
            with strategy.scope():
                model = AugmentingTrainer(classifier.model, plan.device)
        log.info("augmentations: %s (input: the CPU input pipeline; step: the training step)", plan.describe())
        steps = _steps_per_epoch(shards_dir, cfg.batch_size, train_splits)
        early_stopping = [
            keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=cfg.early_stopping_patience,
                restore_best_weights=True, verbose=0,
            )
        ] if validation_split else []
        callbacks = [
            *early_stopping,
            EpochMetricsToMlflow(),
            *(extra_callbacks or []),
        ]
        done = 0
        for phase, epochs, rate in (
            ("head", cfg.head_epochs, cfg.learning_rate),
            ("fine_tune", cfg.fine_tune_epochs, cfg.fine_tune_learning_rate),
        ):
            if epochs == 0:
                continue
            weights_file = checkpoint_dir / f"{phase}.weights.h5"
            if phase in state.data["phases_done"]:
                done += epochs
                continue
            if phase == "head":
                freeze_base(classifier.base)
            else:
                if (checkpoint_dir / "head.weights.h5").is_file():
                    classifier.model.load_weights(checkpoint_dir / "head.weights.h5")
                n = unfreeze_top(classifier.base, cfg.fine_tune_layers, freeze_batchnorm=pretrained(cfg))
                log.info(
                    "fine-tuning %d weighted layers of the base (BatchNorm %s)",
                    n, "frozen" if pretrained(cfg) else "training: weights are from scratch",
                )
            with strategy.scope():
                compile_model(model, cfg, rate, steps * epochs, settings.xla)
            # What this run really trains with, read back from Keras and TensorFlow (the params
            # may say "auto", and Keras overrules XLA under deterministic ops).
            effective = devices.effective_settings(model, plan.describe())
            mlflow.set_tags({**devices.settings_tags(effective), "fakeface.augment_on":
                             "device" if settings.augment_on_device else "cpu", "fakeface.cache": cfg.cache})
            log.info("phase %s: epochs %d..%d at lr %g", phase, done + 1, done + epochs, rate)
            model.fit(
                datasets["train"],
                validation_data=datasets.get("valid"),
                initial_epoch=done,
                epochs=done + epochs,
                shuffle=False,  # the dataset shuffles itself (seeded); Keras' flag cannot reach it
                # Every epoch is recorded (state, MLflow) before it is backed up, last: a kill
                # between the two reruns that epoch (overwriting its row; its metrics already in
                # the run are not logged twice) rather than leaving a gap in the history.
                callbacks=[
                    EpochRecorder(state, phase),
                    *callbacks,
                    # double_checkpoint: a kill while the weights file is being written leaves
                    # it unreadable; Keras then restores the previous epoch's copy instead.
                    keras.callbacks.BackupAndRestore(
                        str(checkpoint_dir / phase), double_checkpoint=True
                    ),
                ],
                verbose=2,
            )
            classifier.model.save_weights(weights_file)
            state.data["phases_done"].append(phase)
            state.save()
            done += epochs

        history = [state.data["epochs"][k] for k in sorted(state.data["epochs"], key=int)]
        best_val_auc = max((row.get("val_auc", float("nan")) for row in history), default=float("nan"))
        model_path = Path(paths.model)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        scoring_model(classifier.model, cfg.test_crops).save(model_path)
        _write_history(history, Path(paths.history))
        validated = not math.isnan(best_val_auc)
        summary = {"epochs": len(history), "best_val_auc": best_val_auc if validated else None,
                   "image_size": classifier.image_size}
        Path(paths.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(paths.metrics).write_text(json.dumps(summary, indent=2) + "\n")
        if validated:
            mlflow.log_metric("best_val_auc", best_val_auc)
        mlflow.log_artifact(str(paths.history), "train")
        tracking.write_run_info(paths.run_info, run.info.run_id, experiment_id)

    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("trained %d epochs, best val AUC %.4f, model at %s", len(history), best_val_auc, model_path)
    return TrainResult(run.info.run_id, len(history), best_val_auc, resumed_from, history)


def _datasets(
    params: Params,
    shards_dir: Path,
    image_size: int,
    train_splits: Sequence[str] = ("train",),
    validation_split: str | None = "valid",
    runtime: Runtime | None = None,
    augment_on_device: bool = False,
) -> dict[str, tf.data.Dataset]:
    cfg = params.train
    common = dict(image_size=image_size, batch_size=cfg.batch_size, one_hot=cfg.head_activation == "softmax")
    split: str | list[str] = "train" if tuple(train_splits) == ("train",) else list(train_splits)
    datasets = {
        "train": make_dataset(
            shards_dir, split, training=True, augment=params.augment, seed=params.seed,
            shuffle_buffer=cfg.shuffle_buffer, cache=cfg.cache,
            cache_dir=(runtime or Runtime()).cache_dir, augment_on_device=augment_on_device,
            window=cfg.crop_size, **common,
        ),
    }
    if validation_split:
        datasets["valid"] = make_dataset(shards_dir, validation_split, **common)
    return datasets


def _steps_per_epoch(shards_dir: Path, batch_size: int, splits: Sequence[str] = ("train",)) -> int:
    index = read_index(shards_dir)
    n = sum(int(index[name]["n"]) for name in splits)
    return -(-n // batch_size)


def _log_run_inputs(params: Params, shards_dir: Path) -> None:
    """Params, code and data versions: what makes two runs comparable in the MLflow UI."""
    tracking.log_run_params(params.flat())
    tags = {"fakeface.classes": ",".join(CLASS_NAMES), **tracking.data_version(shards_dir)}
    commit = tracking.git_commit()
    if commit:
        tags["git.commit"] = commit
    mlflow.set_tags(tags)
    index = read_index(shards_dir)
    mlflow.log_dict(index, "data/shards_index.json")
    # The shards as an MLflow dataset input: the UI shows which data (by digest) a run saw.
    # A local path matches two registered sources (for "" and "file" URIs, the same class made
    # twice) and MLflow warns that it "can be interpreted in multiple ways": name the first.
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    source = resolve_dataset_source(str(shards_dir.resolve()), candidate_sources=[local])
    # MLflow caps dataset digests at 36 characters; 32 hex digits still pin the data.
    digest = (tags.get("data.dvc_md5") or tags.get("data.shards_index_sha256", ""))[:32] or None
    dataset = MetaDataset(source=source, name="face-shards", digest=digest)
    try:
        mlflow.log_input(dataset, context="training")
    except MlflowException as error:
        # An ablation's workers start their trials at once, on the same data: the tracking
        # store's (experiment, name, digest) row may be inserted by another worker between
        # MLflow's check and its own insert. The row is there now, and a second try links it.
        if not any(word in str(error).lower() for word in ("unique constraint", "duplicate")):
            raise
        mlflow.log_input(dataset, context="training")


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
