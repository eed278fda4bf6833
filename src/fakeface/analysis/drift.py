"""Do the images a served model sees still look like the ones it was validated on?

A face detector fails quietly when its inputs change (a new generator, a new camera, a JPEG
pipeline upstream): it keeps answering, with scores shaped differently. The p(fake) the model
gives is a one-number summary of each image that needs no labels, so its distribution is what is
watched: the evaluate stage stores the validation split's p(fake) distribution inside the model's
contract (:func:`reference_distribution`: 1,001 quantiles, a few kilobytes whatever the split's
size), and :func:`compare` holds a window of served scores against it with two standard checks:

* the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``): any change of shape; its
  p-value is computed against the stored quantiles as the reference sample, which is the
  validation ECDF to within 0.001;
* the population stability index over the reference's deciles, the industry's rule of thumb
  (below 0.1 stable, 0.1-0.25 a shift worth a look, above 0.25 a large shift).

SciPy is used rather than a drift library (Evidently, alibi-detect, NannyML): both checks are a
few lines over SciPy, which is already here through scikit-learn, while those libraries bring
dozens of pinned dependencies into the serving and monitoring image for the same two numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Quantiles kept of the reference distribution.
REFERENCE_POINTS = 1001
#: Bins of the population stability index: the reference's deciles.
PSI_BINS = 10
#: Floor of a bin's share in the PSI, so an empty bin does not make it infinite.
PSI_FLOOR = 1e-4


def reference_distribution(p_fake: np.ndarray, split: str) -> dict[str, Any]:
    """What the contract stores: the split, its size, and its p(fake) quantiles (or every value,
    when there are fewer than :data:`REFERENCE_POINTS`)."""
    values = np.sort(np.asarray(p_fake, dtype="float64").reshape(-1))
    if len(values) > REFERENCE_POINTS:
        values = np.quantile(values, np.linspace(0, 1, REFERENCE_POINTS))
    return {"split": split, "n": int(np.asarray(p_fake).size), "p_fake_quantiles": [round(float(v), 6) for v in values]}


@dataclass(frozen=True)
class DriftResult:
    n_window: int
    n_reference: int
    ks_statistic: float
    ks_p_value: float
    psi: float
    mean_window: float
    mean_reference: float
    fake_share_window: float
    fake_share_reference: float
    drift: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def population_stability_index(reference: np.ndarray, window: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of ``window`` against ``reference`` over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:  # a reference with (nearly) one value: split at it
        edges = np.array([-np.inf, float(edges[0]), np.inf])
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(window, edges)[0] / len(window)
    expected, actual = np.maximum(expected, PSI_FLOOR), np.maximum(actual, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def compare(reference: dict[str, Any], window: np.ndarray, threshold: float, alpha: float = 0.01,
            max_psi: float = 0.25) -> DriftResult:
    """The window's p(fake) against the stored reference; drift when KS rejects at ``alpha`` or
    the PSI passes ``max_psi``."""
    from scipy import stats

    ref = np.asarray(reference["p_fake_quantiles"], dtype="float64")
    window = np.asarray(window, dtype="float64")
    window = window[np.isfinite(window)]
    if len(window) == 0:
        raise ValueError("no scored images in the window")
    ks = stats.ks_2samp(window, ref)
    psi = population_stability_index(ref, window)
    reasons = []
    if ks.pvalue < alpha:
        reasons.append(f"KS statistic {ks.statistic:.3f}, p = {ks.pvalue:.2g} < {alpha}")
    if psi > max_psi:
        reasons.append(f"PSI {psi:.3f} > {max_psi}")
    return DriftResult(
        n_window=len(window), n_reference=int(reference.get("n", len(ref))), ks_statistic=float(ks.statistic),
        ks_p_value=float(ks.pvalue), psi=psi, mean_window=float(window.mean()), mean_reference=float(ref.mean()),
        fake_share_window=float((window >= threshold).mean()), fake_share_reference=float((ref >= threshold).mean()),
        drift=bool(reasons), reasons=tuple(reasons),
    )


def write_plot(reference: dict[str, Any], window: np.ndarray, result: DriftResult, path: Any) -> Any:
    """Both distributions, as histograms on one axis, with the verdict in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(reference["p_fake_quantiles"], bins=bins, density=True, alpha=0.5,
            label=f"reference ({reference.get('split', '?')}, n={result.n_reference:,})")
    ax.hist(window, bins=bins, density=True, alpha=0.5, label=f"served window (n={result.n_window:,})")
    ax.set_xlabel("p(fake)")
    ax.set_ylabel("density")
    verdict = "DRIFT: " + "; ".join(result.reasons) if result.drift else "no drift"
    ax.set_title(f"{verdict}\nKS {result.ks_statistic:.3f} (p {result.ks_p_value:.2g}), PSI {result.psi:.3f}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
