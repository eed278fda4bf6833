"""The Optuna study: its storage, sampler and pruner; creating, reopening and reading it.

The study lives in an Optuna RDB storage (SQLite by default; a PostgreSQL/MySQL URL lets workers on
several machines share it). The storage URL is a runtime setting, not a param
(:class:`fakeface.config.runtime.Runtime`): it may hold a password, and it says where the study is kept,
not what it studies. A bare ``postgresql://`` URL (as a Kubernetes Secret holds it) gets the
driver that is installed (the image has psycopg2; SQLAlchemy 2.1 would pick psycopg 3).

Samplers (``ablation.sampler``): ``one-at-a-time`` (:class:`OneAtATimeSampler`, the seed's
tables), ``grid`` (every combination) and ``tpe`` (seeded, per worker). The grid-style samplers
hand each trial a configuration no other trial has started, so parallel workers never repeat one
another and a study run again (after a kill, or with a larger ``n_trials``) runs only what is
missing. A worker that dies mid-trial (killed, out of memory, its node gone) stops beating its
heartbeat (``ablation.heartbeat_interval`` seconds; Optuna's grace period is twice that): the
next worker to look (:func:`fail_stale_trials`, before each trial and while a worker waits)
marks the trial failed, ends its MLflow run FAILED, and queues its configuration again
(:class:`RetryTrial`); :func:`prepare_study` queues failed trials again too, up to
``ablation.max_retry`` times. :func:`trials_to_start` keeps workers from starting a
configuration twice.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fakeface import FakefaceError
from fakeface.ablation.parent_run import create_parent_run, end_trial_run, reopen_parent_run
from fakeface.ablation.space import (
    CONFIG_PARAM,
    MLFLOW_ATTR,
    SPEC_ATTR,
    build_spec,
    default_study_name,
    trial_params,
)
from fakeface.config import ConfigError, Params, PrunerConfig, parse_params
from fakeface.tracking.redact import redact
from fakeface.config.runtime import Runtime

log = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


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


# --------------------------------------------------------------------------- storage


def resolve_storage(storage: str | None = None) -> str:
    """``storage`` if given, else ``$FAKEFACE_ABLATION_STORAGE``, else the :class:`Runtime` default."""
    return Runtime.from_env(ablation_storage=storage).ablation_storage


def driver_url(url: str) -> str:
    """``url`` with the PostgreSQL driver that is installed named in it (other URLs unchanged)."""
    if not url.startswith("postgres"):
        return url
    from fakeface.stack.mlflow_server import postgres_driver_uri

    return postgres_driver_uri(url)


def open_storage(url: str, heartbeat_interval: int | None = None, max_retry: int = 2) -> optuna.storages.RDBStorage:
    """An RDB storage; with a heartbeat, a dead worker's running trial is failed and queued again.

    The grace period is Optuna's advice, twice the interval: a live worker whose heartbeat thread
    is delayed once (a busy machine) is not taken for dead.
    """
    url = driver_url(url)
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
            "heartbeat_stale_trial_callback": RetryTrial(
                max_retry, f"lost its worker: no heartbeat for {2 * heartbeat_interval} s "
                "(killed, out of memory, or its machine gone)"),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


class RetryTrial:
    """Queue a failed trial's configuration again, and end its MLflow run.

    Optuna's ``RetryHeartbeatStaleTrialCallback`` makes the retry: a WAITING trial with the same
    params (and grid id), whose system attrs ``failed_trial`` / ``retry_history`` name the trial
    it retries, unless that configuration was retried ``max_retry`` times already. Then the failed
    trial's child run is ended FAILED if its worker left it RUNNING, and tagged with the retry
    (:func:`~fakeface.ablation.parent_run.end_trial_run`), so MLflow holds one run per trial and
    never a dead one that looks alive. The storage calls this for a trial whose worker stopped
    beating its heartbeat; :func:`requeue_failed` for one that failed with an error.
    """

    def __init__(self, max_retry: int, reason: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.reason = reason

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> int | None:
        """Returns the retry's trial number, or None when the configuration is given up."""
        self._retry(study, trial)
        retry = next((t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                      if t.system_attrs.get("retry_history", [])[-1:] == [trial.number]), None)
        log.warning("trial %d %s; %s", trial.number, self.reason,
                    f"queued again as trial {retry}" if retry is not None else "not retried (max_retry)")
        end_trial_run(study, trial.number, self.reason, retry)
        return retry


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and retry, :class:`RetryTrial`) the running trials whose heartbeat stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# --------------------------------------------------------------------------- the study


def load_study(storage: str, study_name: str, params: Params | None = None, worker_index: int = 0) -> optuna.Study:
    """The stored study, with the sampler its spec and the pruner ``params`` call for."""
    cfg = params.ablation if params else None
    handle = open_storage(storage, cfg.heartbeat_interval if cfg else None, cfg.max_retry if cfg else 0)
    try:
        study = optuna.load_study(study_name=study_name, storage=handle)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(handle)]
        raise FakefaceError(
            f"no study {study_name!r} in {redact(storage)}; it holds: {', '.join(names) or 'none'}"
        ) from None
    spec = study.user_attrs.get(SPEC_ATTR)
    if spec is None:
        raise FakefaceError(f"study {study_name!r} was not made by fakeface ablate (no {SPEC_ATTR})")
    sampler = make_sampler(spec, worker_index)
    pruner = make_pruner(cfg.pruner) if cfg else optuna.pruners.NopPruner()
    return optuna.load_study(study_name=study_name, storage=handle, sampler=sampler, pruner=pruner)


