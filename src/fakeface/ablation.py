"""``fakeface ablate``: ablation and tuning with Optuna; every trial a nested MLflow run.

A trial is the base params (``params.yaml`` plus ``ablation.fixed``) with one point of
``ablation.search_space`` applied at dotted param paths (``train.optimizer``,
``augment.flip.enabled``, ...), validated by :func:`fakeface.config.parse_params` and trained by
:func:`fakeface.train.train` on the train split. Its objective is measured on the **validation**
split only (``val_auc``, ``val_accuracy`` or ``val_loss``, of the model the trial trained); the
test split is never used to choose.

Samplers (``ablation.sampler``):

``one-at-a-time``
    The seed project's tables: the base config, then each factor's other values alone.
    A :class:`OneAtATimeSampler` (Optuna's ``GridSampler`` over the configuration names).
``grid``
    Every combination (``optuna.samplers.GridSampler``).
``tpe``
    ``optuna.samplers.TPESampler`` (seeded; ranges are sampled, categorical factors chosen).

The study lives in an Optuna RDB storage (SQLite by default; a PostgreSQL/MySQL URL lets workers
on several machines share it). Workers, in one process or several (``--workers``), each call
``study.optimize`` on the shared storage; the grid-style samplers hand each trial a configuration
no other trial has started, so workers never repeat one another, and a study that is run again
(after a kill, or with a larger ``--n-trials``) runs only what is missing. A worker that dies
mid-trial stops beating its heartbeat, and the first worker to start a trial after the grace
period marks the orphan failed and queues it again (``RetryHeartbeatStaleTrialCallback``);
:func:`prepare_study` queues failed trials again too, up to ``ablation.max_retry`` times.

MLflow: one parent run per study (tagged ``fakeface.stage=ablate``) holds the search space, then
the best trial's params (tags ``best.*`` and ``best_params.yaml``), the parameter importances
(metrics ``importance.*``), the optimisation-history plot and the report. Each trial is a child
run (``mlflow.parentRunId``) with the trial's params, per-epoch curves and validation metrics; a
pruned trial ends ``KILLED`` with the tag ``optuna.state=PRUNED``.

For Kubeflow: :func:`prepare_study` once, then :func:`run_worker` in parallel, then
:func:`finalize_study` and :func:`best_params` (a :class:`Params` to retrain on train + valid).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fakeface import FakefaceError
from fakeface.config import ConfigError, Params, PrunerConfig, RangeSpec, parse_params

log = logging.getLogger(__name__)

#: The one-at-a-time sampler's own parameter: the name of the configuration a trial runs.
CONFIG_PARAM = "ablation.config"
#: Environment variable for the storage URL (an RDB URL may hold a password: keep it out of params).
STORAGE_ENV = "FAKEFACE_ABLATION_STORAGE"
SPEC_ATTR = "fakeface.spec"
MLFLOW_ATTR = "fakeface.mlflow"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SPEC_VERSION = 1


# --------------------------------------------------------------------------- search space


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a params tree with ``{"train.optimizer": "adam", ...}`` set in it."""
    tree = copy.deepcopy(tree)
    for path, value in overrides.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def base_params(params: Params) -> Params:
    """The params every trial starts from: ``params.yaml`` with ``ablation.fixed`` applied."""
    return parse_params(
        apply_overrides(params.model_dump(mode="json"), params.ablation.fixed), "ablation.fixed"
    )


