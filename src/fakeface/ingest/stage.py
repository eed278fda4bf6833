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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import DataConfig, Params
from fakeface.images import Problem, pil_limits
from fakeface.ingest.decisions import assign_splits, cross_dataset_splits, resolve_duplicates
from fakeface.ingest.entries import Entry, IngestError
from fakeface.ingest.examine import DEFAULT_WORKERS, examine, normalize, ordered_map
from fakeface.ingest.files import remove_tree
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
from fakeface.ingest.sources import Source, resolve_source
from fakeface.logs import progress
from fakeface.manifest import write_manifest
from fakeface.stage_paths import IngestPaths

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
    remove_tree(normalized_dir)

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
        write_json(report.to_dict(), report_path)
        manifest_path.unlink(missing_ok=True)  # never leave a stale manifest beside this report
        log_summary(report)
        raise IngestError(report.error)

    frame = manifest_frame(kept, source_name)
    check_no_leakage(frame)
    write_manifest(frame, manifest_path)
    write_json(report.to_dict(), report_path)
    log_summary(report)
    return report


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
