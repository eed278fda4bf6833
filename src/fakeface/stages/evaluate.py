"""The evaluate stage: the trained model on the test split, in numbers, tables and plots.

Numbers go to a metrics JSON (``dvc metrics show``), curves to CSV files for DVC's ``simple`` and
``confusion`` plot templates (``dvc plots show``), pictures to PNG, and all of it into the
pipeline's MLflow run. Every metric comes from scikit-learn; p(fake) is the positive class.

Beyond the test metrics:

* the decision threshold is chosen on the valid split (``evaluate.threshold_method``: fixed,
  max_f1 or youden; :mod:`fakeface.analysis.calibration`) and the test metrics are reported both at it
  and at 0.5; the chosen one is the JSON's ``threshold``, which register stores with the model;
* calibration: ECE and Brier score, a reliability plot and ``calibration.csv``;
* robustness to JPEG re-compression, blur, rescaling and crops (:mod:`fakeface.analysis.robustness`):
  ``robustness.json`` next to the metrics, a bar chart and a CSV table;
* metrics by slice: source, original size, format, brightness (:mod:`fakeface.analysis.slices`);
* integrated-gradients heatmaps for a few right and wrong test images per class
  (:mod:`fakeface.analysis.explain`), with their completeness check, under ``reports/explain``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fakeface import CLASS_NAMES, FakefaceError
from fakeface.analysis.drift import reference_distribution
from fakeface.config import EvaluateConfig, Params
from fakeface.data.shards import read_index
from fakeface.model.contract import MIN_RELIABLE_PER_CLASS, make_contract, write_model_with_contract
from fakeface.analysis.external import flat_metrics, report_markdown, score_sets
from fakeface.analysis.metrics import Predictions, classification_table, compute_metrics, predict_split
from fakeface.stages.paths import EvaluatePaths

log = logging.getLogger(__name__)


def write_plot_data(labels: np.ndarray, p_fake: np.ndarray, threshold: float, plots_dir: Path) -> None:
    """CSV files in the shapes DVC's plot templates read."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    fpr, tpr, roc_thresholds = skm.roc_curve(labels, p_fake)
    pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thresholds, 1.0)}).to_csv(
        plots_dir / "roc.csv", index=False
    )
    precision, recall, _ = skm.precision_recall_curve(labels, p_fake)
    pd.DataFrame({"recall": recall, "precision": precision}).to_csv(plots_dir / "pr.csv", index=False)
    names = np.array(CLASS_NAMES)
    pd.DataFrame(
        {"actual": names[labels], "predicted": names[(p_fake >= threshold).astype(int)]}
    ).to_csv(plots_dir / "confusion.csv", index=False)


