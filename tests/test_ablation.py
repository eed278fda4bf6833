"""`fakeface ablate`: the search space, the samplers, pruning, resume, parallel workers, MLflow
nesting, the seed-style report and the retrain of the best configuration, on the 120-image
synthetic set (32 px, one-epoch trials)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import ROOT, small_params
from fakeface import FakefaceError
from fakeface.ablation import (
    CONFIG_PARAM,
    SPEC_ATTR,
    best_params,
    build_spec,
    default_study_name,
    load_study,
    prepare_study,
    resolve_storage,
    retrain_best,
    run_study,
    run_worker,
    split_trials,
)
from fakeface.cli.ablation import add_ablate_commands
from fakeface.config import ConfigError, load_params
from fakeface.config.runtime import Runtime
from fakeface.stages.paths import EvaluatePaths, TrainPaths

FLIP_X_OPTIMIZER = {"augment.flip.enabled": [True, False], "train.optimizer": ["sgd", "adam"]}


def ablation_params(search_space=None, train=None, **ablation):
    """Small params: one-epoch trials of the small CNN."""
    return small_params(
        train={"head_epochs": 1, "fine_tune_epochs": 0, **(train or {})},
        ablation={"sampler": "grid", "search_space": search_space or FLIP_X_OPTIMIZER, "heartbeat_interval": None,
                  **ablation},
    )


def use_runtime(mp: pytest.MonkeyPatch, tmp: Path) -> str:
    """The study storage and the trial folders under ``tmp``, through the environment (as a user
    sets them: they are runtime settings, not params); returns the storage URL."""
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    mp.setenv("FAKEFACE_ABLATION_STORAGE", storage)
    mp.setenv("FAKEFACE_ABLATION_WORKDIR", str(tmp / "trials"))
    return storage


def fakeface(argv: list[str]) -> int:
    """``fakeface [--params FILE] ablate ...`` through :func:`add_ablate_commands`, as fakeface.cli.main
    runs a subcommand (params loaded once, a FakefaceError is exit status 2)."""
    parser = argparse.ArgumentParser(prog="fakeface")
    parser.add_argument("--params", default="params.yaml")
    add_ablate_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.handler(args, load_params(args.params))
    except FakefaceError:
        return 2
    return 0


def children(parent_id: str):
    from mlflow.tracking import MlflowClient

    parent = MlflowClient().get_run(parent_id)
    return MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )


def combos(study):
    return [tuple(t.params[k] for k in sorted(FLIP_X_OPTIMIZER)) for t in study.get_trials(states=(TrialState.COMPLETE,))]


# --------------------------------------------------------------------------- no training


def test_one_at_a_time_varies_each_factor_alone_from_the_base():
    params = ablation_params(
        sampler="one-at-a-time",
        search_space={"augment.flip.enabled": [True, False], "train.optimizer": ["sgd", "adam"],
                      "train.dropout": [0.3, 0.5]},
    )
    spec = build_spec(params)
    base = {"augment.flip.enabled": True, "train.optimizer": "adam", "train.dropout": 0.2}
    names = [c["name"] for c in spec["configs"]]
    assert names == ["base", "augment.flip.enabled=false", "train.optimizer=sgd", "train.dropout=0.3",
                     "train.dropout=0.5"]
    assert spec["configs"][0]["overrides"] == base
    for config in spec["configs"][1:]:
        changed = {k for k, v in config["overrides"].items() if v != base[k]}
        assert changed == {config["factor"]}
    # the base value joins the factor's choices, so every trial suggests from one distribution
    assert next(f for f in spec["factors"] if f["path"] == "train.dropout")["choices"] == [0.3, 0.5, 0.2]


def test_invalid_configurations_are_refused_before_anything_trains():
    params = ablation_params(
        search_space={"train.head_activation": ["sigmoid", "softmax"]}, fixed={"train.head_units": 1}
    )
    with pytest.raises(ConfigError, match="train.head_activation=softmax") as error:
        build_spec(params)
    assert "1 of 2 configuration" in str(error.value)


def test_search_space_keys_are_dotted_param_paths():
    with pytest.raises(ConfigError, match="did you mean 'train.optimizer'"):
        ablation_params(search_space={"train.optimiser": ["sgd"]})
    with pytest.raises(ConfigError, match="cannot be ablated"):
        ablation_params(search_space={"data.source": ["synthetic"]})
    nested = ablation_params(search_space={"train": {"optimizer": ["sgd", "adam"],
                                                     "learning_rate": {"low": 1e-4, "high": 0.1, "log": True}}})
    assert set(nested.ablation.search_space) == {"train.optimizer", "train.learning_rate"}
    with pytest.raises(ConfigError, match="tries `values`"):
        build_spec(nested)  # grid: a range needs explicit values
    with pytest.raises(ConfigError, match="needs a number of trials"):
        build_spec(ablation_params(sampler="tpe", search_space=nested.ablation.search_space))


def test_study_name_follows_the_search_space_and_trials_split_evenly():
    a = default_study_name(build_spec(ablation_params()))
    assert a == default_study_name(build_spec(ablation_params(n_trials=3, workers=2)))
    assert a != default_study_name(build_spec(ablation_params(search_space={"train.optimizer": ["sgd", "adam"]})))
    assert split_trials(5, 2) == [3, 2] and split_trials(1, 4) == [1] and split_trials(0, 2) == []


def test_storage_and_workdir_are_runtime_settings_not_params(monkeypatch, tmp_path):
    monkeypatch.delenv("FAKEFACE_ABLATION_STORAGE", raising=False)
    assert resolve_storage() == Runtime().ablation_storage == "sqlite:///ablation/optuna.db"
    monkeypatch.setenv("FAKEFACE_ABLATION_STORAGE", "sqlite:///env.db")
    assert resolve_storage() == "sqlite:///env.db" and resolve_storage("sqlite:///option.db") == "sqlite:///option.db"
    for key in ("ablation.storage", "ablation.workdir", "train.checkpoint_dir"):
        assert key not in ablation_params().flat()
    # where a study runs does not change which study it is
    name = default_study_name(build_spec(ablation_params()))
    monkeypatch.setenv("FAKEFACE_ABLATION_WORKDIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("FAKEFACE_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert default_study_name(build_spec(ablation_params())) == name


def test_project_params_and_the_separate_dvc_stages():
    spec = build_spec(load_params(ROOT / "params.yaml"))
    assert spec["configs"][0]["name"] == "base" and len(spec["configs"]) == 6  # the seed's five factors
    stages = yaml.safe_load((ROOT / "ablation" / "dvc.yaml").read_text())["stages"]
    assert stages["ablate"]["wdir"] == ".." and stages["ablate"]["cmd"].startswith("fakeface ablate")
    # `dvc repro` with no target runs ./dvc.yaml only: the study must not be in it
    assert not {"ablate", "retrain"} & set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])

    parser = argparse.ArgumentParser()
    add_ablate_commands(parser.add_subparsers())
    args = parser.parse_args(["ablate", "report", "--study", "s"])
    assert args.handler.__name__ == "ablate_report" and args.study == "s" and args.storage is None
    # the retrain stage: after the study (its best_params.yaml), every path it writes a DVC output,
    # and its command spells out the CLI's defaults
    retrain = stages["retrain"]
    assert "reports/ablation/best_params.yaml" in retrain["deps"] and retrain["wdir"] == ".."
    args = parser.parse_args(retrain["cmd"].split()[1:])
    assert args.handler.__name__ == "ablate_retrain"
    assert vars(args) == {**vars(parser.parse_args(["ablate", "retrain"])), "handler": args.handler}
    outs = [out if isinstance(out, str) else next(iter(out)) for out in retrain["outs"]]
    assert "metrics" not in retrain, "a study's files are not the project's DVC metrics"
    written = [args.model, args.run_info, args.history, args.train_metrics, args.metrics, args.robustness,
               args.slices, args.plots, args.reports, args.explain]
    for path in written:
        assert any(path == out or path.startswith(out + "/") for out in outs), path


def test_the_ablation_dvc_stages_depend_on_the_code_and_the_params_they_read():
    import imports
    from fakeface.config import AUGMENTATION_ORDER

    stages = yaml.safe_load((ROOT / "ablation" / "dvc.yaml").read_text())["stages"]
    augment = [f"augment.{name}" for name in AUGMENTATION_ORDER]  # what a trial trains with (not the packing)
    expected = {
        # the study: trials train (seed, augment, train) and are measured on valid (threshold, batch size)
        "ablate": ["seed", *augment, "train", "evaluate.threshold", "evaluate.batch_size", "tracking", "ablation"],
        # the retrain: the study's name (all of the above) and a full evaluate on test
        "retrain": ["seed", *augment, "train", "evaluate", "tracking", "ablation"],
    }
    code = {imports.modules()[m].relative_to(ROOT).as_posix() for m in imports.closure("fakeface.cli.ablation")}
    for name, params in expected.items():
        assert stages[name]["params"] == params
        deps = stages[name]["deps"]
        missing = sorted(f for f in code if not any(f == d or f.startswith(d + "/") for d in deps))
        assert not missing, f"ablation/dvc.yaml stage {name} misses deps on the code it imports: {missing}"


# --------------------------------------------------------------------------- studies


@pytest.fixture(scope="module")
def grid_study(synthetic_shards, tmp_path_factory):
    """flip x optimizer: 2 trials, then resumed to 4; returns what each run saw."""
    _, shards = synthetic_shards
    tmp = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.chdir(tmp)
        params = ablation_params()
        storage = use_runtime(mp, tmp)
        started = time.monotonic()
        first = run_study(params, shards, n_trials=2, out_dir=tmp / "report1")  # storage, workdir: env
        seconds = time.monotonic() - started
        study = load_study(storage, first["study"])
        before = {t.number: (t.params, t.datetime_complete) for t in study.trials}
        mp.delenv("FAKEFACE_ABLATION_STORAGE")
        mp.delenv("FAKEFACE_ABLATION_WORKDIR")
        second = run_study(params, shards, storage, n_trials=4, out_dir=tmp / "report", metrics_path=tmp / "metrics.json",
                           workdir=tmp / "trials")
        third = run_study(params, shards, storage, n_trials=4)  # nothing left to run
        yield {"params": params, "tmp": tmp, "first": first, "second": second, "third": third, "before": before,
               "seconds_per_trial": seconds / 2, "uri": f"sqlite:///{tmp / 'mlflow.db'}", "storage": storage,
               "shards": shards}


def test_grid_runs_every_combination_as_nested_mlflow_runs(grid_study, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid_study["uri"])
    mlflow.set_tracking_uri(grid_study["uri"])
    summary = grid_study["second"]
    study = load_study(grid_study["storage"], summary["study"])
    assert summary["n_complete"] == 4 and summary["n_pruned"] == summary["n_failed"] == 0
    assert len(set(combos(study))) == 4

    parent_id = study.user_attrs["fakeface.mlflow"]["parent_run_id"]
    parent = MlflowClient().get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["fakeface.stage"] == "ablate"
    runs = children(parent_id)
    assert len(runs) == 4
    assert {r.data.tags["optuna.state"] for r in runs} == {"COMPLETE"}
    assert {r.data.params["train.optimizer"] for r in runs} == {"sgd", "adam"}
    assert all("valid_auc" in r.data.metrics and "val_auc" in r.data.metrics for r in runs)

    best = study.best_trial
    assert parent.data.tags["best.train.optimizer"] == str(best.params["train.optimizer"])
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert {k for k in parent.data.metrics if k.startswith("importance.")} <= {
        "importance.augment.flip.enabled", "importance.train.optimizer"}
    assert json.loads((grid_study["tmp"] / "report" / "importances.json").read_text()) == summary["importances"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent_id, "ablation")}
    assert {"ablation/optimization_history.png", "ablation/best_params.yaml", "ablation/report.md"} <= artifacts
    assert (grid_study["tmp"] / "report" / "optimization_history.png").stat().st_size > 1000

    chosen = best_params(grid_study["storage"], summary["study"])
    assert chosen.train.optimizer == best.params["train.optimizer"]
    assert chosen.augment.flip.enabled == best.params["augment.flip.enabled"]
    assert json.loads((grid_study["tmp"] / "metrics.json").read_text())["best"]["number"] == best.number
    assert not list((grid_study["tmp"] / "trials").rglob("*.keras")), "trial models are cleaned up"


def test_a_resumed_study_runs_only_the_missing_trials(grid_study, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid_study["uri"])
    mlflow.set_tracking_uri(grid_study["uri"])
    assert grid_study["first"]["n_complete"] == 2
    study = load_study(grid_study["storage"], grid_study["second"]["study"])
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    for number, (params, finished) in grid_study["before"].items():
        assert study.trials[number].params == params and study.trials[number].datetime_complete == finished
    # one parent run for the study, reopened by the second run
    parents = mlflow.search_runs(filter_string="tags.`fakeface.stage` = 'ablate'", search_all_experiments=True)
    assert len(parents) == 1
    assert grid_study["third"]["n_trials"] == 4, "asking again for 4 trials runs nothing"


def test_retrain_best_trains_the_chosen_config_on_train_and_valid_and_tests_it(grid_study, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid_study["uri"])
    mlflow.set_tracking_uri(grid_study["uri"])
    monkeypatch.delenv("FAKEFACE_ABLATION_STORAGE", raising=False)
    out = grid_study["tmp"] / "retrain"
    train_paths = TrainPaths.in_artifacts(out / "model", shards=grid_study["shards"])
    evaluate_paths = EvaluatePaths.in_artifacts(out / "evaluation")  # its inputs: train_paths' outputs
    # no study name: the one `fakeface ablate` derived from the same params and shards
    result = retrain_best(grid_study["params"], grid_study["storage"], None, train_paths, evaluate_paths,
                          Runtime(checkpoint_dir=out / "checkpoints"))

    best = load_study(grid_study["storage"], grid_study["second"]["study"]).best_trial
    assert result.study_name == grid_study["second"]["study"]
    assert result.params.train.optimizer == best.params["train.optimizer"]
    assert result.params.augment.flip.enabled == best.params["augment.flip.enabled"]
    assert result.params.evaluate.threshold_method == "fixed"  # the model saw valid: no threshold from it
    assert yaml.safe_load((out / "model" / "best_params.yaml").read_text())["train"] == result.params.train.model_dump(
        mode="json")
    trained = json.loads(train_paths.metrics.read_text())
    assert trained["epochs"] == result.epochs == 1 and trained["best_val_auc"] is None  # no validation split
    test = json.loads(evaluate_paths.metrics.read_text())
    assert test == result.test and test["n"] == 12 and 0.0 <= test["auc"] <= 1.0
    assert test["threshold"] == result.params.evaluate.threshold
    assert not (out / "checkpoints").exists(), "checkpoints are removed after training"

    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["fakeface.stage"] == "ablation-retrain"
    assert run.data.tags["fakeface.ablation.study"] == result.study_name
    assert run.data.tags["fakeface.train_splits"] == "train+valid"
    assert run.data.metrics["test_auc"] == pytest.approx(test["auc"], abs=1e-9)


def test_fakeface_ablate_retrain_writes_the_dvc_stage_outputs(grid_study, monkeypatch, tmp_path, capsys):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid_study["uri"])
    mlflow.set_tracking_uri(grid_study["uri"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKEFACE_ABLATION_STORAGE", grid_study["storage"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(grid_study["params"].model_dump(mode="json")))
    shards = str(grid_study["shards"])
    study = grid_study["second"]["study"]

    assert fakeface(["ablate", "retrain", "--shards", shards, "--study", study, "--workdir", "scratch"]) == 0
    assert f"study {study}: best configuration retrained" in capsys.readouterr().out
    for path in ("models/best/model.keras", "models/best/run.json", "models/best/best_params.yaml",
                 "metrics/best/train.json", "metrics/best/evaluate.json", "metrics/best/robustness.json",
                 "metrics/best/slices.json", "reports/best/history.csv", "reports/best/plots/roc.csv",
                 "reports/best/evaluate/classification_report.md"):
        assert (tmp_path / path).is_file(), path
    assert not (tmp_path / "scratch" / "retrain").exists(), "the retrain's checkpoints: in --workdir, then removed"
    assert fakeface(["ablate", "retrain", "--shards", shards, "--study", "no-such-study"]) == 2


def test_the_pruner_stops_a_losing_trial_and_mlflow_shows_it(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(
        search_space={"train.optimizer": ["adam", "sgd"]},
        train={"head_epochs": 1, "fine_tune_epochs": 2, "early_stopping_patience": 5},
        pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # given as an argument, not through the environment
    name = prepare_study(params, shards, storage)
    # A finished trial no real one can match (AUC <= 1): the median pruner stops the next at epoch 1.
    load_study(storage, name).add_trial(
        optuna.trial.create_trial(value=2.0, intermediate_values={1: 2.0, 2: 2.0, 3: 2.0})
    )
    assert run_worker(params, shards, storage, name, n_trials=1, workdir=tmp_path / "trials") == 1

    trial = load_study(storage, name).trials[-1]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1] and trial.user_attrs["pruned_at_epoch"] == 1
    parent_id = load_study(storage, name).user_attrs["fakeface.mlflow"]["parent_run_id"]
    (run,) = children(parent_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["optuna.pruned_at_epoch"] == "1"
    assert len(MlflowClient().get_metric_history(run.info.run_id, "val_auc")) == 1  # training stopped


def test_two_workers_share_one_study_without_repeating_a_trial(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    storage = use_runtime(monkeypatch, tmp_path)  # inherited by the spawned workers
    params = ablation_params(heartbeat_interval=30)
    summary = run_study(params, shards, workers=2, out_dir=tmp_path / "report")
    study = load_study(storage, summary["study"])
    assert summary["n_complete"] == 4 and len(study.trials) == 4
    assert len(set(combos(study))) == 4, "each configuration ran once"
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}, "both workers ran trials"


def test_the_report_has_the_seed_tables_per_factor(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = use_runtime(monkeypatch, tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(sampler="one-at-a-time")
    summary = run_study(params, shards)
    assert summary["n_complete"] == 3  # base, flip off, sgd
    study = load_study(storage, summary["study"])
    assert sorted(t.params[CONFIG_PARAM] for t in study.trials) == [
        "augment.flip.enabled=false", "base", "train.optimizer=sgd"]
    assert all(t.user_attrs["valid_metrics"]["split"] == "valid" for t in study.trials)

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert fakeface(["ablate", "report", "--shards", str(shards), "--out", "out"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**validation split**" in report and "test split is never used" in report
    for factor in FLIP_X_OPTIMIZER:
        section = report.split(f"### `{factor}`", 1)[1].split("\n### ", 1)[0]
        assert section.count("| class | precision | recall | f1-score | support |") == 2  # base and the other value
        assert section.count("| **accuracy** |") == 2 and "| real |" in section and "| fake |" in section
        assert "(base)" in section
    assert "## Best trial" in report and (tmp_path / "out" / "best_params.yaml").is_file()
    assert study.user_attrs[SPEC_ATTR]["sampler"] == "one-at-a-time"


def test_a_failing_configuration_is_recorded_and_queued_again(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = use_runtime(monkeypatch, tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(search_space={"train.weights": ["none", "missing.weights.h5"]}, max_retry=1)
    summary = run_study(params, shards)  # the missing weights file fails that trial; the study goes on
    assert summary["n_complete"] == 1 and summary["n_failed"] == 1
    study = load_study(storage, summary["study"])
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.params["train.weights"] == "missing.weights.h5" and failed.user_attrs["error"]
    (run,) = [r for r in children(study.user_attrs["fakeface.mlflow"]["parent_run_id"])
              if r.data.tags["optuna.state"] == "FAIL"]
    assert run.info.status == "FAILED" and run.data.tags["optuna.error"]

    for _ in range(2):  # queued again once, not twice
        prepare_study(params, shards, study_name=summary["study"])
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.params == failed.params and waiting.system_attrs["failed_trial"] == failed.number
    assert run_study(params, shards)["n_failed"] == 2  # retried (and failed again)
    prepare_study(params, shards)  # max_retry=1: given up, nothing queued, nothing left to run
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert run_study(params, shards)["n_trials"] == 3


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_and_run_again(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    """SIGKILL a worker mid-trial; after the heartbeat's grace period the next run retries it."""
    _, shards = synthetic_shards
    params = ablation_params(search_space={"train.optimizer": ["adam", "sgd"]}, heartbeat_interval=1,
                             train={"head_epochs": 1, "fine_tune_epochs": 15, "early_stopping_patience": 50})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    storage = use_runtime(monkeypatch, tmp_path)  # the worker process inherits it
    name = prepare_study(params, shards, storage)
    worker = subprocess.Popen(
        [sys.executable, "-m", "fakeface", "--params", str(params_file), "ablate", "--shards", str(shards),
         "--study", name, "--n-trials", "1", "--out", "out"],
        cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        trials = load_study(storage, name).trials
        if trials and trials[0].intermediate_values:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert load_study(storage, name).trials[0].state == TrialState.RUNNING
    time.sleep(3)  # past the grace period (2 x 1 s)

    summary = run_study(params, shards, study_name=name)
    study = load_study(storage, name)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.COMPLETE) == 2
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert summary["n_complete"] == 2


