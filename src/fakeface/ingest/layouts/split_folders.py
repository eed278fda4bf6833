"""The "Real vs Fake Face Classification" layout: ``{Train,Validation,Test}/{Real,Fake}/``, as in
several Kaggle real-vs-fake face sets.

Split folder names are matched case-insensitively through
:data:`fakeface.ingest.entries.SPLIT_ALIASES`, because these sets are unpacked from archives
made on case-insensitive systems and spell ``Validation``/``val``/``valid`` as they please. The data
set's own split is kept.
"""

from __future__ import annotations

from pathlib import Path

from fakeface import CLASS_NAMES
from fakeface.ingest.entries import SPLIT_ALIASES, Entry
from fakeface.ingest.layouts.base import FolderLayout, has_other_split_spelling


class SplitFolders(FolderLayout):
    """Split folders spelt otherwise than train/valid/test, each with ``Real/`` and ``Fake/``."""

    name = "splits"
    shape = (
        "`{Train,Validation,Test}/{Real,Fake}/` (any case; `training`, `val`, `valid`, `testing` "
        "too), with at least one split folder not spelt train/valid/test"
    )
    keeps = "the data set's own split; source column: the folder's name"
    expected = "{Train,Validation,Test}/{Real,Fake}/"

    @classmethod
    def detect(cls, root: Path) -> SplitFolders | None:
        # Only "spelt otherwise": a tree spelt exactly train/valid/test is the 140k layout's.
        return cls(root) if has_other_split_spelling(root) else None

    def label(self, entry: Entry, parts: tuple[str, ...]) -> None:
        if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES and parts[1].lower() in CLASS_NAMES:
            entry.split, entry.label = SPLIT_ALIASES[parts[0].lower()], parts[1].lower()
        else:
            entry.quarantine("unlabeled", "not inside a {Train,Validation,Test}/{Real,Fake} folder")
