"""The eda stage (counts, formats, pixel stats, spectra) and the augment stage (shards + preview)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakeface.config import AugmentConfig, EdaConfig
from fakeface.stages.eda import describe
from fakeface.data.manifest import file_sha256, write_manifest


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A natural-ish image: random low-frequency blobs (smooth, decaying spectrum)."""
    small = Image.fromarray(rng.integers(40, 216, (6, 6, 3), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.BICUBIC), dtype=np.float32)


def build(root: Path, images: list[tuple[str, str, np.ndarray, str]]) -> Path:
    """Write ``(split, label, pixels, format)`` images and their manifest; return its path."""
    rows = []
    for k, (split, label, pixels, fmt) in enumerate(images):
        folder = root / "images" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{k:04d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        rows.append(
            {
                "path": str(path),
                "label": label,
                "split": split,
                "sha256": file_sha256(path),
                "width": image.width,
                "height": image.height,
                "format": fmt,
                "source": "test",
                "original_path": str(path),
                "note": "",
            }
        )
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def spectral_set(tmp_path_factory):
    """Real: smooth images. Fake: the same kind plus a faint checkerboard (an upsampling trace)."""
    root = tmp_path_factory.mktemp("eda")
    rng = np.random.default_rng(0)
    size = 64
    checker = (np.indices((size, size)).sum(axis=0) % 2 * 2 - 1)[..., np.newaxis] * 12.0
    images = []
    for split, n in (("train", 10), ("valid", 2), ("test", 2)):
        for _ in range(n):
            images.append((split, "real", _smooth(rng, size), "JPEG"))
            images.append((split, "fake", _smooth(rng, size) + checker, "JPEG"))
    # A couple of odd ones, for the size and format tables.
    images.append(("train", "fake", _smooth(rng, 48), "PNG"))
    images.append(("test", "real", _smooth(rng, 80)[:, :72], "JPEG"))
    manifest = build(root, images)
    cfg = EdaConfig(sample_per_class=20, grid_images=4, spectrum_size=32)
    report = describe(cfg, seed=1, manifest_path=manifest, out_dir=root / "eda")
    return root, cfg, report


def test_counts_sizes_formats(spectral_set):
    root, _, report = spectral_set
    counts = report["counts"]
    assert counts["per_split"]["train"] == {"real": 10, "fake": 11, "total": 21}
    assert counts["per_split"]["valid"] == {"real": 2, "fake": 2, "total": 4}
    assert counts["per_split"]["test"] == {"real": 3, "fake": 2, "total": 5}
    assert counts["per_class"] == {"real": 15, "fake": 15} and counts["total"] == 30
    assert report["formats"]["fake"] == {"JPEG": 14, "PNG": 1}
    assert report["formats"]["real"] == {"JPEG": 15}
    assert report["sizes"]["real"] == {"64x64": 14, "72x80": 1}
    assert report["sizes"]["all"]["48x48"] == 1
    width = report["size_stats"]["real"]["width"]
    assert width == {"min": 64, "max": 72, "mean": pytest.approx((14 * 64 + 72) / 15)}
    # Pixel stats and spectra come from the train split only.
    assert report["pixel_stats"]["real"]["n_images"] == 10
    assert report["pixel_stats"]["fake"]["n_images"] == 11


def test_files_written_and_json_matches(spectral_set):
    root, cfg, report = spectral_set
    out = root / "eda"
    for name in ("grid_real.png", "grid_fake.png", "spectrum.png", "spectrum.npz", "eda.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "eda.json").read_text()) == report
    for name in ("grid_real.png", "spectrum.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100
    arrays = np.load(out / "spectrum.npz")
    for key in ("real", "fake", "difference"):
        assert arrays[key].shape == (cfg.spectrum_size, cfg.spectrum_size)
        assert np.isfinite(arrays[key]).all()
    np.testing.assert_allclose(arrays["difference"], arrays["fake"] - arrays["real"], atol=1e-5)
    assert int(arrays["spectrum_size"]) == cfg.spectrum_size


def test_checkerboard_fakes_have_a_higher_peak_score(spectral_set):
    _, cfg, report = spectral_set
    peak = report["spectrum"]["spectral_peak_score"]
    assert peak["fake"] > peak["real"] + 1.0, peak
    # ...and the peak is where a checkerboard lives: the corner (Nyquist, Nyquist) of the spectrum.
    arrays = np.load(spectral_set[0] / "eda" / "spectrum.npz")
    assert np.unravel_index(np.argmax(arrays["difference"]), arrays["difference"].shape) == (0, 0)


def test_solid_colours_give_their_channel_means(tmp_path):
    colours = {"real": (200, 100, 50), "fake": (10, 20, 250)}
    images = [
        ("train", label, np.full((16 + 8 * (k % 2), 24, 3), colour, np.float32), "PNG")
        for label, colour in colours.items()
        for k in range(5)
    ]
    manifest = build(tmp_path, images)
    cfg = EdaConfig(sample_per_class=3, grid_images=2, spectrum_size=32)
    report = describe(cfg, 0, manifest, tmp_path / "eda")
    assert np.load(tmp_path / "eda" / "spectrum.npz")["real"].shape == (32, 32)  # upscaled from 16-24 px
    for label, colour in colours.items():
        stats = report["pixel_stats"][label]
        assert stats["n_images"] == 3
        assert [stats["mean"][c] for c in "RGB"] == pytest.approx(colour, abs=1e-9)
        assert [stats["std"][c] for c in "RGB"] == pytest.approx([0, 0, 0], abs=1e-6)


def test_eda_is_deterministic_and_handles_a_missing_class(tmp_path):
    rng = np.random.default_rng(2)
    manifest = build(tmp_path, [("train", "real", _smooth(rng, 32), "JPEG") for _ in range(6)])
    cfg = EdaConfig(sample_per_class=4, grid_images=2, spectrum_size=16)
    first = describe(cfg, 5, manifest, tmp_path / "a")
    second = describe(cfg, 5, manifest, tmp_path / "b")
    assert first["pixel_stats"] == second["pixel_stats"]
    assert first["pixel_stats"]["fake"] == {"n_images": 0, "mean": None, "std": None}
    assert first["spectrum"]["spectral_peak_score"]["fake"] is None
    assert (tmp_path / "a" / "grid_fake.png").is_file()


# --------------------------------------------------------------------------- augment stage


def test_augment_stage_writes_shards_index_and_preview(spectral_set, tmp_path):
    pytest.importorskip("tensorflow")
    from fakeface.stages import augment
    from fakeface.stages import preview
    from fakeface.config import Params
    from fakeface.data.shards import read_index, shard_files
    from fakeface.stages.paths import AugmentPaths, PreviewPaths

    root, _, _ = spectral_set
    cfg = AugmentConfig(
        shard_size=8,
        preview_images=3,
        flip={"enabled": True},
        rotate={"enabled": True, "max_degrees": 20},
        brightness={"enabled": True},
    )
    grid = tmp_path / "plots" / "preview.png"
    params = Params(seed=42, augment=cfg)
    index = augment.run(params, AugmentPaths(manifest=root / "manifest.csv", shards=tmp_path / "shards"))
    preview.run(params, PreviewPaths(manifest=root / "manifest.csv", preview=grid))
    assert index == read_index(tmp_path / "shards")
    assert index["train"]["n"] == 21 and len(index["train"]["shards"]) == 3
    assert sum(entry["n"] for entry in index.values()) == 30
    assert len(shard_files(tmp_path / "shards", "test")) == 1
    with Image.open(grid) as image:
        wide = image.width
    # Nothing enabled: originals only (a narrower figure), still written.
    plain = Params(seed=42, augment=AugmentConfig(shard_size=100, preview_images=2, flip={"enabled": False}))
    preview.run(plain, PreviewPaths(manifest=root / "manifest.csv", preview=tmp_path / "plain.png"))
    with Image.open(tmp_path / "plain.png") as image:
        assert image.width < wide
