"""The vocabulary every ingest module shares: the per-file record, the quarantine reasons and the
one error type.

These live apart from the stage and from the layout adapters so that both can use them without
importing each other (the adapters fill entries in; the stage decides their fate).
"""

from __future__ import annotations

from dataclasses import dataclass

from fakeface import FakefaceError
from fakeface.data.images import ImageInfo

#: Every quarantine reason, in the order the report lists them.
REASONS = (
    "empty",
    "not_an_image",
    "corrupt",
    "too_large",
    "unreadable",
    "duplicate",
    "cross_split_duplicate",
    "label_conflict",
    "zip_slip",
    "nested_archive",  # an archive inside a .zip source: never extracted
    "missing_file",
    "unlabeled",  # a file outside any {real,fake} folder (or outside the image tree)
    "excluded",  # left out by the params (an ArtiFact category not in data.artifact_categories)
)

#: Split folder (and CSV split value) spellings -> our split names. Data sets spell their split
#: folders in many ways; one table keeps every adapter accepting the same ones.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "test": "test",
    "testing": "test",
}


class IngestError(FakefaceError):
    """The source cannot be turned into a usable manifest; the message says why and what to do.

    A :class:`fakeface.FakefaceError`, so the command line prints the message as one line and
    exits 2 instead of showing a traceback: it is a problem with the data, not with the code.
    """


@dataclass(slots=True)
class Entry:
    """Per-file state from the scan to the manifest row or the quarantine item.

    Slotted and kept small because a 140k-image source holds 140k of these at once.
    """

    path: str
    original: str
    label: str | None = None
    split: str | None = None
    sha: str | None = None
    info: ImageInfo | None = None
    reason: str | None = None
    detail: str = ""
    normalized: str | None = None
    source: str = ""  # the manifest's source column for this file
    note: str = ""  # what the layout says about the file (difficulty, generator ...)

    def quarantine(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
