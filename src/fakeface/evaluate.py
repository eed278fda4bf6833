"""The evaluate stage: the trained model on the test split, in numbers, tables and plots.

Numbers go to a metrics JSON (``dvc metrics show``), curves to CSV files for DVC's ``simple`` and
``confusion`` plot templates (``dvc plots show``), pictures to PNG, and all of it into the
pipeline's MLflow run. Every metric comes from scikit-learn; p(fake) is the positive class.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fakeface import CLASS_NAMES
from fakeface.config import EvaluateConfig

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    paths: list[str]
    labels: np.ndarray  # 0 real, 1 fake
    p_fake: np.ndarray


def predict_split(model: Any, shards_dir: str | Path, split: str, batch_size: int) -> Predictions:
    """p(fake) for every image of a split, in shard order, batched."""
    from fakeface.data import make_dataset
    from fakeface.logs import progress
    from fakeface.model import probabilities_of_fake
    from fakeface.shards import read_index

    size = int(model.input_shape[1])
    dataset = make_dataset(shards_dir, split, size, batch_size, with_ids=True)
    total = -(-int(read_index(Path(shards_dir))[split]["n"]) // batch_size)
    paths: list[str] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for images, targets, ids in progress(dataset, desc=f"predict {split}", total=total, unit="batch"):
        probs.append(probabilities_of_fake(model.predict_on_batch(images)))
        labels.append(targets.numpy().reshape(-1).astype(int))
        paths.extend(p.decode() for p in ids.numpy())
    return Predictions(paths, np.concatenate(labels), np.concatenate(probs))


def compute_metrics(labels: np.ndarray, p_fake: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, confusion matrix, per-class precision/recall/F1/support, ROC AUC and AP."""
    if len(np.unique(labels)) < 2:
        raise ValueError("the test split holds a single class: AUC and per-class metrics are undefined")
    predicted = (p_fake >= threshold).astype(int)
    report = skm.classification_report(
        labels, predicted, labels=[0, 1], target_names=list(CLASS_NAMES), output_dict=True, zero_division=0
    )
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    result: dict[str, Any] = {
        "n": int(len(labels)),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "auc": float(skm.roc_auc_score(labels, p_fake)),
        "average_precision": float(skm.average_precision_score(labels, p_fake)),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    for name in CLASS_NAMES:
        result[name] = {k: float(report[name][k]) for k in ("precision", "recall", "f1-score")}
        result[name]["support"] = int(report[name]["support"])
    return result


def classification_table(result: dict[str, Any]) -> str:
    """The seed project's table: per-class precision, recall, F1, support, then accuracy."""
    lines = [
        "| class | precision | recall | f1-score | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CLASS_NAMES:
        row = result[name]
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | {row['support']} |"
        )
    lines.append(f"| **accuracy** | | | {result['accuracy']:.4f} | {result['n']} |")
    lines.append("")
    lines.append(f"ROC AUC {result['auc']:.4f} · average precision {result['average_precision']:.4f}"
                 f" · threshold {result['threshold']:g}")
    return "\n".join(lines) + "\n"


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


def evaluate(
    cfg: EvaluateConfig,
    model_path: str | Path,
    shards_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
    reports_dir: str | Path,
    run_info_path: str | Path | None = None,
    experiment: str = "fakeface",
) -> dict[str, Any]:
    """Evaluate on the test split; log to the pipeline's MLflow run when ``run_info_path`` is given."""
    import keras

    model = keras.models.load_model(model_path, compile=False)
    preds = predict_split(model, shards_dir, "test", cfg.batch_size)
    result = compute_metrics(preds.labels, preds.p_fake, cfg.threshold)

    metrics_path, plots_dir, reports_dir = Path(metrics_path), Path(plots_dir), Path(reports_dir)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    write_plot_data(preds.labels, preds.p_fake, cfg.threshold, plots_dir)
    figures = write_figures(preds.labels, preds.p_fake, result, reports_dir)
    (reports_dir / "classification_report.md").write_text(classification_table(result))
    pd.DataFrame(
        {"path": preds.paths, "label": np.array(CLASS_NAMES)[preds.labels], "p_fake": preds.p_fake}
    ).to_csv(reports_dir / "predictions.csv", index=False)
    log.info(
        "test: accuracy %.4f, AUC %.4f, AP %.4f on %d images",
        result["accuracy"], result["auc"], result["average_precision"], result["n"],
    )

    if run_info_path is not None:
        import mlflow

        from fakeface import tracking

        with tracking.resume_run(run_info_path, experiment):
            mlflow.log_metrics(flat_test_metrics(result))
            tracking.log_stage_settings("evaluate", cfg.model_dump())
            for path in [*figures, reports_dir / "classification_report.md", metrics_path]:
                mlflow.log_artifact(str(path), "evaluate")
            mlflow.log_artifacts(str(plots_dir), "evaluate/plot_data")
    return result


def flat_test_metrics(result: dict[str, Any]) -> dict[str, float]:
    """``test_accuracy``, ``test_auc``, ``test_fake_f1`` ... for MLflow's metric columns."""
    flat = {f"test_{k}": float(result[k]) for k in ("accuracy", "auc", "average_precision")}
    for name in CLASS_NAMES:
        for key, value in result[name].items():
            flat[f"test_{name}_{key.replace('-score', '')}"] = float(value)
    return flat
