"""Robustness: test metrics after the things that happen to images in the wild.

Published GAN detectors are known to collapse when an image is re-compressed, blurred, resized
or cropped before it reaches them: the generator's traces live in the highest frequencies, which
all of those operations remove. Each check here starts from the ORIGINAL decoded test image (the
encoded bytes in the shards, decoded at their own size), applies one perturbation at that size,
and then feeds the model exactly as training does (:func:`fakeface.data.decode.pixels_model_input`:
the same resize to the input size and rounding, skipped when already there).

Perturbations are a registry: each kind (``jpeg``, ``blur``, ``scale``, ``crop``...) is a parameter
class in :mod:`fakeface.config.robustness` (what ``evaluate.robustness`` entries are validated
against, and what the README's table is rendered from) and a numpy function here, registered
against that kind with ``@FUNCTIONS.register(kind)``, which checks that it takes
``(image, <the class's fields>)``. All keep the image's shape and return 8-bit RGB, as a saved
file would be.

The clean images are scored through the same path (row ``none``), so every drop is measured
against a baseline computed the same way. At most ``evaluate.robustness_max_images`` test images
are used, evenly spaced through the split (shards are sorted by class, so both classes stay in
their proportions).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakeface.config.registry import Implementations
from fakeface.config.robustness import PERTURBATIONS, describe, get_perturbation
from fakeface.data.decode import pixels_model_input

log = logging.getLogger(__name__)

CLEAN = "none"

#: The function of each registered perturbation kind: ``uint8 [h, w, 3] -> uint8 [h, w, 3]``,
#: called as ``function(image, **its parameters)``.
FUNCTIONS: Implementations[Callable[..., np.ndarray]] = Implementations(PERTURBATIONS, leading=("image",))


# --------------------------------------------------------------------------- images


def decode_original(data: bytes) -> np.ndarray:
    """Encoded bytes to uint8 ``[h, w, 3]`` at the image's own size (TF's decoder, as training)."""
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def _to_uint8(pixels: Any) -> np.ndarray:
    return np.clip(np.rint(np.asarray(pixels, dtype="float32")), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import tensorflow as tf

    resized = tf.image.resize(
        tf.convert_to_tensor(image, tf.float32), [height, width], method="bilinear", antialias=True
    )
    return _to_uint8(resized.numpy())


@FUNCTIONS.register("jpeg")
def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode with PIL (libjpeg, 4:2:0 chroma) at ``quality``; decode with TF, as training does."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image), "RGB").save(buffer, format="JPEG", quality=int(quality))
    return decode_original(buffer.getvalue())


@FUNCTIONS.register("blur")
def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """PIL ``GaussianBlur`` with standard deviation ``sigma`` pixels."""
    from PIL import Image, ImageFilter

    blurred = Image.fromarray(_to_uint8(image), "RGB").filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    return np.asarray(blurred, dtype=np.uint8)


@FUNCTIONS.register("scale")
def rescale_round_trip(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (at least 1 px a side) and back, bilinear with antialiasing."""
    height, width = image.shape[:2]
    small_h, small_w = max(1, round(height * factor)), max(1, round(width * factor))
    return _resize(_resize(image, small_h, small_w), height, width)


@FUNCTIONS.register("crop")
def center_crop_resized(image: np.ndarray, fraction: float) -> np.ndarray:
    """Central crop of ``fraction`` of each side (at least 1 px), resized back."""
    height, width = image.shape[:2]
    crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return _resize(image[top : top + crop_h, left : left + crop_w], height, width)


FUNCTIONS.check_complete()  # every registered kind has its function, or this module fails to import


