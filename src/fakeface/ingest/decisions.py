"""What ingest decides about files once they are hashed: duplicates, leakage across splits, label
conflicts, the split of sources without one, cross-dataset testing and category exclusion.

These decisions are the same for every layout, and they are where a detector's reported accuracy
is won or lost honestly: the same bytes in train and test (leakage) or under both labels inflate
or poison the numbers, so each copy is quarantined with the reason rather than dropped. Every
function here is deterministic for its input order and seed, which makes the manifest
reproducible.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import SplitFractions
from fakeface.ingest.entries import Entry

_SPLIT_RANK = {name: rank for rank, name in enumerate(SPLITS)}


def resolve_duplicates(entries: list[Entry]) -> None:
    """Same bytes (sha256) more than once: label conflicts, leakage across splits, duplicates.

    ``entries`` must be sorted by path; the first copy (by path) in the earliest split is kept.
    Entries without a split (a plain folder before splitting) take part in the label check only.
    """
    groups: dict[str, list[Entry]] = defaultdict(list)
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


def split_sizes(n: int, fractions: SplitFractions) -> tuple[int, int, int]:
    """Train, valid and test counts for ``n`` images of one class."""
    n_valid = round(n * fractions.valid)
    n_test = round(n * fractions.test)
    if n >= 3:  # a tiny class still gets one image in each split
        n_valid, n_test = max(1, n_valid), max(1, n_test)
    n_valid = min(n_valid, n)
    n_test = min(n_test, n - n_valid)
    return n - n_valid - n_test, n_valid, n_test


def assign_splits(entries: list[Entry], fractions: SplitFractions, seed: int) -> None:
    """Stratified, seeded split of the entries without a split, decided per unique sha256 (so
    copies of one image never straddle splits)."""
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
        n_train, n_valid, _ = split_sizes(len(shuffled), fractions)
        split_of = {}
        for index, sha in enumerate(shuffled):
            if index < n_train:
                split_of[sha] = "train"
            else:
                split_of[sha] = "valid" if index < n_train + n_valid else "test"
        for entry in entries:
            if entry.reason is None and entry.label == label:
                entry.split = split_of[entry.sha]


def cross_dataset_splits(entries: list[Entry], test_source: str) -> None:
    """Train on some sources, test on another: every ``test_source`` image goes to test, the
    other sources' test images go to valid (so no other source is tested on)."""
    for entry in entries:
        if entry.reason is not None or entry.split is None:
            continue
        if entry.source == test_source:
            entry.split = "test"
        elif entry.split == "test":
            entry.split = "valid"


def exclude_categories(entries: list[Entry], categories: list[str]) -> None:
    """Entries whose note's ``category=`` is not wanted are quarantined as ``excluded`` (rather
    than skipped, so the report says how much of a data set the params left out)."""
    wanted = {c.strip().lower() for c in categories}
    for entry in entries:
        if entry.reason is not None or entry.label is None:
            continue
        match = re.search(r"(?:^|;)category=([^;]*)", entry.note)
        category = match.group(1).lower() if match else ""
        if category not in wanted:
            entry.quarantine("excluded", f"category {category!r} not in data.artifact_categories")
