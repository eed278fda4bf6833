"""What a layout adapter is: the contract between the ingest stage and one data set's folder shape.

A :class:`Layout` subclass recognises one shape on disk (:meth:`Layout.detect`) and turns the files
under a source into :class:`~fakeface.ingest.entries.Entry` records with a label, a split when the
data set has one, and a note (:meth:`Layout.scan`). Everything that differs between data sets
lives in the subclass; everything that does not (hashing, dedupe, splitting, the manifest) lives
in the stage. That is what lets the stage run without ever asking which layout it holds.

:class:`FolderLayout` is the base for layouts whose labels are folder names; listing layouts
(labels from a CSV) derive from :class:`fakeface.ingest.layouts.listed.ListedLayout`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import DataConfig
from fakeface.ingest.entries import SPLIT_ALIASES, Entry
from fakeface.ingest.files import child_dir, walk

#: on-disk path -> the manifest's ``original_path`` (a zip source maps back into the archive).
OriginalPath = Callable[[Path], str]


class Layout(ABC):
    """One data set layout, found at ``image_root``.

    The class attributes document the layout for people as much as for code: ``shape`` and
    ``keeps`` are rendered into README.md's layout table (a test keeps the two in step), so the
    documentation of a layout cannot drift from the adapter that implements it.
    """

    #: The registry key, the report's ``layout`` field, and (for named data sets) the source column.
    name: ClassVar[str]
    #: The folder shape it recognises (Markdown, one line).
    shape: ClassVar[str]
    #: What it keeps from the data set and what it notes per file (Markdown, one line).
    keeps: ClassVar[str]
    #: How the "no layout found" error names it (a short phrase).
    expected: ClassVar[str]
    #: Whether its cross-check summary sits under the source's name in the report's ``csv`` field
    #: even when it is the only source (see :meth:`cross_check`).
    keyed_summary: ClassVar[bool] = True

    def __init__(self, image_root: Path) -> None:
        self.image_root = image_root

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> Layout | None:
        """This layout found at ``root`` (not below it: the registry unwraps wrapper folders), or None."""

    @abstractmethod
    def scan(self, root: Path, original: OriginalPath) -> list[Entry]:
        """One entry per file under ``root`` (the source folder), sorted by path.

        Files the layout cannot label are quarantined ``unlabeled`` rather than skipped, so every
        file found is accounted for.
        """

    def default_source_name(self, source_root: Path) -> str:
        """The manifest's source column when the source does not force one: the folder's name.
        Well-known data sets override this with their own name, which is stable across copies."""
        return source_root.name

    def select(self, entries: list[Entry], cfg: DataConfig) -> None:
        """Quarantine entries the params leave out (``excluded``); most layouts have no choice."""

    def cross_check(self, entries: list[Entry]) -> tuple[dict[str, Any], list[Entry]]:
        """After every file was inspected: compare with the data set's own lists, if any.

        Returns the summary for the report's ``csv`` field ({} for none) and entries for files a
        list names but that are not on disk (``missing_file``), which the stage counts as seen.
        """
        return {}, []


class FolderLayout(Layout):
    """A layout whose labels (and splits, if any) are the names of the folders above each file."""

    def scan(self, root: Path, original: OriginalPath) -> list[Entry]:
        entries: list[Entry] = []
        for path, unreadable in walk(root):
            entry = Entry(path=str(path), original=original(path))
            entries.append(entry)
            if unreadable is not None:
                entry.quarantine("unreadable", unreadable)
                continue
            try:
                parts = path.relative_to(self.image_root).parts
            except ValueError:
                if self.is_metadata(path):
                    entries.pop()  # the data set's own lists are read by cross_check, not ingested
                    continue
                entry.quarantine("unlabeled", f"outside the image folder {self.image_root}")
                continue
            self.label(entry, parts)
        entries.sort(key=lambda e: e.path)
        return entries

    def is_metadata(self, path: Path) -> bool:
        """Whether a file outside the image folder is the data set's own metadata (not an entry)."""
        return False

    @abstractmethod
    def label(self, entry: Entry, parts: tuple[str, ...]) -> None:
        """Set ``entry.label`` (and ``split``, ``note``) from its path below the image root, given
        as ``parts``; or quarantine it as ``unlabeled``, saying which folder it should be in."""


# ------------------------------------------------------------------ detection helpers for folders


def has_class_dir(folder: Path) -> bool:
    """A ``real/`` or ``fake/`` subfolder (any case)."""
    return any(child_dir(folder, c) for c in CLASS_NAMES)


def has_split_dirs(folder: Path) -> bool:
    """A ``train/``, ``valid/`` or ``test/`` subfolder (any case) holding a class folder."""
    if not folder.is_dir():
        return False
    for split in SPLITS:
        split_dir = child_dir(folder, split)
        if split_dir is not None and has_class_dir(split_dir):
            return True
    return False


def has_other_split_spelling(folder: Path) -> bool:
    """A split folder holding a class folder but spelt otherwise than train/valid/test
    (``Validation/``, ``val/``, ``Training/`` ... as in :data:`SPLIT_ALIASES`).

    This is what tells the "Real vs Fake Face Classification" sets from the Kaggle 140k set,
    whose split folders are spelt exactly.
    """
    if not folder.is_dir():
        return False
    try:
        children = [c for c in folder.iterdir() if c.is_dir()]
    except OSError:
        return False
    splits = [
        child.name.lower()
        for child in children
        if child.name.lower() in SPLIT_ALIASES and has_class_dir(child)
    ]
    return any(name not in SPLITS for name in splits)