def write_figures(labels: np.ndarray, p_fake: np.ndarray, result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    skm.RocCurveDisplay.from_predictions(labels, p_fake, ax=ax, name="fakeface")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set_title(f"ROC (AUC {result['auc']:.3f})")
    written.append(_save(fig, out_dir / "roc.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    skm.PrecisionRecallDisplay.from_predictions(labels, p_fake, ax=ax, name="fakeface")
    ax.set_title(f"Precision-recall (AP {result['average_precision']:.3f})")
    written.append(_save(fig, out_dir / "pr.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    skm.ConfusionMatrixDisplay.from_predictions(
        labels, (p_fake >= result["threshold"]).astype(int), labels=[0, 1],
        display_labels=list(CLASS_NAMES), ax=ax, colorbar=False,
    )
    ax.set_title(f"Confusion matrix (threshold {result['threshold']:g})")
    written.append(_save(fig, out_dir / "confusion_matrix.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(params: Params, paths: EvaluatePaths, *, track: bool = True) -> dict[str, Any]:
    """Evaluate on the test split and, with ``track``, log to the training run (``paths.run_info``).

    The decision threshold comes from ``evaluate.threshold_method``: the fixed param, or chosen on
    the valid split of the same shards. The returned dict (also ``paths.metrics``) holds the test
    metrics at that threshold, ``threshold`` itself (what register stores with the model), the
    same metrics at 0.5 (``threshold_0_5``), how the threshold was chosen and the calibration.
    Robustness, slices and integrated-gradients heatmaps go to their own paths.
    """
    from fakeface.analysis import calibration
    from fakeface.analysis import robustness
    from fakeface.analysis import slices
    from fakeface.model.classifier import input_transform_of, load_model_file

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    cfg = params.evaluate
    shards_dir = Path(paths.shards)
    metrics_path, plots_dir, reports_dir = Path(paths.metrics), Path(paths.plots), Path(paths.reports)
    robustness_path, slices_path, explain_dir = Path(paths.robustness), Path(paths.slices), Path(paths.explain)
    for folder in (plots_dir, reports_dir):
        folder.mkdir(parents=True, exist_ok=True)

    model = load_model_file(paths.model)
    preds = predict_split(model, shards_dir, "test", cfg.batch_size)
    sweep = None
    # the valid split's scores: the threshold (unless fixed) and the reference distribution the
    # served model is monitored against (fakeface.analysis.drift)
    valid = predict_split(model, shards_dir, "valid", cfg.batch_size) if _has_images(shards_dir, "valid") else None
    if cfg.threshold_method == "fixed":
        choice = calibration.select_threshold(None, None, "fixed", cfg.threshold)
    else:
        if valid is None:
            raise FakefaceError(f"{shards_dir}: the valid split is empty; threshold_method "
                                f"{cfg.threshold_method!r} chooses on it (use fixed)")
        choice = calibration.select_threshold(valid.labels, valid.p_fake, cfg.threshold_method, cfg.threshold)
        if len(np.unique(valid.labels)) == 2:
            sweep = calibration.threshold_sweep(valid.labels, valid.p_fake)
    threshold = choice.threshold
    lap("predict")

    result = compute_metrics(preds.labels, preds.p_fake, threshold)
    result["threshold_0_5"] = compute_metrics(preds.labels, preds.p_fake, 0.5)
    result["threshold_selection"] = choice.as_dict()
    if cfg.threshold_method != "fixed":
        result["threshold_selection"]["counts"] = {
            name: int((valid.labels == index).sum()) for index, name in enumerate(CLASS_NAMES)
        }
    reference = reference_distribution(valid.p_fake, "valid") if valid is not None else None
    contract = make_contract(int(model.input_shape[1]), threshold, result["threshold_selection"], reference,
                             input_transform_of(model))
    result["threshold_reliable"] = contract["threshold_reliable"]
    if not contract["threshold_reliable"]:
        log.warning(
            "the threshold %.4f was chosen on %s valid images per class, fewer than %d: treat it as a "
            "rough guess (more validation data, or evaluate.threshold_method: fixed)",
            threshold, result["threshold_selection"]["counts"], MIN_RELIABLE_PER_CLASS,
        )
    write_model_with_contract(paths.model, paths.detector, contract)
    result["calibration"] = calibration.calibration_summary(preds.labels, preds.p_fake, cfg.calibration_bins)

    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    write_plot_data(preds.labels, preds.p_fake, threshold, plots_dir)
    bins = calibration.calibration_table(preds.labels, preds.p_fake, cfg.calibration_bins)
    bins[bins["n"] > 0].to_csv(plots_dir / "calibration.csv", index=False)  # empty bins have no point
    figures = write_figures(preds.labels, preds.p_fake, result, reports_dir)
    figures.append(
        calibration.write_reliability_plot(
            preds.labels, preds.p_fake, cfg.calibration_bins, reports_dir / "calibration.png"
        )
    )
    if sweep is not None:
        figures.append(calibration.write_threshold_plot(sweep, choice, reports_dir / "threshold.png"))
    report = reports_dir / "classification_report.md"
    report.write_text(evaluation_report(result))
    names = np.array(CLASS_NAMES)
    pd.DataFrame(
        {
            "path": preds.paths,
            "label": names[preds.labels],
            "p_fake": preds.p_fake,
            "predicted": names[(preds.p_fake >= threshold).astype(int)],
        }
    ).to_csv(reports_dir / "predictions.csv", index=False)
    log.info(
        "test: accuracy %.4f at threshold %.4f (%s; %.4f at 0.5), AUC %.4f, AP %.4f, ECE %.4f on %d images",
        result["accuracy"], threshold, choice.method, result["threshold_0_5"]["accuracy"], result["auc"],
        result["average_precision"], result["calibration"]["ece"], result["n"],
    )
    lap("metrics")

    table = robustness.evaluate_robustness(
        model, shards_dir, cfg.enabled_perturbations(), threshold, cfg.batch_size, cfg.robustness_max_images
    )
    robustness_files = robustness.write_robustness(
        table, threshold, robustness_path, reports_dir / "robustness.png", plots_dir / "robustness.csv"
    )
    (reports_dir / HEADLINE_NAME).write_text(json.dumps(headline_metrics(result, table), indent=2) + "\n")
    lap("robustness")

    properties = slices.read_properties(shards_dir, "test", cfg.slices.brightness_edges)
    scored = properties.merge(
        pd.DataFrame({"path": preds.paths, "p_fake": preds.p_fake}), on="path", validate="one_to_one"
    )
    slices.write_slices(scored, threshold, slices_path, reports_dir / "slices.md", cfg.slices.brightness_edges)
    lap("slices")

    explanation = explain_test_images(model, cfg, shards_dir, preds, threshold, explain_dir)
    lap("explain")

    external = score_sets(model, threshold, cfg.external, cfg, seed=params.seed, max_pixels=params.data.max_pixels)
    Path(paths.external_metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.external_metrics).write_text(json.dumps(external, indent=2) + "\n")
    (reports_dir / "external.md").write_text(report_markdown(external))
    lap("external")
    log.info("evaluate timings: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

    if track:
        import mlflow

        from fakeface import tracking

        with tracking.resume_run(paths.run_info, params.tracking.experiment):
            mlflow.log_metrics({**run_metrics(result, table, explanation), **flat_metrics(external)})
            mlflow.set_tag("fakeface.threshold_reliable", str(result["threshold_reliable"]).lower())
            tracking.log_stage_settings("evaluate", stage_settings(cfg), tagged=("threshold_method", "threshold"))
            artifacts = [*figures, report, reports_dir / "slices.md", reports_dir / "robustness.png",
                         reports_dir / "external.md", metrics_path, slices_path, Path(paths.external_metrics),
                         *robustness_files]
            for path in dict.fromkeys(artifacts):
                mlflow.log_artifact(str(path), "evaluate")
            mlflow.log_artifacts(str(plots_dir), "evaluate/plot_data")
            mlflow.log_artifacts(str(explain_dir), "explain")
    return result


#: The headline numbers' file, in the reports folder: the experiments table's metrics (dvc.yaml's
#: top-level ``metrics``); the detailed files stay outputs, out of that table.
HEADLINE_NAME = "headline.json"
#: The perturbation whose AUC is a headline number (published detectors collapse under JPEG).
HEADLINE_PERTURBATION = "jpeg_q75"


def _has_images(shards_dir: Path, split: str) -> bool:
    return int(read_index(Path(shards_dir)).get(split, {}).get("n", 0)) > 0


def headline_metrics(result: dict[str, Any], table: pd.DataFrame | None) -> dict[str, float]:
    """The handful of numbers ``dvc exp show`` compares runs by: test AUC, accuracy at the chosen
    threshold, the threshold, the share of real test faces called fake, and the AUC after JPEG q75
    re-compression (when that check ran). Everything else stays in metrics/*.json and MLflow. The
    names are short on purpose: each is a column of the experiments table, which must leave room in
    a 120-column terminal for the params an experiment changes."""
    headline = {
        "test_auc": float(result["auc"]),
        "test_acc": float(result["accuracy"]),
        "threshold": float(result["threshold"]),
        "real_as_fake": round(1.0 - float(result["real"]["recall"]), 6),
    }
    if table is not None and not table.empty:
        rows = table[table["perturbation"] == HEADLINE_PERTURBATION]
        if len(rows) and not pd.isna(rows["auc"].iloc[0]):
            headline[f"auc_{HEADLINE_PERTURBATION}"] = float(rows["auc"].iloc[0])
    return headline


def evaluation_report(result: dict[str, Any]) -> str:
    """The markdown report: the seed table at the chosen threshold and at 0.5, and calibration."""
    choice = result["threshold_selection"]
    how = (
        "the fixed evaluate.threshold param"
        if choice["method"] == "fixed"
        else f"{choice['method']} on the {choice['split']} split ({choice['objective']} {choice['objective_value']:.4f})"
    )
    calib = result["calibration"]
    if not result.get("threshold_reliable", True):
        counts = ", ".join(f"{k} {v}" for k, v in choice.get("counts", {}).items())
        how += (f"\n\n**Unreliable threshold**: chosen on {counts} validation images, fewer than "
                f"{MIN_RELIABLE_PER_CLASS} per class; it may sit far from where a larger sample would put it.")
    return (
        f"## Test split at the chosen threshold {result['threshold']:.4f}\n\nChosen by {how}.\n\n"
        + classification_table(result)
        + "\n## Test split at 0.5\n\n"
        + classification_table(result["threshold_0_5"])
        + f"\n## Calibration\n\nECE {calib['ece']:.4f} ({calib['bins']} equal-width bins of p(fake)),"
        f" Brier score {calib['brier']:.4f}.\n"
    )


def explain_test_images(
    model: Any, cfg: EvaluateConfig, shards_dir: str | Path, preds: Predictions, threshold: float, out_dir: Path
) -> dict[str, Any]:
    """IG heatmaps for ``cfg.explain.images_per_class`` test images per class, right and wrong."""
    from fakeface.analysis.explain import explain_images, select_examples

    settings = cfg.explain
    chosen = select_examples(preds.labels, preds.p_fake, threshold, settings.images_per_class) if settings.enabled else []
    if not chosen:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("ig_*.png"):
            stale.unlink()
        summary = {"method": "integrated gradients", "enabled": settings.enabled, "images": []}
        (out_dir / "explain.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    paths = [preds.paths[i] for i in chosen]
    images = load_split_images(shards_dir, "test", paths, int(model.input_shape[1]))
    return explain_images(
        model, images, paths, out_dir, threshold=threshold, labels=preds.labels[chosen],
        baseline=settings.baseline, steps=settings.steps, batch_size=settings.batch_size,
        seed=settings.seed, clear=True,
    )


def load_split_images(shards_dir: str | Path, split: str, paths: list[str], size: int) -> np.ndarray:
    """The images of ``split`` with these ``paths``, in that order, as the model sees them."""
    from fakeface.data.decode import model_input
    from fakeface.analysis.robustness import iter_records

    wanted = set(paths)
    found: dict[str, np.ndarray] = {}
    for record in iter_records(shards_dir, split):
        if record["path"] in wanted:
            found[record["path"]] = model_input(record["image"], size)
            if len(found) == len(wanted):
                break
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"not in the {split} shards: {sorted(missing)[:3]}")
    return np.stack([found[p] for p in paths])


def stage_settings(cfg: EvaluateConfig) -> dict[str, Any]:
    """The evaluate section as dotted keys (``robustness.jpeg_q50.quality``...), for the run."""
    return {k.removeprefix("evaluate."): v for k, v in Params(evaluate=cfg).flat().items() if k.startswith("evaluate.")}


def run_metrics(result: dict[str, Any], table: pd.DataFrame | None = None, explanation: dict[str, Any] | None = None) -> dict[str, float]:
    """Everything numeric the run gets: test metrics at the threshold and at 0.5, the threshold,
    calibration, robustness per perturbation and the IG completeness error."""
    metrics = flat_test_metrics(result)
    metrics.update(flat_test_metrics(result["threshold_0_5"], prefix="test_0_5_"))
    metrics["threshold"] = float(result["threshold"])
    metrics["test_ece"] = float(result["calibration"]["ece"])
    metrics["test_brier"] = float(result["calibration"]["brier"])
    value = result["threshold_selection"].get("objective_value")
    if value is not None:
        metrics[f"valid_{result['threshold_selection']['objective']}"] = float(value)
    if table is not None:
        for row in table.to_dict("records"):
            for key in ("auc", "accuracy"):
                if row[key] is not None and not pd.isna(row[key]):
                    metrics[f"robustness_{row['perturbation']}_{key}"] = float(row[key])
    if explanation and explanation.get("max_rel_error") is not None:
        metrics["ig_max_rel_error"] = float(explanation["max_rel_error"])
    return metrics


def flat_test_metrics(result: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """``test_accuracy``, ``test_auc``, ``test_fake_f1`` ... for MLflow's metric columns."""
    flat = {f"{prefix}{k}": float(result[k]) for k in ("accuracy", "auc", "average_precision")}
    for name in CLASS_NAMES:
        for key, value in result[name].items():
            flat[f"{prefix}{name}_{key.replace('-score', '')}"] = float(value)
    return flat
