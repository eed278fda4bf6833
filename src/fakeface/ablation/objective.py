"""One trial: train a configuration, measure it on the validation split, log it as a child run.

A trial trains with :func:`fakeface.stages.train.run` on the train split, in its own folder under the
runtime's ablation work folder (its checkpoints there too, through a :class:`Runtime` of its own;
the folder is removed after the trial). Its objective is measured on the **validation** split only
(``val_auc``, ``val_accuracy`` or ``val_loss`` of the model the trial trained): the test split is
never used to choose. Each epoch's validation metric is reported to Optuna, whose pruner may stop
the trial; a pruned trial's MLflow run ends ``KILLED`` with the tag ``optuna.state=PRUNED``.

A trial's child run carries the trial's tags from its creation (through MLflow's
``MLFLOW_RUN_CONTEXT``), and its id is in the trial's user attrs from its first epoch: if the
worker dies, whoever fails the trial finds the run and ends it FAILED
(:class:`~fakeface.ablation.study.RetryTrial`). The retry of a trial gets a run of its own, tagged
``optuna.retry_of``; it does not continue the dead one's run, whose epochs would then be logged
twice under the same steps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from fakeface import FakefaceError
from fakeface.ablation.folds import fold_shards
from fakeface.ablation.parent_run import parent_run
from fakeface.analysis.metrics import classification_table
from fakeface.ablation.space import CONFIG_PARAM, SPEC_ATTR, describe, suggest, trial_params
from fakeface.ablation.study import config_key, has_config
from fakeface.config import ConfigError, Params, parse_params
from fakeface.config.runtime import Runtime
from fakeface.stages.paths import TrainPaths

log = logging.getLogger(__name__)

#: The objective's metric, from the validation metrics of :func:`validation_metrics`.
OBJECTIVE_KEYS = {"val_auc": "auc", "val_accuracy": "accuracy", "val_loss": "loss"}


class ConfigurationTaken(FakefaceError):
    """Another worker started the same configuration at the same moment (this trial yields)."""


def pruning_callback(trial: optuna.Trial, monitor: str, tags: dict[str, str], report: bool = True) -> Any:
    """A Keras callback: reports ``monitor`` each epoch, raises ``TrialPruned`` when told to
    (``report`` False: a cross-validated trial, whose folds each count epochs from 1, is not
    pruned; the callback then only names and tags the fold's run).

    (``optuna_integration``'s Keras callbacks are not needed for this; the callback also captures
    the trial's MLflow run, opened by ``train.run``, and tags it.)
    """
    import keras
    import mlflow

    class OptunaPruning(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.run_id: str | None = None
            self.pruned_at: int | None = None

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            run = mlflow.active_run()
            if run is not None and self.run_id is None:
                self.run_id = run.info.run_id
                mlflow.set_tags(tags)
                trial.set_user_attr("mlflow_run_id", self.run_id)  # in the study before the trial ends

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None or not report:
                return
            step = epoch + 1  # train.run passes absolute epochs across its two phases
            trial.report(float(value), step)
            if trial.should_prune():
                self.pruned_at = step
                self.model.stop_training = True
                raise optuna.TrialPruned(f"pruned after epoch {step}: {monitor} {float(value):.4f}")

    return OptunaPruning()


def validation_metrics(model_path: str | Path, shards_dir: str | Path, params: Params) -> dict[str, Any]:
    """The seed's per-class table, AUC and log loss of a trained model on the VALIDATION split."""
    import keras
    import numpy as np
    from sklearn.metrics import log_loss

    from fakeface.analysis.metrics import compute_metrics, predict_split

    model = keras.models.load_model(model_path, compile=False)
    preds = predict_split(model, shards_dir, "valid", params.evaluate.batch_size)
    metrics = compute_metrics(preds.labels, preds.p_fake, params.evaluate.threshold)
    metrics["loss"] = float(log_loss(preds.labels, np.clip(preds.p_fake, 1e-7, 1 - 1e-7), labels=[0, 1]))
    metrics["split"] = "valid"
    return metrics


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    return float(metrics[OBJECTIVE_KEYS[objective]])


@contextmanager
def run_context(tags: dict[str, str]) -> Iterator[None]:
    """Every MLflow run created inside gets ``tags`` at its creation (``MLFLOW_RUN_CONTEXT``,
    read by MLflow's system-environment run context, added to what it held); ``mlflow.*`` tags
    stay MLflow's to set."""
    from mlflow.environment_variables import MLFLOW_RUN_CONTEXT

    name = MLFLOW_RUN_CONTEXT.name
    before = os.environ.get(name)
    try:
        held = json.loads(before) if before else {}
    except ValueError:
        held = {}
    os.environ[name] = json.dumps({**(held if isinstance(held, dict) else {}),
                                   **{k: v for k, v in tags.items() if not k.startswith("mlflow.")}})
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Objective:
    """The callable a worker hands ``study.optimize``: one call, one trial (see the module doc)."""

    def __init__(self, study: optuna.Study, shards_dir: str | Path, workdir: str | Path, worker_index: int) -> None:
        self.study_name = study.study_name
        self.spec = study.user_attrs[SPEC_ATTR]
        self.base = parse_params(self.spec["base"])
        self.shards_dir = Path(shards_dir)
        self.workdir = Path(workdir) / self.study_name
        self.worker_index = worker_index
        self.client, self.parent = parent_run(study)
        self.trials_run = 0

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, Any], str | None]:
        """The trial's factor values, and its configuration's name (one-at-a-time only)."""
        config = None
        if self.spec["sampler"] == "one-at-a-time":
            config = trial.suggest_categorical(CONFIG_PARAM, [c["name"] for c in self.spec["configs"]])
        overrides = {f["path"]: suggest(trial, f) for f in self.spec["factors"]}
        return overrides, config

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from fakeface.stages import train

        overrides, config = self.suggest(trial)
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        self._check_not_taken(trial, frozen)
        self.trials_run += 1
        retry_of = (frozen.system_attrs.get("retry_history") or [None])[-1]
        if retry_of is not None:
            # Optuna copies the failed trial's user attrs into its retry: not this attempt's.
            trial.set_user_attr("mlflow_run_id", None)
            trial.set_user_attr("error", None)
        factor = next((c["factor"] for c in self.spec["configs"] or [] if c["name"] == config), None)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", self.worker_index)
        if config is not None:
            trial.set_user_attr("config", config)
            trial.set_user_attr("factor", factor)
        trial_dir = self.workdir / f"trial-{trial.number:04d}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        try:
            params = trial_params(self.base, overrides)
        except ConfigError as error:
            trial.set_user_attr("error", str(error)[:2000])
            raise
        tags = {
            "mlflow.runName": f"trial-{trial.number:03d}" + (f" {config}" if config else ""),
            "mlflow.parentRunId": self.parent,
            "fakeface.stage": "ablate-trial",
            "optuna.study_name": self.study_name,
            "optuna.trial_number": str(trial.number),
            "optuna.state": "RUNNING",
            **({"ablation.config": config} if config else {}),
            **({"ablation.factor": factor} if factor else {}),
            **({"optuna.retry_of": str(retry_of)} if retry_of is not None else {}),
        }
        folds = int(self.spec.get("cv_folds") or 0)
        if folds >= 2:  # each fold's shards: valid = the fold, train = the rest (fakeface.ablation.folds)
            sources = [(shards, trial_dir / shards.name) for shards in fold_shards(
                self.shards_dir, self.workdir / "folds", folds, self.base.seed, self.base.augment.shard_size)]
        else:
            sources = [(self.shards_dir, trial_dir)]
        log.info("trial %d: %s", trial.number, config or describe(overrides))
        results, fold_metrics = [], []
        try:
            for index, (shards, folder) in enumerate(sources):
                fold_tags = {**tags, **({"ablation.fold": f"{index + 1}/{folds}",
                                         "mlflow.runName": f"{tags['mlflow.runName']} fold {index + 1}"}
                                        if folds >= 2 else {})}
                callback = pruning_callback(trial, self.spec["objective"], fold_tags, report=folds < 2)
                current = folder
                paths = TrainPaths(
                    shards=shards, model=folder / "model.keras", run_info=folder / "run.json",
                    history=folder / "history.csv", metrics=folder / "train.json",
                )
                keras.backend.clear_session()
                with run_context(fold_tags):
                    results.append(train.run(
                        params, paths, Runtime(checkpoint_dir=folder / "checkpoints"),
                        extra_callbacks=[callback], parent_run_id=self.parent,
                    ))
                fold_metrics.append(validation_metrics(paths.model, shards, params))
        except optuna.TrialPruned:
            trial.set_user_attr("pruned_at_epoch", callback.pruned_at)
            self._end_child(callback.run_id or _run_id_from(current), "PRUNED", "KILLED",
                            {**tags, "optuna.pruned_at_epoch": str(callback.pruned_at)}, trial)
            raise
        except BaseException as error:
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message[:2000])
            status = "FAILED" if isinstance(error, Exception) else "KILLED"  # Ctrl-C: killed
            # (tags too: a trial that failed before fitting never reached the callback)
            self._end_child(callback.run_id or _run_id_from(current), "FAIL", status,
                            {**tags, "optuna.error": message[:500]}, trial)
            raise
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)

        values = [objective_value(metrics, self.spec["objective"]) for metrics in fold_metrics]
        value = float(np.mean(values))
        metrics = fold_metrics[0]
        if folds >= 2:
            metrics = {**metrics, "cv": {"folds": values, "mean": value, "sd": float(np.std(values)),
                                         "min": min(values), "max": max(values)}}
            trial.set_user_attr("cv_folds", values)
        trial.set_user_attr("valid_metrics", metrics)
        trial.set_user_attr("mlflow_run_id", results[0].run_id)
        trial.set_user_attr("epochs", sum(result.epochs_run for result in results))
        for result, fold, fold_value in zip(results, fold_metrics, values):
            self._log_child(result.run_id, fold, fold_value)
        return value

    def _check_not_taken(self, trial: optuna.Trial, frozen: FrozenTrial) -> None:
        """Raise :class:`ConfigurationTaken` if an earlier trial runs, ran or waits with this
        trial's configuration: two workers that found the same last configuration left at the
        same moment (:func:`~fakeface.ablation.study.trials_to_start` is read before a trial
        starts, not with it). The later trial yields before training; it is recorded FAIL."""
        if self.spec["n_configs"] is None:
            return  # tpe: no configuration to repeat
        key = config_key(frozen, self.spec)
        alive = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.PRUNED)
        taken = [t.number for t in trial.study.get_trials(deepcopy=False, states=alive)
                 if t.number < trial.number and has_config(t) and config_key(t, self.spec) == key]
        if taken:
            message = f"configuration already taken by trial {taken[0]} (another worker started it first)"
            trial.set_user_attr("error", message)
            raise ConfigurationTaken(message)

    def _log_child(self, run_id: str, metrics: dict[str, Any], value: float) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        numbers = {"valid_accuracy": metrics["accuracy"], "valid_auc": metrics["auc"], "valid_loss": metrics["loss"],
                   "objective": value}
        for name in ("real", "fake"):
            numbers.update({f"valid_{name}_{k.replace('-score', '')}": metrics[name][k]
                            for k in ("precision", "recall", "f1-score")})
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()],
            tags=[RunTag("optuna.state", "COMPLETE"), RunTag("optuna.value", f"{value:.6g}")],
        )
        self.client.log_dict(run_id, metrics, "ablation/valid_metrics.json")
        self.client.log_text(run_id, _valid_caption(metrics) + classification_table(metrics), "ablation/valid_table.md")

    def _end_child(self, run_id: str | None, state: str, status: str, tags: dict[str, str],
                   trial: optuna.Trial | None = None) -> None:
        if not run_id:
            return
        if trial is not None:
            trial.set_user_attr("mlflow_run_id", run_id)
        from mlflow.entities import RunTag

        try:
            tags = {**tags, "optuna.state": state}
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            self.client.set_terminated(run_id, status=status)
        except Exception as error:  # noqa: BLE001 - bookkeeping must not hide the trial's own error
            log.warning("could not mark MLflow run %s %s: %s", run_id, state, error)


def _run_id_from(trial_dir: Path) -> str | None:
    """The run id train wrote into its checkpoint state (when it failed before fitting)."""
    state = trial_dir / "checkpoints" / "state.json"
    try:
        return json.loads(state.read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def _valid_caption(metrics: dict[str, Any]) -> str:
    return (f"Validation split ({metrics['n']} images, threshold {metrics['threshold']:g}); "
            "the test split is not used by the ablation.\n\n")
