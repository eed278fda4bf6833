"""What a saved detector promises its users, stored inside the model file itself.

A model is only half of a detector: the other half is how to feed it (input size, pixel range,
colour order, classes) and where to cut its p(fake) (the threshold chosen on the validation split,
which on real faces is often far from 0.5: a model that cuts at 0.5 instead of its 0.81 calls most
real photos fake). Kept beside the model, in a JSON file or a run's metadata, the two get separated
as soon as someone copies the ``.keras`` file. So the contract travels *inside* it: a
``fakeface.json`` entry in the ``.keras`` zip (Keras ignores entries it does not know; the file
still loads anywhere with plain ``keras.models.load_model``), and the same dict is the registered
MLflow model's ``fakeface`` metadata.

The evaluate stage writes ``models/detector.keras``: the trained model with its contract, the
threshold included. ``predict`` and ``register`` read it from there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from fakeface import CLASS_NAMES

ENTRY = "fakeface.json"
#: Below this many validation images of a class, a chosen threshold is a guess, and said to be one.
MIN_RELIABLE_PER_CLASS = 100


def make_contract(image_size: int, threshold: float, selection: dict[str, Any] | None = None,
                  reference: dict[str, Any] | None = None, front: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract of a detector taking ``image_size`` px images and cutting at ``threshold``.

    ``selection``: how the threshold was chosen (evaluate's ``threshold_selection``, with the
    valid split's class counts), from which its reliability follows. ``reference``: the p(fake)
    distribution on validation images (:func:`fakeface.analysis.drift.reference_distribution`),
    what ``fakeface monitor`` holds served scores against. ``front``: what the model does to its
    input before the backbone (:func:`fakeface.model.classifier.input_transform_of`: the input
    transform, :mod:`fakeface.model.inputs`, the window it cuts and how many windows it averages),
    named so a reader knows what the network sees; all are layers inside the model, applied by
    every scorer.
    """
    front = {"transform": "pixels", "crop": None, "test_crops": 1, **(front or {})}
    selection = dict(selection or {})
    counts = selection.get("counts") or {}
    reliable = bool(counts) and min(counts.get(name, 0) for name in CLASS_NAMES) >= MIN_RELIABLE_PER_CLASS
    if selection.get("method") == "fixed":
        reliable = True  # a fixed cut is a decision, not an estimate
    return {
        "classes": list(CLASS_NAMES),
        "positive_class": "fake",
        "output": "p(fake): column 0 of a 1-unit sigmoid head, column 1 of a 2-unit softmax head",
        "input": {
            "shape": [image_size, image_size, 3],
            "dtype": "float32",
            "range": "0..255",
            "color_order": "RGB",
            "resize": "bilinear with antialias to the input size (only when the size differs)",
            "transform": front["transform"],
            "crop": front["crop"],
            "test_crops": front["test_crops"],
        },
        "preprocessing": "inside the model (its first layer scales the pixels for the backbone)",
        "threshold": float(threshold),
        "threshold_method": selection.get("method", "fixed"),
        "threshold_split": selection.get("split"),
        "threshold_counts": counts,
        "threshold_reliable": reliable,
        **({"reference": reference} if reference else {}),
    }


def write_model_with_contract(model_path: str | Path, out_path: str | Path, contract: dict[str, Any]) -> Path:
    """Copy ``model_path`` (a ``.keras`` file) to ``out_path`` with ``contract`` inside it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_path.parent, suffix=".keras", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with zipfile.ZipFile(model_path) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if item.filename != ENTRY:
                    target.writestr(item, source.read(item.filename))
            target.writestr(ENTRY, json.dumps(contract, indent=2, sort_keys=True))
        shutil.move(partial, out_path)  # a reader never sees half a file
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def read_contract(model_path: str | Path) -> dict[str, Any] | None:
    """The contract inside a ``.keras`` file, or None (a model train wrote, not yet evaluated)."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            if ENTRY not in archive.namelist():
                return None
            return json.loads(archive.read(ENTRY))
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError):
        return None
