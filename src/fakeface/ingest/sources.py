"""Where a ``data.source`` text points, turned into a folder on disk the layouts can scan.

``synthetic``
    The embedded data set: :func:`fakeface.data.synthetic.generate` writes the 140k layout under
    ``raw_dir/synthetic``. Source column ``synthetic``.
a folder
    Scanned where it is (its layout is detected by :mod:`fakeface.ingest.layouts`).
a ``.zip``
    Extracted into ``raw_dir/<zip stem>/`` by :mod:`fakeface.ingest.archives`, which refuses
    members that would land outside it (``zip_slip``), archives inside it (``nested_archive``) and
    members larger than any image can be or than ``data.max_archive_bytes`` leaves (``too_large``,
    cut off while streaming): an archive from the internet can neither write anywhere else nor
    fill the disk.
a ``.csv``
    A ``path,label[,split]`` list (:class:`fakeface.ingest.layouts.csv_list.CsvList`).
``kaggle:<owner>/<dataset>``
    Downloaded with :func:`kagglehub.dataset_download` (into kagglehub's cache) when Kaggle
    credentials exist, then scanned as a folder.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fakeface.config import DataConfig
from fakeface.ingest.archives import extract_zip
from fakeface.ingest.entries import Entry, IngestError
from fakeface.data.atomic import remove_tree
from fakeface.ingest.layouts.base import Layout
from fakeface.ingest.layouts.csv_list import CsvList

logger = logging.getLogger(__name__)

SYNTHETIC_DIR = "synthetic"
KAGGLE_PREFIX = "kaggle:"
_KAGGLE_HANDLE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/versions/\d+)?$")


@dataclass
class Source:
    """A resolved source: a folder on disk, plus entries found before scanning (zip_slip)."""

    root: Path
    name: str | None  # forced source column; None = from the layout
    original: Callable[[Path], str]  # on-disk path -> original_path column
    pre_quarantined: list[Entry] = field(default_factory=list)
    #: The layout, when the source itself says it (a .csv list); None = detect it in ``root``.
    layout: Layout | None = None


def resolve_source(text: str, cfg: DataConfig, seed: int, raw_dir: Path) -> Source:
    """Turn one ``data.source`` entry into a :class:`Source`, or say why it cannot be used."""
    if text.lower() == "synthetic":
        from fakeface.data import synthetic  # local import: only this source needs it

        target = raw_dir / SYNTHETIC_DIR
        remove_tree(target)  # no stale images from a run with other parameters
        root = Path(synthetic.generate(cfg.synthetic, cfg.split, target, seed))
        return Source(root=root, name="synthetic", original=str)
    if text.lower().startswith(KAGGLE_PREFIX):
        root = _kaggle_download(text[len(KAGGLE_PREFIX) :].strip())
        return Source(root=root, name=None, original=str)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(root=path, name=None, original=str)
    if path.is_file():
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            return zip_source(path, cfg, raw_dir)
        if path.suffix.lower() == ".csv":
            return Source(root=path.parent, name=None, original=str, layout=CsvList.from_file(path))
        raise IngestError(
            f"data.source {text!r} is a file but not a .zip archive or a .csv list; expected "
            "'synthetic', a folder, a .zip, a .csv or kaggle:<owner>/<dataset>"
        )
    raise IngestError(
        f"data.source {text!r} not found: expected 'synthetic', an existing folder, a .zip file "
        "or kaggle:<owner>/<dataset> (e.g. kaggle:xhlulu/140k-real-and-fake-faces)"
    )


def check_outside(texts: list[str], raw_dir: Path) -> None:
    """Refuse a source inside ``raw_dir``: ingest replaces that folder as a whole on every run, so
    a source there would be deleted by the run that reads it."""
    stage_dir = Path(raw_dir).resolve()
    for text in texts:
        if text.lower() == "synthetic" or text.lower().startswith(KAGGLE_PREFIX):
            continue
        path = Path(text).expanduser().resolve()
        if path.is_relative_to(stage_dir):
            raise IngestError(
                f"data.source {text!r} lies inside {raw_dir}, the folder ingest rebuilds and replaces "
                "on every run; move it out (e.g. to data/sources/)"
            )


def kaggle_credentials_found() -> bool:
    """True when kagglehub can authenticate: env vars or a token/credentials file."""
    if os.environ.get("KAGGLE_API_TOKEN", "").strip():
        return True
    if os.environ.get("KAGGLE_USERNAME", "").strip() and os.environ.get("KAGGLE_KEY", "").strip():
        return True
    folders = [Path.home() / ".kaggle"]
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        folders.insert(0, Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser())
    names = ("kaggle.json", "access_token", "access_token.txt")
    return any((folder / name).is_file() for folder in folders for name in names)


def _kaggle_download(handle: str) -> Path:
    if not _KAGGLE_HANDLE.match(handle):
        raise IngestError(
            f"kaggle source {handle!r} is not <owner>/<dataset>, e.g. "
            "kaggle:xhlulu/140k-real-and-fake-faces"
        )
    if not kaggle_credentials_found():
        raise IngestError(
            f"data.source kaggle:{handle} needs Kaggle API credentials and none were found. "
            "Create a token at https://www.kaggle.com/settings (API section) and either set "
            "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment, or save it as "
            "~/.kaggle/kaggle.json (chmod 600) or ~/.kaggle/access_token. Alternatively download "
            f"the archive by hand from https://www.kaggle.com/datasets/{handle} and set "
            "data.source to the .zip (or its extracted folder)."
        )
    import kagglehub  # local import: only this source needs it

    logger.info("ingest: downloading kaggle:%s with kagglehub (cached after the first time)", handle)
    try:
        downloaded = kagglehub.dataset_download(handle)
    except Exception as error:  # network, 403/404, disk: say which data set and why
        raise IngestError(
            f"download of kaggle:{handle} failed: {type(error).__name__}: {error}. Check the "
            "credentials and that you accepted the data set's terms on kaggle.com, or download it "
            "by hand and point data.source at the .zip."
        ) from error
    root = Path(downloaded)
    if root.is_file() and zipfile.is_zipfile(root):
        raise IngestError(f"kagglehub returned an archive {root}; set data.source to that path")
    if not root.is_dir():
        raise IngestError(f"kagglehub returned {downloaded!r}, which is not a folder")
    return root


def zip_source(archive: Path, cfg: DataConfig, raw_dir: Path) -> Source:
    """Extract ``archive`` into ``raw_dir/<stem>`` (:func:`fakeface.ingest.archives.extract_zip`:
    zip slip, nested archives and archive bombs refused, each recorded) and scan that folder."""
    target = raw_dir / archive.stem
    remove_tree(target)  # raw_dir is the stage's own fresh folder; a stem seen twice is replaced
    refused = extract_zip(archive, target, cfg.max_pixels, cfg.max_archive_bytes)

    def original(path: Path) -> str:
        return f"{archive}::{path.relative_to(target).as_posix()}"

    return Source(root=target, name=None, original=original, pre_quarantined=refused)
