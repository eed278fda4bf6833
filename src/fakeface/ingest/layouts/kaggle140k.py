"""The Kaggle "140k real and fake faces" layout (70k FFHQ + 70k StyleGAN), the project's main data
set, with the cross-check of its ``{train,valid,test}.csv`` lists against the folders.

The data set's own split is kept. The CSVs are cross-checked rather than trusted or ignored
because the folders and the lists of the published archive are known to disagree in places: a
listed file that is missing is reported (``missing_file``), a file whose CSV label disagrees with
its folder is quarantined (``label_conflict``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from fakeface import CLASS_NAMES, SPLITS
from fakeface.ingest.entries import Entry
from fakeface.ingest.layouts.base import FolderLayout, has_other_split_spelling, has_split_dirs

logger = logging.getLogger(__name__)

#: Where the image tree sits below the archive's root, most specific first.
_NESTED = (("real_vs_fake", "real-vs-fake"), ("real-vs-fake",))


class Kaggle140k(FolderLayout):
    """``{train,valid,test}/{real,fake}/``, possibly nested, plus optional split CSVs in the root."""

    name = "140k"
    shape = (
        "`real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/` (or `real-vs-fake/...`, or "
        "`{train,valid,test}/{real,fake}/` directly), optional `{train,valid,test}.csv`"
    )
    keeps = (
        "the data set's own split; the CSVs are cross-checked with the folders (`missing_file`, "
        "`label_conflict`); source column `140k`"
    )
    expected = (
        "the Kaggle 140k layout (real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/ or "
        "{train,valid,test}/{real,fake}/)"
    )
    #: A lone 140k source reports its cross-check at the top of the report's ``csv`` field, as it
    #: did before several sources existed (readers of old reports rely on it).
    keyed_summary = False

    def __init__(self, image_root: Path, csv_dir: Path) -> None:
        super().__init__(image_root)
        self.csv_dir = csv_dir  # where train.csv / valid.csv / test.csv may be
        self._csv_resolved = {p.resolve() for p in self.csv_files().values()}

    @classmethod
    def detect(cls, root: Path) -> Kaggle140k | None:
        for nested in _NESTED:
            candidate = root.joinpath(*nested)
            if has_split_dirs(candidate):
                return cls(candidate, root)
        # Split folders spelt otherwise (Validation/, val/ ...) are another data set's: the
        # 140k set's are spelt exactly.
        if has_split_dirs(root) and not has_other_split_spelling(root):
            return cls(root, root)
        return None

    def default_source_name(self, source_root: Path) -> str:
        return self.name

    def csv_files(self) -> dict[str, Path]:
        """The split CSVs present, by split."""
        found = {}
        for split in SPLITS:
            path = self.csv_dir / f"{split}.csv"
            if path.is_file():
                found[split] = path
        return found

    def is_metadata(self, path: Path) -> bool:
        return path.suffix.lower() == ".csv" and path.resolve() in self._csv_resolved

    def label(self, entry: Entry, parts: tuple[str, ...]) -> None:
        if len(parts) >= 3 and parts[0].lower() in SPLITS and parts[1].lower() in CLASS_NAMES:
            entry.split, entry.label = parts[0].lower(), parts[1].lower()
        else:
            entry.quarantine("unlabeled", "not inside a {train,valid,test}/{real,fake} folder")

    def cross_check(self, entries: list[Entry]) -> tuple[dict[str, Any], list[Entry]]:
        """Compare the CSVs with the folders: missing files and label disagreements."""
        csvs = self.csv_files()
        if not csvs:
            return {}, []
        by_rel: dict[str, Entry] = {}
        for entry in entries:
            if entry.label is not None:
                by_rel[Path(entry.path).relative_to(self.image_root).as_posix().lower()] = entry
        summary: dict[str, Any] = {
            "files": {s: str(p) for s, p in csvs.items()},
            "rows": 0,
            "missing": 0,
            "label_conflicts": 0,
            "unreadable_rows": 0,
        }
        listed: set[str] = set()
        missing: list[Entry] = []
        for csv_path in csvs.values():
            with open(csv_path, newline="") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    logger.warning("ingest: %s has no 'path' column; not cross-checked", csv_path)
                    summary.setdefault("skipped", []).append(str(csv_path))
                    continue
                for number, row in enumerate(reader, start=2):  # line 1 is the header
                    self._check_row(row, number, csv_path, by_rel, summary, listed, missing)
        summary["files_not_listed"] = sum(1 for key in by_rel if key not in listed)
        if summary["unreadable_rows"]:
            logger.warning("ingest: %d CSV rows without a usable path or label", summary["unreadable_rows"])
        return summary, missing

    def _check_row(
        self,
        row: dict[str, str],
        number: int,
        csv_path: Path,
        by_rel: dict[str, Entry],
        summary: dict[str, Any],
        listed: set[str],
        missing: list[Entry],
    ) -> None:
        summary["rows"] += 1
        rel = (row.get("path") or "").strip().replace("\\", "/").lstrip("/")
        label = _csv_label(row)
        if not rel or label is None:
            summary["unreadable_rows"] += 1
            return
        key = rel.lower()
        listed.add(key)
        entry = by_rel.get(key)
        if entry is None:
            if not (self.image_root / rel).exists():
                summary["missing"] += 1
                where = str(self.image_root / rel)
                detail = f"listed in {csv_path.name} line {number} but not on disk"
                missing.append(Entry(where, where, reason="missing_file", detail=detail))
            return
        if entry.label != label:
            summary["label_conflicts"] += 1
            if entry.reason is None:  # an unusable file keeps its own reason
                entry.quarantine(
                    "label_conflict",
                    f"in the {entry.label}/ folder but {csv_path.name} line {number} says {label}",
                )


def _csv_label(row: dict[str, str]) -> str | None:
    """The 140k CSVs' label: ``label`` is 1 for real (sic) and 0 for fake; ``label_str`` spells it."""
    value = (row.get("label") or "").strip()
    if value in ("0", "1", "0.0", "1.0"):
        return "real" if float(value) == 1 else "fake"
    text = (row.get("label_str") or "").strip().lower()
    return text if text in CLASS_NAMES else None
