"""Scores of a model on a split: the predictions and the seed project's numbers and table.

Shared by the evaluate stage (the test split, the validation split that chooses the threshold),
the external sets (:mod:`fakeface.analysis.external`) and the ablation's trials: one implementation of
each metric, all from scikit-learn, with p(fake) as the positive class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from fakeface import CLASS_NAMES


@dataclass
class Predictions:
    paths: list[str]
    labels: np.ndarray  # 0 real, 1 fake
    p_fake: np.ndarray


def predict_split(model: Any, shards_dir: str | Path, split: str, batch_size: int) -> Predictions:
    """p(fake) for every image of a split, in shard order, batched."""
    from fakeface.data.pipeline import make_dataset
    from fakeface.logs import progress
    from fakeface.model.classifier import probabilities_of_fake
    from fakeface.data.shards import read_index

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


def detection_rates(labels: np.ndarray, p_fake: np.ndarray, threshold: float) -> dict[str, float]:
    """What detection papers report for a test set: accuracy on the real and on the fake images
    separately (a detector that calls everything fake scores 1.0 on one and 0.0 on the other), their
    mean, average precision and ROC AUC."""
    labels, called = np.asarray(labels), np.asarray(p_fake) >= threshold
    if len(np.unique(labels)) < 2:
        raise ValueError("detection rates need real and fake images")
    real, fake = float(np.mean(~called[labels == 0])), float(np.mean(called[labels == 1]))
    return {"real_acc": real, "fake_acc": fake, "mean_acc": (real + fake) / 2,
            "ap": float(skm.average_precision_score(labels, p_fake)), "auc": float(skm.roc_auc_score(labels, p_fake))}


def classification_table(result: dict[str, Any]) -> str:
    """The seed project's table: per-class precision, recall, F1, support, then accuracy; then ROC
    AUC, average precision and the threshold where ``result`` has them (the ablation's validation
    scores have no threshold)."""
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
    if all(key in result for key in ("auc", "average_precision", "threshold")):
        lines.append("")
        lines.append(f"ROC AUC {result['auc']:.4f} · average precision {result['average_precision']:.4f}"
                     f" · threshold {result['threshold']:g}")
    return "\n".join(lines) + "\n"
