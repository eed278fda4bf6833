"""Decision threshold and calibration: where to cut p(fake), and whether p(fake) means what it says.

A detector can rank well (high AUC) and still be poor at the default cut of 0.5: its scores are
shifted or squeezed. The threshold is therefore chosen on the *validation* split, never on test:

* ``fixed``: the ``evaluate.threshold`` param, unchanged;
* ``max_f1``: the cut with the highest F1 of the ``fake`` class;
* ``youden``: the cut with the highest Youden's J = TPR - FPR (sensitivity + specificity - 1).

Candidate cuts are the midpoints between consecutive distinct validation scores (plus one below
the lowest and one above the highest): every decision the validation split can tell apart, each
placed in the middle of its gap rather than on a score. Ties go to the cut nearest 0.5.

Calibration: the reliability curve (``sklearn.calibration.calibration_curve``: per equal-width
bin of p(fake), the fraction of images that really are fake) and the expected calibration error
over the same bins, ECE = sum_b (n_b / N) * |fraction fake_b - mean p(fake)_b|. Both use
scikit-learn's binning: a score on an inner edge belongs to the bin below it, 1.0 to the last.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

METHODS = ("fixed", "max_f1", "youden")
_OBJECTIVE = {"max_f1": "f1", "youden": "youden_j"}


@dataclass(frozen=True)
class ThresholdChoice:
    """The cut in force, how it was chosen, and how good it was where it was chosen."""

    method: str
    threshold: float
    split: str | None = None  # where it was chosen (None for fixed)
    n: int = 0  # images it was chosen on
    objective: str | None = None  # f1 | youden_j
    objective_value: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_sweep(labels: np.ndarray, p_fake: np.ndarray) -> pd.DataFrame:
    """Confusion counts, F1 (fake) and Youden's J at every candidate cut, ascending.

    An image is called fake when ``p_fake >= cut``.
    """
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_fake = np.asarray(p_fake, dtype="float64").reshape(-1)
    if labels.shape != p_fake.shape or labels.size == 0:
        raise ValueError("labels and p_fake must be non-empty and of the same length")
    scores = np.unique(p_fake)
    cuts = np.concatenate([[scores[0] / 2], (scores[:-1] + scores[1:]) / 2, [(scores[-1] + 1) / 2]])
    fake = np.sort(p_fake[labels == 1])
    real = np.sort(p_fake[labels == 0])
    tp = fake.size - np.searchsorted(fake, cuts, side="left")
    fp = real.size - np.searchsorted(real, cuts, side="left")
    fn = fake.size - tp
    tn = real.size - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = tp / max(fake.size, 1)
        f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        fpr = fp / max(real.size, 1)
    return pd.DataFrame(
        {
            "threshold": cuts,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1,
            "tpr": recall, "fpr": fpr, "youden_j": recall - fpr,
        }
    )


def select_threshold(
    labels: np.ndarray | None,
    p_fake: np.ndarray | None,
    method: str,
    fixed: float = 0.5,
    split: str = "valid",
) -> ThresholdChoice:
    """The decision threshold by ``method`` (see the module docstring) on one split's scores.

    ``fixed`` ignores the scores. A split with a single class cannot rank anything, so the other
    methods fall back to ``fixed`` and say so in ``note`` (and the log) instead of failing.
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {list(METHODS)}")
    if method == "fixed":
        return ThresholdChoice("fixed", float(fixed), note="the evaluate.threshold param")
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_fake = np.asarray(p_fake, dtype="float64").reshape(-1)
    if len(np.unique(labels)) < 2:
        note = f"the {split} split holds a single class: fell back to the fixed threshold {fixed:g}"
        log.warning("%s", note)
        return ThresholdChoice("fixed", float(fixed), split, int(labels.size), note=note)
    sweep = threshold_sweep(labels, p_fake)
    objective = _OBJECTIVE[method]
    values = sweep[objective].to_numpy()
    best = np.flatnonzero(values >= values.max() - 1e-12)
    pick = best[np.argmin(np.abs(sweep["threshold"].to_numpy()[best] - 0.5))]
    return ThresholdChoice(
        method=method,
        threshold=float(sweep["threshold"].iloc[pick]),
        split=split,
        n=int(labels.size),
        objective=objective,
        objective_value=float(values[pick]),
        note=f"best {objective} over {len(sweep)} candidate cuts on the {split} split",
    )