def same_value(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_spec(params: Params, shards_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything a worker needs to run the study, JSON-safe (stored in the study's user attrs).

    Raises :class:`ConfigError` naming every configuration that params validation refuses, before
    anything trains.
    """
    cfg = params.ablation
    base = base_params(params)
    base_flat = base.flat()
    factors: list[dict[str, Any]] = []
    for path, space in cfg.search_space.items():
        current = base_flat[path]
        if isinstance(space, RangeSpec):
            factor = {
                "path": path, "kind": "range", "low": space.low, "high": space.high, "log": space.log,
                "step": space.step, "int": space.is_int, "values": list(space.values),
            }
            if cfg.sampler != "tpe" and not space.values:
                raise ConfigError(
                    f"ablation.search_space.{path}: the {cfg.sampler} sampler tries `values`; give some"
                )
            if cfg.sampler == "one-at-a-time" and isinstance(current, (int, float)):
                # The base point must lie in the distribution every trial suggests from.
                factor["low"], factor["high"] = min(space.low, current), max(space.high, current)
        else:
            choices = list(space)
            if cfg.sampler == "one-at-a-time" and not any(same_value(current, c) for c in choices):
                choices.append(current)
            factor = {"path": path, "kind": "categorical", "choices": choices, "values": list(choices)}
        factors.append(factor)

    configs: list[dict[str, Any]] | None = None
    n_configs: int | None = None
    if cfg.sampler == "one-at-a-time":
        at_base = {f["path"]: base_flat[f["path"]] for f in factors}
        configs = [{"name": "base", "factor": None, "overrides": at_base}]
        for f in factors:
            for value in f["values"]:
                if not same_value(value, at_base[f["path"]]):
                    configs.append({
                        "name": f"{f['path']}={format_value(value)}", "factor": f["path"],
                        "overrides": {**at_base, f["path"]: value},
                    })
        candidates = [c["overrides"] for c in configs]
        n_configs = len(configs)
    elif cfg.sampler == "grid":
        paths = [f["path"] for f in factors]
        candidates = [dict(zip(paths, combo)) for combo in itertools.product(*(f["values"] for f in factors))]
        n_configs = len(candidates)
    else:
        candidates = []
        if cfg.n_trials is None:
            raise ConfigError("ablation.n_trials: the tpe sampler needs a number of trials")
    errors = []
    for overrides in candidates:
        try:
            trial_params(base, overrides)
        except ConfigError as error:
            errors.append(f"{_describe(overrides)}:\n    " + str(error).split("\n", 1)[-1].strip())
    if errors:
        raise ConfigError(
            f"ablation: {len(errors)} of {len(candidates)} configuration(s) are invalid params:\n  "
            + "\n  ".join(errors)
        )

    key_payload = {
        "version": SPEC_VERSION,
        "sampler": cfg.sampler,
        "objective": cfg.objective,
        "factors": factors,
        "seed": base.seed,
        "augment": base.augment.model_dump(mode="json", exclude={"shard_size", "preview_images"}),
        "train": base.train.model_dump(mode="json", exclude={"checkpoint_dir"}),
        "threshold": base.evaluate.threshold,
        "data": _data_digest(shards_dir),
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "version": SPEC_VERSION,
        "key": key,
        "sampler": cfg.sampler,
        "objective": cfg.objective,
        "direction": cfg.direction,
        "seed": base.seed,
        "factors": factors,
        "configs": configs,
        "n_configs": n_configs,
        "base": base.model_dump(mode="json"),
        "fixed": dict(cfg.fixed),
        "experiment": params.tracking.experiment,
    }


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items())


def _data_digest(shards_dir: str | Path | None) -> str | None:
    if shards_dir is None:
        return None
    index = Path(shards_dir) / "index.json"
    return hashlib.sha256(index.read_bytes()).hexdigest() if index.is_file() else None


def trial_params(base: Params, overrides: dict[str, Any]) -> Params:
    """One trial's params: ``base`` with the trial's factor values, validated."""
    return parse_params(apply_overrides(base.model_dump(mode="json"), overrides), "ablation trial")


def default_study_name(spec: dict[str, Any]) -> str:
    """Derived from the search space, the base params and the data: change any, get a new study."""
    return f"ablation-{spec['sampler']}-{spec['key'][:10]}"


def _suggest(trial: optuna.Trial, factor: dict[str, Any]) -> Any:
    path = factor["path"]
    if factor["kind"] == "categorical":
        return trial.suggest_categorical(path, factor["choices"])
    if factor["int"]:
        return trial.suggest_int(
            path, int(factor["low"]), int(factor["high"]), step=int(factor["step"] or 1), log=factor["log"]
        )
    return trial.suggest_float(path, float(factor["low"]), float(factor["high"]), step=factor["step"], log=factor["log"])


# --------------------------------------------------------------------------- optuna pieces


class OneAtATimeSampler(optuna.samplers.GridSampler):
    """The seed's ablation: the base config, then each factor's other values alone.

    Optuna's ``GridSampler`` over one categorical parameter, :data:`CONFIG_PARAM` (the
    configuration's name, e.g. ``train.optimizer=adam``), so the grid sampler's guarantees hold
    (no two trials of the study start the same configuration while another is unstarted, the
    study stops when every configuration has run, a resumed study runs only the missing ones);
    every factor is then suggested with its full distribution and answered from that
    configuration, so ``trial.params`` holds the factors like any other sampler's trials.
    """

    def __init__(self, configs: list[dict[str, Any]], seed: int | None = None) -> None:
        super().__init__({CONFIG_PARAM: [c["name"] for c in configs]}, seed=seed)
        self._overrides = {c["name"]: c["overrides"] for c in configs}

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001
        if param_name == CONFIG_PARAM:
            return super().sample_independent(study, trial, param_name, param_distribution)
        name = trial.params.get(CONFIG_PARAM)
        if name is None:
            raise RuntimeError(f"suggest {CONFIG_PARAM!r} before the factors")
        return self._overrides[name][param_name]


def make_sampler(spec: dict[str, Any], worker_index: int = 0) -> optuna.samplers.BaseSampler:
    seed = int(spec["seed"])
    if spec["sampler"] == "one-at-a-time":
        return OneAtATimeSampler(spec["configs"], seed=seed)  # same seed in every worker: same grid
    if spec["sampler"] == "grid":
        return optuna.samplers.GridSampler({f["path"]: f["values"] for f in spec["factors"]}, seed=seed)
    # Workers must not draw the same start-up points; constant_liar keeps parallel TPE apart.
    return optuna.samplers.TPESampler(seed=seed + worker_index, constant_liar=True)


def make_pruner(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource, max_resource="auto", reduction_factor=cfg.reduction_factor
        )
    return optuna.pruners.NopPruner()


def resolve_storage(params: Params | None = None, storage: str | None = None) -> str:
    """``storage`` if given, else ``$FAKEFACE_ABLATION_STORAGE``, else ``ablation.storage``."""
    url = storage or os.environ.get(STORAGE_ENV) or (params.ablation.storage if params else None)
    if not url:
        raise ConfigError(f"no Optuna storage: pass --storage or set {STORAGE_ENV}")
    return url


def open_storage(url: str, heartbeat_interval: int | None = None, max_retry: int = 2) -> optuna.storages.RDBStorage:
    """An RDB storage; with a heartbeat, a dead worker's running trial is failed and queued again."""
    sqlite = url.startswith("sqlite:")
    if sqlite:
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    # SQLite serialises writers; wait for the lock instead of failing a worker.
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": 2 * heartbeat_interval,
            "heartbeat_stale_trial_callback": _retry_callback(max_retry),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def _retry_callback(max_retry: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def load_study(storage: str, study_name: str, params: Params | None = None, worker_index: int = 0) -> optuna.Study:
    """The stored study, with the sampler and pruner its spec and ``params`` call for."""
    cfg = params.ablation if params else None
    handle = open_storage(storage, cfg.heartbeat_interval if cfg else None, cfg.max_retry if cfg else 0)
    try:
        study = optuna.load_study(study_name=study_name, storage=handle)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(handle)]
        raise FakefaceError(
            f"no study {study_name!r} in {_redact(storage)}; it holds: {', '.join(names) or 'none'}"
        ) from None
    spec = study.user_attrs.get(SPEC_ATTR)
    if spec is None:
        raise FakefaceError(f"study {study_name!r} was not made by fakeface ablate (no {SPEC_ATTR})")
    sampler = make_sampler(spec, worker_index)
    pruner = make_pruner(cfg.pruner) if cfg else optuna.pruners.NopPruner()
    return optuna.load_study(study_name=study_name, storage=handle, sampler=sampler, pruner=pruner)


def _redact(url: str) -> str:
    from fakeface.tracking import redact

    return redact(url)


# --------------------------------------------------------------------------- study set-up


def prepare_study(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    *,
    retry_failed: bool = True,
) -> str:
    """Create (or reopen) the study and its MLflow parent run; returns the study name.

    Call it once per launch (it queues failed trials again); workers then call
    :func:`run_worker` in parallel.
    """
    url = resolve_storage(params, storage)
    study = _ensure_study(params, shards_dir, url, study_name)
    client, parent = _mlflow_parent(study)
    if client.get_run(parent).info.status != "RUNNING":
        client.update_run(parent, status="RUNNING")
    if retry_failed:
        _requeue_failed(study, params.ablation.max_retry)
    return study.study_name


def _ensure_study(params: Params, shards_dir: str | Path, url: str, study_name: str | None) -> optuna.Study:
    """Create the study, or wait for whoever created it to finish setting it up; check its spec."""
    spec = build_spec(params, shards_dir)
    name = study_name or params.ablation.study_name or default_study_name(spec)
    handle = open_storage(url, params.ablation.heartbeat_interval, params.ablation.max_retry)
    try:
        study = optuna.create_study(study_name=name, storage=handle, direction=spec["direction"])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=handle)
        deadline = time.monotonic() + 120
        while MLFLOW_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # whoever created the study is still setting it up
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            raise FakefaceError(f"study {name!r} in {_redact(url)} was not made by fakeface ablate")
        if stored.get("key") != spec["key"]:
            raise ConfigError(
                f"study {name!r} was made with other ablation settings, base params or data; "
                "pick another study name (or leave ablation.study_name null: one is derived)"
            )
        if MLFLOW_ATTR in study.user_attrs:
            log.info("resuming study %r in %s", name, _redact(url))
            return study
        # The creator died before making the parent run: make it here.
    else:
        study.set_user_attr(SPEC_ATTR, spec)
        log.info("created study %r in %s (%s sampler)", name, _redact(url), spec["sampler"])
    study.set_user_attr(MLFLOW_ATTR, _create_parent_run(study, params, url, spec))
    return study


def _create_parent_run(study: optuna.Study, params: Params, url: str, spec: dict[str, Any]) -> dict[str, str]:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    experiment_id = tracking.configure(params.tracking.experiment)
    commit = tracking.git_commit()
    client = MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=study.study_name,
        tags={
            "fakeface.stage": "ablate",
            "optuna.study_name": study.study_name,
            "optuna.storage": _redact(url),
            "optuna.sampler": spec["sampler"],
            "optuna.objective": f"{spec['objective']} ({spec['direction']})",
            **({"git.commit": commit} if commit else {}),
        },
    )
    values: dict[str, Any] = {
        "ablation.sampler": spec["sampler"],
        "ablation.objective": spec["objective"],
        "ablation.direction": spec["direction"],
        "ablation.n_configs": spec["n_configs"],
        **{f"ablation.space.{f['path']}": _space_text(f) for f in spec["factors"]},
        **{f"ablation.fixed.{k}": v for k, v in spec["fixed"].items()},
        **{k: v for k, v in parse_params(spec["base"]).flat().items() if k.split(".")[0] in ("seed", "augment", "train")},
    }
    items = [Param(k, "null" if v is None else str(v)[:6000]) for k, v in sorted(values.items())]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return {"parent_run_id": run.info.run_id, "experiment_id": experiment_id}


def _space_text(factor: dict[str, Any]) -> str:
    if factor["kind"] == "categorical":
        return json.dumps(factor["choices"])
    text = f"[{factor['low']}, {factor['high']}]{' log' if factor['log'] else ''}"
    return text + (f" values {factor['values']}" if factor["values"] else "")


def _mlflow_parent(study: optuna.Study) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    info = study.user_attrs[MLFLOW_ATTR]
    tracking.configure(study.user_attrs[SPEC_ATTR]["experiment"])
    return MlflowClient(), info["parent_run_id"]


def _config_key(trial: FrozenTrial, spec: dict[str, Any]) -> str:
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    if spec["sampler"] == "one-at-a-time":
        return str(params.get(CONFIG_PARAM))
    return json.dumps({f["path"]: params.get(f["path"]) for f in spec["factors"]}, sort_keys=True, default=str)


def _requeue_failed(study: optuna.Study, max_retry: int) -> int:
    """Queue every failed configuration again (once), unless it ran since or is queued."""
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    covered = {
        _config_key(t, spec)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
    }
    retry = _retry_callback(max_retry)
    queued = 0
    for trial in sorted((t for t in trials if t.state == TrialState.FAIL), key=lambda t: -t.number):
        key = _config_key(trial, spec)
        if key in covered or not trial.params:
            continue
        covered.add(key)
        before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        retry(study, trial)  # a WAITING copy (same params and grid id) unless retried max_retry times
        if len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) > before:
            queued += 1
            log.info("queued failed trial %d (%s) again", trial.number, key)
    return queued


