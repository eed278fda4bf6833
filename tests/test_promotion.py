"""Champion and challenger on a real MLflow server: only a model that is not worse takes
``@champion``; every alias move is recorded; promote and rollback move it, the served model too.

The paired test is checked first against DeLong's definition computed the slow way (every
fake/real pair), on data with ties.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import port_free
from servers import ServerProcess

pytestmark = [pytest.mark.timeout(900), pytest.mark.usefixtures("drop_cli_log_handler")]


# --------------------------------------------------------------------------- the paired test


def _delong_by_definition(labels, a, b):
    """DeLong et al. (1988) straight from the definition: psi over every (fake, real) pair."""
    def components(scores):
        pos, neg = scores[labels == 1], scores[labels == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    auc_a, v10_a, v01_a = components(a)
    auc_b, v10_b, v01_b = components(b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a - auc_b, np.sqrt(var)


def test_delong_agrees_with_the_definition_on_scores_with_ties():
    from fakeface.analysis.paired import delong_test

    rng = np.random.default_rng(3)
    labels = np.array([0] * 60 + [1] * 40)
    good = np.round(labels * 0.6 + rng.normal(0, 0.35, 100), 1)  # rounded: many ties
    weak = np.round(labels * 0.2 + rng.normal(0, 0.35, 100), 1)
    test = delong_test(labels, weak, good)
    difference, se = _delong_by_definition(labels, weak, good)
    assert test.difference == pytest.approx(difference, abs=1e-12)
    assert test.standard_error == pytest.approx(se, rel=1e-9)
    # worse at 5% one-sided, not at 5% two-sided: the interval (two-sided 95%) still holds 0
    assert test.auc_new < test.auc_reference and 0.01 < test.p_worse < 0.05 < test.p_value
    assert test.p_value == pytest.approx(2 * test.p_worse) and test.ci_low < test.difference < 0 < test.ci_high
    same = delong_test(labels, good, good)
    assert same.difference == 0 and same.p_worse == 1.0 and same.p_value == 1.0


def test_the_rule_keeps_the_champion_against_a_worse_model_and_takes_an_equal_one():
    from fakeface.config import RegisterConfig
    from fakeface.stages.promotion import decide

    rng = np.random.default_rng(0)
    labels = np.array([0] * 200 + [1] * 200)
    champion = labels * 1.0 + rng.normal(0, 0.6, 400)
    cfg = RegisterConfig()
    worse = decide(labels, labels * 0.5 + rng.normal(0, 0.6, 400), champion, "1", cfg)
    assert not worse.promoted and worse.alias == "challenger" and worse.comparison["decision"] == "challenger"
    assert "champion v1" in worse.reason and worse.tags()["compared_with"] == "v1"
    equal = decide(labels, champion + rng.normal(0, 0.01, 400), champion, "1", cfg)
    assert equal.promoted and equal.alias == "champion"
    lenient = decide(labels, labels * 0.9 + rng.normal(0, 0.6, 400), champion, "1",
                     RegisterConfig(promotion_margin=0.2, promotion_alpha=1e-9))
    assert lenient.promoted  # within a wide margin, and the test cannot reject at that level


# --------------------------------------------------------------------------- on a real MLflow server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1; its URI."""
    import random

    root = tmp_path_factory.mktemp("mlflow-server")
    port = next(p for p in random.Random().sample(range(20000, 30000), 50) if port_free(p))
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
            str(root / "artifacts"), "--workers", "1"]
    import os

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = ServerProcess(argv, env, root, root / "server.log", f"http://127.0.0.1:{port}/health", 120,
                           "mlflow server")
    yield f"http://127.0.0.1:{port}"
    assert server.stop() == []


@pytest.fixture(scope="module")
def brightness_shards(tmp_path_factory):
    """Shards of faces whose only cue is brightness (real darker than fake, overlapping), so a
    model's quality is set by hand: 40 test images a class."""
    from PIL import Image

    from conftest import small_params
    from fakeface.stages import get_stage
    from fakeface.stages.paths import AugmentPaths, IngestPaths

    root = tmp_path_factory.mktemp("brightness")
    rng = np.random.default_rng(11)
    for folder, n in (("Train", 4), ("Validation", 10), ("Test", 40)):
        for label, mean in (("Real", 100), ("Fake", 125)):
            for k in range(n):
                level = rng.normal(mean, 15)
                pixels = np.clip(level + rng.normal(0, 3, (32, 32, 3)), 0, 255).astype(np.uint8)
                path = root / "faces" / folder / label / f"{label.lower()}_{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    params = small_params(data={"source": str(root / "faces")})
    ingested = IngestPaths.in_artifacts(root)
    get_stage("ingest").run(params, ingested)
    get_stage("augment").run(params, AugmentPaths(manifest=ingested.manifest, shards=root / "shards"))
    return root / "shards"


