"""The ablation's study in PostgreSQL, as on a Kubeflow cluster: the prepare step plans the shares,
one worker process per share runs ``run_worker`` on the shared study (its URL, password included,
in the environment, as the Kubernetes Secret puts it), and the finalize step writes the report.

A worker is SIGKILLed in the middle of a trial, and started again with the same share, as
Kubeflow's retry policy restarts a failed worker pod. Optuna's heartbeat must take the dead trial
for lost, fail it and queue its configuration again, and the study must end with every
configuration trained once; in MLflow, one child run per trial and the lost one ended FAILED.
Then, without training, the rule that keeps workers from starting a configuration twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import psutil
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from fakeface.ablation import finalize_study, load_study, plan_study, prepare_study
from fakeface.ablation.objective import Objective
from fakeface.ablation.study import config_key, trials_to_start
from test_ablation import ablation_params, children

#: One Kubeflow worker task (fakeface.components.ablation_steps.ablation_worker_step): its share of
#: the planned study; the storage URL and the trials' folder come from the environment.
WORKER = """
import sys
from pathlib import Path

import yaml
from fakeface.ablation import run_worker
from fakeface.config import parse_params
from fakeface.logs import setup_logging

setup_logging("INFO")
params_file, shards, study, share, index = sys.argv[1:]
params = parse_params(yaml.safe_load(Path(params_file).read_text()))
ran = run_worker(params, shards, study_name=study, n_trials=int(share), worker_index=int(index))
print(f"worker {index} ran {ran} trial(s)", flush=True)
"""
#: Three configurations, one per worker; trials of 4 epochs, so a kill after the first is mid-trial.
SPACE = {"train.dropout": [0.1, 0.2, 0.3]}
EPOCHS = 4
HEARTBEAT_S = 5  # grace period 10 s: longer than a restarted worker takes to come up


def start_worker(tmp_path, env, params_file, shards, study, share, index) -> subprocess.Popen:
    with open(tmp_path / f"worker-{index}.log", "a") as log:  # the worker writes to its own copy
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, str(params_file), str(shards), study, str(share), str(index)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
        )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_worker_killed_mid_trial_on_a_shared_postgres_study(synthetic_shards, mlflow_store, postgres_url,
                                                              postgres_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(search_space=SPACE, heartbeat_interval=HEARTBEAT_S, max_retry=1,
                             train={"head_epochs": 1, "fine_tune_epochs": EPOCHS - 1, "early_stopping_patience": 50})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    monkeypatch.setenv("FAKEFACE_ABLATION_STORAGE", postgres_url)  # as the Secret sets it: never an argument
    monkeypatch.setenv("FAKEFACE_ABLATION_WORKDIR", str(tmp_path / "trials"))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}

    plan = plan_study(params, shards, workers=3)  # storage: the environment's
    assert plan["shares"] == [1, 1, 1]
    name = plan["study_name"]
    study = load_study(postgres_url, name)
    workers = {i: start_worker(tmp_path, env, params_file, shards, name, share, i)
               for i, share in enumerate(plan["shares"])}
    try:
        for process in workers.values():  # the password is in their environment, not in `ps`
            assert postgres_server.password not in " ".join(psutil.Process(process.pid).cmdline())

        def victim_mid_trial():
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return next((t for t in running if t.user_attrs.get("worker") == 1 and t.intermediate_values), None)

        victim = wait_for(victim_mid_trial, 240, "worker 1's trial to report its first epoch")
        workers[1].send_signal(signal.SIGKILL)
        assert workers[1].wait(timeout=30) == -signal.SIGKILL
        # Kubeflow restarts the failed pod: the same share, before the dead trial goes stale (or after)
        workers[1] = start_worker(tmp_path, env, params_file, shards, name, plan["shares"][1], 1)
        for index, process in workers.items():
            assert process.wait(timeout=300) == 0, (tmp_path / f"worker-{index}.log").read_text()[-3000:]
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    summary = finalize_study(None, name, tmp_path / "report")

    # Optuna: the killed trial failed, its retry names it and completed; each configuration once.
    trials = load_study(postgres_url, name).trials
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    assert 1 <= len(dead.intermediate_values) < EPOCHS, "killed in the middle of its trial"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert [t.state for t in trials].count(TrialState.FAIL) == 1 and len(trials) == len(SPACE["train.dropout"]) + 1
    spec = study.user_attrs["fakeface.spec"]
    completed = Counter(config_key(t, spec) for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(completed.values()) == [1, 1, 1] and len(completed) == 3
    assert summary["n_complete"] == 3 and summary["n_failed"] == 1 and summary["n_trials"] == 4

    # MLflow: one child run per trial; the lost one FAILED and pointing at its retry.
    parent_id = study.user_attrs["fakeface.mlflow"]["parent_run_id"]
    child_runs = children(parent_id)
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in child_runs}
    assert len(child_runs) == len(runs) and sorted(runs) == [t.number for t in trials]
    lost = runs[dead.number]
    assert lost.info.status == "FAILED" and lost.data.tags["optuna.state"] == "FAIL"
    assert "lost its worker: no heartbeat for 10 s" in lost.data.tags["optuna.error"]
    assert lost.data.tags["optuna.retried_by"] == str(retry.number)
    assert runs[retry.number].data.tags["optuna.retry_of"] == str(dead.number)
    complete = [r for r in runs.values() if r.data.tags["optuna.state"] == "COMPLETE"]
    assert len(complete) == 3 and all(r.info.status == "FINISHED" for r in complete)
    assert sorted(float(r.data.params["train.dropout"]) for r in complete) == SPACE["train.dropout"]
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert trial.user_attrs["mlflow_run_id"] == runs[trial.number].info.run_id
    parent = MlflowClient().get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_failed"] == 1.0
    assert parent.data.tags["optuna.storage"].startswith("postgresql://***@127.0.0.1:")

    # The password: in no MLflow param or tag, no log, no report.
    secret = postgres_server.password
    for run in [parent, *runs.values()]:
        assert secret not in repr(run.data.params) + repr(run.data.tags)
    for index in workers:
        assert secret not in (tmp_path / f"worker-{index}.log").read_text()
    assert secret not in (tmp_path / "report" / "report.md").read_text()


def test_workers_start_only_what_is_left_and_never_a_configuration_twice(synthetic_shards, mlflow_store,
                                                                        postgres_url, tmp_path, monkeypatch):
    """No training: what a worker may start, and the trial that finds its configuration taken."""
    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(search_space=SPACE, heartbeat_interval=HEARTBEAT_S)
    name = prepare_study(params, shards, postgres_url)  # a bare postgresql:// URL: psycopg2 is named for it
    study = load_study(postgres_url, name, params)
    dropout = {"train.dropout": CategoricalDistribution(SPACE["train.dropout"])}
    assert trials_to_start(study, 3) == 3
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=0.5, params={"train.dropout": 0.1},
                                        distributions=dropout))
    study.add_trial(optuna.create_trial(state=TrialState.RUNNING, params={"train.dropout": 0.2},
                                        distributions=dropout))
    assert trials_to_start(study, 3) == 1  # 0.3 is left; 0.2 runs elsewhere
    study.add_trial(optuna.create_trial(state=TrialState.RUNNING))  # started, configuration not drawn yet
    assert trials_to_start(study, 3) == 0
    assert trials_to_start(study, 2) == 0  # a smaller target is reached sooner

    # A trial that draws a configuration an earlier trial holds (two workers, one last configuration)
    # yields before training: FAIL, saying which trial has it; the worker's share is not used up.
    study.enqueue_trial({"train.dropout": 0.1})
    objective = Objective(study, shards, tmp_path / "trials", worker_index=0)
    study.optimize(objective, n_trials=1, catch=(Exception,))
    taken = study.trials[-1]
    assert taken.state == TrialState.FAIL and objective.trials_run == 0
    assert taken.user_attrs["error"] == "configuration already taken by trial 0 (another worker started it first)"
    assert not children(study.user_attrs["fakeface.mlflow"]["parent_run_id"]), "nothing was trained or logged"
