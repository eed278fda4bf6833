"""The embedded synthetic data set: Kaggle layout, determinism, and a learnable, non-trivial signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakeface import SPLITS
from fakeface.config import SplitFractions, SyntheticConfig
from fakeface.data.synthetic import (
    IMAGES_SUBDIR,
    generate,
    global_statistics,
    spectral_peak_features,
    split_counts,
)

SMALL = SyntheticConfig(images_per_class=12, image_size=64, jpeg_quality=92)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    assert generate(SMALL, SplitFractions(), out, seed=3) == out
    return out


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """~500 images per class, the size the shortcut checks are specified for (a few seconds)."""
    out = tmp_path_factory.mktemp("large")
    generate(SyntheticConfig(images_per_class=500), SplitFractions(), out, seed=11)
    root = out / IMAGES_SUBDIR
    real = sorted(root.glob("*/real/*.jpg"))
    fake = sorted(root.glob("*/fake/*.jpg"))
    return real + fake, np.array([0] * len(real) + [1] * len(fake))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- layout


def test_layout_is_the_kaggle_one(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == ["real_vs_fake", "test.csv", "train.csv", "valid.csv"]
    assert sorted(p.name for p in (small / "real_vs_fake").iterdir()) == ["real-vs-fake"]
    image_root = small / "real_vs_fake" / "real-vs-fake"
    assert sorted(p.name for p in image_root.iterdir()) == sorted(SPLITS)
    for split in SPLITS:
        assert sorted(p.name for p in (image_root / split).iterdir()) == ["fake", "real"]


def test_csvs_match_kaggle_columns_and_label_coding(small: Path) -> None:
    image_root = small / IMAGES_SUBDIR
    listed: set[str] = set()
    totals = {"real": 0, "fake": 0}
    for split in SPLITS:
        csv = small / f"{split}.csv"
        assert csv.read_text().splitlines()[0] == ",original_path,id,label,label_str,path"
        frame = pd.read_csv(csv, index_col=0, dtype={"id": str})
        assert list(frame.index) == list(range(len(frame)))
        assert set(frame["label_str"]) == {"real", "fake"}, "every split has both classes"
        # Kaggle coding: 1 = real, 0 = fake.
        assert (frame["label"] == (frame["label_str"] == "real").astype(int)).all()
        for row in frame.itertuples():
            assert row.path == f"{split}/{row.label_str}/{row.id}.jpg"
            assert (image_root / row.path).is_file()
        listed.update(frame["path"])
        for label_str, count in frame["label_str"].value_counts().items():
            totals[label_str] += count
    assert totals == {"real": SMALL.images_per_class, "fake": SMALL.images_per_class}
    on_disk = {str(p.relative_to(image_root)) for p in image_root.rglob("*.jpg")}
    assert on_disk == listed
    assert len(listed) == 2 * SMALL.images_per_class


@pytest.mark.parametrize(
    ("total", "fractions", "expected"),
    [
        (500, (0.8, 0.1, 0.1), (400, 50, 50)),
        (12, (0.8, 0.1, 0.1), (10, 1, 1)),
        (10, (0.98, 0.01, 0.01), (8, 1, 1)),
        (11, (0.34, 0.33, 0.33), (4, 4, 3)),
    ],
)
def test_split_counts(total: int, fractions: tuple[float, float, float], expected: tuple[int, int, int]) -> None:
    counts = split_counts(total, SplitFractions(train=fractions[0], valid=fractions[1], test=fractions[2]))
    assert counts == expected
    assert sum(counts) == total and min(counts) >= 1


def test_images_are_plain_rgb_jpegs_of_the_configured_size(small: Path) -> None:
    tables = set()
    for path in (small / IMAGES_SUBDIR).rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (SMALL.image_size, SMALL.image_size)
            assert "exif" not in image.info and "icc_profile" not in image.info
            assert not image.info.get("progressive")
            # Same quantisation tables for both classes: the encoder is not a giveaway.
            tables.add(repr(sorted(image.quantization.items())))
            image.load()
    assert len(tables) == 1


def test_odd_size(tmp_path: Path) -> None:
    cfg = SyntheticConfig(images_per_class=10, image_size=33, jpeg_quality=90)
    generate(cfg, SplitFractions(), tmp_path, seed=0)
    for path in (tmp_path / IMAGES_SUBDIR).rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.size == (33, 33)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_bytes(small: Path, tmp_path: Path) -> None:
    again = generate(SMALL, SplitFractions(), tmp_path / "again", seed=3)
    other = generate(SMALL, SplitFractions(), tmp_path / "other", seed=4)
    reference = _tree(small)
    assert _tree(again) == reference
    other_tree = _tree(other)
    assert other_tree.keys() != reference.keys()  # ids are drawn from the seed as well
    assert {v for v in other_tree.values()}.isdisjoint(reference.values())


def test_rerun_replaces_old_images(small: Path, tmp_path: Path) -> None:
    generate(SMALL, SplitFractions(), tmp_path, seed=4)
    generate(SMALL, SplitFractions(), tmp_path, seed=3)
    assert _tree(tmp_path) == _tree(small)


# --------------------------------------------------------------------------- the signal


def _cv(features: np.ndarray, labels: np.ndarray, scoring: str) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds, scoring=scoring).mean())


def test_global_statistics_shape(large: tuple[list[Path], np.ndarray]) -> None:
    paths, _ = large
    stats = global_statistics(paths[:3])
    assert stats.shape == (3, 4)
    assert stats[0, 3] == paths[0].stat().st_size
    assert np.all((stats[:, :3] >= 0) & (stats[:, :3] <= 255))


def test_no_shortcut_in_mean_colour_or_file_size(large: tuple[list[Path], np.ndarray]) -> None:
    """A detector must not be able to tell the classes by brightness, colour or file size."""
    paths, labels = large
    accuracy = _cv(global_statistics(paths), labels, "accuracy")
    assert accuracy < 0.65, f"mean RGB + file size separate the classes (accuracy {accuracy:.3f})"


def test_upsampling_artifact_is_a_spectral_signal(large: tuple[list[Path], np.ndarray]) -> None:
    """The classes differ where a stride-2 transposed convolution leaves its checkerboard."""
    paths, labels = large
    auc = _cv(spectral_peak_features(paths), labels, "roc_auc")
    assert auc > 0.9, f"Fourier-peak features do not find the artifact (AUC {auc:.3f})"
