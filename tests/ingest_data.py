"""Miniature data sets in every layout ingest recognises, built with PIL in a test's tmp folder.

Shared by the ingest tests so that each layout's shape is written down once; every image has
different bytes (a fresh seed per call), so no test meets a duplicate it did not make itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakeface import CLASS_NAMES, SPLITS

_seeds = itertools.count()


def pixels(size: int = 32, channels: int = 3) -> np.ndarray:
    """Random pixels: every call gives different bytes, so no accidental duplicates."""
    rng = np.random.default_rng(next(_seeds))
    shape = (size, size, channels) if channels > 1 else (size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_jpeg(path: Path, size: int = 32, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels(size))
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="JPEG", quality=90)
    return path


def write_png(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def build_140k(root: Path, per_class: int = 3, nested: bool = True) -> Path:
    """A miniature Kaggle 140k layout; returns the folder holding train/valid/test."""
    image_root = root / "real_vs_fake" / "real-vs-fake" if nested else root
    for split in SPLITS:
        for label in CLASS_NAMES:
            for index in range(per_class):
                write_jpeg(image_root / split / label / f"{label[0]}{index:03d}.jpg")
    return image_root


def write_kaggle_csvs(root: Path, image_root: Path) -> None:
    """CSVs like Kaggle's: unnamed index, original_path, id, label (1=real), label_str, path."""
    for split in SPLITS:
        rows = []
        for path in sorted((image_root / split).rglob("*.jpg")):
            label_str = path.parent.name
            rows.append(
                {
                    "original_path": f"/kaggle/{path.name}",
                    "id": path.stem,
                    "label": 1 if label_str == "real" else 0,
                    "label_str": label_str,
                    "path": path.relative_to(image_root).as_posix(),
                }
            )
        pd.DataFrame(rows).to_csv(root / f"{split}.csv")  # index=True: the unnamed first column


def build_plain(root: Path, per_class: int = 40) -> Path:
    """``real/`` + ``fake/`` with images at several depths."""
    for label in CLASS_NAMES:
        for index in range(per_class):
            depth = ("a", "b") if index % 3 == 0 else ("c",) if index % 3 == 1 else ()
            write_jpeg(root.joinpath(label, *depth, f"{index:03d}.jpg"))
    return root


def build_split_folders(root: Path, sizes: tuple[tuple[str, int], ...] = (("Train", 4), ("Validation", 2), ("Test", 2))) -> Path:
    """``{Train,Validation,Test}/{Real,Fake}``: the Real vs Fake Face Classification layout."""
    for folder, n in sizes:
        for label in ("Real", "Fake"):
            for k in range(n):
                write_jpeg(root / folder / label / f"{label.lower()}_{k}.jpg")
    return root


def build_ciplab(root: Path) -> Path:
    """Kaggle ciplab/real-and-fake-face-detection: training_real/ + training_fake/ (difficulty in names)."""
    base = root / "real_and_fake_face"
    for k in range(9):
        write_jpeg(base / "training_real" / f"real_{k:05d}.jpg")
    for k, level in enumerate(["easy", "mid", "hard"] * 3):
        write_jpeg(base / "training_fake" / f"{level}_{k}_1110.jpg")
    return root


def build_artifact(root: Path, per_generator: int = 6) -> Path:
    """Generators as folders, each with metadata.csv: image_path, target (0 real), category."""
    for generator, target in (("celebahq", 0), ("ffhq", 0), ("stylegan2", 1), ("taming_transformer", 3)):
        rows = []
        for k in range(per_generator):
            category = "human_faces" if k % 2 == 0 else "cat"
            rel = f"images/{category}/img{k:03d}.jpg"
            write_jpeg(root / generator / rel)
            rows.append({"filename": Path(rel).name, "image_path": rel, "target": target, "category": category})
        pd.DataFrame(rows).to_csv(root / generator / "metadata.csv", index=False)
    return root


def build_csv_set(root: Path, with_split: bool) -> Path:
    """Images under ``imgs/`` and one ``list.csv`` (labels as words and as 0/1); returns the CSV."""
    rows = []
    for k in range(12):
        label = CLASS_NAMES[k % 2]
        rel = f"imgs/{k:03d}.jpg"
        write_jpeg(root / rel)
        row = {"path": rel, "label": label if k % 4 < 2 else str(int(label == "fake"))}
        if with_split:
            row["split"] = ["train", "train", "valid", "test"][k // 2 % 4] if k < 8 else ["train", "val"][k % 2]
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "list.csv", index=False)
    return root / "list.csv"