def test_a_cross_validated_study_scores_each_trial_by_its_folds(synthetic_shards, mlflow_store, tmp_path, monkeypatch):
    from fakeface.ablation.folds import fold_of
    from fakeface.data.shards import read_index

    monkeypatch.chdir(tmp_path)
    storage = use_runtime(monkeypatch, tmp_path)
    _, shards = synthetic_shards
    params = ablation_params(search_space={"train.optimizer": ["adam", "sgd"]}, sampler="one-at-a-time", cv_folds=3)
    summary = run_study(params, shards, out_dir=tmp_path / "report")
    assert summary["n_complete"] == 2
    study = load_study(storage, summary["study"])
    index = read_index(shards)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        folds = trial.user_attrs["cv_folds"]
        assert len(folds) == 3 and trial.value == pytest.approx(sum(folds) / 3)
        assert trial.user_attrs["valid_metrics"]["cv"]["sd"] >= 0
    # the folds: every train + valid image in exactly one fold's valid split, no test image anywhere
    folders = sorted((tmp_path / "trials" / summary["study"] / "folds").glob("cv-3folds-*/fold*"))
    indexes = [read_index(folder) for folder in folders]
    assert len(indexes) == 3 and all(entry["test"]["n"] == 0 for entry in indexes)
    assert sum(entry["valid"]["n"] for entry in indexes) == index["train"]["n"] + index["valid"]["n"]
    assert all(entry["valid"]["n"] + entry["train"]["n"] == index["train"]["n"] + index["valid"]["n"]
               for entry in indexes)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Cross-validation" in report and "| # | configuration | mean | sd | min | max | per fold |" in report
    labels = ["real"] * 10 + ["fake"] * 8
    assigned = fold_of(labels, 3, seed=1)
    assert (fold_of(labels, 3, seed=1) == assigned).all() and not (fold_of(labels, 3, seed=2) == assigned).all()
    for label in ("real", "fake"):  # stratified: each class spread over the folds, off by one at most
        counts = [sum(1 for f, lab in zip(assigned, labels) if f == k and lab == label) for k in range(3)]
        assert max(counts) - min(counts) <= 1 and sum(counts) == labels.count(label)