def perturbation_fn(spec: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The uint8 -> uint8 function for one ``evaluate.robustness`` entry (a registered kind)."""
    function = FUNCTIONS.get(spec.kind)
    kwargs = get_perturbation(spec.kind).kwargs(spec)
    return lambda image: function(image, **kwargs)


# --------------------------------------------------------------------------- records


def iter_records(shards_dir: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Every record of a split, in shard order (= manifest order), as plain Python values."""
    import tensorflow as tf

    from fakeface.data.shards import parse_example, shard_files

    dataset = tf.data.TFRecordDataset(shard_files(Path(shards_dir), split)).map(parse_example)
    for record in dataset.as_numpy_iterator():
        yield {
            key: (value.decode() if isinstance(value, bytes) and key != "image" else value)
            for key, value in record.items()
        }


def evenly_spaced(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` items spread evenly over ``n`` (all of them for 0)."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


# --------------------------------------------------------------------------- evaluation


def _scores(model: Any, batch: list[np.ndarray]) -> np.ndarray:
    from fakeface.model.classifier import probabilities_of_fake

    return probabilities_of_fake(model.predict_on_batch(np.stack(batch)))


def robustness_predictions(
    model: Any,
    shards_dir: str | Path,
    perturbations: dict[str, Any],
    batch_size: int = 64,
    max_images: int = 0,
    split: str = "test",
) -> pd.DataFrame:
    """p(fake) of each selected image of ``split``: a ``none`` column and one per perturbation."""
    from fakeface.logs import progress
    from fakeface.data.shards import read_index

    size = int(model.input_shape[1])
    total = int(read_index(Path(shards_dir))[split]["n"])
    keep = set(evenly_spaced(total, max_images).tolist())
    functions = {CLEAN: (lambda image: image), **{k: perturbation_fn(v) for k, v in perturbations.items()}}
    rows: dict[str, list[Any]] = {"path": [], "label": []}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in functions}
    pending: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        for name, function in functions.items():
            scores[name].append(_scores(model, [pixels_model_input(function(image), size) for image in pending]))
        pending.clear()

    records = progress(iter_records(shards_dir, split), desc=f"robustness {split}", total=total)
    for index, record in enumerate(records):
        if index not in keep:
            continue
        rows["path"].append(record["path"])
        rows["label"].append(int(record["label"]))
        pending.append(decode_original(record["image"]))
        if len(pending) == batch_size:
            flush()
    flush()
    frame = pd.DataFrame(rows)
    for name in functions:
        frame[name] = np.concatenate(scores[name]) if scores[name] else np.zeros(0)
    return frame


def robustness_table(
    predictions: pd.DataFrame, perturbations: dict[str, Any], threshold: float
) -> pd.DataFrame:
    """One row per column of ``predictions`` (``none`` first): AUC, accuracy at the chosen
    threshold and at 0.5, recall per class, and the drops against ``none``."""
    from sklearn import metrics as skm

    labels = predictions["label"].to_numpy().astype(int)
    both = len(np.unique(labels)) == 2
    rows = []
    for name in [CLEAN, *perturbations]:
        p = predictions[name].to_numpy()
        called = (p >= threshold).astype(int)
        spec = perturbations.get(name)
        rows.append(
            {
                "perturbation": name,
                "kind": spec.kind if spec is not None else CLEAN,
                "settings": describe(spec) if spec is not None else "",
                "n": int(len(labels)),
                "auc": float(skm.roc_auc_score(labels, p)) if both else None,
                "accuracy": float(np.mean(called == labels)),
                "accuracy_0_5": float(np.mean((p >= 0.5).astype(int) == labels)),
                "real_recall": float(np.mean(called[labels == 0] == 0)) if (labels == 0).any() else None,
                "fake_recall": float(np.mean(called[labels == 1] == 1)) if (labels == 1).any() else None,
                "mean_p_fake": float(np.mean(p)),
            }
        )
    table = pd.DataFrame(rows)
    clean = table.iloc[0]
    table["accuracy_drop"] = clean["accuracy"] - table["accuracy"]
    table["auc_drop"] = (clean["auc"] - table["auc"]) if both else None
    return table


def evaluate_robustness(
    model: Any,
    shards_dir: str | Path,
    perturbations: dict[str, Any],
    threshold: float,
    batch_size: int = 64,
    max_images: int = 0,
    split: str = "test",
) -> pd.DataFrame:
    """:func:`robustness_predictions` summarised by :func:`robustness_table`."""
    predictions = robustness_predictions(model, shards_dir, perturbations, batch_size, max_images, split)
    table = robustness_table(predictions, perturbations, threshold)
    for row in table.itertuples():
        log.info(
            "robustness %-16s AUC %s accuracy %.4f (%s)",
            row.perturbation, "n/a" if row.auc is None else f"{row.auc:.4f}", row.accuracy, row.settings or "clean",
        )
    return table


def _clean_json(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean_json(value.item())
    return value


def robustness_json(table: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The numbers per perturbation, for ``dvc metrics show`` (kind and settings are in params
    and in the CSV table; strings would only widen the metrics table)."""
    return {
        "threshold": float(threshold),
        "n": int(table["n"].iloc[0]) if len(table) else 0,
        "perturbations": {
            row["perturbation"]: {
                k: _clean_json(v) for k, v in row.items() if k not in ("perturbation", "kind", "settings", "n")
            }
            for row in table.to_dict("records")
        },
    }


def write_robustness(
    table: pd.DataFrame, threshold: float, json_path: Path, figure_path: Path, csv_path: Path | None = None
) -> list[Path]:
    """``robustness.json`` (DVC metrics), a bar chart of AUC and accuracy, and the table as CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(robustness_json(table, threshold), indent=2) + "\n")
    written = [json_path]
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv_path, index=False)
        written.append(csv_path)

    names = table["perturbation"].tolist()
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4))
    auc = table["auc"].astype(float).fillna(0).to_numpy()
    ax.bar(x - 0.2, auc, 0.4, label="ROC AUC")
    ax.bar(x + 0.2, table["accuracy"].to_numpy(), 0.4, label=f"accuracy @ {threshold:.3f}")
    ax.axhline(0.5, c="grey", ls=":", lw=1)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Robustness on {int(table['n'].iloc[0])} test images")
    ax.legend(fontsize=8, loc="lower left")
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figure_path, dpi=100)
    plt.close(fig)
    written.append(figure_path)
    return written
