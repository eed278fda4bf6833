"""The ingest stage: ``data.source`` -> a checked manifest plus a quarantine report.

The stage is the same for every data set; it asks the source module for a folder, the layout
registry for an adapter, and the adapter for labelled entries, and then applies the same checks
to all of them (:mod:`~fakeface.ingest.examine`, :mod:`~fakeface.ingest.decisions`). It never
asks which layout it holds, so a new data set needs no change here.

Every file found under a source is *seen* and then either *kept* (a manifest row) or
*quarantined* with a reason (:data:`fakeface.ingest.entries.REASONS`); the count of files seen is
kept independently of the verdicts, and ``seen == kept + quarantined`` is asserted, so a file
dropped by a bug fails the stage instead of disappearing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import DataConfig, Params
from fakeface.data.images import Problem, pil_limits
from fakeface.ingest.decisions import assign_splits, cross_dataset_splits, resolve_duplicates
from fakeface.ingest.entries import Entry, IngestError
from fakeface.ingest.examine import DEFAULT_WORKERS, examine, normalize, ordered_map
from fakeface.data.atomic import commit_dir, is_disk_full, remove_tree, sibling_temp, staging_dir
from fakeface.ingest.layouts import detect_layout, expected_layouts
from fakeface.ingest.layouts.base import Layout
from fakeface.ingest.report import (
    IngestReport,
    build_report,
    check_no_leakage,
    log_summary,
    manifest_frame,
    write_json,
)
from fakeface.ingest.sources import Source, check_outside, resolve_source
from fakeface.logs import progress
from fakeface.data.manifest import write_manifest
from fakeface.stages.paths import IngestPaths

logger = logging.getLogger(__name__)

#: Non-RGB-JPEG images are rewritten here (under raw_dir) as lossless RGB PNGs.
NORMALIZED_DIR = "normalized"


class Resolved(NamedTuple):
    """One source, its layout and the name its manifest rows carry."""

    source: Source
    layout: Layout
    name: str


def run(params: Params, paths: IngestPaths) -> IngestReport:
    """The stage as :mod:`fakeface.stages` runs it for the CLI, dvc.yaml and Kubeflow: the
    ``data`` section and ``seed`` of the params, the output paths of the stage."""
    return ingest(params.data, params.seed, paths.raw_dir, paths.manifest, paths.report)


def ingest(
    cfg: DataConfig,
    seed: int,
    raw_dir: Path,
    manifest_path: Path,
    report_path: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    every_split: bool = True,
) -> IngestReport:
    """Read ``cfg.source``, check every file, write the manifest and the JSON report.

    Nothing is written in place: the images ingest writes (extracted, generated, normalised) go to
    a fresh sibling of ``raw_dir`` (:func:`~fakeface.ingest.files.staging_dir`), the manifest and
    report to temporary files, and they replace the previous outputs only when all are complete.
    Any failure (a bad source, a full disk, a kill) leaves the previous outputs as they were and no
    partial folder behind; a crash during the final renames can leave the manifest *absent*, never
    a manifest that disagrees with ``raw_dir``.

    Raises :class:`IngestError` for a source that cannot be used (unknown, missing, inside
    ``raw_dir``, no credentials, no recognisable layout), for a full disk ("disk full writing
    <path>: ..."), or when after quarantine a split lacks a class; in the latter case the report is
    written first (with ``error`` set) and no manifest is left.
    """
    raw_dir = Path(raw_dir)
    manifest_path = Path(manifest_path)
    report_path = Path(report_path)
    check_outside(cfg.sources, raw_dir)
    published = raw_dir.resolve() if raw_dir.is_symlink() else raw_dir  # a link to another disk stays one
    with _writing(raw_dir):
        staging = staging_dir(published)
    try:
        with _writing(raw_dir):
            report, frame = _build(cfg, seed, staging, workers, report_path, every_split)
        move = _relocator(staging, raw_dir)
        report.root, report.items, report.csv = move(report.root), move(report.items), move(report.csv)
        report.manifest = str(manifest_path)
        if frame is not None:
            for column in ("path", "original_path"):
                frame[column] = frame[column].map(move)
        _publish(report, frame, staging, published, manifest_path, report_path)
    finally:
        remove_tree(staging)  # already gone when published
    log_summary(report)
    if report.error is not None:
        raise IngestError(report.error)
    return report


def _build(
    cfg: DataConfig, seed: int, raw_dir: Path, workers: int, report_path: Path, every_split: bool = True
) -> tuple[IngestReport, pd.DataFrame | None]:
    """Every decision of the stage, with ``raw_dir`` (the staging folder) as its only place to
    write: the report, and the manifest frame (None when a split lacks a class; with
    ``every_split`` false, as for an external test set scored whole, when the set lacks one)."""
    normalized_dir = raw_dir / NORMALIZED_DIR
    resolved = _resolve_all(cfg, seed, raw_dir)
    source_name = "+".join(r.name for r in resolved)
    entries, seen = _scan_all(resolved, cfg)

    with pil_limits(cfg.max_pixels), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        _examine_all(pool, entries, cfg.max_pixels)
        csv_summary, missing = _cross_check_all(resolved, entries)
        seen += len(missing)
        entries.extend(missing)
        entries.sort(key=lambda e: e.path)

        resolve_duplicates(entries)
        if any(e.reason is None and e.split is None for e in entries):
            assign_splits(entries, cfg.split, seed)
        if cfg.test_source is not None:
            cross_dataset_splits(entries, cfg.test_source)
        resolve_duplicates(entries)  # within the final splits (a no-op when nothing changed)

        _normalize_all(pool, entries, normalized_dir)

    kept = sorted((e for e in entries if e.reason is None), key=lambda e: e.path)
    quarantined = sorted((e for e in entries if e.reason is not None), key=lambda e: e.path)
    report = build_report(
        cfg,
        seed,
        layout="+".join(r.layout.name for r in resolved),
        root="; ".join(str(r.source.root) for r in resolved),
        source_name=source_name,
        kept=kept,
        quarantined=quarantined,
        csv_summary=csv_summary,
    )
    report.seen = seen
    if report.seen != report.kept + report.quarantined or len(entries) != seen:  # a bug, not data
        raise RuntimeError(
            f"ingest bookkeeping bug: seen {report.seen} != kept {report.kept} + "
            f"quarantined {report.quarantined} (entries {len(entries)})"
        )

    empty = [(s, c) for s in SPLITS for c in CLASS_NAMES if report.counts[s][c] == 0]
    if not every_split:
        empty = [("any", c) for c in CLASS_NAMES if sum(report.counts[s][c] for s in SPLITS) == 0]
    if empty:
        missing_text = ", ".join(f"split '{s}' has no '{c}' images" for s, c in empty)
        report.error = (
            f"after quarantine, {missing_text} ({report.kept} of {report.seen} files kept; "
            f"quarantined by reason: {report.by_reason}). See {report_path} for every file and "
            "reason."
        )
        return report, None
    frame = manifest_frame(kept, source_name)
    check_no_leakage(frame)
    return report, frame


def _publish(report: IngestReport, frame: pd.DataFrame | None, staging: Path, raw_dir: Path,
             manifest_path: Path, report_path: Path) -> None:
    """Write the manifest and report beside their places, then put all three outputs in place.

    The old manifest goes first, so between the renames there is never a manifest beside images
    it does not describe; with ``frame`` None (the report's ``error`` set) no manifest is left.
    """
    new_manifest, new_report = sibling_temp(manifest_path), sibling_temp(report_path)
    try:
        if frame is not None:
            with _writing(manifest_path):
                write_manifest(frame, new_manifest)
        with _writing(report_path):
            write_json(report.to_dict(), new_report)
        manifest_path.unlink(missing_ok=True)
        commit_dir(staging, raw_dir)
        if frame is not None:
            os.replace(new_manifest, manifest_path)
        os.replace(new_report, report_path)
    finally:
        new_manifest.unlink(missing_ok=True)
        new_report.unlink(missing_ok=True)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A full disk while writing ``path``: one clear :class:`IngestError` naming it."""
    try:
        yield
    except OSError as error:
        if not is_disk_full(error):
            raise
        where = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        raise IngestError(
            f"disk full writing {path}: {error.strerror or error} ({shutil.disk_usage(where).free:,} "
            "bytes free there); nothing was changed: the previous output is as it was"
        ) from None


def _relocator(staging: Path, raw_dir: Path) -> Callable[[Any], Any]:
    """A function that rewrites paths inside the staging folder (in strings, lists, dicts) to where
    they will be once it is published as ``raw_dir``. The staging name is unique (pid + random),
    so replacing it wherever it occurs touches nothing else."""
    moves = [(str(staging.resolve()), str(raw_dir.resolve())), (str(staging), str(raw_dir))]

    def move(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in moves:
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        return value

    return move


def _resolve_all(cfg: DataConfig, seed: int, raw_dir: Path) -> list[Resolved]:
    """Every source resolved to a folder with a layout and a distinct name, before any scan, so a
    bad entry in a list of sources fails fast."""
    resolved: list[Resolved] = []
    for text in cfg.sources:
        source = resolve_source(text, cfg, seed, raw_dir)
        layout = source.layout or detect_layout(source.root)
        if layout is None:
            raise IngestError(f"{source.root}: no data set layout found. Expected {expected_layouts()}.")
        name = source.name or layout.default_source_name(source.root)
        logger.info("ingest: %s (%s layout) from %s", text, layout.name, layout.image_root)
        resolved.append(Resolved(source, layout, name))
    names = [r.name for r in resolved]
    if len(set(names)) != len(names):
        raise IngestError(
            f"data.source {cfg.sources} gives the source names {names}; each must be distinct "
            "(rename a folder, or list each data set once)"
        )
    if cfg.test_source is not None and cfg.test_source not in names:
        raise IngestError(
            f"data.test_source {cfg.test_source!r} is none of the sources {names} (use a name as "
            "the manifest's source column spells it)"
        )
    return resolved


def _scan_all(resolved: list[Resolved], cfg: DataConfig) -> tuple[list[Entry], int]:
    """Every file of every source as an entry, sorted by path, and how many were found."""
    entries: list[Entry] = []
    seen = 0
    for source, layout, name in resolved:
        found = layout.scan(source.root, source.original)
        layout.select(found, cfg)
        for entry in found + source.pre_quarantined:
            entry.source = name
        # counted as found, independently of the kept/quarantined bookkeeping
        seen += len(found) + len(source.pre_quarantined)
        entries.extend(found)
        entries.extend(source.pre_quarantined)
    entries.sort(key=lambda e: e.path)
    return entries, seen


def _examine_all(pool: ThreadPoolExecutor, entries: list[Entry], max_pixels: int) -> None:
    """Decode and hash every entry not quarantined yet; unusable files get their reason."""
    todo = [entry for entry in entries if entry.reason is None]
    results = ordered_map(pool, lambda e: examine(e.path, max_pixels), todo)
    for entry, (sha, outcome) in zip(
        todo, progress(results, desc="ingest: inspect+hash", total=len(todo)), strict=True
    ):
        entry.sha = sha
        if isinstance(outcome, Problem):
            entry.quarantine(outcome.reason, outcome.detail)
        else:
            entry.info = outcome


def _cross_check_all(resolved: list[Resolved], entries: list[Entry]) -> tuple[dict[str, Any], list[Entry]]:
    """Each layout's check against its data set's own lists: the report's ``csv`` field, and
    entries for listed files that are not on disk."""
    csv_summary: dict[str, Any] = {}
    missing: list[Entry] = []
    for _, layout, name in resolved:
        summary, absent = layout.cross_check([e for e in entries if e.source == name])
        if summary:
            if layout.keyed_summary or len(resolved) > 1:
                csv_summary[name] = summary
            else:
                csv_summary = summary
        for entry in absent:
            entry.source = name
        missing.extend(absent)
    return csv_summary, missing


def _normalize_all(pool: ThreadPoolExecutor, entries: list[Entry], normalized_dir: Path) -> None:
    """Convert the kept images that are not RGB JPEGs; a conversion failure quarantines the file."""
    to_normalize = [
        e for e in entries if e.reason is None and e.info is not None and e.info.needs_normalization
    ]
    jobs = ordered_map(pool, lambda e: normalize(e, normalized_dir), to_normalize)
    bar = progress(jobs, desc="ingest: normalise", total=len(to_normalize))
    for entry, problem in zip(to_normalize, bar, strict=True):
        if problem is not None:
            entry.normalized = None
            entry.quarantine(problem.reason, problem.detail)
