"""File-system primitives for ingest: walking a source without losing files, case-insensitive
folder look-ups, and building the stage's output folder beside it, put in place only when whole.

Kept apart from the layout adapters because every adapter scans the same way: the promise that
``seen == kept + quarantined`` starts here, with a walk that reports what it cannot read instead of
skipping it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

#: ``errno`` values that mean "the disk (or the user's quota) is full".
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


def remove_tree(path: Path) -> None:
    """Delete a folder this stage owns (under raw_dir), if present, so no stale file survives."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def staging_dir(final: Path) -> Path:
    """A new, empty sibling of ``final`` to build it in: ``.<name>.partial-<pid>-<random>``.

    Siblings that a killed run left behind (their process is gone) are removed first, so a crash
    costs no disk for longer than until the next run.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(partial|old)-(\d+)-[0-9a-f]+$")
    for sibling in final.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and int(match[2]) != os.getpid() and not _pid_alive(int(match[2])):
            remove_tree(sibling)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    return staging


def commit_dir(staging: Path, final: Path) -> None:
    """Put the finished ``staging`` folder where ``final`` is: the old one is renamed aside, the new
    one renamed in, and the old one deleted. Renames within a folder are atomic, so ``final`` is
    always either the old output or the new one (or, for an instant, absent), never half of one."""
    aside = None
    if final.is_symlink() or final.exists():
        aside = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(final, aside)
    os.rename(staging, final)
    if aside is not None:
        remove_tree(aside)
