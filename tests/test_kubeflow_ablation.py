"""The Kubeflow ablation pipeline: the compiled spec, the CLI, and a full local run.

The slow test runs ingest -> augment -> prepare -> ParallelFor(2 workers) -> finalize -> retrain
under ``kfp.local.SubprocessRunner(use_venv=False)`` on the 120-image synthetic set (32 px, small
CNN, one-epoch trials, a grid of 2 configurations).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SECRET_VALUES, small_params
from kfp_helpers import compile_twice, executor_spec, k8s_spec, load_compiled

GRID = {"train.optimizer": ["sgd", "adam"]}


def clean_env(monkeypatch):
    """No Kubeflow settings or ablation runtime settings from this machine's environment."""
    for name in [*os.environ]:
        if name.startswith("FAKEFACE_"):
            monkeypatch.delenv(name)


def fakeface(args, cwd):
    """``fakeface ARGS`` in a fresh process, without this machine's FAKEFACE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEFACE_")}
    return subprocess.run(
        [sys.executable, "-m", "fakeface", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def ablation_pipeline_params(**ablation):
    return small_params(
        train={"head_epochs": 1, "fine_tune_epochs": 0},
        ablation={"sampler": "grid", "search_space": GRID, "heartbeat_interval": None, "workers": 2, **ablation},
    )


@pytest.fixture()
def compiled(tmp_path, monkeypatch):
    from fakeface.pipelines.settings import KubeflowSettings
    from fakeface.pipelines.ablation import compile_ablation_pipeline

    clean_env(monkeypatch)
    for name, value in {**SECRET_VALUES, "FAKEFACE_ABLATION_STORAGE": "postgresql://u:storage-pw-xyz@db/optuna"}.items():
        monkeypatch.setenv(name, value)
    return load_compiled(
        compile_ablation_pipeline(tmp_path / "ablation.yaml", ablation_pipeline_params(), KubeflowSettings.from_env())
    )


def test_compiling_twice_gives_the_same_bytes(tmp_path, monkeypatch):
    from fakeface.pipelines.ablation import compile_ablation_pipeline

    clean_env(monkeypatch)
    first, second = compile_twice(compile_ablation_pipeline, tmp_path, ablation_pipeline_params())
    assert first == second


def test_workers_run_in_a_parallel_for_between_prepare_and_finalize(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    loops = [name for name, task in tasks.items() if "parameterIterator" in task]
    assert len(loops) == 1
    loop = tasks[loops[0]]
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [0, 1]
    assert loop["dependentTasks"] == ["ablation-prepare"] or sorted(loop["dependentTasks"]) == ["ablation-prepare", "augment"]
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["ablation-worker"]
    worker_inputs = inner["ablation-worker"]["inputs"]["parameters"]
    assert worker_inputs["worker_index"] == {"componentInputParameter": loop["parameterIterator"]["itemInput"]}
    assert tasks["ablation-finalize"]["dependentTasks"] == [loops[0]] or loops[0] in tasks["ablation-finalize"]["dependentTasks"]
    assert "ablation-finalize" in tasks["retrain-best"]["dependentTasks"]
    from fakeface.components.parameters import pipeline_parameters, step_parameters
    from fakeface.pipelines.ablation import STEPS

    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(declared) == {p.name for p in pipeline_parameters(STEPS)} | {"storage"}
    assert declared["storage"]["defaultValue"] == ""
    assert declared["ablation_workers"]["defaultValue"] == 2
    for name, step in (("ingest", "ingest"), ("augment", "augment"), ("ablation-prepare", "ablation_prepare"),
                       ("ablation-finalize", "ablation_finalize"), ("retrain-best", "retrain_best")):
        given = tasks[name]["inputs"]["parameters"]
        for parameter in step_parameters(step):
            assert given[parameter.name] == {"componentInputParameter": parameter.name}, (name, parameter.name)


def test_workers_and_retrain_get_the_gpu_and_the_storage_secret(compiled):
    _, spec, platform = compiled
    for name in ("ablation-worker", "retrain-best"):
        accelerator = executor_spec(spec, name)["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
        assert k8s_spec(platform, name)["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    for name in ("ablation-prepare", "ablation-finalize", "ingest", "augment"):
        assert "accelerator" not in executor_spec(spec, name).get("resources", {})
    for name in ("ablation-prepare", "ablation-worker", "ablation-finalize", "retrain-best"):
        mounts = k8s_spec(platform, name)["secretAsEnv"]
        storage = [m for m in mounts if any(k["envVar"] == "FAKEFACE_ABLATION_STORAGE" for k in m["keyToEnv"])]
        assert len(storage) == 1 and storage[0]["optional"] is True
        assert storage[0]["secretName"] == "fakeface-credentials"
    for name in ("ingest", "augment"):
        assert "secretAsEnv" not in k8s_spec(platform, name)


def test_no_secret_value_in_the_yaml_and_no_password_as_storage(compiled, tmp_path):
    from fakeface.pipelines.ablation import build_ablation_pipeline

    text, _, _ = compiled
    for value in [*SECRET_VALUES.values(), "storage-pw-xyz"]:
        assert value not in text
    with pytest.raises(ValueError, match="FAKEFACE_ABLATION_STORAGE"):  # a FakefaceError
        build_ablation_pipeline(default_storage="postgresql://u:pw@db/optuna")


def test_cli_compiles_the_ablation_pipeline(tmp_path):
    out = tmp_path / "ablation.yaml"
    result = fakeface(["pipeline", "compile", "--pipeline", "ablation", "--out", str(out),
                   "-S", "ablation.workers=3", "--gpus", "0"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out)
    _, spec, _ = load_compiled(out)
    assert spec["pipelineInfo"]["name"] == "fakeface-ablation"
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2]
    assert "accelerator" not in executor_spec(spec, "ablation-worker").get("resources", {})


# --------------------------------------------------------------------------- local run


@pytest.mark.slow
def test_local_run_studies_in_parallel_then_retrains_the_best(tmp_path, monkeypatch):
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from fakeface.pipelines.ablation import run_ablation_local

    params = ablation_pipeline_params()
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'kfp-mlflow.db'}"
    started = time.perf_counter()
    outputs = run_ablation_local(params, workdir=tmp_path / "kfp", mlflow_tracking_uri=uri)
    print(f"\nkfp.local run of the ablation pipeline: {time.perf_counter() - started:.1f} s")

    # the study: 2 complete trials, distinct configurations
    storage = f"sqlite:///{(tmp_path / 'kfp' / 'optuna.db').resolve()}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 2 and len(complete) == 2
    assert {t.params["train.optimizer"] for t in complete} == {"sgd", "adam"}

    # finalize's report, and the retrained model's test metrics
    study_dir = Path(outputs["study"].path)
    assert (study_dir / "best_params.yaml").is_file()
    assert json.loads((study_dir / "summary.json").read_text())["n_complete"] == 2
    assert "optimizer" in Path(outputs["report"].path).read_text()
    evaluation = Path(outputs["evaluation"].path)
    test = json.loads((evaluation / "evaluate.json").read_text())
    assert 0.0 <= test["auc"] <= 1.0 and test["n"] == 12
    model_dir = evaluation.parent / "model"
    run_root = evaluation.parent.parent
    ran = [json.loads(path.read_text())["parameterValues"]["Output"]
           for path in sorted(run_root.glob("for-loop-*-iteration-*/ablation-worker/executor_output.json"))]
    assert ran == [1, 1]  # each worker ran its share: one trial
    assert (model_dir / "model.keras").is_file()
    best = yaml.safe_load((model_dir / "best_params.yaml").read_text())
    assert best["train"]["optimizer"] == study.best_trial.params["train.optimizer"]
    trained = json.loads((model_dir / "train.json").read_text())
    assert trained["epochs"] == 1 and trained["best_val_auc"] is None  # no validation split
    with (model_dir / "history.csv").open() as handle:
        assert [row["val_auc"] for row in csv.DictReader(handle)] == [""]

    # MLflow: the study's parent run with the trials nested, and the retrain run with test metrics
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["fakeface"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("fakeface.stage") == "ablate"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(nested) == 2
    retrained = [r for r in runs if r.data.tags.get("fakeface.stage") == "ablation-retrain"]
    assert len(retrained) == 1
    assert retrained[0].data.metrics["test_auc"] == pytest.approx(test["auc"], abs=1e-9)
    assert retrained[0].data.tags["fakeface.train_splits"] == "train+valid"
    assert not math.isnan(retrained[0].data.metrics["test_auc"])
