"""evaluate (numbers, plot data, MLflow) and register (keras flavor, gate, alias)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fakeface.stages import evaluate
from fakeface.stages import register
from fakeface.config import Params, RegisterConfig
from fakeface.stages.evaluate import classification_table, compute_metrics
from fakeface.stages.paths import EvaluatePaths, RegisterPaths


def test_metrics_on_a_hand_checked_example():
    labels = np.array([0, 0, 1, 1])
    p_fake = np.array([0.1, 0.6, 0.4, 0.9])
    result = compute_metrics(labels, p_fake, threshold=0.5)
    assert result["accuracy"] == 0.5
    assert result["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
    assert result["auc"] == pytest.approx(0.75)
    assert result["fake"]["precision"] == 0.5 and result["real"]["recall"] == 0.5
    assert result["real"]["support"] == 2
    # the threshold moves the decision, not the ranking
    moved = compute_metrics(labels, p_fake, threshold=0.35)
    assert moved["confusion"] == {"tn": 1, "fp": 1, "fn": 0, "tp": 2}
    assert moved["auc"] == result["auc"]


def test_detection_rates_report_each_class_apart_as_papers_do():
    from fakeface.analysis.metrics import detection_rates

    labels = np.array([0, 0, 0, 0, 1, 1])
    p_fake = np.array([0.1, 0.2, 0.7, 0.8, 0.9, 0.6])
    rates = detection_rates(labels, p_fake, 0.5)
    assert rates["real_acc"] == 0.5 and rates["fake_acc"] == 1.0 and rates["mean_acc"] == 0.75
    assert rates["auc"] == pytest.approx(6 / 8)  # 6 of the 8 real/fake pairs ranked right
    assert rates["ap"] == pytest.approx((1 / 1 + 2 / 4) / 2)  # precision 1 at recall 0.5, 2/4 at recall 1
    everything_fake = detection_rates(labels, p_fake, 0.0)
    assert (everything_fake["real_acc"], everything_fake["fake_acc"], everything_fake["mean_acc"]) == (0.0, 1.0, 0.5)


def test_single_class_test_split_is_a_clear_error():
    with pytest.raises(ValueError, match="single class"):
        compute_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)


def test_seed_style_table_has_its_columns():
    table = classification_table(compute_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]), 0.5))
    assert table.splitlines()[0] == "| class | precision | recall | f1-score | support |"
    assert "| real |" in table and "| fake |" in table and "**accuracy**" in table


@pytest.fixture(scope="module")
def trained(tracked_model):
    """The session's tiny model with an MLflow run in a store of this module's own."""
    return tracked_model


def test_evaluate_writes_numbers_plots_and_logs_them(trained, monkeypatch):
    root, shards, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    out = root / "eval"
    paths = EvaluatePaths.in_artifacts(out, model=root / "model.keras", run_info=root / "run.json", shards=shards)
    result = evaluate.run(Params(), paths)

    saved = json.loads(paths.metrics.read_text())
    assert saved == result and saved["n"] == 12  # 6 test images per class
    assert saved["real"]["support"] == saved["fake"]["support"] == 6
    roc = pd.read_csv(paths.plots / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1
    confusion = pd.read_csv(paths.plots / "confusion.csv")
    assert len(confusion) == 12 and set(confusion["actual"]) == {"real", "fake"}
    tp = ((confusion.actual == "fake") & (confusion.predicted == "fake")).sum()
    assert tp == saved["confusion"]["tp"]
    for name in ("roc.png", "pr.png", "confusion_matrix.png", "classification_report.md", "predictions.csv"):
        assert (paths.reports / name).stat().st_size > 0

    run_id = json.loads((root / "run.json").read_text())["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["test_auc"] == pytest.approx(saved["auc"])
    assert run.data.metrics["test_fake_f1"] == pytest.approx(saved["fake"]["f1-score"])
    assert run.data.tags["evaluate.threshold"] == "0.5"
    artifacts = {a.path for a in MlflowClient().list_artifacts(run_id, "evaluate")}
    assert "evaluate/roc.png" in artifacts and "evaluate/confusion_matrix.png" in artifacts


def register_paths(root, evaluation, auc, registry="registry.json") -> RegisterPaths:
    """Register paths for the model in ``root`` with an evaluation of test AUC ``auc`` (the
    seed's per-class numbers made up around it, as a model card needs them)."""
    per_class = {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 6}
    (root / evaluation).write_text(json.dumps({
        "auc": auc, "threshold": 0.5, "accuracy": 0.85, "average_precision": auc, "n": 12,
        "real": per_class, "fake": per_class, "threshold_0_5": {"accuracy": 0.85},
        "threshold_selection": {"method": "fixed"},
    }))
    return RegisterPaths(model=root / "model.keras", evaluation=root / evaluation, run_info=root / "run.json",
                         robustness=root / "none.json", slices=root / "none.json",
                         external_metrics=root / "none.json", registry=root / registry,
                         card=root / f"card-{evaluation}.md")


def test_register_passes_the_gate_and_sets_the_alias(trained, monkeypatch):
    import keras
    import mlflow

    root, _, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    params = Params(register=RegisterConfig(model_name="fakeface-test", min_test_auc=0.5))
    result = register.run(params, register_paths(root, "good.json", 0.93))
    assert result.registered and result.version == "1" and result.alias == "champion"
    assert json.loads((root / "registry.json").read_text())["model_uri"] == "models:/fakeface-test@champion"
    assert str(MlflowClient().get_model_version_by_alias("fakeface-test", "champion").version) == "1"

    served = mlflow.keras.load_model("models:/fakeface-test@champion")
    local = keras.models.load_model(root / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(served.predict_on_batch(x), local.predict_on_batch(x), rtol=1e-5)
    info = mlflow.models.get_model_info("models:/fakeface-test@champion")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 32, 32, 3]
    assert info.metadata["fakeface"]["classes"] == ["real", "fake"]
    card = (root / "card-good.json.md").read_text()
    assert card.startswith("# Model card: fakeface-test version 1")
    for section in ("## Data", "## Training", "## Test metrics", "## Threshold", "## External sets",
                    "## Robustness", "## Known limits"):
        assert section in card, section
    assert "| augmentations |" in card and "Accuracy 0.8500 at the threshold" in card
    version = MlflowClient().get_model_version("fakeface-test", "1")
    assert version.description == card  # the Models page shows it
    assert any(a.path == "model_card.md" for a in MlflowClient().list_artifacts(version.run_id))


def test_register_below_the_gate_logs_but_does_not_register(trained, monkeypatch):
    root, _, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    params = Params(register=RegisterConfig(model_name="fakeface-weak", min_test_auc=0.9))
    result = register.run(params, register_paths(root, "weak.json", 0.61, "weak_registry.json"))
    assert not result.registered and "0.6100 < gate 0.9" in result.reason
    assert MlflowClient().search_registered_models(filter_string="name = 'fakeface-weak'") == []
    assert result.model_uri.startswith("models:/")  # logged model, loadable by its id
