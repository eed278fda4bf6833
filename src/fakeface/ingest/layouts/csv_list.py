"""A generic list: a ``.csv`` file, or a folder whose top level has exactly one, with columns
``path`` (relative to the CSV's folder, or absolute) and ``label`` (``real``/``fake``, or 0 = real /
1 = fake), optionally ``split`` (train/valid/test, or val/validation ...).

The escape hatch for any data set the other adapters do not know: write one CSV and it can be
ingested with every check. Rows without a split are split by ``data.split``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fakeface.ingest.entries import IngestError
from fakeface.ingest.layouts.listed import ListedLayout, Row, csv_header, csv_rows

_COLUMNS = {"path", "label"}


class CsvList(ListedLayout):
    """One ``path,label[,split]`` CSV; labels and splits from it."""

    name = "csv"
    shape = (
        "a `.csv` file given as the source, or a folder whose top level has exactly one CSV with "
        "`path,label[,split]` columns"
    )
    keeps = (
        "its split where a row has one, else `data.split`; unlisted files `unlabeled`, listed "
        "files not on disk `missing_file`; source column: the CSV's stem (a file) or the folder's name"
    )
    expected = "a CSV with path,label[,split] columns"

    def __init__(self, image_root: Path, lists: list[Path], named_after: str | None = None) -> None:
        super().__init__(image_root, lists)
        self.named_after = named_after

    @classmethod
    def detect(cls, root: Path) -> CsvList | None:
        if not root.is_dir():
            return None
        found = [
            path
            for path in sorted(root.iterdir())
            if path.is_file() and path.suffix.lower() == ".csv" and _COLUMNS <= set(csv_header(path))
        ]
        return cls(root, found) if len(found) == 1 else None

    @classmethod
    def from_file(cls, csv_file: Path) -> CsvList:
        """The list given as the source itself: named after the file, images relative to its folder."""
        return cls(csv_file.parent, [csv_file], named_after=csv_file.stem)

    def rows(self, list_file: Path) -> Iterator[Row]:
        if not _COLUMNS <= set(csv_header(list_file)):
            raise IngestError(
                f"{list_file}: a data set list needs 'path' and 'label' columns (and optionally 'split')"
            )
        for row in csv_rows(list_file):
            if row.get("path"):
                yield list_file.parent / row["path"], row.get("label", ""), row.get("split") or None, ""

    def default_source_name(self, source_root: Path) -> str:
        return self.named_after or source_root.name
