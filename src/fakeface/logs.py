"""Logging and progress bars, set up once per process.

Stages log through :mod:`logging` (never ``print``) so that the same messages land in a terminal,
a DVC log and a Kubeflow pod log. Long loops use :func:`progress`, a tqdm bar that writes to stderr
only when it is a terminal, so CI logs stay readable.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ libraries write straight to file descriptor 2 to /dev/null for a while.

    TensorFlow's start-up lines (oneDNN, "Could not find cuda drivers", "failed call to cuInit")
    are written by absl before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not
    reach them; only the descriptor does. Python's own ``sys.stderr`` is flushed first and the
    descriptor restored on the way out, so an exception's message is still seen.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def preload_tensorflow(level: str | None = None) -> None:
    """Import TensorFlow and probe its devices without the native start-up noise, unless the log
    level is DEBUG (then every line shows, for diagnosing a GPU set-up)."""
    level = (level or os.environ.get("FAKEFACE_LOG_LEVEL", "INFO")).upper()
    if level == "DEBUG" or "tensorflow" in sys.modules:
        return
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    """Wrap a long loop in a progress bar (shown only on a terminal)."""
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=None, leave=False, file=sys.stderr)