# --------------------------------------------------------------------------- calibration


def _bin_ids(p_fake: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p_fake)  # as sklearn.calibration.calibration_curve


def calibration_table(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin: its edges, images, mean p(fake) and fraction really fake (empty bins kept)."""
    labels = np.asarray(labels, dtype="float64").reshape(-1)
    p_fake = np.clip(np.asarray(p_fake, dtype="float64").reshape(-1), 0.0, 1.0)
    ids = _bin_ids(p_fake, n_bins)
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p_fake, minlength=n_bins)
    sum_y = np.bincount(ids, weights=labels, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "bin": np.arange(n_bins),
                "lower": edges[:-1],
                "upper": edges[1:],
                "n": count,
                "mean_predicted": np.where(count > 0, sum_p / np.maximum(count, 1), np.nan),
                "fraction_fake": np.where(count > 0, sum_y / np.maximum(count, 1), np.nan),
            }
        )


def expected_calibration_error(labels: np.ndarray, p_fake: np.ndarray, n_bins: int = 10) -> float:
    """ECE of p(fake) over ``n_bins`` equal-width bins: sum_b (n_b / N) |fraction fake_b - mean p_b|."""
    table = calibration_table(labels, p_fake, n_bins)
    used = table[table["n"] > 0]
    gaps = (used["fraction_fake"] - used["mean_predicted"]).abs()
    return float((used["n"] * gaps).sum() / used["n"].sum())


def calibration_summary(labels: np.ndarray, p_fake: np.ndarray, n_bins: int) -> dict[str, Any]:
    labels = np.asarray(labels, dtype="float64").reshape(-1)
    p_fake = np.asarray(p_fake, dtype="float64").reshape(-1)
    return {
        "ece": expected_calibration_error(labels, p_fake, n_bins),
        "brier": float(np.mean((p_fake - labels) ** 2)),
        "bins": int(n_bins),
    }


def _pyplot():
    """pyplot on the Agg backend: the plots are files, drawn where there may be no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (its folder made) and free it: both plots end the same way."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reliability_plot(labels: np.ndarray, p_fake: np.ndarray, n_bins: int, path: Path, title: str = "") -> Path:
    """Reliability diagram (sklearn's calibration_curve) over a histogram of the scores."""
    plt = _pyplot()
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(labels, np.clip(p_fake, 0, 1), n_bins=n_bins, strategy="uniform")
    ece = expected_calibration_error(labels, p_fake, n_bins)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    ax.plot(prob_pred, prob_true, "o-", label="fakeface")
    ax.set_ylabel("fraction really fake")
    ax.set_title(title or f"Reliability (ECE {ece:.3f}, {n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    labels = np.asarray(labels).astype(int)
    edges = np.linspace(0, 1, n_bins + 1)
    hist.hist([p_fake[labels == 0], p_fake[labels == 1]], bins=edges, label=["real", "fake"], stacked=True)
    hist.set_xlabel("predicted p(fake)")
    hist.set_ylabel("images")
    hist.legend(fontsize=8)
    return _save(fig, path)


def write_threshold_plot(sweep: pd.DataFrame, choice: ThresholdChoice, path: Path) -> Path:
    """F1 and Youden's J against the cut on the split the threshold was chosen on."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.step(sweep["threshold"], sweep["f1"], where="mid", label="F1 (fake)")
    ax.step(sweep["threshold"], sweep["youden_j"], where="mid", label="Youden's J")
    ax.axvline(0.5, c="grey", ls=":", lw=1, label="0.5")
    ax.axvline(choice.threshold, c="red", ls="--", lw=1, label=f"chosen {choice.threshold:.3f} ({choice.method})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold on p(fake)")
    ax.set_title(f"Threshold selection on the {choice.split or 'valid'} split")
    ax.legend(fontsize=8)
    return _save(fig, path)
