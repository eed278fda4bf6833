"""The ArtiFact layout (Rahman et al. 2023): one folder per generator (or real source), each with a
``metadata.csv`` of ``image_path`` (relative to that folder), ``target`` (0 real, any other value
fake) and ``category``; or one such folder on its own.

ArtiFact mixes faces with cats, cars and scenes; the category is kept in the note column so
``data.artifact_categories`` can keep only the faces, and the generator so errors can be read per
generator. No split of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fakeface.config import DataConfig
from fakeface.ingest.decisions import exclude_categories
from fakeface.ingest.entries import Entry
from fakeface.ingest.layouts.listed import ListedLayout, Row, csv_header, csv_rows

METADATA = "metadata.csv"


class Artifact(ListedLayout):
    """``<generator>/metadata.csv`` per folder; labels and notes from the metadata."""

    name = "artifact"
    shape = (
        "`<generator>/metadata.csv` per folder (`image_path`, `target`: 0 real, else fake, "
        "`category`), or one such folder"
    )
    keeps = (
        "split by `data.split`; note `generator=...;category=...`; `data.artifact_categories` "
        "keeps some categories (the rest `excluded`); unlisted files `unlabeled`, listed files not on "
        "disk `missing_file`; source column `artifact`"
    )
    expected = "ArtiFact (folders with a metadata.csv)"

    @classmethod
    def detect(cls, root: Path) -> Artifact | None:
        if not root.is_dir():
            return None
        candidates = [root] + [d for d in sorted(root.iterdir()) if d.is_dir()]
        metas = [d / METADATA for d in candidates if (d / METADATA).is_file()]
        metas = [m for m in metas if {"image_path", "target"} <= set(csv_header(m))]
        return cls(root, metas) if metas else None

    def rows(self, list_file: Path) -> Iterator[Row]:
        generator = list_file.parent.name
        for row in csv_rows(list_file):
            if row.get("image_path"):
                note = f"generator={generator};category={row.get('category', '')}"
                yield list_file.parent / row["image_path"], row.get("target", ""), None, note

    def list_name(self, list_file: Path) -> str:
        return f"{list_file.parent.name}/{METADATA}"

    def default_source_name(self, source_root: Path) -> str:
        return self.name

    def select(self, entries: list[Entry], cfg: DataConfig) -> None:
        if cfg.artifact_categories:
            exclude_categories(entries, cfg.artifact_categories)
