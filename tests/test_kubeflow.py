"""The Kubeflow pipeline: the compiled spec (typed per-step parameters, cluster resilience), the
CLI, and a full local run.

The spec tests read the compiled YAML (document 1: the PipelineSpec; document 2: the Kubernetes
platform spec written by kfp-kubernetes). The slow test runs the whole pipeline under
``kfp.local.SubprocessRunner(use_venv=False)`` (one process per step, this Python) and checks that
it gives the same test metrics as the stage functions called in-process, the way ``dvc repro``
calls them, with the same params and seed.

Tolerance: training is deterministic (``fakeface.model.devices.apply``: seeded, deterministic ops on a CPU) and
both paths run the same code on the same CPU with identical shards (their digests are compared),
so the metrics are expected to be bit-identical; the test allows 1e-6 absolute, and the confusion
matrix must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SECRET_VALUES, small_params
from kfp_helpers import compile_twice, executor_spec, k8s_spec, load_compiled, run_stages_in_process

STAGES = ("ingest", "eda", "augment", "preview", "train", "evaluate", "register")
CACHED = {"ingest", "eda", "augment", "preview"}
MLFLOW_STAGES = {"eda", "train", "evaluate", "register"}


def _clean_env(monkeypatch):
    for name in ("FAKEFACE_IMAGE", "FAKEFACE_MLFLOW_URI", "FAKEFACE_S3_ENDPOINT_URL",
                 "FAKEFACE_K8S_SECRET", "FAKEFACE_GPUS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def compiled(tmp_path, monkeypatch):
    """The pipeline compiled with params.yaml, with fake credentials in the environment."""
    from fakeface.config import load_params
    from fakeface.pipelines.settings import KubeflowSettings
    from fakeface.pipelines.training import compile_pipeline

    _clean_env(monkeypatch)
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    return load_compiled(
        compile_pipeline(tmp_path / "pipeline.yaml", load_params(ROOT / "params.yaml"), KubeflowSettings.from_env())
    )


# --------------------------------------------------------------------------- compiled spec


def test_compiling_twice_gives_the_same_bytes(tmp_path, monkeypatch):
    from fakeface.config import load_params
    from fakeface.pipelines.training import compile_pipeline

    _clean_env(monkeypatch)
    first, second = compile_twice(compile_pipeline, tmp_path, load_params(ROOT / "params.yaml"))
    assert first == second


def test_pipeline_has_every_stage_wired_in_order(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(STAGES)
    assert tasks["eda"]["dependentTasks"] == ["ingest"]
    assert tasks["augment"]["dependentTasks"] == ["ingest"]
    assert tasks["preview"]["dependentTasks"] == ["ingest"]
    assert tasks["train"]["dependentTasks"] == ["augment"]
    assert sorted(tasks["evaluate"]["dependentTasks"]) == ["augment", "train"]
    assert sorted(tasks["register"]["dependentTasks"]) == ["augment", "evaluate", "train"]  # shards: the champion is scored too
    # each step gets exactly the typed parameters of the params keys it reads, from the pipeline's
    from fakeface.components.parameters import step_parameters

    for stage in STAGES:
        given = tasks[stage]["inputs"].get("parameters", {})
        assert given == {p.name: {"componentInputParameter": p.name} for p in step_parameters(stage)}, stage


def test_parameters_are_typed_leaves_with_params_yaml_as_defaults(compiled):
    from fakeface.components.parameters import arguments, pipeline_parameters
    from fakeface.config import load_params

    _, spec, _ = compiled
    declared = spec["root"]["inputDefinitions"]["parameters"]
    expected = arguments(load_params(ROOT / "params.yaml"), pipeline_parameters(list(STAGES)))
    assert {name: d["defaultValue"] for name, d in declared.items()} == expected
    kinds = {name: d["parameterType"] for name, d in declared.items()}
    assert kinds["train_dropout"] == "NUMBER_DOUBLE" and kinds["train_backbone"] == "STRING"
    assert kinds["seed"] == "NUMBER_INTEGER" and kinds["augment_crop_enabled"] == "BOOLEAN"
    assert declared["train_image_size"]["defaultValue"] == "null"  # optional: YAML text


def test_a_training_knob_reaches_only_the_steps_that_read_it(compiled):
    """The cache key of a step is its inputs: train.dropout must not be one of the data steps'."""
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    readers = {stage for stage in STAGES if "train_dropout" in tasks[stage]["inputs"].get("parameters", {})}
    assert readers == {"train"}
    crop = {stage for stage in STAGES if "augment_crop_enabled" in tasks[stage]["inputs"].get("parameters", {})}
    assert crop == {"preview", "train"}


