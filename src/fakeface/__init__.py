"""fakeface: detect GAN-generated face images with Keras transfer learning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

#: Class names by label index. ``fake`` is the positive class: every probability the
#: package reports is p(fake).
CLASS_NAMES = ("real", "fake")
LABEL_INDEX = {name: index for index, name in enumerate(CLASS_NAMES)}
SPLITS = ("train", "valid", "test")


class FakefaceError(ValueError):
    """A user-facing failure (bad params, unusable data, missing input): the CLI prints the
    message and exits 2 instead of showing a traceback."""


def read_json(path: str | Path, error: type[FakefaceError], what: str, made_by: str) -> Any:
    """A JSON file a stage wrote (``what``: its name for the message, ``made_by``: how to get it),
    or ``error`` with one line: not found, or not JSON. The caller checks the contents."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found ({made_by})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as problem:
        raise error(f"{path}: not {what} (invalid JSON: {problem})") from None
