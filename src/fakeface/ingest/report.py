"""What ingest writes: the manifest (the contract with every later stage) and the JSON report of
what was seen, kept and quarantined, and why.

The report exists so that no file is ever dropped silently: every quarantined file is listed with
its reason, and the counts reconcile (``seen == kept + quarantined``). Both files are written
atomically enough that a crash never leaves a manifest that disagrees with its report.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fakeface.data import atomic
from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import DataConfig
from fakeface.ingest.entries import REASONS, Entry
from fakeface.data.manifest import COLUMNS

logger = logging.getLogger(__name__)

#: Quarantined files named one by one in the log (the report has them all).
_LOGGED_ITEMS = 20


@dataclass
class IngestReport:
    """What ingest saw, kept and quarantined. Written as JSON next to the manifest."""

    source: str | list[str]  # data.source as configured
    source_name: str  # the manifest's source column ("+"-joined for several sources)
    layout: str  # a registered layout name ("+"-joined for several sources)
    root: str  # the folder that was scanned ("; "-joined for several)
    seen: int
    kept: int
    quarantined: int
    by_reason: dict[str, int]
    normalized: dict[str, int]  # note -> count
    counts: dict[str, dict[str, int]]  # split -> label -> kept images
    items: list[dict[str, str]]  # {path, reason, detail} per quarantined file
    csv: dict[str, Any] = field(default_factory=dict)  # the data sets' own lists, cross-checked
    seed: int = 0
    max_pixels: int = 0
    manifest: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(
    cfg: DataConfig,
    seed: int,
    *,
    layout: str,
    root: str,
    source_name: str,
    kept: list[Entry],
    quarantined: list[Entry],
    csv_summary: dict[str, Any],
) -> IngestReport:
    """The report for these kept and quarantined entries (``seen`` is their sum until the stage
    sets its own, independent count)."""
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
        layout=layout,
        root=root,
        seen=len(kept) + len(quarantined),
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


def manifest_frame(kept: list[Entry], source_name: str) -> pd.DataFrame:
    """One manifest row per kept entry, in the given order, with the columns of
    :data:`fakeface.data.manifest.COLUMNS`."""
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


def check_no_leakage(frame: pd.DataFrame) -> None:
    """A last guard before writing: the same bytes in two rows would be a bug in the decisions,
    not a data problem, so it raises RuntimeError rather than an IngestError."""
    splits_per_sha = frame.groupby("sha256")["split"].nunique()
    leaked = splits_per_sha[splits_per_sha > 1]
    if len(leaked):
        raise RuntimeError(
            f"ingest bug: {len(leaked)} sha256 in more than one split, e.g. {leaked.index[0]}"
        )
    if frame["sha256"].duplicated().any():
        raise RuntimeError("ingest bug: duplicate sha256 within a split survived deduplication")


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def log_summary(report: IngestReport) -> None:
    """The report's headline numbers and the first quarantined files, for the terminal/CI log."""
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
    for item in report.items[:_LOGGED_ITEMS]:
        logger.warning("ingest: quarantined %s (%s: %s)", item["path"], item["reason"], item["detail"])
    if len(report.items) > _LOGGED_ITEMS:
        more = len(report.items) - _LOGGED_ITEMS
        logger.warning("ingest: ... and %d more quarantined files, see the report", more)