def ensure_study(params: Params, shards_dir: str | Path, storage: str, study_name: str | None = None) -> optuna.Study:
    """Create the study, or wait for whoever created it to finish setting it up; check its spec.

    Safe from several workers at once: one creates it, the others find it.
    """
    spec = build_spec(params, shards_dir)
    name = study_name or params.ablation.study_name or default_study_name(spec)
    handle = open_storage(storage, params.ablation.heartbeat_interval, params.ablation.max_retry)
    try:
        study = optuna.create_study(study_name=name, storage=handle, direction=spec["direction"])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=handle)
        deadline = time.monotonic() + 120
        while MLFLOW_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # whoever created the study is still setting it up
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            raise FakefaceError(f"study {name!r} in {redact(storage)} was not made by fakeface ablate")
        if stored.get("key") != spec["key"]:
            raise ConfigError(
                f"study {name!r} was made with other ablation settings, base params or data; "
                "pick another study name (or leave ablation.study_name null: one is derived)"
            )
        if MLFLOW_ATTR in study.user_attrs:
            log.info("resuming study %r in %s", name, redact(storage))
            return study
        # The creator died before making the parent run: make it here.
    else:
        study.set_user_attr(SPEC_ATTR, spec)
        log.info("created study %r in %s (%s sampler)", name, redact(storage), spec["sampler"])
    study.set_user_attr(MLFLOW_ATTR, create_parent_run(study, storage, spec))
    return study


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
    :func:`fakeface.ablation.workers.run_worker` in parallel.
    """
    study = ensure_study(params, shards_dir, resolve_storage(storage), study_name)
    reopen_parent_run(study)
    if retry_failed:
        requeue_failed(study, params.ablation.max_retry)
    return study.study_name


def config_key(trial: FrozenTrial, spec: dict[str, Any]) -> str:
    """What identifies a trial's configuration (the grid-style samplers run each once)."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    if spec["sampler"] == "one-at-a-time":
        return str(params.get(CONFIG_PARAM))
    return json.dumps({f["path"]: params.get(f["path"]) for f in spec["factors"]}, sort_keys=True, default=str)


def requeue_failed(study: optuna.Study, max_retry: int) -> int:
    """Queue every failed configuration again (once), unless it ran since or is queued."""
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    covered = {
        config_key(t, spec)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
    }
    retry = RetryTrial(max_retry, "failed with an error")
    queued = 0
    for trial in sorted((t for t in trials if t.state == TrialState.FAIL), key=lambda t: -t.number):
        key = config_key(trial, spec)
        if key in covered or not trial.params:
            continue
        covered.add(key)
        # a WAITING copy (same params and grid id) unless retried max_retry times
        if retry(study, trial) is not None:
            queued += 1
    return queued


def study_target(spec: dict[str, Any], n_trials: int | None) -> int:
    """Finished trials the study should reach: every configuration (capped), or ``n_trials``."""
    if spec["n_configs"] is not None:
        return min(n_trials or spec["n_configs"], spec["n_configs"])
    if n_trials is None:
        raise ConfigError("ablation.n_trials: the tpe sampler needs a number of trials")
    return n_trials


def has_config(trial: FrozenTrial) -> bool:
    """Whether the trial has drawn its configuration (a trial just started has not, yet)."""
    return bool(trial.params or trial.system_attrs.get("fixed_params"))


def trials_to_start(study: optuna.Study, target: int) -> int:
    """How many trials may start now without running a configuration twice.

    The queued (WAITING) trials, plus what ``target`` still lacks beyond every configuration a
    trial has drawn (finished, failed, running or queued; for tpe: finished, running and queued
    trials). A running trial that has not drawn its configuration yet counts as one of its own.
    Optuna's grid sampler, asked for more than is left, runs a configuration a second time: a
    worker asks only while this is positive.
    """
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if spec["n_configs"] is None:
        fresh = target - n_finished(study) - len(running) - waiting
    else:
        drawn = {config_key(t, spec) for t in trials if has_config(t)}
        fresh = target - len(drawn) - sum(not has_config(t) for t in running)
    return waiting + max(0, fresh)


def n_finished(study: optuna.Study) -> int:
    """Finished (complete or pruned) trials; for the grid-style samplers, distinct configurations
    that finished or failed with no retry queued (given up after ``max_retry``)."""
    spec = study.user_attrs[SPEC_ATTR]
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in FINISHED_STATES]
    if spec["n_configs"] is None:
        return len(done)
    pending = {config_key(t, spec) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    given_up = {config_key(t, spec) for t in trials if t.state == TrialState.FAIL and t.params} - pending
    return len({config_key(t, spec) for t in done} | given_up)


# --------------------------------------------------------------------------- results


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def trial_overrides(trial: FrozenTrial, spec: dict[str, Any]) -> dict[str, Any]:
    """The factor values a trial ran (stored by the objective; else read from its params)."""
    stored = trial.user_attrs.get("overrides")
    if stored is not None:
        return stored
    return {f["path"]: trial.params[f["path"]] for f in spec["factors"] if f["path"] in trial.params}


def best_params(storage: str, study_name: str) -> Params:
    """The best trial's full params (base + ``ablation.fixed`` + its factor values), validated."""
    study = load_study(storage, study_name)
    best = best_trial(study)
    if best is None:
        raise FakefaceError(f"study {study_name!r} has no completed trial yet")
    spec = study.user_attrs[SPEC_ATTR]
    return trial_params(parse_params(spec["base"]), trial_overrides(best, spec))


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
