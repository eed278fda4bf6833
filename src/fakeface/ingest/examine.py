"""The per-file work of ingest: decode, hash and (where needed) normalise each image, in threads.

Decoding every file in full is the only way to catch truncated JPEGs, and it is most of ingest's
time on a 140k-image source; PIL and hashlib release the GIL, so a few threads overlap it with
I/O. Results come back in input order so the rest of the stage stays deterministic.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from fakeface.data.images import ImageInfo, Problem, inspect_image, normalize_image
from fakeface.ingest.entries import Entry
from fakeface.data.manifest import file_sha256

#: Worker threads for hashing + decoding.
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: Files in flight at once: bounds memory for 140k-file sources.
_WINDOW = 256

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``pool.map`` with at most a window of tasks in flight, results in input order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= _WINDOW:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def examine(path: str, max_pixels: int) -> tuple[str | None, ImageInfo | Problem]:
    """Inspect (full decode, pixels dropped) and, for a usable image, hash the file bytes."""
    outcome = inspect_image(path, max_pixels)
    if isinstance(outcome, Problem):
        return None, outcome
    try:
        return file_sha256(path), outcome
    except OSError as error:
        return None, Problem("unreadable", f"cannot read for hashing: {error}")


def normalize(entry: Entry, normalized_dir: Path) -> Problem | None:
    """Write ``entry`` as a lossless RGB PNG named by its sha256 and point the entry at it.

    Only images that are not RGB JPEGs come here: re-encoding a JPEG would change the compression
    traces a detector learns from.
    """
    destination = normalized_dir / f"{entry.sha}.png"
    problem = normalize_image(entry.path, destination)
    if problem is None:
        entry.normalized = str(destination)
    return problem