def test_retries_timeouts_checkpoint_volume_and_non_root(compiled):
    from fakeface.pipelines.settings import DEFAULT_TIMEOUTS, RETRIED_STAGES

    _, spec, platform = compiled
    tasks = spec["root"]["dag"]["tasks"]
    for stage in STAGES:
        policy = tasks[stage].get("retryPolicy")
        if stage in RETRIED_STAGES:
            assert policy == {"maxRetryCount": 3, "backoffDuration": "60s", "backoffFactor": 2.0,
                              "backoffMaxDuration": "3600s"}, stage
        else:
            assert policy is None, stage
        k8s = k8s_spec(platform, stage)
        assert int(k8s["activeDeadlineSeconds"]) == DEFAULT_TIMEOUTS[stage]
        assert k8s["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}
    train = k8s_spec(platform, "train")
    assert train["pvcMount"][0]["mountPath"] == "/checkpoints"
    assert train["pvcMount"][0]["constant"] == "fakeface-checkpoints"
    assert {"name": "FAKEFACE_CHECKPOINT_DIR", "value": "/checkpoints"} in executor_spec(spec, "train")["env"]
    assert all("pvcMount" not in k8s_spec(platform, s) for s in STAGES if s != "train")


def test_artifact_types(compiled):
    _, spec, _ = compiled

    def outputs(stage):
        defs = spec["components"][f"comp-{stage}"]["outputDefinitions"]["artifacts"]
        return {name: d["artifactType"]["schemaTitle"] for name, d in defs.items()}

    assert outputs("ingest") == {"data": "system.Dataset"}
    assert outputs("eda") == {"report": "system.HTML"}
    assert outputs("augment") == {"shards": "system.Dataset"}
    assert outputs("preview") == {"preview": "system.HTML"}
    assert outputs("train") == {"model": "system.Model", "train_metrics": "system.Metrics"}
    assert outputs("evaluate") == {
        "evaluation": "system.Artifact", "metrics": "system.Metrics",
        "classification": "system.ClassificationMetrics", "report": "system.Markdown",
    }
    assert outputs("register") == {"registration": "system.Artifact", "card": "system.Markdown"}


def test_train_requests_a_gpu_on_a_gpu_node(compiled):
    _, spec, platform = compiled
    accelerator = executor_spec(spec, "train")["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == "1"
    k8s = k8s_spec(platform, "train")
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
    for stage in set(STAGES) - {"train"}:
        assert "accelerator" not in executor_spec(spec, stage).get("resources", {}), stage
        assert "nodeSelector" not in k8s_spec(platform, stage) and "tolerations" not in k8s_spec(platform, stage)


def test_every_step_has_cpu_and_memory_requests_and_the_project_image(compiled):
    from fakeface.components.stages import DEFAULT_IMAGE

    _, spec, _ = compiled
    for stage in STAGES:
        container = executor_spec(spec, stage)
        resources = container["resources"]
        assert resources["resourceCpuRequest"], stage
        assert resources["resourceMemoryRequest"], stage
        assert container["image"] == DEFAULT_IMAGE
        assert DEFAULT_IMAGE.startswith("ghcr.io/fakeface/fakeface:")


def test_caching_on_for_data_stages_only(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    for stage in STAGES:
        assert bool(tasks[stage]["cachingOptions"].get("enableCache")) == (stage in CACHED), stage


def test_mlflow_uri_is_plain_env_and_credentials_come_from_the_secret(compiled):
    from fakeface.pipelines.settings import DEFAULT_MLFLOW_URI

    _, spec, platform = compiled
    for stage in STAGES:
        env = {e["name"]: e["value"] for e in executor_spec(spec, stage)["env"]}
        assert env["MLFLOW_TRACKING_URI"] == DEFAULT_MLFLOW_URI
        assert not set(env) & set(SECRET_VALUES), stage
        mounts = k8s_spec(platform, stage).get("secretAsEnv", [])
        if stage in MLFLOW_STAGES:
            assert {m["secretName"] for m in mounts} == {"fakeface-credentials"}
            keys = {k["envVar"]: m["optional"] for m in mounts for k in m["keyToEnv"]}
            assert keys == {
                "AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False,
                "MLFLOW_TRACKING_USERNAME": True, "MLFLOW_TRACKING_PASSWORD": True,
            }
        else:
            assert mounts == [], f"{stage} needs no credentials"


def test_no_secret_value_and_no_runtime_install_in_the_yaml(compiled):
    text, _, _ = compiled
    for value in SECRET_VALUES.values():
        assert value not in text
    assert "fakeface-credentials" in text  # referenced by name only
    assert "pip install" not in text  # the image has everything


def test_settings_from_env_and_refusals(monkeypatch):
    from fakeface.pipelines.settings import KubeflowSettings, SettingsError, Toleration

    _clean_env(monkeypatch)
    monkeypatch.setenv("FAKEFACE_IMAGE", "registry.example.com/ff:1.2.3")
    monkeypatch.setenv("FAKEFACE_GPUS", "2")
    settings = KubeflowSettings.from_env()
    assert settings.image == "registry.example.com/ff:1.2.3" and settings.gpu_count == 2
    with pytest.raises(SettingsError, match="credentials"):
        KubeflowSettings(mlflow_tracking_uri="https://user:pw@mlflow.example.com")
    assert Toleration.parse("dedicated=gpu:NoSchedule") == Toleration("dedicated", "Equal", "gpu", "NoSchedule")
    with pytest.raises(SettingsError):
        Toleration.parse("nvidia.com/gpu:Sometimes")


def test_cpu_only_pipeline_has_no_gpu_settings(tmp_path, monkeypatch):
    from fakeface.pipelines.settings import KubeflowSettings
    from fakeface.pipelines.training import compile_pipeline

    _clean_env(monkeypatch)
    path = compile_pipeline(tmp_path / "cpu.yaml", small_params(), KubeflowSettings(gpu_count=0))
    _, spec, platform = load_compiled(path)
    assert "accelerator" not in executor_spec(spec, "train")["resources"]
    assert "nodeSelector" not in k8s_spec(platform, "train")


# --------------------------------------------------------------------------- CLI


def _cli(args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKEFACE_")}
    return subprocess.run(
        [sys.executable, "-m", "fakeface", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_compile_writes_the_yaml(tmp_path, monkeypatch):
    from fakeface.config import load_params
    from fakeface.pipelines.training import compile_pipeline

    out = tmp_path / "out" / "training_pipeline.yaml"
    result = _cli(["pipeline", "compile", "--out", str(out)], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out)
    # the same bytes as compiling in this process: deterministic across processes too
    _clean_env(monkeypatch)
    again = compile_pipeline(tmp_path / "again.yaml", load_params(ROOT / "params.yaml"))
    assert out.read_bytes() == again.read_bytes()


def test_cli_compile_with_overrides_and_settings(tmp_path):
    out = tmp_path / "p.yaml"
    result = _cli(
        ["pipeline", "compile", "--out", str(out), "-S", "train.fine_tune_epochs=3", "-S", "seed=7",
         "--image", "registry.example.com/ff:9", "--gpus", "2", "--secret", "my-creds",
         "--toleration", "dedicated=gpu:NoSchedule"],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, spec, platform = load_compiled(out)
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["train_fine_tune_epochs"]["defaultValue"] == 3 and declared["seed"]["defaultValue"] == 7
    assert executor_spec(spec, "train")["image"] == "registry.example.com/ff:9"
    assert executor_spec(spec, "train")["resources"]["accelerator"]["resourceCount"] == "2"
    assert k8s_spec(platform, "train")["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    ]
    assert {m["secretName"] for m in k8s_spec(platform, "eda")["secretAsEnv"]} == {"my-creds"}


def test_cli_refuses_bad_overrides_cleanly(tmp_path):
    result = _cli(["pipeline", "compile", "--out", str(tmp_path / "p.yaml"), "-S", "train.no_such_key=1"], cwd=ROOT)
    assert result.returncode == 2
    assert "train.no_such_key" in result.stderr and "Traceback" not in result.stderr
    result = _cli(["pipeline", "compile", "--out", str(tmp_path / "p.yaml"),
                   "--mlflow-uri", "https://u:p@mlflow.example.com"], cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- local run


@pytest.mark.slow
def test_local_run_matches_the_in_process_stages_and_logs_to_mlflow(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from fakeface.pipelines.training import run_local

    params = small_params(register={"min_test_auc": 0.0})  # register whatever it learns
    monkeypatch.chdir(tmp_path)  # MLflow's local artifact store (./mlruns) goes here
    uri = f"sqlite:///{tmp_path / 'kfp-mlflow.db'}"
    started = time.perf_counter()
    outputs = run_local(params, workdir=tmp_path / "kfp", mlflow_tracking_uri=uri)
    elapsed = time.perf_counter() - started
    print(f"\nkfp.local run of the whole pipeline: {elapsed:.1f} s")

    evaluation_dir = Path(outputs["evaluation"].path)
    run_root = evaluation_dir.parent.parent
    kfp_result = json.loads((evaluation_dir / "evaluate.json").read_text())
    kfp_index = json.loads((run_root / "augment" / "shards" / "index.json").read_text())
    registration = json.loads(Path(outputs["registration"].path).read_text())

    ref_result, ref_index = run_stages_in_process(params, tmp_path / "reference", monkeypatch, tmp_path / "reference")

    # the same data, byte for byte ...
    for split in ("train", "valid", "test"):
        assert kfp_index[split]["digest"] == ref_index[split]["digest"], split
    # ... the same training curve ...
    kfp_history = (run_root / "train" / "model" / "history.csv").read_text()
    ref_history = (tmp_path / "reference" / "model" / "history.csv").read_text()
    assert kfp_history == ref_history, f"kfp:\n{kfp_history}\nin-process:\n{ref_history}"
    # ... and the same test metrics
    compared = {k: (kfp_result[k], ref_result[k]) for k in ("n", "confusion", "accuracy", "auc", "average_precision")}
    assert kfp_result["n"] == ref_result["n"] == 12
    assert kfp_result["confusion"] == ref_result["confusion"], compared
    for key in ("accuracy", "auc", "average_precision"):
        assert kfp_result[key] == pytest.approx(ref_result[key], abs=1e-6), compared

    # every step's files are where the artifacts say
    assert (run_root / "ingest" / "data" / "manifest.csv").is_file()
    assert (run_root / "train" / "model" / "model.keras").is_file()
    html = (run_root / "eda" / "report").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "data:image/png;base64," in (run_root / "preview" / "preview").read_text()
    assert "| real |" in (run_root / "evaluate" / "report").read_text()
    for name in ("evaluate.json", "robustness.json", "slices.json", "plots/roc.csv", "reports", "explain"):
        assert (evaluation_dir / name).exists(), f"{name} is not in the evaluation artifact"

    # MLflow: an eda side run, one training run with the test metrics, the registered model
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    runs = mlflow.search_runs(experiment_names=["fakeface"], output_format="list")
    eda_runs = [r for r in runs if r.data.tags.get("fakeface.stage") == "eda"]
    train_runs = [r for r in runs if "test_auc" in r.data.metrics]
    assert len(eda_runs) == 1 and len(train_runs) == 1
    run = train_runs[0]
    assert run.data.metrics["test_auc"] == pytest.approx(kfp_result["auc"], abs=1e-9)
    assert run.data.params["train.backbone"] == "smallcnn"
    assert registration["registered"] is True
    version = client.get_model_version_by_alias("fakeface-detector", "champion")
    assert version.run_id == run.info.run_id


# --------------------------------------------------------------------------- component glue


def test_ingest_component_makes_a_folder_source_self_contained(tmp_path, monkeypatch):
    """A folder source outside the artifact is copied in, so the next pod can read it."""
    from kfp.dsl import Dataset

    from fakeface.data import synthetic
    from fakeface.components import stages
    from fakeface.components.parameters import arguments, step_parameters
    from fakeface.data.manifest import file_sha256, read_manifest

    base = small_params()
    synthetic.generate(base.data.synthetic, base.data.split, tmp_path / "faces", seed=1)
    params = small_params(data={"source": "faces"})  # relative to the caller's directory
    monkeypatch.chdir(tmp_path)
    # in a pod, step_params also sets up logging; here that would bind a handler to this test's
    # captured stderr
    monkeypatch.setattr("fakeface.logs.setup_logging", lambda *args, **kwargs: None)
    data = Dataset(uri=str(tmp_path / "artifact" / "data"))
    stages.ingest.python_func(**arguments(params, step_parameters("ingest")), data=data)

    root = tmp_path / "artifact" / "data"
    manifest = read_manifest(root / "manifest.csv")
    assert len(manifest) == 120 and data.metadata["copied_in"] == 120
    for row in manifest.itertuples():
        assert not Path(row.path).is_absolute() and row.path.startswith("files/")
        assert file_sha256(root / row.path) == row.sha256


def test_roc_points_are_thinned_keeping_both_ends(tmp_path):
    import numpy as np
    import pandas as pd

    from fakeface.components.runtime import roc_points

    n = 1001
    frame = pd.DataFrame({"fpr": np.linspace(0, 1, n), "tpr": np.linspace(0, 1, n) ** 0.5,
                          "threshold": np.linspace(1, 0, n)})
    frame.to_csv(tmp_path / "roc.csv", index=False)
    fpr, tpr, threshold = roc_points(tmp_path / "roc.csv", max_points=50)
    assert len(fpr) == len(tpr) == len(threshold) == 50
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert fpr == sorted(fpr)


def test_typed_parameters_round_trip_and_are_validated_in_the_step():
    from fakeface.components.parameters import all_parameters, arguments, step_parameters, to_params
    from fakeface.config import ConfigError

    params = small_params(data={"source": ["synthetic", "faces/"], "test_source": "faces/"},
                          train={"image_size": 48, "dropout": 0.35})
    for step in ("ingest", "train", "evaluate"):
        rebuilt = to_params(step, arguments(params, step_parameters(step)))
        for parameter in step_parameters(step):
            assert rebuilt.section(parameter.key) == params.section(parameter.key), parameter.key
    names = [p.name for p in all_parameters()]
    assert len(names) == len(set(names)), "two params leaves would share a pipeline parameter name"
    with pytest.raises(ConfigError, match="train.optimizer"):
        to_params("train", {"train_optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="train.image_size"):
        to_params("train", {"train_image_size": "[not, a, size]"})


def test_submit_sends_the_params_with_a_token_from_the_environment(tmp_path, monkeypatch):
    import kfp

    from fakeface.pipelines.training import submit

    _clean_env(monkeypatch)
    monkeypatch.setenv("KFP_TOKEN", "kfp-token-xyz")
    seen = {}

    class FakeClient:
        def __init__(self, **kwargs):
            seen["client"] = kwargs

        def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
            seen["yaml"] = Path(pipeline_file).read_text()
            seen["run"] = kwargs
            return type("Result", (), {"run_id": "run-123"})()

    monkeypatch.setattr(kfp, "Client", FakeClient)
    run_id = submit("https://kfp.example.com", small_params(), experiment="exp", run_name="r1", namespace="team")
    assert run_id == "run-123"
    assert seen["client"]["host"] == "https://kfp.example.com"
    assert seen["client"]["existing_token"] == "kfp-token-xyz" and seen["client"]["namespace"] == "team"
    assert seen["run"]["experiment_name"] == "exp" and seen["run"]["run_name"] == "r1"
    assert seen["run"]["arguments"]["data_synthetic_images_per_class"] == 60
    assert seen["run"]["arguments"]["train_dropout"] == 0.2 and "params" not in seen["run"]["arguments"]
    assert "kfp-token-xyz" not in seen["yaml"] and "nvidia.com/gpu" in seen["yaml"]
