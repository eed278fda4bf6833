"""The ingest stage: a data source -> a checked manifest plus a quarantine report.

Sources (``data.source``):

``synthetic``
    The embedded data set: :func:`fakeface.synthetic.generate` writes the 140k layout under
    ``raw_dir/synthetic``, which is then ingested like any folder. Source column ``synthetic``.
a folder in the Kaggle "140k real and fake faces" layout
    ``<root>/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/*.jpg`` (or
    ``<root>/real-vs-fake/...`` or ``<root>/{train,valid,test}/{real,fake}``), with optional
    ``<root>/{train,valid,test}.csv``.
    The data set's own split is kept. The CSVs, when present, are cross-checked: a listed file that
    is missing is reported (``missing_file``), a file whose CSV label disagrees with its folder is
    quarantined (``label_conflict``). Source column ``140k``.
a ``.zip`` of either folder layout
    Extracted into ``raw_dir/<zip stem>/``, refusing members that would land outside it (absolute
    paths, ``..``, drive letters) and symbolic links (``zip_slip``).
a plain folder with ``real/`` and ``fake/`` (images at any depth below each)
    Split into train/valid/test by ``data.split``, stratified by class, per unique sha256 (so
    copies of one image never straddle splits), deterministically for a seed. Source column: the
    folder's name (the zip's stem for a zip).
a folder in the ArtiFact layout (Rahman et al. 2023)
    Per-generator folders, each with a ``metadata.csv`` holding ``image_path`` (relative to that
    folder), ``target`` (0 real, any other value fake) and ``category``; or one such folder on its
    own. Split by ``data.split``. Source column ``artifact``; the note column keeps
    ``generator=<folder>;category=<category>``. Files not listed in a metadata.csv are
    ``unlabeled``; listed files that do not exist are ``missing_file``.
a folder in the "Real and Fake Face Detection" layout (CIPLAB, Kaggle ``ciplab/real-and-fake-face-detection``)
    ``training_real/`` and ``training_fake/`` (also below a wrapper folder such as
    ``real_and_fake_face/``). Fake file names carry the editing difficulty, ``easy_*``, ``mid_*``
    or ``hard_*``: kept in the note column as ``difficulty=easy`` etc. Split by ``data.split``.
    Source column ``ciplab``.
a folder in the "Real vs Fake Face Classification" layout
    ``{Train,Validation,Test}/{Real,Fake}/`` (case-insensitive; ``val``/``validation``/``valid``,
    ``training``/``train`` and ``testing``/``test`` are accepted for the split folders), as in
    several Kaggle real-vs-fake face sets. The data set's own split is kept. Source column: the
    folder's name.
a generic CSV: a ``.csv`` file, or a folder whose top level has one
    Columns ``path`` (relative to the CSV's folder, or absolute) and ``label`` (``real``/``fake``,
    or 0 = real / 1 = fake), optionally ``split`` (train/valid/test, or val/validation; rows without
    one are split by ``data.split``). Files under the CSV's folder that it does not list are
    ``unlabeled``. Source column: the CSV's stem when ``data.source`` is the file, else the folder's
    name.
``kaggle:<owner>/<dataset>``
    Downloaded with :func:`kagglehub.dataset_download` (into kagglehub's cache) when Kaggle
    credentials exist, then ingested as a folder.

Every file found under the source is *seen* and then either *kept* (a manifest row) or
*quarantined* with a reason (see :data:`REASONS`); ``seen == kept + quarantined`` is asserted.

``data.source`` may also be a list: each source is resolved and recognised on its own, and all of
them go into one manifest, deduplicated across sources (the same bytes in two sources are kept
once, in the earliest split), with the ``source`` column naming where each row came from. ``data.test_source`` names one of them
for cross-dataset evaluation: all its images form the test split (copies of other sources' images
excepted: ``cross_split_duplicate``), and the other sources' test images move to valid.
``data.artifact_categories`` keeps only the listed ArtiFact categories (the rest: ``excluded``).
Images that are not RGB JPEGs are converted to lossless RGB PNGs under ``raw_dir/normalized/``;
RGB JPEGs are referenced where they are and never re-encoded (re-encoding would change the
compression traces a detector learns from).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import DataConfig, SplitFractions
from fakeface.images import ImageInfo, Problem, inspect_image, normalize_image, pil_limits
from fakeface.logs import progress
from fakeface.manifest import COLUMNS, file_sha256, write_manifest

logger = logging.getLogger(__name__)

#: Every quarantine reason, in the order the report lists them.
REASONS = (
    "empty",
    "not_an_image",
    "corrupt",
    "too_large",
    "unreadable",
    "duplicate",
    "cross_split_duplicate",
    "label_conflict",
    "zip_slip",
    "missing_file",
    "unlabeled",  # a file outside any {real,fake} folder (or outside the image tree)
    "excluded",  # left out by the params (an ArtiFact category not in data.artifact_categories)
)

LAYOUT_140K = "140k"
LAYOUT_FOLDERS = "folders"
LAYOUT_SPLITS = "splits"  # "Real vs Fake Face Classification": {Train,Validation,Test}/{Real,Fake}
LAYOUT_ARTIFACT = "artifact"
LAYOUT_CIPLAB = "ciplab"
LAYOUT_CSV = "csv"
#: Layouts with no split of their own: ingest splits them by data.split.
UNSPLIT_LAYOUTS = (LAYOUT_FOLDERS, LAYOUT_ARTIFACT, LAYOUT_CIPLAB)
#: Split folder (and CSV split value) spellings -> our split names.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "test": "test",
    "testing": "test",
}
ARTIFACT_METADATA = "metadata.csv"
CIPLAB_DIRS = {"training_real": "real", "training_fake": "fake"}
_CIPLAB_DIFFICULTY = re.compile(r"^(easy|mid|hard)_", re.IGNORECASE)
NORMALIZED_DIR = "normalized"
SYNTHETIC_DIR = "synthetic"
KAGGLE_PREFIX = "kaggle:"
#: Worker threads for hashing + decoding (PIL and hashlib release the GIL while they work).
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: Files in flight at once: bounds memory for 140k-file sources.
_WINDOW = 256
_KAGGLE_HANDLE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/versions/\d+)?$")
_SPLIT_RANK = {name: rank for rank, name in enumerate(SPLITS)}

T = TypeVar("T")
R = TypeVar("R")


class IngestError(ValueError):
    """The source cannot be turned into a usable manifest; the message says why and what to do."""


@dataclass
class IngestReport:
    """What ingest saw, kept and quarantined. Written as JSON next to the manifest."""

    source: str | list[str]  # data.source as configured
    source_name: str  # the manifest's source column ("+"-joined for several sources)
    layout: str  # 140k | folders | splits | artifact | ciplab | csv ("+"-joined for several)
    root: str  # the folder that was scanned ("; "-joined for several)
    seen: int
    kept: int
    quarantined: int
    by_reason: dict[str, int]
    normalized: dict[str, int]  # note -> count
    counts: dict[str, dict[str, int]]  # split -> label -> kept images
    items: list[dict[str, str]]  # {path, reason, detail} per quarantined file
    csv: dict[str, Any] = field(default_factory=dict)  # the Kaggle CSV cross-check, if any
    seed: int = 0
    max_pixels: int = 0
    manifest: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Entry:
    """Per-file state, kept small: 140k of these live at once."""

    path: str
    original: str
    label: str | None = None
    split: str | None = None
    sha: str | None = None
    info: ImageInfo | None = None
    reason: str | None = None
    detail: str = ""
    normalized: str | None = None
    source: str = ""  # the manifest's source column for this file
    note: str = ""  # what the layout says about the file (difficulty, generator ...)

    def quarantine(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Layout:
    kind: str  # one of the LAYOUT_* names
    image_root: Path  # holds {train,valid,test}/{real,fake} or {real,fake}, or the listed images
    csv_dir: Path | None  # where train.csv / valid.csv / test.csv may be
    #: For listing layouts (artifact, csv): resolved path -> (label, split or None, note).
    listed: dict[str, tuple[str, str | None, str]] | None = field(default=None, hash=False, compare=False)
    #: Metadata files of the layout (not images, not entries).
    metadata: frozenset[str] = frozenset()
    #: Listed files that are not on disk, and rows without a usable path or label.
    missing: tuple[tuple[str, str], ...] = ()
    bad_rows: int = 0


@dataclass
class _Source:
    """A resolved source: a folder on disk, plus entries found before scanning (zip_slip)."""

    root: Path
    name: str | None  # forced source column; None = from the layout
    original: Callable[[Path], str]  # on-disk path -> original_path column
    pre_quarantined: list[_Entry] = field(default_factory=list)
    csv_file: Path | None = None  # a generic path,label[,split] list given as the source


# --------------------------------------------------------------------------- public API


def ingest(
    cfg: DataConfig,
    seed: int,
    raw_dir: Path,
    manifest_path: Path,
    report_path: Path,
    *,
    workers: int = DEFAULT_WORKERS,
) -> IngestReport:
    """Read ``cfg.source``, check every file, write the manifest and the JSON report.

    Raises :class:`IngestError` for a source that cannot be used (unknown, missing, no
    credentials, no recognisable layout), or when after quarantine a split lacks a class; in the
    latter case the report is written first (with ``error`` set) and no manifest is written.
    """
    raw_dir = Path(raw_dir)
    manifest_path = Path(manifest_path)
    report_path = Path(report_path)
    raw_dir.mkdir(parents=True, exist_ok=True)
    normalized_dir = raw_dir / NORMALIZED_DIR
    _remove_tree(normalized_dir)

    resolved: list[tuple[_Source, _Layout, str]] = []
    for text in cfg.sources:
        source = _resolve_source(text, cfg, seed, raw_dir)
        layout = _detect_layout(source.root, csv_file=source.csv_file)
        if layout is None:
            raise IngestError(
                f"{source.root}: no data set layout found. Expected the Kaggle 140k layout "
                "(real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/ or {train,valid,test}/"
                "{real,fake}/), {Train,Validation,Test}/{Real,Fake}/, ArtiFact (folders with a "
                "metadata.csv), CIPLAB (training_real/ + training_fake/), a CSV with path,label"
                "[,split] columns, or a folder with real/ and fake/ subfolders."
            )
        name = source.name or _default_source_name(source, layout)
        logger.info("ingest: %s (%s layout) from %s", text, layout.kind, layout.image_root)
        resolved.append((source, layout, name))
    names = [name for _, _, name in resolved]
    if len(set(names)) != len(names):
        raise IngestError(
            f"data.source {cfg.sources} gives the source names {names}; each must be distinct "
            "(rename a folder, or list each data set once)"
        )
    source_name = "+".join(names)

    if cfg.test_source is not None and cfg.test_source not in names:
        raise IngestError(
            f"data.test_source {cfg.test_source!r} is none of the sources {names} (use a name as "
            "the manifest's source column spells it)"
        )

    entries: list[_Entry] = []
    seen = 0
    for source, layout, name in resolved:
        found = _scan(source, layout)
        found.extend(_listed_but_missing(layout, source))
        if layout.kind == LAYOUT_ARTIFACT and cfg.artifact_categories:
            _exclude_categories(found, cfg.artifact_categories)
        for entry in found + source.pre_quarantined:
            entry.source = name
        # counted as found, independently of the kept/quarantined bookkeeping below
        seen += len(found) + len(source.pre_quarantined)
        entries.extend(found)
        entries.extend(source.pre_quarantined)
    entries.sort(key=lambda e: e.path)
    csv_summary: dict[str, Any] = {}

    with pil_limits(cfg.max_pixels), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        todo = [entry for entry in entries if entry.reason is None]
        results = _ordered_map(pool, lambda e: _examine(e.path, cfg.max_pixels), todo)
        for entry, (sha, outcome) in zip(
            todo, progress(results, desc="ingest: inspect+hash", total=len(todo)), strict=True
        ):
            entry.sha = sha
            if isinstance(outcome, Problem):
                entry.quarantine(outcome.reason, outcome.detail)
            else:
                entry.info = outcome

        for source, layout, name in resolved:
            if layout.kind == LAYOUT_140K and layout.csv_dir is not None:
                own = [e for e in entries if e.source == name]
                summary, missing = _cross_check_csvs(own, layout)
                if summary:
                    csv_summary = summary if len(resolved) == 1 else {**csv_summary, name: summary}
                for entry in missing:
                    entry.source = name
                seen += len(missing)
                entries.extend(missing)
            if layout.listed is not None and (layout.bad_rows or layout.missing):
                csv_summary[name] = {"missing": len(layout.missing), "unreadable_rows": layout.bad_rows}
        entries.sort(key=lambda e: e.path)

        _resolve_duplicates(entries)
        if any(e.reason is None and e.split is None for e in entries):
            _assign_splits(entries, cfg.split, seed)
        if cfg.test_source is not None:
            _cross_dataset_splits(entries, cfg.test_source)
        _resolve_duplicates(entries)  # within the final splits (a no-op when nothing changed)

        to_normalize = [
            e for e in entries if e.reason is None and e.info is not None and e.info.needs_normalization
        ]
        jobs = _ordered_map(pool, lambda e: _normalize(e, normalized_dir), to_normalize)
        bar = progress(jobs, desc="ingest: normalise", total=len(to_normalize))
        for entry, problem in zip(to_normalize, bar, strict=True):
            if problem is not None:
                entry.normalized = None
                entry.quarantine(problem.reason, problem.detail)

    kept = sorted((e for e in entries if e.reason is None), key=lambda e: e.path)
    quarantined = sorted((e for e in entries if e.reason is not None), key=lambda e: e.path)
    report = _build_report(cfg, seed, resolved, source_name, kept, quarantined, csv_summary)
    report.seen = seen
    report.manifest = str(manifest_path)
    if report.seen != report.kept + report.quarantined or len(entries) != seen:  # a bug, not data
        raise RuntimeError(
            f"ingest bookkeeping bug: seen {report.seen} != kept {report.kept} + "
            f"quarantined {report.quarantined} (entries {len(entries)})"
        )

    empty = [(s, c) for s in SPLITS for c in CLASS_NAMES if report.counts[s][c] == 0]
    if empty:
        missing_text = ", ".join(f"split '{s}' has no '{c}' images" for s, c in empty)
        report.error = (
            f"after quarantine, {missing_text} ({report.kept} of {report.seen} files kept; "
            f"quarantined by reason: {report.by_reason}). See {report_path} for every file and "
            "reason."
        )
        _write_json(report.to_dict(), report_path)
        manifest_path.unlink(missing_ok=True)  # never leave a stale manifest beside this report
        _log_summary(report)
        raise IngestError(report.error)

    frame = _manifest_frame(kept, source_name)
    _check_no_leakage(frame)
    write_manifest(frame, manifest_path)
    _write_json(report.to_dict(), report_path)
    _log_summary(report)
    return report


# --------------------------------------------------------------------------- sources


def _default_source_name(source: _Source, layout: _Layout) -> str:
    if layout.kind in (LAYOUT_140K, LAYOUT_ARTIFACT, LAYOUT_CIPLAB):
        return layout.kind
    if layout.kind == LAYOUT_CSV and source.csv_file is not None:
        return source.csv_file.stem
    return source.root.name


def _resolve_source(text: str, cfg: DataConfig, seed: int, raw_dir: Path) -> _Source:
    if text.lower() == "synthetic":
        from fakeface import synthetic  # local import: only this source needs it

        target = raw_dir / SYNTHETIC_DIR
        _remove_tree(target)  # no stale images from a run with other parameters
        root = Path(synthetic.generate(cfg.synthetic, cfg.split, target, seed))
        return _Source(root=root, name="synthetic", original=str)
    if text.lower().startswith(KAGGLE_PREFIX):
        root = _kaggle_download(text[len(KAGGLE_PREFIX) :].strip())
        return _Source(root=root, name=None, original=str)
    path = Path(text).expanduser()
    if path.is_dir():
        return _Source(root=path, name=None, original=str)
    if path.is_file():
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            return _extract_zip(path, raw_dir)
        if path.suffix.lower() == ".csv":
            return _Source(root=path.parent, name=None, original=str, csv_file=path)
        raise IngestError(
            f"data.source {text!r} is a file but not a .zip archive or a .csv list; expected "
            "'synthetic', a folder, a .zip, a .csv or kaggle:<owner>/<dataset>"
        )
    raise IngestError(
        f"data.source {text!r} not found: expected 'synthetic', an existing folder, a .zip file "
        "or kaggle:<owner>/<dataset> (e.g. kaggle:xhlulu/140k-real-and-fake-faces)"
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


def _unsafe_member(name: str) -> str | None:
    """Why a zip member name would escape the extraction folder, or None if it is safe."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "path with '..'"
    if "\x00" in posix:
        return "NUL byte in name"
    return None