def study_target(spec: dict[str, Any], n_trials: int | None) -> int:
    """Finished trials the study should reach: every configuration (capped), or ``n_trials``."""
    if spec["n_configs"] is not None:
        return min(n_trials or spec["n_configs"], spec["n_configs"])
    if n_trials is None:
        raise ConfigError("ablation.n_trials: the tpe sampler needs a number of trials")
    return n_trials


def n_finished(study: optuna.Study) -> int:
    """Finished (complete or pruned) trials; for the grid-style samplers, distinct configurations
    that finished or failed with no retry queued (given up after ``max_retry``)."""
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in FINISHED_STATES]
    if spec["n_configs"] is None:
        return len(done)
    pending = {_config_key(t, spec) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    given_up = {_config_key(t, spec) for t in trials if t.state == TrialState.FAIL and t.params} - pending
    return len({_config_key(t, spec) for t in done} | given_up)


# --------------------------------------------------------------------------- the trial


def _pruning_callback(trial: optuna.Trial, monitor: str, tags: dict[str, str]) -> Any:
    """A Keras callback: reports ``monitor`` each epoch, raises ``TrialPruned`` when told to.

    (``optuna_integration``'s Keras callbacks are not needed for this; the callback also captures
    the trial's MLflow run, opened by ``train``, and tags it.)
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

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None:
                return
            step = epoch + 1  # train() passes absolute epochs across its two phases
            trial.report(float(value), step)
            if trial.should_prune():
                self.pruned_at = step
                self.model.stop_training = True
                raise optuna.TrialPruned(f"pruned after epoch {step}: {monitor} {float(value):.4f}")

    return OptunaPruning()


class _Objective:
    """Train one configuration, measure it on the validation split, log it as a child run."""

    def __init__(self, study: optuna.Study, shards_dir: str | Path, workdir: str | Path, worker_index: int) -> None:
        self.study_name = study.study_name
        self.spec = study.user_attrs[SPEC_ATTR]
        self.base = parse_params(self.spec["base"])
        self.shards_dir = Path(shards_dir)
        self.workdir = Path(workdir) / self.study_name
        self.worker_index = worker_index
        self.client, self.parent = _mlflow_parent(study)
        self.trials_run = 0

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, Any], str | None]:
        config = None
        if self.spec["sampler"] == "one-at-a-time":
            config = trial.suggest_categorical(CONFIG_PARAM, [c["name"] for c in self.spec["configs"]])
        overrides = {f["path"]: _suggest(trial, f) for f in self.spec["factors"]}
        return overrides, config

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from fakeface.train import train

        self.trials_run += 1
        overrides, config = self.suggest(trial)
        factor = next((c["factor"] for c in self.spec["configs"] or [] if c["name"] == config), None)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", self.worker_index)
        if config is not None:
            trial.set_user_attr("config", config)
            trial.set_user_attr("factor", factor)
        trial_dir = self.workdir / f"trial-{trial.number:04d}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        try:
            params = trial_params(self.base, {**overrides, "train.checkpoint_dir": str(trial_dir / "checkpoints")})
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
        }
        callback = _pruning_callback(trial, self.spec["objective"], tags)
        kwargs: dict[str, Any] = {"extra_callbacks": [callback], "parent_run_id": self.parent}
        keras.backend.clear_session()
        log.info("trial %d: %s", trial.number, config or _describe(overrides))
        try:
            result = train(
                params, self.shards_dir, trial_dir / "model.keras", trial_dir / "run.json",
                trial_dir / "history.csv", trial_dir / "train.json", **kwargs,
            )
            metrics = validation_metrics(trial_dir / "model.keras", self.shards_dir, params)
        except optuna.TrialPruned:
            trial.set_user_attr("pruned_at_epoch", callback.pruned_at)
            self._end_child(callback.run_id or _run_id_from(trial_dir), "PRUNED", "KILLED",
                            {**tags, "optuna.pruned_at_epoch": str(callback.pruned_at)}, trial)
            raise
        except BaseException as error:
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message[:2000])
            status = "FAILED" if isinstance(error, Exception) else "KILLED"  # Ctrl-C: killed
            # (tags too: a trial that failed before fitting never reached the callback)
            self._end_child(callback.run_id or _run_id_from(trial_dir), "FAIL", status,
                            {**tags, "optuna.error": message[:500]}, trial)
            raise
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)

        value = objective_value(metrics, self.spec["objective"])
        trial.set_user_attr("valid_metrics", metrics)
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("epochs", result.epochs_run)
        self._log_child(result.run_id, metrics, value)
        return value

    def _log_child(self, run_id: str, metrics: dict[str, Any], value: float) -> None:
        from mlflow.entities import Metric, RunTag

        from fakeface.ablation_report import classification_table

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


def validation_metrics(model_path: str | Path, shards_dir: str | Path, params: Params) -> dict[str, Any]:
    """The seed's per-class table, AUC and log loss of a trained model on the VALIDATION split."""
    import keras
    import numpy as np
    from sklearn.metrics import log_loss

    from fakeface.evaluate import compute_metrics, predict_split

    model = keras.models.load_model(model_path, compile=False)
    preds = predict_split(model, shards_dir, "valid", params.evaluate.batch_size)
    metrics = compute_metrics(preds.labels, preds.p_fake, params.evaluate.threshold)
    metrics["loss"] = float(log_loss(preds.labels, np.clip(preds.p_fake, 1e-7, 1 - 1e-7), labels=[0, 1]))
    metrics["split"] = "valid"
    return metrics


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    return float({"val_auc": metrics["auc"], "val_accuracy": metrics["accuracy"], "val_loss": metrics["loss"]}[objective])


# --------------------------------------------------------------------------- workers


def run_worker(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    *,
    worker_index: int = 0,
) -> int:
    """Run up to ``n_trials`` trials of the shared study (None: until the study's target).

    Safe to call from several processes or machines at once on one storage; creates the study if
    nobody has. Returns the number of trials this worker ran.
    """
    url = resolve_storage(params, storage)
    name = _ensure_study(params, shards_dir, url, study_name).study_name
    study = load_study(url, name, params, worker_index)
    spec = study.user_attrs[SPEC_ATTR]
    if n_trials is None:
        n_trials = max(0, study_target(spec, params.ablation.n_trials) - n_finished(study))
    if n_trials <= 0:
        log.info("study %r: nothing left to run", name)
        return 0
    objective = _Objective(study, shards_dir, params.ablation.workdir, worker_index)
    # A configuration that fails (out of memory, invalid) is recorded FAIL; the study goes on.
    study.optimize(objective, n_trials=n_trials, catch=(Exception,), gc_after_trial=True)
    return objective.trials_run


def _worker_process(params_dump: dict[str, Any], shards_dir: str, storage: str, study_name: str,
                    n_trials: int, worker_index: int, threads: int | None) -> None:
    """Entry point of a spawned worker process."""
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # share the GPU with the others
    from fakeface.logs import setup_logging

    setup_logging(None)
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    run_worker(parse_params(params_dump), shards_dir, storage, study_name, n_trials, worker_index=worker_index)


def split_trials(n: int, workers: int) -> list[int]:
    """``n`` trials over at most ``workers`` workers, as even as possible, no empty shares."""
    workers = max(1, min(workers, n))
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)] if n > 0 else []


