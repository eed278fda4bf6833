"""Slices: test metrics by image property, to find where the detector fails.

A detector that is right on average can still flag every real photo of one source, one size or
one brightness as fake. The shards carry ``source``, ``format``, ``width`` and ``height`` for
every image; brightness is measured here, as the mean luma (ITU-R BT.601: 0.299 R + 0.587 G +
0.114 B, 0..255) of the decoded original, and banded as ``dark`` / ``mid`` / ``bright`` at
``evaluate.slices.brightness_edges``.

Per slice: images per class, accuracy at the decision threshold and ROC AUC. A slice holding a
single class has no AUC (nothing to rank against): it reports accuracy only, with ``auc`` null
and a note saying why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakeface import CLASS_NAMES

log = logging.getLogger(__name__)

#: Slice columns, in report order, and how each is titled.
PROPERTIES = {"source": "source dataset", "size": "original size (w x h)", "format": "format", "brightness": "brightness band"}
BANDS = ("dark", "mid", "bright")
LUMA = (0.299, 0.587, 0.114)
SINGLE_CLASS = "one class only: AUC undefined"


def mean_luma(image: np.ndarray) -> float:
    """Mean BT.601 luma of an RGB image in 0..255."""
    return float(np.tensordot(np.asarray(image, dtype="float64"), LUMA, axes=([-1], [0])).mean())


def brightness_band(luma: float | np.ndarray, edges: tuple[float, float]) -> Any:
    """``dark`` below ``edges[0]``, ``bright`` from ``edges[1]``, ``mid`` between."""
    index = np.searchsorted(np.asarray(edges, dtype="float64"), luma, side="right")
    return np.asarray(BANDS)[index] if np.ndim(index) else BANDS[int(index)]


def read_properties(shards_dir: str | Path, split: str, edges: tuple[float, float]) -> pd.DataFrame:
    """One row per image of ``split``: path, label, source, format, size, luma and band.

    Decodes every original once, in parallel with ``tf.data`` (no resize: brightness is a
    property of the file, not of the model's input).
    """
    import tensorflow as tf

    from fakeface.data.shards import parse_example, shard_files

    weights = tf.constant(LUMA, tf.float32)

    def properties(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        example = parse_example(serialized)
        image = tf.cast(tf.io.decode_image(example["image"], channels=3, expand_animations=False), tf.float32)
        luma = tf.reduce_mean(tf.tensordot(image, weights, axes=[[2], [0]]))
        return {k: example[k] for k in ("path", "label", "source", "format", "width", "height")} | {"luma": luma}

    dataset = (
        tf.data.TFRecordDataset(shard_files(Path(shards_dir), split))
        .map(properties, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(256)
    )
    frames = [pd.DataFrame({k: v for k, v in batch.items()}) for batch in dataset.as_numpy_iterator()]
    frame = pd.concat(frames, ignore_index=True)
    for column in ("path", "source", "format"):
        frame[column] = frame[column].map(bytes.decode)
    frame["label"] = frame["label"].astype(int)
    frame["size"] = frame["width"].astype(str) + "x" + frame["height"].astype(str)
    frame["brightness"] = brightness_band(frame["luma"].to_numpy(), edges)
    return frame


def slice_metrics(
    frame: pd.DataFrame, threshold: float, properties: dict[str, str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{property: {value: {n, real, fake, accuracy, auc, [note]}}}`` from a frame with ``label``,
    ``p_fake`` and one column per property; values in descending order of size."""
    from sklearn import metrics as skm

    result: dict[str, dict[str, dict[str, Any]]] = {}
    for column in properties or PROPERTIES:
        groups: dict[str, dict[str, Any]] = {}
        for value, rows in sorted(frame.groupby(column, sort=True), key=lambda item: -len(item[1])):
            labels = rows["label"].to_numpy().astype(int)
            p = rows["p_fake"].to_numpy()
            entry: dict[str, Any] = {
                "n": int(len(rows)),
                CLASS_NAMES[0]: int((labels == 0).sum()),
                CLASS_NAMES[1]: int((labels == 1).sum()),
                "accuracy": float(np.mean((p >= threshold).astype(int) == labels)),
            }
            if len(np.unique(labels)) == 2:
                entry["auc"] = float(skm.roc_auc_score(labels, p))
            else:
                entry["auc"] = None
                entry["note"] = SINGLE_CLASS
            groups[str(value)] = entry
        result[column] = groups
    return result


def slices_markdown(result: dict[str, dict[str, dict[str, Any]]], threshold: float) -> str:
    lines = [
        f"Test metrics by slice (accuracy at threshold {threshold:.4g}).",
        "",
        "| property | slice | n | real | fake | accuracy | ROC AUC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for column, groups in result.items():
        for value, entry in groups.items():
            auc = f"{entry['auc']:.4f}" if entry["auc"] is not None else "n/a (one class)"
            lines.append(
                f"| {PROPERTIES.get(column, column)} | {value} | {entry['n']} | {entry['real']} | "
                f"{entry['fake']} | {entry['accuracy']:.4f} | {auc} |"
            )
    lines += ["", f"A slice with a single class has no ROC AUC ({SINGLE_CLASS}); its accuracy still counts."]
    return "\n".join(lines) + "\n"


def write_slices(
    frame: pd.DataFrame, threshold: float, json_path: Path, markdown_path: Path, edges: tuple[float, float]
) -> dict[str, Any]:
    """``slices.json`` (DVC metrics) and a markdown table; returns the JSON content."""
    result = {
        "threshold": float(threshold),
        "brightness_edges": [float(e) for e in edges],
        "slices": slice_metrics(frame, threshold),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(slices_markdown(result["slices"], threshold))
    return result