def _extract_zip(archive: Path, raw_dir: Path) -> _Source:
    """Extract ``archive`` into ``raw_dir/<stem>``; unsafe members are refused and recorded."""
    target = raw_dir / archive.stem
    if archive.resolve().is_relative_to(target.resolve()):
        raise IngestError(
            f"{archive} lies inside {target}, the folder it would be extracted into; move it "
            "out of the ingest stage's working folder"
        )
    _remove_tree(target)
    target.mkdir(parents=True)
    target_real = target.resolve()
    refused: list[_Entry] = []
    extracted = 0
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            for member in progress(members, desc="ingest: extract", total=len(members), unit="file"):
                label = f"{archive}::{member.filename}"
                why = _unsafe_member(member.filename)
                mode = member.external_attr >> 16
                if why is None and stat.S_ISLNK(mode):
                    why = "symbolic link member"
                if why is None:
                    destination = target / member.filename.replace("\\", "/")
                    if not destination.resolve().is_relative_to(target_real):
                        why = "resolves outside the extraction folder"
                if why is not None:
                    if member.is_dir():
                        logger.warning("ingest: zip member %s refused (%s)", label, why)
                        continue
                    detail = f"{why}; not extracted"
                    refused.append(_Entry(label, label, reason="zip_slip", detail=detail))
                    continue
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with bundle.open(member) as reader, open(destination, "wb") as writer:
                        shutil.copyfileobj(reader, writer, 1 << 20)
                except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error) as error:
                    # a bad CRC, an encrypted or unsupported member: that file, not the whole archive
                    destination.unlink(missing_ok=True)
                    detail = f"cannot extract: {type(error).__name__}: {error}"
                    refused.append(_Entry(label, label, reason="corrupt", detail=detail))
                    continue
                extracted += 1
    except zipfile.BadZipFile as error:
        raise IngestError(f"{archive}: not a readable zip archive ({error})") from error
    logger.info(
        "ingest: extracted %d files from %s into %s (%d refused)",
        extracted,
        archive,
        target,
        len(refused),
    )

    def original(path: Path) -> str:
        return f"{archive}::{path.relative_to(target).as_posix()}"

    return _Source(root=target, name=None, original=original, pre_quarantined=refused)


