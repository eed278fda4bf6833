"""``fakeface monitor``: a prediction log whose p(fake) has shifted away from the model's validation
distribution is drift (exit 1, a report, a plot, an MLflow run); one drawn from the same
distribution is not (exit 0); a window too small for a verdict says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("drop_cli_log_handler")


def test_psi_and_ks_separate_a_shift_from_noise():
    from fakeface.analysis.drift import compare, population_stability_index, reference_distribution

    rng = np.random.default_rng(0)
    reference = reference_distribution(rng.beta(0.5, 0.5, 20_000), "valid")
    assert len(reference["p_fake_quantiles"]) == 1001 and reference["n"] == 20_000
    same = compare(reference, rng.beta(0.5, 0.5, 2000), threshold=0.5)
    shifted = compare(reference, rng.beta(2, 5, 2000), threshold=0.5)  # scores pulled towards "real"
    assert not same.drift and same.psi < 0.05 and same.ks_p_value > 0.01
    assert shifted.drift and shifted.psi > 0.25 and shifted.ks_p_value < 1e-6
    assert shifted.fake_share_window < 0.2 < same.fake_share_window
    ref = np.asarray(reference["p_fake_quantiles"])
    assert population_stability_index(ref, ref) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture()
def detector_with_reference(tiny_model, tmp_path):
    """The tiny model with a contract whose reference is Beta(0.5, 0.5) scores."""
    from fakeface.analysis.drift import reference_distribution
    from fakeface.model.contract import make_contract, write_model_with_contract

    model, _, _ = tiny_model
    reference = reference_distribution(np.random.default_rng(1).beta(0.5, 0.5, 5000), "valid")
    return write_model_with_contract(model, tmp_path / "detector.keras", make_contract(32, 0.5, None, reference))


def _write_log(folder, p_fake):
    from fakeface.inference.prediction_log import PredictionLog

    writer = PredictionLog(str(folder))
    records = [{"time": f"2026-12-06T10:{k // 60:02d}:{k % 60:02d}.000Z", "model_name": "m", "model_version": "",
                "p_fake": float(p), "label": "fake" if p >= 0.5 else "real", "error": "", "sha256": "0" * 64,
                "bytes": 1000} for k, p in enumerate(p_fake)]
    records.append({**records[0], "p_fake": None, "label": "", "error": "not_image"})  # unscored: not in the window
    assert writer.write(records) == len(records)
    return folder


@pytest.mark.parametrize(("beta", "status", "code"), [((0.5, 0.5), "ok", 0), ((2, 5), "drift", 1)])
def test_monitor_reports_drift_only_on_a_shifted_log(detector_with_reference, tmp_path, mlflow_store, beta, status,
                                                     code, capsys):
    import mlflow

    from fakeface.cli.main import main

    rng = np.random.default_rng(2)
    log_dir = _write_log(tmp_path / "predictions", rng.beta(*beta, 600))
    out = tmp_path / "monitor"
    assert main(["--params", "none.yaml", "monitor", "--log", str(log_dir), "--model", str(detector_with_reference),
                 "--out", str(out)]) == code
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == status and report["window"]["records"] == 600
    assert (out / "drift.png").stat().st_size > 1000
    assert capsys.readouterr().out.startswith(f"{status}: KS ")
    runs = mlflow.search_runs(experiment_names=["fakeface-monitor"])
    assert list(runs["tags.fakeface.monitor.status"]) == [status]
    assert runs["metrics.window_records"].iloc[0] == 600


def test_a_small_window_is_no_verdict_and_bad_input_is_one_line(detector_with_reference, tmp_path, mlflow_store,
                                                                 caplog):
    from fakeface.cli.main import main

    log_dir = _write_log(tmp_path / "predictions", np.random.default_rng(3).beta(2, 5, 50))
    out = tmp_path / "monitor"
    argv = ["--params", "none.yaml", "monitor", "--log", str(log_dir), "--model", str(detector_with_reference),
            "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "report.json").read_text())["status"] == "insufficient"
    assert main([*argv, "--last", "40", "--min-images", "30"]) == 1  # the same shifted scores, enough of them
    assert main([*argv[:4], str(tmp_path / "nowhere"), *argv[5:]]) == 2
    assert "no prediction log there" in caplog.text