def run_study(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
) -> dict[str, Any]:
    """``fakeface ablate``: prepare, run the missing trials on ``workers`` processes, finalize."""
    url = resolve_storage(params, storage)
    name = prepare_study(params, shards_dir, url, study_name)
    study = load_study(url, name, params)
    spec = study.user_attrs[SPEC_ATTR]
    target = study_target(spec, n_trials if n_trials is not None else params.ablation.n_trials)
    remaining = max(0, target - n_finished(study))
    shares = split_trials(remaining, workers or params.ablation.workers)
    log.info("study %r: %d of %d trials finished, %d to run on %d worker(s)",
             name, target - remaining, target, remaining, len(shares))
    started = time.monotonic()
    if len(shares) == 1:
        run_worker(params, shards_dir, url, name, shares[0])
    elif shares:
        _run_processes(params, shards_dir, url, name, shares)
    if shares:
        log.info("ran %d trial(s) in %.1f s", remaining, time.monotonic() - started)
    summary = finalize_study(url, name, out_dir, metrics_path)
    if summary["n_complete"] == 0:
        raise FakefaceError(f"study {name!r}: no trial completed ({summary['n_failed']} failed); see the log")
    return summary


def _run_processes(params: Params, shards_dir: str | Path, url: str, name: str, shares: list[int]) -> None:
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    gpus = _visible_gpus()
    threads = None if gpus else max(1, (os.cpu_count() or 1) // len(shares))
    processes = [
        context.Process(
            target=_worker_process,
            args=(params.model_dump(mode="json"), str(shards_dir), url, name, share, index, threads),
            name=f"ablation-worker-{index}",
        )
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise FakefaceError(f"worker(s) {', '.join(failed)} exited with an error; rerun to resume the study")


def _visible_gpus() -> bool:
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None and devices.strip() in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None


# --------------------------------------------------------------------------- results


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def best_params(storage: str, study_name: str) -> Params:
    """The best trial's full params (base + ``ablation.fixed`` + its factor values), validated."""
    study = load_study(storage, study_name)
    best = best_trial(study)
    if best is None:
        raise FakefaceError(f"study {study_name!r} has no completed trial yet")
    spec = study.user_attrs[SPEC_ATTR]
    return trial_params(parse_params(spec["base"]), best.user_attrs["overrides"])


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances over the factors; empty with fewer than 2 complete trials."""
    spec = study.user_attrs[SPEC_ATTR]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    paths = [f["path"] for f in spec["factors"]
             if len({json.dumps(t.params.get(f["path"]), default=str) for t in complete}) > 1]
    if len(complete) < 2 or not paths:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study, params=paths).items()}
    except (RuntimeError, ValueError, ZeroDivisionError) as error:
        log.warning("parameter importances unavailable: %s", error)
        return {}


def finalize_study(
    storage: str,
    study_name: str,
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the report and put the best params, importances and plots on the parent run."""
    import tempfile

    from mlflow.entities import Metric, RunTag

    from fakeface.ablation_report import write_report

    study = load_study(storage, study_name)
    client, parent = _mlflow_parent(study)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir) if out_dir else Path(tmp)
        summary = write_report(study, folder)
        now = int(time.time() * 1000)
        numbers = {f"n_{k}": summary[f"n_{k}"] for k in ("complete", "pruned", "failed")}
        if summary["best"] is not None:
            numbers["best_value"] = summary["best"]["value"]
            numbers["best_trial"] = summary["best"]["number"]
        numbers.update({f"importance.{k}": v for k, v in summary["importances"].items()})
        tags = [RunTag(f"best.{k}", str(v)) for k, v in (summary["best"] or {}).get("overrides", {}).items()]
        client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()], tags=tags)
        client.log_artifacts(parent, str(folder), "ablation")
        client.set_terminated(parent, status="FINISHED")
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
