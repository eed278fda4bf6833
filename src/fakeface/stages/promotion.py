"""Champion or challenger: the register stage's rule for a version that passed the quality gate.

A fixed gate alone lets any model that clears it replace a much better champion. So when the
alias already points at a version, both models score the same images (the current test split,
each through its own input contract: its own input size, its own first layer) and the new version
takes the alias only if it is not worse:

* its test AUC is not below the champion's by more than ``register.promotion_margin``, and
* DeLong's paired test (:mod:`fakeface.analysis.paired`) does not find it worse at
  ``register.promotion_alpha`` (one-sided).

Otherwise it gets ``register.challenger_alias`` and the champion stays. With no champion yet, the
gate is the only rule. The comparison (both AUCs, the difference with its confidence interval and
p-values, the images used, the decision) goes into the run, onto the version's tags and into its
model card.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakeface import FakefaceError

log = logging.getLogger(__name__)

#: Where the register stage logs each registered detector file in its run (what a later register
#: downloads to score the champion).
DETECTOR_ARTIFACT = "detector"


@dataclass
class Decision:
    alias: str
    promoted: bool
    reason: str
    champion_version: str | None = None
    comparison: dict[str, Any] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """The registered version's tags: what it was compared with and the outcome."""
        if not self.comparison:
            return {"promotion": self.reason}
        c = self.comparison
        return {
            "promotion": self.reason,
            "compared_with": f"v{self.champion_version}",
            "auc_difference": f"{c['difference']:+.4f}",
            "auc_difference_ci": f"{c['ci_low']:+.4f}..{c['ci_high']:+.4f}",
            "auc_difference_p_worse": f"{c['p_worse']:.4g}",
        }


def champion_detector(client: Any, name: str, version: str, folder: Path) -> Path:
    """The detector file (weights and contract) of registered ``version``, downloaded from its run."""
    import mlflow

    run_id = client.get_model_version(name, version).run_id
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=DETECTOR_ARTIFACT, dst_path=str(folder))
    except Exception as error:  # noqa: BLE001 - any store's failure is the same news
        raise FakefaceError(f"cannot fetch the champion {name} v{version}'s detector from run {run_id}: "
                            f"{type(error).__name__}: {error}") from None
    files = sorted(Path(local).glob("*.keras"))
    if not files:
        raise FakefaceError(f"the champion {name} v{version}'s run {run_id} holds no {DETECTOR_ARTIFACT}/*.keras")
    return files[0]


def decide(labels: np.ndarray, p_new: np.ndarray, p_champion: np.ndarray, champion_version: str,
           cfg: Any) -> Decision:
    """The rule above on scores of the same images (labels: 1 = fake)."""
    from fakeface.analysis.paired import delong_test

    test = delong_test(labels, p_new, p_champion)
    comparison = {**test.as_dict(), "margin": cfg.promotion_margin, "alpha": cfg.promotion_alpha,
                  "method": "DeLong paired test of two correlated ROC AUCs"}
    summary = (f"test AUC {test.auc_new:.4f} vs champion v{champion_version} {test.auc_reference:.4f}: "
               f"{test.difference:+.4f} ({100 * test.confidence:.0f}% CI {test.ci_low:+.4f}..{test.ci_high:+.4f}, "
               f"one-sided p(worse) {test.p_worse:.3g}, {test.n_real} real + {test.n_fake} fake test images)")
    if test.difference < -cfg.promotion_margin:
        promoted, why = False, f"lower by more than the margin {cfg.promotion_margin}"
    elif test.p_worse < cfg.promotion_alpha:
        promoted, why = False, f"worse by DeLong's test at alpha {cfg.promotion_alpha}"
    else:
        promoted, why = True, "not worse"
    alias = cfg.alias if promoted else cfg.challenger_alias
    comparison["decision"] = "promoted" if promoted else "challenger"
    return Decision(alias=alias, promoted=promoted, reason=f"{why}: {summary}",
                    champion_version=champion_version, comparison=comparison)


def choose_alias(client: Any, cfg: Any, new_model: Any, shards_dir: Path, batch_size: int,
                 new_version: str) -> Decision:
    """Champion or challenger for ``new_version`` (already registered, past the gate)."""
    from fakeface.analysis.metrics import predict_split
    from fakeface.model.classifier import load_model_file
    from fakeface.tracking.aliases import current_version

    champion = current_version(client, cfg.model_name, cfg.alias)
    if champion is None or champion == str(new_version):
        return Decision(alias=cfg.alias, promoted=True, reason=f"first @{cfg.alias}: passed the gate")
    with tempfile.TemporaryDirectory(prefix="fakeface-champion-") as folder:
        champion_model = load_model_file(champion_detector(client, cfg.model_name, champion, Path(folder)))
        scored_champion = predict_split(champion_model, shards_dir, "test", batch_size)
    scored_new = predict_split(new_model, shards_dir, "test", batch_size)
    if scored_new.paths != scored_champion.paths:  # both read the same shards in order: a broken read
        raise FakefaceError("the champion and the new model scored different test images")
    decision = decide(scored_new.labels, scored_new.p_fake, scored_champion.p_fake, champion, cfg)
    decision.comparison["images"] = {"split": "test", "n": len(scored_new.paths), "shards": str(shards_dir)}
    return decision
