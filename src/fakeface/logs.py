"""Logging and progress bars, set up once per process.

Stages log through :mod:`logging` (never ``print``) so that the same messages land in a terminal,
a DVC log and a Kubeflow pod log. Long loops use :func:`progress`, a tqdm bar that writes to stderr
only when it is a terminal, so CI logs stay readable.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest and tools swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once; ``FAKEFACE_LOG_LEVEL`` overrides the level."""
    level = (level or os.environ.get("FAKEFACE_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_fakeface", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._fakeface = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Quieten chatty libraries; their warnings still come through.
    for name in ("alembic", "urllib3", "botocore", "matplotlib", "PIL", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    """Wrap a long loop in a progress bar (shown only on a terminal)."""
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=None, leave=False, file=sys.stderr)
