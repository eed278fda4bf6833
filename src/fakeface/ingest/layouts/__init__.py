"""The registry of data set layouts (timm style): ``register``, ``list_layouts``, ``get_layout``.

Each layout is one adapter class in its own module (see :mod:`fakeface.ingest.layouts.base` for
the contract). This module is the one place they are registered, and the order of registration is
the order of detection: the first adapter that recognises a folder wins, so a more specific shape
must come before a more general one (the 140k tree before a bare ``real/`` + ``fake/``). A folder
that none recognises but that holds exactly one subfolder is looked into, because many archives
wrap their data set in one.

Adding a data set = one module with a :class:`Layout` subclass + one line below; README.md's
layout table is rendered from the registry (:func:`markdown_table`), and tests check that every
registered layout is detected and documented.
"""

from __future__ import annotations

from pathlib import Path

from fakeface.ingest.layouts.artifact import Artifact
from fakeface.config.registry import Registry
from fakeface.ingest.layouts.base import Layout
from fakeface.ingest.layouts.ciplab import Ciplab
from fakeface.ingest.layouts.csv_list import CsvList
from fakeface.ingest.layouts.kaggle140k import Kaggle140k
from fakeface.ingest.layouts.real_fake import RealFakeFolders
from fakeface.ingest.layouts.split_folders import SplitFolders

__all__ = [
    "Layout",
    "detect_layout",
    "expected_layouts",
    "get_layout",
    "list_layouts",
    "markdown_table",
    "register",
]

#: The layouts in detection order.
LAYOUTS: Registry[type[Layout]] = Registry("layout")
#: How many wrapper folders (a folder holding one folder) detection looks through.
_MAX_WRAPPERS = 3


def register(layout: type[Layout]) -> type[Layout]:
    """Add ``layout`` after the ones registered so far (so it is tried after them); usable as a
    class decorator."""
    return LAYOUTS.add(layout)


def list_layouts() -> list[str]:
    """The registered layout names, in detection order."""
    return LAYOUTS.names()


def get_layout(name: str) -> type[Layout]:
    return LAYOUTS.get(name)


def detect_layout(root: Path, depth: int = 0) -> Layout | None:
    """The first registered layout that recognises ``root`` (or the only subfolder of a wrapper
    folder, up to a few levels down), or None."""
    for layout in LAYOUTS:
        found = layout.detect(root)
        if found is not None:
            return found
    if depth < _MAX_WRAPPERS and root.is_dir():
        subdirs = [
            d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "__MACOSX"))
        ]
        if len(subdirs) == 1:
            return detect_layout(subdirs[0], depth + 1)
    return None


def expected_layouts() -> str:
    """The registered layouts as a sentence, for the "no layout found" error."""
    phrases = [layout.expected for layout in LAYOUTS]
    return f"{', '.join(phrases[:-1])}, or {phrases[-1]}" if len(phrases) > 1 else phrases[0]


def markdown_table() -> str:
    """README.md's layout table, from the registered adapters' own documentation."""
    lines = [
        f"| layout | folder shape it recognises (tried in this order, also below up to {_MAX_WRAPPERS} "
        "wrapper folders) | what ingest keeps and notes |",
        "|---|---|---|",
    ]
    for layout in LAYOUTS:
        cells = (f"`{layout.name}`", layout.shape, layout.keeps)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


# The one place the built-in layouts are registered; the order is the detection order.
for _layout in (Kaggle140k, SplitFolders, RealFakeFolders, Ciplab, Artifact, CsvList):
    register(_layout)
