"""Outputs that are whole or absent: build a file or folder beside its final place, rename it in.

Files (a report, a state file, a key file, a normalised image): :func:`replaced` and
:func:`write_text` write a hidden sibling and replace the file in one rename, so a reader sees the
old file or the new one, never half of one, and a failure leaves nothing behind. Folders:

Ingest (``data/raw``) and augment (``data/shards``) write thousands of files. A crash, a kill or a
full disk half way must not leave a folder the next stage takes as complete, nor the previous
output half overwritten. So both build their output in a hidden sibling (same file system: a
rename is atomic) and swap it in only when complete; a sibling a killed run left behind is removed
by the next run, once its process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: What a full disk (or quota) raises.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL


def sibling_temp(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same file system), unique per process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextmanager
def replaced(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends it replaces ``path`` in one rename, and
    when it raises the temporary file is removed. ``mode``: the file is created with these
    permissions before anything is written (0o600: never readable by others, not even briefly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = sibling_temp(path)
    try:
        if mode is not None:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            os.chmod(temporary, mode)  # whatever the umask
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` whole or not at all (see :func:`replaced`)."""
    with replaced(path, mode) as temporary:
        temporary.write_text(text)


def remove_tree(path: Path) -> None:
    """Delete a folder (or a link or file in its place), if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def staging_dir(final: Path) -> Path:
    """A new, empty sibling of ``final`` to build it in: ``.<name>.partial-<pid>-<random>``,
    after removing the siblings of runs whose process is gone (killed mid-write)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(partial|old)-(\d+)-[0-9a-f]+$")
    for sibling in final.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and not pid_alive(int(match[2])):
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
