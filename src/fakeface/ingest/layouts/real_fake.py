"""The simplest layout: a folder with ``real/`` and ``fake/`` (images at any depth below each).

It has no split of its own, so the stage splits it by ``data.split``: stratified by class, per
unique sha256 (copies of one image never straddle splits), deterministically for a seed.
"""

from __future__ import annotations

from pathlib import Path

from fakeface import CLASS_NAMES
from fakeface.ingest.entries import Entry
from fakeface.ingest.layouts.base import FolderLayout, has_class_dir


class RealFakeFolders(FolderLayout):
    """``real/`` and ``fake/`` subfolders; the label is the first folder below the root."""

    name = "folders"
    shape = "`real/` and `fake/` (images at any depth below each)"
    keeps = (
        "split by `data.split` (stratified, per unique sha256, seeded); source column: the "
        "folder's name (a zip's stem)"
    )
    expected = "a folder with real/ and fake/ subfolders"

    @classmethod
    def detect(cls, root: Path) -> RealFakeFolders | None:
        return cls(root) if has_class_dir(root) else None

    def label(self, entry: Entry, parts: tuple[str, ...]) -> None:
        if len(parts) >= 2 and parts[0].lower() in CLASS_NAMES:
            entry.label = parts[0].lower()
        else:
            entry.quarantine("unlabeled", "not inside a real/ or fake/ folder")
