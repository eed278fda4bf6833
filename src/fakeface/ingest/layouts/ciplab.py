"""The "Real and Fake Face Detection" layout (CIPLAB, Kaggle ``ciplab/real-and-fake-face-detection``).

Its fakes are hand-edited faces, not GAN output, and their file names carry how hard the edit is
to see (``easy_*``, ``mid_*``, ``hard_*``). That difficulty is kept in the note column, because it
is exactly the slice a detector's errors should be read by. No split of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from fakeface.ingest.entries import Entry
from fakeface.ingest.files import child_dir
from fakeface.ingest.layouts.base import FolderLayout

#: Class folder -> label.
CIPLAB_DIRS = {"training_real": "real", "training_fake": "fake"}
_DIFFICULTY = re.compile(r"^(easy|mid|hard)_", re.IGNORECASE)


class Ciplab(FolderLayout):
    """``training_real/`` + ``training_fake/`` (also below a wrapper folder)."""

    name = "ciplab"
    shape = "`training_real/` + `training_fake/` (Kaggle `ciplab/real-and-fake-face-detection`)"
    keeps = (
        "split by `data.split`; note `difficulty=easy`, `mid` or `hard` from the fake file names; "
        "source column `ciplab`"
    )
    expected = "CIPLAB (training_real/ + training_fake/)"

    @classmethod
    def detect(cls, root: Path) -> Ciplab | None:
        return cls(root) if all(child_dir(root, name) for name in CIPLAB_DIRS) else None

    def default_source_name(self, source_root: Path) -> str:
        return self.name

    def label(self, entry: Entry, parts: tuple[str, ...]) -> None:
        if len(parts) >= 2 and parts[0].lower() in CIPLAB_DIRS:
            entry.label = CIPLAB_DIRS[parts[0].lower()]
            difficulty = _DIFFICULTY.match(parts[-1])
            if entry.label == "fake" and difficulty:
                entry.note = f"difficulty={difficulty.group(1).lower()}"
        else:
            entry.quarantine("unlabeled", "not inside training_real/ or training_fake/")
