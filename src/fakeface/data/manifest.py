"""The manifest: one row per kept image, the contract between ingest and every later stage.

Columns (all strings or ints, CSV on disk):

``path``      where the image bytes are (absolute, or relative to the working directory)
``label``     ``real`` or ``fake``
``split``     ``train``, ``valid`` or ``test``
``sha256``    hex digest of the file bytes (identity for dedup and leakage checks)
``width``, ``height``  pixels
``format``    ``JPEG`` / ``PNG`` ... as PIL names it, after normalisation
``source``    which data set the row came from (``synthetic``, ``140k``, a folder name ...)
``original_path``  the path as found in the source (before extraction or normalisation)
``note``      what ingest did to the file, e.g. ``converted CMYK->RGB``; empty if untouched
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from fakeface import CLASS_NAMES, SPLITS, FakefaceError

COLUMNS = (
    "path",
    "label",
    "split",
    "sha256",
    "width",
    "height",
    "format",
    "source",
    "original_path",
    "note",
)


class ManifestError(FakefaceError):
    """A manifest that later stages cannot use."""


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"manifest is missing columns {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = frame.loc[:, list(COLUMNS)].sort_values(["split", "label", "path"], kind="stable")
    ordered.to_csv(path, index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and check a manifest: known columns, labels and splits."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run the ingest stage first)")
    frame = pd.read_csv(path, dtype={"note": str, "sha256": str}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}")
    bad_labels = sorted(set(frame["label"]) - set(CLASS_NAMES))
    if bad_labels:
        raise ManifestError(f"{path}: unknown labels {bad_labels}; expected {list(CLASS_NAMES)}")
    bad_splits = sorted(set(frame["split"]) - set(SPLITS))
    if bad_splits:
        raise ManifestError(f"{path}: unknown splits {bad_splits}; expected {list(SPLITS)}")
    return frame


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
