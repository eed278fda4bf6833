"""K-fold cross-validation over the train and valid images: the ablation's objective for small data.

On a few hundred faces, one validation split decides nothing: the same recipe scores 0.55 on one
split and 0.95 on another. With ``ablation.cv_folds: K`` a trial trains K times and is scored by
the mean of its K validation scores: the train and valid images are cut into K folds, stratified
by label and seeded (:func:`fold_of`), and fold ``k``'s model trains on the other K-1 folds and is
measured on fold ``k``. The test split is never read. The fold shards are written once per study
work folder and reused by every trial and worker (the same seed gives the same folds, so trials
differ in their configuration only).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fakeface import CLASS_NAMES

log = logging.getLogger(__name__)


def fold_of(labels: np.ndarray | list[str], k: int, seed: int) -> np.ndarray:
    """Each item's fold (0..k-1): per class, a seeded permutation dealt round-robin, so every fold
    holds each class in proportion."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=int)
    present = set(labels.tolist())
    for label in [name for name in CLASS_NAMES if name in present] + sorted(present - set(CLASS_NAMES)):
        rows = np.flatnonzero(labels == label)
        folds[rng.permutation(rows)] = np.arange(len(rows)) % k
    return folds


def fold_shards(shards_dir: str | Path, workdir: str | Path, k: int, seed: int, shard_size: int) -> list[Path]:
    """The K fold shard folders under ``workdir`` (written once): fold ``i`` has ``valid`` = fold
    ``i`` and ``train`` = the others, from ``shards_dir``'s train and valid splits; no test."""
    from fakeface.analysis.robustness import iter_records
    from fakeface.data.shards import write_shards

    root = Path(workdir) / f"cv-{k}folds-seed{seed}"
    folders = [root / f"fold{i}" for i in range(k)]
    if all((folder / "index.json").is_file() for folder in folders):
        return folders
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("train", "valid"):
        for record in iter_records(shards_dir, split):
            path = images / f"{record['sha256']}.{str(record['format']).lower() or 'img'}"
            if not path.is_file():
                path.write_bytes(record["image"])
            rows.append({"path": str(path), "label": CLASS_NAMES[int(record["label"])], "sha256": record["sha256"],
                         "source": record["source"], "format": record["format"], "width": int(record["width"]),
                         "height": int(record["height"]), "note": "cross-validation fold", "split": "train"})
    manifest = pd.DataFrame(rows)
    if manifest.empty or manifest["label"].nunique() < 2:
        raise ValueError(f"{shards_dir}: cross-validation needs train and valid images of both classes")
    folds = fold_of(manifest["label"].to_numpy(), k, seed)
    for i, folder in enumerate(folders):
        write_shards(manifest.assign(split=np.where(folds == i, "valid", "train")), folder, shard_size)
    log.info("%d folds of %d train + valid images in %s", k, len(manifest), root)
    return folders
