"""The base for listing layouts: data sets whose labels come from CSV files instead of folders.

A list and the files on disk can disagree both ways, and neither may be dropped silently: a file
on disk that no list names is ``unlabeled``; a listed file that is not on disk is a
``missing_file``; a row without a usable path or label is counted (``unreadable_rows``). The lists
themselves are metadata, not entries.
"""

from __future__ import annotations

import csv
import os
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fakeface import CLASS_NAMES
from fakeface.ingest.entries import SPLIT_ALIASES, Entry
from fakeface.ingest.files import walk
from fakeface.ingest.layouts.base import Layout, OriginalPath

#: One list row: (image path, label text, split text or None, note).
Row = tuple[Path, str, str | None, str]


def csv_header(path: Path) -> list[str]:
    """The lower-cased column names of a CSV, or [] for a file that is not a readable CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [name.strip().lower() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a CSV with lower-cased, stripped keys and stripped values."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}


def label_of(value: str) -> str | None:
    """``real``/``fake`` or a number: 0 = real, anything else = fake (ArtiFact's target)."""
    text = value.strip().lower()
    if text in CLASS_NAMES:
        return text
    try:
        return "real" if float(text) == 0 else "fake"
    except ValueError:
        return None


class ListedLayout(Layout):
    """Labels, splits and notes read from list files (``lists``) when the layout is found."""

    def __init__(self, image_root: Path, lists: list[Path]) -> None:
        super().__init__(image_root)
        #: resolved path -> (label, split or None, note)
        self.listed: dict[str, tuple[str, str | None, str]] = {}
        #: listed files that are not on disk, as (path, why)
        self.missing: list[tuple[str, str]] = []
        #: rows without a usable path, label or split
        self.bad_rows = 0
        for list_file in lists:
            self._read(self.rows(list_file), self.list_name(list_file))
        #: the list files themselves (not images, not entries)
        self.metadata = frozenset(os.path.normpath(p.resolve()) for p in lists)

    @abstractmethod
    def rows(self, list_file: Path) -> Iterator[Row]:
        """The rows of one list file, with the image path resolved against the list's folder."""

    def list_name(self, list_file: Path) -> str:
        """How a ``missing_file`` detail names the list."""
        return list_file.name

    def _read(self, rows: Iterator[Row], where: str) -> None:
        for path, label_text, split_text, note in rows:
            label = label_of(label_text)
            split = SPLIT_ALIASES.get((split_text or "").lower()) if split_text else None
            if label is None or (split_text and split is None):
                self.bad_rows += 1
                continue
            if not path.is_file():
                self.missing.append((str(path), f"listed in {where} but not on disk"))
                continue
            self.listed[os.path.normpath(path.resolve())] = (label, split, note)

    def scan(self, root: Path, original: OriginalPath) -> list[Entry]:
        """Every file under ``root`` (labelled from the lists), then listed files outside it, then
        listed files missing from disk."""
        entries: list[Entry] = []
        walked: set[str] = set()
        for path, unreadable in walk(root):
            key = os.path.normpath(path.resolve()) if unreadable is None else str(path)
            if key in self.metadata:
                continue  # the list itself
            walked.add(key)
            entry = Entry(path=str(path), original=original(path))
            entries.append(entry)
            if unreadable is not None:
                entry.quarantine("unreadable", unreadable)
                continue
            self._label(entry, self.listed.get(key))
        # Listed files outside the root (absolute paths in a CSV) are entries too.
        for key, value in sorted(self.listed.items()):
            if key not in walked:
                entry = Entry(path=key, original=key)
                entries.append(entry)
                self._label(entry, value)
        entries.sort(key=lambda e: e.path)
        entries.extend(Entry(path, path, reason="missing_file", detail=why) for path, why in self.missing)
        return entries

    @staticmethod
    def _label(entry: Entry, value: tuple[str, str | None, str] | None) -> None:
        if value is None:
            entry.quarantine("unlabeled", "not listed in the data set's CSV")
            return
        entry.label, entry.split, entry.note = value

    def cross_check(self, entries: list[Entry]) -> tuple[dict[str, Any], list[Entry]]:
        """The lists were compared with the disk when read; report what did not match."""
        if not (self.bad_rows or self.missing):
            return {}, []
        return {"missing": len(self.missing), "unreadable_rows": self.bad_rows}, []
