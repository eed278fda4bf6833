"""File-system primitives for ingest: walking a source without losing files, case-insensitive
folder look-ups, and building the stage's output folder beside it, put in place only when whole.

Kept apart from the layout adapters because every adapter scans the same way: the promise that
``seen == kept + quarantined`` starts here, with a walk that reports what it cannot read instead of
skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


#: ``errno`` values that mean "the disk (or the user's quota) is full".


def walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Every file under ``root`` in sorted order, as (path, why it cannot be read or None).

    Symbolic links to folders are not followed, and folders that cannot be listed are not
    silently dropped (``os.walk``'s default): both come back as entries with a reason.
    """
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(d for d in dirnames if os.path.islink(base / d)):
            yield base / name, "symbolic link to a folder, not followed"
        for name in sorted(filenames):
            yield base / name, None
        while errors:
            error = errors.pop()
            yield Path(error.filename or dirpath), f"folder cannot be listed: {error.strerror or error}"
    for error in errors:
        yield Path(error.filename or root), f"folder cannot be listed: {error.strerror or error}"


def child_dir(folder: Path, name: str) -> Path | None:
    """The subfolder of ``folder`` called ``name`` (case-insensitive), if any.

    Data sets unpacked on Windows or macOS spell ``Real``/``REAL`` as they like; the exact name is
    tried first so the common case costs one ``stat``.
    """
    exact = folder / name
    if exact.is_dir():
        return exact
    try:
        for child in folder.iterdir():
            if child.name.lower() == name and child.is_dir():
                return child
    except OSError:
        return None
    return None