def _brightness_model(path, sign):
    """p(fake) from the mean brightness: ``sign`` +1 ranks by it (AUC about 0.9), -1 against it."""
    import keras

    from fakeface.model.classifier import OUTPUT_NAME

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.full((3, 1), sign * 0.05, "float32"), np.array([-sign * 0.05 * 3 * 112.5], "float32")])
    model.save(path)
    return path


def _register(model_path, root, shards, uri, monkeypatch, name):
    """A run of its own, evaluate (no robustness, no heatmaps) and register, as the pipeline does."""
    import mlflow

    from conftest import small_params
    from fakeface import tracking
    from fakeface.config import EvaluateConfig, RegisterConfig
    from fakeface.stages import evaluate, register
    from fakeface.stages.paths import EvaluatePaths, RegisterPaths

    folder = root / name
    folder.mkdir()
    shutil.copyfile(model_path, folder / "model.keras")
    params = small_params()
    params = params.model_copy(update={
        "evaluate": EvaluateConfig(threshold_method="youden", robustness={}, explain={"enabled": False}),
        "register": RegisterConfig(model_name="promotion-test", min_test_auc=0.0),
    })
    monkeypatch.chdir(folder)
    experiment = mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run(run_name=name) as run:
        tracking.write_run_info(folder / "run.json", run.info.run_id, experiment.experiment_id)
    evaluated = EvaluatePaths.in_artifacts(folder / "eval", model=folder / "model.keras",
                                           run_info=folder / "run.json", shards=shards)
    evaluate.run(params, evaluated)
    return register.run(params, RegisterPaths.in_artifacts(
        folder / "registered", model=evaluated.detector, evaluation=evaluated.metrics, run_info=folder / "run.json",
        robustness=evaluated.robustness, slices=evaluated.slices, external_metrics=evaluated.external_metrics,
        shards=shards,
    )), run.info.run_id


def test_only_a_model_that_is_not_worse_takes_the_champion_alias(mlflow_server, brightness_shards, tmp_path,
                                                                 monkeypatch, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    from fakeface.cli.main import main
    from fakeface.tracking.aliases import history, serving_model_name

    shards = brightness_shards
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient()
    name, serving = "promotion-test", serving_model_name("promotion-test")
    model = _brightness_model(tmp_path / "good.keras", +1)
    bad = _brightness_model(tmp_path / "bad.keras", -1)

    first, _ = _register(bad, tmp_path, shards, mlflow_server, monkeypatch, "first-bad")
    assert first.registered and first.promoted and first.alias == "champion" and first.comparison is None
    better, _ = _register(model, tmp_path, shards, mlflow_server, monkeypatch, "better")
    assert better.promoted and better.alias == "champion" and better.version == "2"
    assert better.comparison["decision"] == "promoted" and better.comparison["difference"] > 0.3
    worse, worse_run = _register(bad, tmp_path, shards, mlflow_server, monkeypatch, "worse")
    assert worse.registered and not worse.promoted and worse.alias == "challenger" and worse.version == "3"

    # both aliases, on the detector and on its served model
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "challenger").version == "3"
    served = client.get_model_version_by_alias(serving, "champion")
    assert served.tags["detector_version"] == "2"
    assert client.get_model_version_by_alias(serving, "challenger").tags["detector_version"] == "3"
    # the comparison: in the run, on the version, in the model card
    logged = mlflow.artifacts.load_dict(f"runs:/{worse_run}/champion_comparison.json")
    assert logged["decision"] == "challenger" and logged["auc_reference"] == pytest.approx(better.test_auc, abs=1e-4)
    assert logged["images"]["n"] == worse.comparison["n_real"] + worse.comparison["n_fake"]
    tags = client.get_model_version(name, "3").tags
    assert tags["compared_with"] == "v2" and float(tags["auc_difference"]) < -0.3
    assert "## Promotion" in client.get_model_version(name, "3").description
    assert [(m.alias, m.previous, m.version, m.action) for m in history(client, name)] == [
        ("champion", None, "1", "register"), ("champion", "1", "2", "register"), ("challenger", None, "3", "register")]

    # rollback, promote, history: by hand, recorded
    assert main(["registry", "rollback", "--name", name, "--reason", "incident 7"]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(serving, "champion").tags["detector_version"] == "1"
    assert main(["registry", "promote", "3", "--name", name]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    capsys.readouterr()
    assert main(["registry", "history", "--name", name, "--alias", "champion"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "v2 -> v1 (rollback by" in lines[2] and "incident 7" in lines[2]
    assert "v1 -> v3 (promote by" in lines[3] and lines[-1].startswith(f"{name}@champion is v3")
    assert main(["registry", "promote", "99", "--name", name]) == 2
