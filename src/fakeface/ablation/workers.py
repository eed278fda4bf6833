"""Running a study: workers in one process, several processes, or several machines (Kubeflow).

Workers each call ``study.optimize`` on the shared storage (:func:`run_worker`); they may start in
any order, on any machine, and the first creates the study. On one machine :func:`run_study`
prepares the study, runs the missing trials on ``workers`` spawned processes, and finalizes it.
Kubeflow splits the same steps over tasks: :func:`plan_study` once, :func:`run_worker` per pod
with its planned share, then :func:`~fakeface.ablation.report.finalize_study` and
:func:`~fakeface.ablation.retrain.retrain_best`.

A worker starts a trial only while the study has one to start
(:func:`~fakeface.ablation.study.trials_to_start`), so workers never run a configuration twice. A
worker whose share is not done but finds nothing to start while trials run elsewhere waits for
them (checking every heartbeat interval): one of them may be a dead worker's, which goes stale
after the heartbeat's grace period and is queued again, and this worker then runs it. That is how
a Kubeflow worker pod that was killed and retried finishes its share: its new pod comes up before
the old trial is known dead, and must neither leave it behind nor take another configuration
twice.

Where a worker keeps its trial folders is the runtime's ablation work folder
(:class:`fakeface.config.runtime.Runtime`: ``--workdir``, ``FAKEFACE_ABLATION_WORKDIR``, default
``checkpoints/ablation``), never a param: it does not change what a trial trains.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from fakeface import FakefaceError
from fakeface.ablation.objective import Objective
from fakeface.ablation.report import finalize_study
from fakeface.ablation.space import SPEC_ATTR
from fakeface.ablation.study import (
    ensure_study,
    fail_stale_trials,
    load_study,
    n_finished,
    prepare_study,
    resolve_storage,
    study_target,
    trials_to_start,
)
from fakeface.config import Params, parse_params
from fakeface.config.runtime import Runtime

log = logging.getLogger(__name__)


def resolve_workdir(workdir: str | Path | None = None) -> Path:
    """``workdir`` if given, else ``$FAKEFACE_ABLATION_WORKDIR``, else the :class:`Runtime` default."""
    return Path(Runtime.from_env(ablation_workdir=workdir).ablation_workdir)


def run_worker(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    *,
    worker_index: int = 0,
    workdir: str | Path | None = None,
    target: int | None = None,
) -> int:
    """Run up to ``n_trials`` trials of the shared study (None: until the study needs no more).

    Safe to call from several processes or machines at once on one storage; creates the study if
    nobody has. Starts a trial only while the study has one to start towards ``target`` finished
    trials (default: ``ablation.n_trials``, else every configuration); with trials left in its
    share and nothing to start, waits for the running ones (see the module doc). Returns the
    number of trials this worker ran.
    """
    url = resolve_storage(storage)
    name = ensure_study(params, shards_dir, url, study_name).study_name
    study = load_study(url, name, params, worker_index)
    if target is None:
        target = _default_target(study, params, n_trials)
    if (n_trials is not None and n_trials <= 0) or n_finished(study) >= target:
        log.info("study %r: nothing left to run", name)
        return 0
    objective = Objective(study, shards_dir, resolve_workdir(workdir), worker_index)
    poll = params.ablation.heartbeat_interval  # None: no heartbeat, so a dead trial never goes stale
    told = False
    while n_trials is None or objective.trials_run < n_trials:
        fail_stale_trials(study)  # Optuna does this too, but only as it starts a trial
        if trials_to_start(study, target) > 0:
            # A configuration that fails (out of memory, invalid) is recorded FAIL; the study goes on.
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            continue
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if not running or not poll:
            break
        if not told:
            told = True
            log.info("study %r: nothing to start; waiting for %d running trial(s) to finish or go stale",
                     name, running)
        time.sleep(poll)
    return objective.trials_run


def _default_target(study: Any, params: Params, n_trials: int | None) -> int:
    spec = study.user_attrs[SPEC_ATTR]
    if spec["n_configs"] is None and params.ablation.n_trials is None and n_trials is not None:
        return n_finished(study) + n_trials  # tpe with no target: this worker's share is all it knows
    return study_target(spec, params.ablation.n_trials)


def split_trials(n: int, workers: int) -> list[int]:
    """``n`` trials over at most ``workers`` workers, as even as possible, no empty shares."""
    workers = max(1, min(workers, n))
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)] if n > 0 else []


def plan_study(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Prepare the study and split the trials left over ``workers`` (default ``ablation.workers``).

    Returns ``{"study_name": ..., "shares": [...]}`` with one share per worker (0 for a worker with
    nothing to do). Decided once, before the workers start: workers started at different times
    would each see a different number of trials left.
    """
    url = resolve_storage(storage)
    workers = workers or params.ablation.workers
    name, _, remaining = _prepare(params, shards_dir, url, study_name, params.ablation.n_trials)
    shares = split_trials(remaining, workers)
    return {"study_name": name, "shares": shares + [0] * (workers - len(shares))}


def _prepare(params: Params, shards_dir: str | Path, url: str, study_name: str | None,
             n_trials: int | None) -> tuple[str, int, int]:
    """Prepare the study: its name, the finished trials it should reach for ``n_trials``
    (:func:`~fakeface.ablation.study.study_target`) and how many of those are still to run.
    Planning and running locally both start here, so they cannot count the work differently."""
    name = prepare_study(params, shards_dir, url, study_name)
    study = load_study(url, name, params)
    target = study_target(study.user_attrs[SPEC_ATTR], n_trials)
    return name, target, max(0, target - n_finished(study))


def run_study(
    params: Params,
    shards_dir: str | Path,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    *,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """``fakeface ablate``: prepare, run the missing trials on ``workers`` processes, finalize.

    Returns the study's summary (see :func:`~fakeface.ablation.report.finalize_study`).
    """
    url = resolve_storage(storage)
    workdir = resolve_workdir(workdir)
    name, target, remaining = _prepare(
        params, shards_dir, url, study_name, n_trials if n_trials is not None else params.ablation.n_trials
    )
    shares = split_trials(remaining, workers or params.ablation.workers)
    log.info("study %r: %d of %d trials finished, %d to run on %d worker(s)",
             name, target - remaining, target, remaining, len(shares))
    started = time.monotonic()
    if len(shares) == 1:
        run_worker(params, shards_dir, url, name, shares[0], workdir=workdir, target=target)
    elif shares:
        _run_processes(params, shards_dir, url, name, shares, workdir, target)
    if shares:
        log.info("ran %d trial(s) in %.1f s", remaining, time.monotonic() - started)
    return finalize_study(url, name, out_dir, metrics_path)


def _worker_process(params_dump: dict[str, Any], shards_dir: str, storage: str, study_name: str,
                    n_trials: int, worker_index: int, workdir: str, threads: int | None, target: int) -> None:
    """Entry point of a spawned worker process."""
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # share the GPU with the others
    from fakeface.logs import setup_logging

    setup_logging(None)
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    run_worker(parse_params(params_dump), shards_dir, storage, study_name, n_trials,
               worker_index=worker_index, workdir=workdir, target=target)


def _run_processes(params: Params, shards_dir: str | Path, url: str, name: str, shares: list[int],
                   workdir: Path, target: int) -> None:
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    threads = None if _visible_gpus() else max(1, (os.cpu_count() or 1) // len(shares))
    processes = [
        context.Process(
            target=_worker_process,
            args=(params.model_dump(mode="json"), str(shards_dir), url, name, share, index, str(workdir), threads,
                  target),
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