# --------------------------------------------------------------------------- layout and scan


def _child_dir(folder: Path, name: str) -> Path | None:
    """The subfolder of ``folder`` called ``name`` (case-insensitive), if any."""
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


def _has_split_dirs(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    for split in SPLITS:
        split_dir = _child_dir(folder, split)
        if split_dir is not None and any(_child_dir(split_dir, c) for c in CLASS_NAMES):
            return True
    return False


def _has_alias_split_dirs(folder: Path, other_spelling: bool = False) -> bool:
    """``{Train,Validation,Test}/{Real,Fake}`` and the other spellings in :data:`SPLIT_ALIASES`;
    with ``other_spelling``, at least one split folder must not be spelt train/valid/test."""
    if not folder.is_dir():
        return False
    try:
        children = [c for c in folder.iterdir() if c.is_dir()]
    except OSError:
        return False
    splits = [
        child.name.lower()
        for child in children
        if child.name.lower() in SPLIT_ALIASES and any(_child_dir(child, c) for c in CLASS_NAMES)
    ]
    if other_spelling:
        return any(name not in SPLITS for name in splits)
    return bool(splits)


def _detect_layout(root: Path, depth: int = 0, csv_file: Path | None = None) -> _Layout | None:
    if csv_file is not None:
        return _csv_layout(root, [csv_file])
    for candidate in (root / "real_vs_fake" / "real-vs-fake", root / "real-vs-fake"):
        if _has_split_dirs(candidate):
            return _Layout(LAYOUT_140K, candidate, root)
    # A split folder spelt otherwise (Validation/, val/ ...): not the 140k set, whose are exact.
    if _has_alias_split_dirs(root, other_spelling=True):
        return _Layout(LAYOUT_SPLITS, root, None)
    if _has_split_dirs(root):
        return _Layout(LAYOUT_140K, root, root)
    if any(_child_dir(root, c) for c in CLASS_NAMES):
        return _Layout(LAYOUT_FOLDERS, root, None)
    if all(_child_dir(root, name) for name in CIPLAB_DIRS):
        return _Layout(LAYOUT_CIPLAB, root, None)
    artifact = _artifact_layout(root)
    if artifact is not None:
        return artifact
    csvs = _generic_csvs(root)
    if len(csvs) == 1:
        return _csv_layout(root, csvs)
    if depth < 3 and root.is_dir():  # a wrapper folder, as many zips have
        subdirs = [
            d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "__MACOSX"))
        ]
        if len(subdirs) == 1:
            return _detect_layout(subdirs[0], depth + 1)
    return None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [name.strip().lower() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _generic_csvs(root: Path) -> list[Path]:
    """Top-level CSVs of ``root`` with ``path`` and ``label`` columns (the generic list layout)."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() == ".csv" and {"path", "label"} <= set(_csv_header(path)):
            found.append(path)
    return found


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}


def _label_of(value: str) -> str | None:
    """``real``/``fake`` or a number: 0 = real, anything else = fake (ArtiFact's target)."""
    text = value.strip().lower()
    if text in CLASS_NAMES:
        return text
    try:
        return "real" if float(text) == 0 else "fake"
    except ValueError:
        return None


def _listing(
    rows: Iterable[tuple[Path, str, str | None, str]], listed: dict, missing: list, where: str
) -> int:
    """Fill ``listed`` (resolved path -> label, split, note) and ``missing``; returns bad rows."""
    bad = 0
    for path, label_text, split_text, note in rows:
        label = _label_of(label_text)
        split = SPLIT_ALIASES.get((split_text or "").lower()) if split_text else None
        if label is None or (split_text and split is None):
            bad += 1
            continue
        if not path.is_file():
            missing.append((str(path), f"listed in {where} but not on disk"))
            continue
        listed[os.path.normpath(path.resolve())] = (label, split, note)
    return bad


def _csv_layout(root: Path, csv_files: list[Path]) -> _Layout:
    listed: dict[str, tuple[str, str | None, str]] = {}
    missing: list[tuple[str, str]] = []
    bad = 0
    for csv_file in csv_files:
        if not {"path", "label"} <= set(_csv_header(csv_file)):
            raise IngestError(f"{csv_file}: a data set list needs 'path' and 'label' columns (and optionally 'split')")
        rows = (
            (csv_file.parent / row["path"], row.get("label", ""), row.get("split") or None, "")
            for row in _csv_rows(csv_file)
            if row.get("path")
        )
        bad += _listing(rows, listed, missing, csv_file.name)
    metadata = frozenset(os.path.normpath(p.resolve()) for p in csv_files)
    return _Layout(LAYOUT_CSV, root, None, listed, metadata, tuple(missing), bad)


def _artifact_layout(root: Path) -> _Layout | None:
    """ArtiFact: ``<generator>/metadata.csv`` per folder (or one ``metadata.csv`` in ``root``)."""
    if not root.is_dir():
        return None
    candidates = [root] + [d for d in sorted(root.iterdir()) if d.is_dir()]
    metas = [d / ARTIFACT_METADATA for d in candidates if (d / ARTIFACT_METADATA).is_file()]
    metas = [m for m in metas if {"image_path", "target"} <= set(_csv_header(m))]
    if not metas:
        return None
    listed: dict[str, tuple[str, str | None, str]] = {}
    missing: list[tuple[str, str]] = []
    bad = 0
    for meta in metas:
        generator = meta.parent.name
        rows = (
            (
                meta.parent / row["image_path"],
                row.get("target", ""),
                None,
                f"generator={generator};category={row.get('category', '')}",
            )
            for row in _csv_rows(meta)
            if row.get("image_path")
        )
        bad += _listing(rows, listed, missing, f"{generator}/{ARTIFACT_METADATA}")
    metadata = frozenset(os.path.normpath(m.resolve()) for m in metas)
    return _Layout(LAYOUT_ARTIFACT, root, None, listed, metadata, tuple(missing), bad)


def _listed_but_missing(layout: _Layout, source: _Source) -> list[_Entry]:
    return [_Entry(path, path, reason="missing_file", detail=why) for path, why in layout.missing]


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
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


def _csv_files(layout: _Layout) -> dict[str, Path]:
    if layout.kind != LAYOUT_140K or layout.csv_dir is None:
        return {}
    found = {}
    for split in SPLITS:
        path = layout.csv_dir / f"{split}.csv"
        if path.is_file():
            found[split] = path
    return found


def _scan(source: _Source, layout: _Layout) -> list[_Entry]:
    """One entry per file under the source root; files not under a class folder are 'unlabeled'."""
    csvs = {p.resolve() for p in _csv_files(layout).values()}
    entries: list[_Entry] = []
    if layout.listed is not None:
        return _scan_listed(source, layout)
    for path, unreadable in _walk(source.root):
        entry = _Entry(path=str(path), original=source.original(path))
        entries.append(entry)
        if unreadable is not None:
            entry.quarantine("unreadable", unreadable)
            continue
        try:
            parts = path.relative_to(layout.image_root).parts
        except ValueError:
            parts = ()
            if path.suffix.lower() == ".csv" and path.resolve() in csvs:
                entries.pop()  # the Kaggle split CSVs are metadata, read by _cross_check_csvs
                continue
            entry.quarantine("unlabeled", f"outside the image folder {layout.image_root}")
            continue
        if layout.kind == LAYOUT_140K:
            if len(parts) >= 3 and parts[0].lower() in SPLITS and parts[1].lower() in CLASS_NAMES:
                entry.split, entry.label = parts[0].lower(), parts[1].lower()
            else:
                entry.quarantine("unlabeled", "not inside a {train,valid,test}/{real,fake} folder")
        elif layout.kind == LAYOUT_SPLITS:
            if len(parts) >= 3 and parts[0].lower() in SPLIT_ALIASES and parts[1].lower() in CLASS_NAMES:
                entry.split, entry.label = SPLIT_ALIASES[parts[0].lower()], parts[1].lower()
            else:
                entry.quarantine("unlabeled", "not inside a {Train,Validation,Test}/{Real,Fake} folder")
        elif layout.kind == LAYOUT_CIPLAB:
            if len(parts) >= 2 and parts[0].lower() in CIPLAB_DIRS:
                entry.label = CIPLAB_DIRS[parts[0].lower()]
                difficulty = _CIPLAB_DIFFICULTY.match(path.name)
                if entry.label == "fake" and difficulty:
                    entry.note = f"difficulty={difficulty.group(1).lower()}"
            else:
                entry.quarantine("unlabeled", "not inside training_real/ or training_fake/")
        elif len(parts) >= 2 and parts[0].lower() in CLASS_NAMES:
            entry.label = parts[0].lower()
        else:
            entry.quarantine("unlabeled", "not inside a real/ or fake/ folder")
    entries.sort(key=lambda e: e.path)
    return entries


def _scan_listed(source: _Source, layout: _Layout) -> list[_Entry]:
    """Listing layouts (ArtiFact, CSV): labels come from the list; unlisted files are unlabeled."""
    assert layout.listed is not None
    entries: list[_Entry] = []
    walked: set[str] = set()
    for path, unreadable in _walk(source.root):
        key = os.path.normpath(path.resolve()) if unreadable is None else str(path)
        if key in layout.metadata:
            continue  # the list itself
        walked.add(key)
        entry = _Entry(path=str(path), original=source.original(path))
        entries.append(entry)
        if unreadable is not None:
            entry.quarantine("unreadable", unreadable)
            continue
        _label_listed(entry, layout.listed.get(key))
    # Listed files outside the root (absolute paths in a CSV) are entries too.
    for key, value in sorted(layout.listed.items()):
        if key not in walked:
            entry = _Entry(path=key, original=key)
            entries.append(entry)
            _label_listed(entry, value)
    entries.sort(key=lambda e: e.path)
    return entries


def _exclude_categories(entries: list[_Entry], categories: list[str]) -> None:
    """ArtiFact rows whose category is not wanted are quarantined as ``excluded``."""
    wanted = {c.strip().lower() for c in categories}
    for entry in entries:
        if entry.reason is not None or entry.label is None:
            continue
        match = re.search(r"(?:^|;)category=([^;]*)", entry.note)
        category = match.group(1).lower() if match else ""
        if category not in wanted:
            entry.quarantine("excluded", f"category {category!r} not in data.artifact_categories")


def _cross_dataset_splits(entries: list[_Entry], test_source: str) -> None:
    """Train on some sources, test on another: every ``test_source`` image goes to test, the
    other sources' test images go to valid (so no other source is tested on)."""
    for entry in entries:
        if entry.reason is not None or entry.split is None:
            continue
        if entry.source == test_source:
            entry.split = "test"
        elif entry.split == "test":
            entry.split = "valid"


def _label_listed(entry: _Entry, value: tuple[str, str | None, str] | None) -> None:
    if value is None:
        entry.quarantine("unlabeled", "not listed in the data set's CSV")
        return
    entry.label, entry.split, entry.note = value


# --------------------------------------------------------------------------- per-file work


def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]
) -> Iterator[R]:
    """``pool.map`` with at most ``_WINDOW`` tasks in flight, results in input order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= _WINDOW:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _examine(path: str, max_pixels: int) -> tuple[str | None, ImageInfo | Problem]:
    """Inspect (full decode, pixels dropped) and, for a usable image, hash the file bytes."""
    outcome = inspect_image(path, max_pixels)
    if isinstance(outcome, Problem):
        return None, outcome
    try:
        return file_sha256(path), outcome
    except OSError as error:
        return None, Problem("unreadable", f"cannot read for hashing: {error}")


def _normalize(entry: _Entry, normalized_dir: Path) -> Problem | None:
    destination = normalized_dir / f"{entry.sha}.png"
    problem = normalize_image(entry.path, destination)
    if problem is None:
        entry.normalized = str(destination)
    return problem


# --------------------------------------------------------------------------- decisions


def _csv_label(row: dict[str, str]) -> str | None:
    value = (row.get("label") or "").strip()
    if value in ("0", "1", "0.0", "1.0"):
        return "real" if float(value) == 1 else "fake"
    text = (row.get("label_str") or "").strip().lower()
    return text if text in CLASS_NAMES else None


def _cross_check_csvs(entries: list[_Entry], layout: _Layout) -> tuple[dict[str, Any], list[_Entry]]:
    """Compare the Kaggle CSVs with the folders: missing files and label disagreements."""
    csvs = _csv_files(layout)
    if not csvs:
        return {}, []
    by_rel: dict[str, _Entry] = {}
    for entry in entries:
        if entry.label is not None:
            by_rel[Path(entry.path).relative_to(layout.image_root).as_posix().lower()] = entry
    summary: dict[str, Any] = {
        "files": {s: str(p) for s, p in csvs.items()},
        "rows": 0,
        "missing": 0,
        "label_conflicts": 0,
        "unreadable_rows": 0,
    }
    listed: set[str] = set()
    missing: list[_Entry] = []
    for split, csv_path in csvs.items():
        with open(csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                logger.warning("ingest: %s has no 'path' column; not cross-checked", csv_path)
                summary.setdefault("skipped", []).append(str(csv_path))
                continue
            for number, row in enumerate(reader, start=2):  # line 1 is the header
                summary["rows"] += 1
                rel = (row.get("path") or "").strip().replace("\\", "/").lstrip("/")
                label = _csv_label(row)
                if not rel or label is None:
                    summary["unreadable_rows"] += 1
                    continue
                key = rel.lower()
                listed.add(key)
                entry = by_rel.get(key)
                if entry is None:
                    if not (layout.image_root / rel).exists():
                        summary["missing"] += 1
                        where = str(layout.image_root / rel)
                        detail = f"listed in {csv_path.name} line {number} but not on disk"
                        missing.append(_Entry(where, where, reason="missing_file", detail=detail))
                    continue
                if entry.label != label:
                    summary["label_conflicts"] += 1
                    if entry.reason is None:
                        entry.quarantine(
                            "label_conflict",
                            f"in the {entry.label}/ folder but {csv_path.name} line {number} "
                            f"says {label}",
                        )
    summary["files_not_listed"] = sum(1 for key in by_rel if key not in listed)
    if summary["unreadable_rows"]:
        logger.warning("ingest: %d CSV rows without a usable path or label", summary["unreadable_rows"])
    return summary, missing


def _resolve_duplicates(entries: list[_Entry]) -> None:
    """Same bytes (sha256) more than once: label conflicts, leakage across splits, duplicates.

    ``entries`` must be sorted by path; the first copy (by path) in the earliest split is kept.
    Entries without a split (a plain folder before splitting) take part in the label check only.
    """
    groups: dict[str, list[_Entry]] = defaultdict(list)
    for entry in entries:
        if entry.reason is None and entry.sha is not None:
            groups[entry.sha].append(entry)
    for copies in groups.values():
        if len(copies) < 2:
            continue
        labels = {e.label for e in copies}
        if len(labels) > 1:
            shown = "; ".join(f"{e.label}: {e.path}" for e in copies[:4])
            for entry in copies:
                entry.quarantine("label_conflict", f"same bytes under both labels ({shown})")
            continue
        if any(e.split is None for e in copies):
            continue
        keep = min(copies, key=lambda e: (_SPLIT_RANK[e.split], e.path))
        for entry in copies:
            if entry is keep:
                continue
            if entry.split == keep.split:
                entry.quarantine("duplicate", f"same bytes as {keep.path}")
            else:
                entry.quarantine(
                    "cross_split_duplicate",
                    f"same bytes as {keep.path} in {keep.split} (kept there; would leak into "
                    f"{entry.split})",
                )


def _split_sizes(n: int, fractions: SplitFractions) -> tuple[int, int, int]:
    n_valid = round(n * fractions.valid)
    n_test = round(n * fractions.test)
    if n >= 3:  # a tiny class still gets one image in each split
        n_valid, n_test = max(1, n_valid), max(1, n_test)
    n_valid = min(n_valid, n)
    n_test = min(n_test, n - n_valid)
    return n - n_valid - n_test, n_valid, n_test


def _assign_splits(entries: list[_Entry], fractions: SplitFractions, seed: int) -> None:
    """Stratified, seeded split of a plain folder, decided per unique sha256."""
    rng = np.random.default_rng(seed)
    entries = [e for e in entries if e.split is None]  # sources with a split of their own keep it
    for label in CLASS_NAMES:
        order: list[str] = []  # unique sha256s, in the order of their first (sorted) path
        seen: set[str] = set()
        for entry in entries:
            if entry.reason is None and entry.label == label and entry.sha not in seen:
                seen.add(entry.sha)
                order.append(entry.sha)
        shuffled = [order[i] for i in rng.permutation(len(order))]
        n_train, n_valid, _ = _split_sizes(len(shuffled), fractions)
        split_of = {}
        for index, sha in enumerate(shuffled):
            if index < n_train:
                split_of[sha] = "train"
            else:
                split_of[sha] = "valid" if index < n_train + n_valid else "test"
        for entry in entries:
            if entry.reason is None and entry.label == label:
                entry.split = split_of[entry.sha]


# --------------------------------------------------------------------------- outputs


def _manifest_frame(kept: list[_Entry], source_name: str) -> pd.DataFrame:
    rows = []
    for entry in kept:
        info = entry.info
        assert info is not None and entry.sha is not None  # kept entries were inspected and hashed
        rows.append(
            {
                "path": entry.normalized or entry.path,
                "label": entry.label,
                "split": entry.split,
                "sha256": entry.sha,
                "width": info.width,
                "height": info.height,
                "format": info.final_format,
                "source": entry.source or source_name,
                "original_path": entry.original,
                "note": ";".join(n for n in (entry.note, info.note) if n),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _check_no_leakage(frame: pd.DataFrame) -> None:
    splits_per_sha = frame.groupby("sha256")["split"].nunique()
    leaked = splits_per_sha[splits_per_sha > 1]
    if len(leaked):
        raise RuntimeError(
            f"ingest bug: {len(leaked)} sha256 in more than one split, e.g. {leaked.index[0]}"
        )
    if frame["sha256"].duplicated().any():
        raise RuntimeError("ingest bug: duplicate sha256 within a split survived deduplication")


def _build_report(
    cfg: DataConfig,
    seed: int,
    resolved: list[tuple[_Source, _Layout, str]],
    source_name: str,
    kept: list[_Entry],
    quarantined: list[_Entry],
    csv_summary: dict[str, Any],
) -> IngestReport:
    by_reason = Counter(e.reason for e in quarantined)
    counts = {s: {c: 0 for c in CLASS_NAMES} for s in SPLITS}
    normalized: Counter[str] = Counter()
    for entry in kept:
        counts[entry.split][entry.label] += 1
        if entry.info is not None and entry.info.note:
            normalized[entry.info.note] += 1
    return IngestReport(
        source=cfg.source,
        source_name=source_name,
        layout="+".join(layout.kind for _, layout, _ in resolved),
        root="; ".join(str(source.root) for source, _, _ in resolved),
        seen=len(kept) + len(quarantined),  # replaced by the independent count in ingest()
        kept=len(kept),
        quarantined=len(quarantined),
        by_reason={r: by_reason[r] for r in REASONS if by_reason[r]},
        normalized=dict(sorted(normalized.items())),
        counts=counts,
        items=[{"path": e.path, "reason": e.reason, "detail": e.detail} for e in quarantined],
        csv=csv_summary,
        seed=seed,
        max_pixels=cfg.max_pixels,
    )


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def _log_summary(report: IngestReport) -> None:
    logger.info(
        "ingest: seen %d, kept %d, quarantined %d%s; normalised %d",
        report.seen,
        report.kept,
        report.quarantined,
        f" {report.by_reason}" if report.by_reason else "",
        sum(report.normalized.values()),
    )
    for split in SPLITS:
        counts = report.counts[split]
        logger.info("ingest: %-5s real %6d  fake %6d", split, counts["real"], counts["fake"])
    for item in report.items[:20]:
        logger.warning("ingest: quarantined %s (%s: %s)", item["path"], item["reason"], item["detail"])
    if len(report.items) > 20:
        more = len(report.items) - 20
        logger.warning("ingest: ... and %d more quarantined files, see the report", more)


def _remove_tree(path: Path) -> None:
    """Delete a folder this stage owns (under raw_dir), if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
