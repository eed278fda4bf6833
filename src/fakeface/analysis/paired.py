"""Is one detector worse than another on the same images? DeLong's test for two correlated ROC AUCs.

When a new model is compared with the champion, both score the *same* test images, so their AUCs
are correlated: an image that is hard for one is usually hard for the other. Treating the two AUCs
as independent overstates the noise of their difference and lets a clearly worse model through;
DeLong, DeLong and Clarke-Pearson (1988) estimate the covariance of the two AUCs from the same
images, in closed form. It is chosen over a paired bootstrap because it is exact for a given
sample (no resampling seed, no thousands of re-scorings), takes milliseconds on 20,000 test
images, and is what clinical and ML papers report (pROC's ``roc.test`` default), so a reader can
reproduce the number. The implementation is the fast midrank form of Sun and Xu (2014), O(n log n);
neither SciPy nor scikit-learn ships the test, and it is 30 lines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedAUC:
    """Two AUCs on the same images and their difference ``auc_new - auc_reference``."""

    auc_new: float
    auc_reference: float
    difference: float
    standard_error: float
    ci_low: float
    ci_high: float
    #: Two-sided p-value of "the AUCs are equal".
    p_value: float
    #: One-sided p-value of "the new model is not worse" (small: the new model is worse).
    p_worse: float
    n_real: int
    n_fake: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    return stats.rankdata(values, method="average")


def _placements(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The AUC and DeLong's structural components: for each positive, the share of negatives it
    outscores (ties count half); for each negative, the share of positives that outscore it."""
    m, n = len(positives), len(negatives)
    combined = _midranks(np.concatenate([positives, negatives]))
    ranks_pos, ranks_neg = _midranks(positives), _midranks(negatives)
    v_pos = (combined[:m] - ranks_pos) / n
    v_neg = 1.0 - (combined[m:] - ranks_neg) / m
    return float(v_pos.mean()), v_pos, v_neg


def delong_test(labels: np.ndarray, p_new: np.ndarray, p_reference: np.ndarray,
                confidence: float = 0.95) -> PairedAUC:
    """DeLong's test of ``auc(p_new) - auc(p_reference)`` on the same labelled images (1 = fake)."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_new, p_reference = np.asarray(p_new, float).reshape(-1), np.asarray(p_reference, float).reshape(-1)
    if not len(labels) == len(p_new) == len(p_reference):
        raise ValueError(f"labels and scores differ in length: {len(labels)}, {len(p_new)}, {len(p_reference)}")
    fake, real = labels == 1, labels == 0
    m, n = int(fake.sum()), int(real.sum())
    if m < 2 or n < 2:
        raise ValueError(f"the paired AUC test needs at least 2 images of each class (real {n}, fake {m})")
    auc_new, pos_new, neg_new = _placements(p_new[fake], p_new[real])
    auc_ref, pos_ref, neg_ref = _placements(p_reference[fake], p_reference[real])
    cov_pos = np.cov(np.vstack([pos_new, pos_ref]))
    cov_neg = np.cov(np.vstack([neg_new, neg_ref]))
    covariance = cov_pos / m + cov_neg / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = auc_new - auc_ref
    se = math.sqrt(max(variance, 0.0))
    z_crit = float(stats.norm.ppf(0.5 + confidence / 2))
    if se == 0.0:  # identical rankings (or both perfect): no evidence either way unless they differ
        p_two = 1.0 if difference == 0 else 0.0
        p_worse = 1.0 if difference >= 0 else 0.0
    else:
        z = difference / se
        p_two = float(2 * stats.norm.sf(abs(z)))
        p_worse = float(stats.norm.cdf(z))
    return PairedAUC(
        auc_new=auc_new, auc_reference=auc_ref, difference=difference, standard_error=se,
        ci_low=difference - z_crit * se, ci_high=difference + z_crit * se,
        p_value=p_two, p_worse=p_worse, n_real=n, n_fake=m, confidence=confidence,
    )
