"""The preview stage: what the configured augmentations do to real training images.

Augmentations run on the fly in the training input pipeline (:mod:`fakeface.data.augmentations`), so
nothing on disk shows them. This stage draws a grid a reviewer can look at before paying for a
training run:

    rows: training images (real and fake alternating)
    columns: original | each enabled augmentation alone | all enabled together

It uses the same :func:`~fakeface.data.augmentations.augment_image` and the same seed derivation as
training, so what it shows is what the model gets. Because each augmentation's draw depends only on
its own name, the "all enabled" column is exactly the single-augmentation columns composed. It is a
stage of its own, apart from packing the shards, so that switching an augmentation redraws this grid
and retrains, but never repacks the data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakeface import CLASS_NAMES
from fakeface.config import AugmentConfig, Params
from fakeface.data.manifest import read_manifest
from fakeface.stages.paths import PreviewPaths

log = logging.getLogger(__name__)

#: Preview images larger than this are shown downscaled (the grid is for eyes, not for models).
PREVIEW_MAX_SIDE = 256


def run(params: Params, paths: PreviewPaths) -> dict[str, Any]:
    """Draw ``paths.preview`` for ``augment`` (the switched-on augmentations) and ``seed``."""
    cfg = params.augment
    preview = write_preview(cfg, params.seed, read_manifest(paths.manifest), Path(paths.preview))
    log.info(
        "preview: on the fly in training: %s; %s (%d images, columns %s)",
        ", ".join(cfg.enabled()) or "none", paths.preview, preview["images"], preview["columns"],
    )
    return preview


def preview_rows(manifest: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` training images, classes alternating, deterministic for ``seed``."""
    train = manifest[manifest["split"] == "train"].sort_values("path", kind="stable")
    rng = np.random.default_rng(seed)
    per_class = []
    for name in CLASS_NAMES:
        rows = train[train["label"] == name].reset_index(drop=True)
        per_class.append([rows.iloc[i] for i in rng.permutation(len(rows))])
    picked = []
    for k in range(max((len(rows) for rows in per_class), default=0)):
        for rows in per_class:
            if k < len(rows):
                picked.append(rows[k])
    return pd.DataFrame(picked[:n]).reset_index(drop=True)


def write_preview(
    cfg: AugmentConfig, seed: int, manifest: pd.DataFrame, preview_path: Path
) -> dict[str, Any]:
    """Draw the preview grid PNG; returns what it shows (images, columns)."""
    import tensorflow as tf
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fakeface.data.augmentations import augment_image, only
    from fakeface.data.decode import decode_uint8

    rows = preview_rows(manifest, cfg.preview_images, seed)
    enabled = cfg.enabled()
    columns: list[tuple[str, AugmentConfig | None]] = [("original", None)]
    columns += [(name, only(cfg, name)) for name in enabled]
    if enabled:
        columns.append(("all enabled", cfg))

    n_rows = max(1, len(rows))
    figure = Figure(figsize=(2.0 * len(columns), 2.0 * n_rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    if not enabled:
        figure.suptitle("no augmentations enabled: training sees the original images")
    else:
        figure.suptitle(f"augmentations (seed {seed}): " + ", ".join(enabled))
    if rows.empty:
        log.warning("no training images to preview")
    for r, row in enumerate(rows.itertuples(index=False)):
        side = int(min(row.width, row.height, PREVIEW_MAX_SIDE))
        image = tf.cast(decode_uint8(tf.constant(Path(row.path).read_bytes()), side), tf.float32)
        image_seed = tf.constant([seed, r], dtype=tf.int64)
        for c, (title, column_cfg) in enumerate(columns):
            shown = image if column_cfg is None else augment_image(image, image_seed, column_cfg)
            axis = figure.add_subplot(n_rows, len(columns), r * len(columns) + c + 1)
            axis.imshow(np.clip(np.rint(shown.numpy()), 0, 255).astype(np.uint8))
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=9)
            if c == 0:
                axis.set_ylabel(row.label, fontsize=9)
    figure.tight_layout()
    preview_path = Path(preview_path)
    preview_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(preview_path)
    return {"images": len(rows), "columns": [title for title, _ in columns]}
