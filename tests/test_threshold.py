"""Decision threshold (chosen on valid), calibration (ECE, reliability), and the evaluate stage
that reports test metrics at 0.5 and at the chosen threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import mlflow
from mlflow.tracking import MlflowClient

from fakeface.analysis.calibration import (
    calibration_table,
    expected_calibration_error,
    select_threshold,
    threshold_sweep,
)
from fakeface.config import ConfigError, EvaluateConfig, parse_params
from fakeface.stages.paths import EvaluatePaths

# 3 real, 7 fake. Calling everything above 0.15 fake gets the best F1 (F1 weighs only the fake
# class, so it likes recall); Youden's J weighs both classes and cuts higher, at 0.35.
LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
SCORES = np.array([0.10, 0.30, 0.62, 0.20, 0.40, 0.50, 0.55, 0.70, 0.80, 0.90])


def _at(sweep: pd.DataFrame, cut: float) -> pd.Series:
    return sweep[np.isclose(sweep["threshold"], cut)].iloc[0]


def test_sweep_counts_on_the_hand_example():
    sweep = threshold_sweep(LABELS, SCORES)
    # cuts are the midpoints between neighbouring scores, plus one below and one above
    assert list(sweep["threshold"]) == pytest.approx(
        [0.05, 0.15, 0.25, 0.35, 0.45, 0.525, 0.585, 0.66, 0.75, 0.85, 0.95]
    )
    at = _at(sweep, 0.35)
    assert (at.tp, at.fp, at.fn, at.tn) == (6, 1, 1, 2)
    assert at.f1 == pytest.approx(12 / 14) and at.youden_j == pytest.approx(6 / 7 - 1 / 3)
    assert sweep.iloc[-1].tp == 0 and sweep.iloc[0].fn == 0


def test_max_f1_and_youden_pick_the_expected_cuts():
    f1 = select_threshold(LABELS, SCORES, "max_f1")
    assert f1.threshold == pytest.approx(0.15)
    assert f1.objective == "f1" and f1.objective_value == pytest.approx(14 / 16)
    assert f1.split == "valid" and f1.n == 10
    youden = select_threshold(LABELS, SCORES, "youden")
    assert youden.threshold == pytest.approx(0.35)
    assert youden.objective_value == pytest.approx(6 / 7 - 1 / 3)


def test_ties_go_to_the_cut_nearest_one_half():
    # J = 0.5 at 0.35 and at 0.66; 0.35 is nearer 0.5
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.62, 0.2, 0.4, 0.5, 0.7, 0.8, 0.9])
    sweep = threshold_sweep(labels, scores)
    assert _at(sweep, 0.35).youden_j == pytest.approx(0.5) and _at(sweep, 0.66).youden_j == pytest.approx(0.5)
    assert sweep["youden_j"].max() == pytest.approx(0.5)
    assert select_threshold(labels, scores, "youden").threshold == pytest.approx(0.35)


def test_fixed_keeps_the_param_and_ignores_the_scores():
    choice = select_threshold(LABELS, SCORES, "fixed", fixed=0.42)
    assert choice.threshold == 0.42 and choice.method == "fixed" and choice.split is None


def test_single_class_valid_split_falls_back_to_fixed():
    choice = select_threshold(np.ones(4), np.array([0.2, 0.4, 0.6, 0.8]), "max_f1", fixed=0.5)
    assert choice.threshold == 0.5 and choice.method == "fixed" and "single class" in choice.note


def test_threshold_params_are_validated():
    assert parse_params({}).evaluate.threshold_method == "max_f1"
    assert parse_params({"evaluate": {"threshold_method": "youden"}}).evaluate.threshold_method == "youden"
    with pytest.raises(ConfigError, match=r"evaluate.threshold_method = 'f1'.*'max_f1'"):
        parse_params({"evaluate": {"threshold_method": "f1"}})
    with pytest.raises(ValueError, match="unknown threshold method"):
        select_threshold(LABELS, SCORES, "best")


def test_ece_on_a_hand_example():
    labels = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    # 2 bins: [0, .5) mean p .15, fraction fake .5; [.5, 1] mean p .85, fraction fake 1
    assert expected_calibration_error(labels, p, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    # 10 bins: one image each, |0 - .1| + |1 - .2| + |1 - .8| + |1 - .9| over 4
    assert expected_calibration_error(labels, p, n_bins=10) == pytest.approx(1.2 / 4)
    # calibrated: a quarter of the images at p = .25 are fake
    assert expected_calibration_error(np.array([1, 0, 0, 0]), np.full(4, 0.25)) == pytest.approx(0.0)
    # a score on an inner edge goes to the bin below, as in scikit-learn
    table = calibration_table(np.array([1]), np.array([0.5]), n_bins=2)
    assert list(table["n"]) == [1, 0]


def test_calibration_table_matches_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200)
    labels = (rng.uniform(0, 1, 200) < p**2).astype(int)
    prob_true, prob_pred = calibration_curve(labels, p, n_bins=7)
    table = calibration_table(labels, p, n_bins=7)
    used = table[table["n"] > 0]
    np.testing.assert_allclose(used["fraction_fake"], prob_true)
    np.testing.assert_allclose(used["mean_predicted"], prob_pred)


# --------------------------------------------------------------------------- the evaluate stage


@pytest.fixture(scope="module")
def trained(tracked_model):
    root, shards, _ = tracked_model
    return root, shards


def evaluate_into(out: Path, root: Path, shards: Path) -> EvaluatePaths:
    """Evaluate paths for the model in ``root``, every output under ``out``."""
    return EvaluatePaths.in_artifacts(out, model=root / "model.keras", run_info=root / "run.json", shards=shards)


def test_evaluate_reports_both_thresholds_calibration_robustness_slices_and_ig(trained, monkeypatch):
    from fakeface.stages import evaluate
    from fakeface.stages.evaluate import predict_split

    root, shards = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    params = parse_params(
        {"evaluate": {"threshold_method": "youden", "explain": {"images_per_class": 2, "steps": 20}}}
    )
    cfg = params.evaluate
    out = root / "eval"
    paths = evaluate_into(out, root, shards)
    result = evaluate.run(params, paths)

    saved = json.loads(paths.metrics.read_text())
    assert saved == result
    # the threshold is Youden's cut on the valid split, and it is the one register will store
    import keras

    model = keras.models.load_model(root / "model.keras", compile=False)
    valid = predict_split(model, shards, "valid", 64)
    expected = select_threshold(valid.labels, valid.p_fake, "youden")
    assert saved["threshold"] == pytest.approx(expected.threshold)
    assert saved["threshold_selection"]["method"] == "youden" and saved["threshold_selection"]["split"] == "valid"
    # test metrics at the chosen threshold (top level) and at 0.5
    at_half = saved["threshold_0_5"]
    assert at_half["threshold"] == 0.5 and at_half["n"] == saved["n"] == 12
    assert at_half["auc"] == saved["auc"]
    test = predict_split(model, shards, "test", 64)
    for key, cut in ((saved, saved["threshold"]), (at_half, 0.5)):
        assert key["accuracy"] == pytest.approx(np.mean((test.p_fake >= cut).astype(int) == test.labels))
    assert 0 <= saved["calibration"]["ece"] <= 1 and saved["calibration"]["bins"] == 10

    robustness = json.loads(paths.robustness.read_text())
    assert list(robustness["perturbations"]) == ["none", *cfg.enabled_perturbations()]
    assert robustness["perturbations"]["none"]["auc"] == pytest.approx(saved["auc"])
    slices = json.loads(paths.slices.read_text())
    assert slices["slices"]["source"]["synthetic"]["n"] == 12
    explain = json.loads((paths.explain / "explain.json").read_text())
    assert len(explain["images"]) == 4 and explain["steps"] == 20
    for name in ("calibration.png", "threshold.png", "robustness.png", "slices.md", "classification_report.md"):
        assert (paths.reports / name).stat().st_size > 0, name
    report = (paths.reports / "classification_report.md").read_text()
    assert "## Test split at 0.5" in report and "youden on the valid split" in report
    assert set(pd.read_csv(paths.plots / "calibration.csv").columns) >= {"mean_predicted", "fraction_fake"}
    assert len(pd.read_csv(paths.plots / "robustness.csv")) == 1 + len(cfg.enabled_perturbations())

    run_id = json.loads((root / "run.json").read_text())["run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["threshold"] == pytest.approx(saved["threshold"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(saved["accuracy"])
    assert run.data.metrics["test_0_5_accuracy"] == pytest.approx(at_half["accuracy"])
    assert run.data.metrics["test_ece"] == pytest.approx(saved["calibration"]["ece"])
    assert run.data.metrics["robustness_jpeg_q50_accuracy"] == pytest.approx(
        robustness["perturbations"]["jpeg_q50"]["accuracy"]
    )
    assert run.data.tags["evaluate.threshold_method"] == "youden"
    settings = mlflow.artifacts.load_dict(f"runs:/{run_id}/settings/evaluate.json")
    assert settings["robustness.jpeg_q50.quality"] == 50 and settings["threshold_method"] == "youden"
    assert "evaluate.robustness.jpeg_q50.quality" not in run.data.tags, "details in the artifact, not tags"
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluate")}
    assert {"evaluate/robustness.csv", "evaluate/robustness.png", "evaluate/calibration.png",
            "evaluate/slices.json", "evaluate/slices.md"} <= artifacts
    assert any(a.path.endswith("explain.json") for a in client.list_artifacts(run_id, "explain"))


def test_fixed_method_keeps_the_param_in_the_evaluation(trained, tmp_path):
    from fakeface.stages import evaluate

    root, shards = trained
    params = parse_params({"evaluate": {"threshold_method": "fixed", "threshold": 0.3, "robustness": {},
                                        "explain": {"enabled": False}}})
    paths = evaluate_into(tmp_path, root, shards)
    result = evaluate.run(params, paths, track=False)
    assert result["threshold"] == 0.3 and result["threshold_selection"]["method"] == "fixed"
    robustness = json.loads(paths.robustness.read_text())
    assert list(robustness["perturbations"]) == ["none"]
    assert json.loads((paths.explain / "explain.json").read_text())["images"] == []
