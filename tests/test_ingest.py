"""The ingest stage and the per-file image checks, on miniature data sets built with PIL."""

from __future__ import annotations

import builtins
import json
import os
import struct
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from fakeface import SPLITS
from fakeface.data import images as images_module
from fakeface.config import DataConfig
from fakeface.config.data import MAX_PIXELS
from fakeface.data.images import ImageInfo, Problem, inspect_image, pil_limits
from fakeface.ingest import IngestError, IngestReport, ingest
from fakeface.data.manifest import COLUMNS, file_sha256, read_manifest
from ingest_data import build_140k, build_plain, pixels, write_jpeg, write_kaggle_csvs, write_png

SHARED_SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces-sample"

# --------------------------------------------------------------------------- helpers


def run(source: Path | str, tmp_path: Path, seed: int = 7, **data) -> tuple[IngestReport, pd.DataFrame | None]:
    cfg = DataConfig(source=str(source), **data)
    manifest = tmp_path / "out" / "manifest.csv"
    report = ingest(cfg, seed, tmp_path / "raw", manifest, tmp_path / "out" / "report.json")
    return report, read_manifest(manifest)


def items_by_name(report: IngestReport) -> dict[str, dict[str, str]]:
    return {Path(item["path"].split("::")[-1]).name: item for item in report.items}


def assert_reconciled(report: IngestReport, tmp_path: Path | None = None) -> None:
    assert report.seen == report.kept + report.quarantined
    assert report.quarantined == len(report.items) == sum(report.by_reason.values())
    assert report.kept == sum(n for split in report.counts.values() for n in split.values())
    if tmp_path is not None:
        on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
        assert on_disk == json.loads(json.dumps(report.to_dict()))


def assert_no_leakage(frame: pd.DataFrame) -> None:
    assert frame.groupby("sha256")["split"].nunique().max() == 1
    assert not frame["sha256"].duplicated().any()


# --------------------------------------------------------------------------- 140k layout


def test_140k_folder_keeps_its_split_and_hashes(tmp_path: Path) -> None:
    image_root = build_140k(tmp_path / "src", per_class=3)
    report, frame = run(tmp_path / "src", tmp_path)

    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 18 and report.kept == 18 and report.seen == 18 and report.quarantined == 0
    assert report.layout == "140k" and report.source_name == "140k"
    assert set(frame["source"]) == {"140k"}
    assert report.counts == {s: {"real": 3, "fake": 3} for s in SPLITS}
    for row in frame.itertuples():
        path = Path(row.path)
        assert path.parent.name == row.label and path.parent.parent.name == row.split
        assert path.is_relative_to(image_root)
        assert row.sha256 == file_sha256(path)
        assert (row.width, row.height, row.format, row.note) == (32, 32, "JPEG", "")
        assert row.original_path == row.path  # an RGB JPEG is referenced in place
    assert not any((tmp_path / "raw" / "normalized").glob("*"))
    assert_reconciled(report, tmp_path)


def test_140k_root_with_splits_directly(tmp_path: Path) -> None:
    build_140k(tmp_path / "src", per_class=2, nested=False)
    report, frame = run(tmp_path / "src", tmp_path)
    assert report.layout == "140k" and len(frame) == 12
    assert_reconciled(report, tmp_path)


def test_140k_csv_cross_check(tmp_path: Path) -> None:
    root = tmp_path / "src"
    image_root = build_140k(root, per_class=3)
    write_kaggle_csvs(root, image_root)
    # a CSV row whose file is gone, and a CSV label that contradicts the folder
    gone = image_root / "valid" / "fake" / "f001.jpg"
    gone.unlink()
    test_csv = pd.read_csv(root / "test.csv", index_col=0)
    flip = test_csv["path"] == "test/real/r002.jpg"
    test_csv.loc[flip, ["label", "label_str"]] = [0, "fake"]
    test_csv.to_csv(root / "test.csv")

    report, frame = run(root, tmp_path)

    items = items_by_name(report)
    assert items["f001.jpg"]["reason"] == "missing_file"
    assert items["f001.jpg"]["path"] == str(gone)
    assert items["r002.jpg"]["reason"] == "label_conflict"
    assert "test.csv" in items["r002.jpg"]["detail"]
    assert report.by_reason == {"label_conflict": 1, "missing_file": 1}
    assert report.seen == 18 and report.kept == 16  # 17 files on disk + 1 listed but missing
    assert report.csv["rows"] == 18 and report.csv["missing"] == 1 and report.csv["label_conflicts"] == 1
    assert str(image_root / "test" / "real" / "r002.jpg") not in set(frame["path"])
    assert_reconciled(report, tmp_path)


# --------------------------------------------------------------------------- plain folder


def test_plain_folder_is_split_stratified_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    build_plain(root, per_class=40)
    # two exact copies of one real image in different sub-folders: must land in one split
    original = root / "real" / "c" / "001.jpg"
    (root / "real" / "zz").mkdir()
    (root / "real" / "zz" / "copy.jpg").write_bytes(original.read_bytes())
    split = {"train": 0.6, "valid": 0.2, "test": 0.2}

    report, frame = run(root, tmp_path, seed=3, split=split)
    assert report.layout == "folders" and set(frame["source"]) == {"faces"}
    assert report.seen == 81 and report.kept == 80
    assert report.by_reason == {"duplicate": 1}
    assert report.counts == {"train": {"real": 24, "fake": 24}, "valid": {"real": 8, "fake": 8},
                             "test": {"real": 8, "fake": 8}}
    assert_no_leakage(frame)
    assert_reconciled(report, tmp_path)

    again, frame_again = run(root, tmp_path / "again", seed=3, split=split)
    assert again.to_dict()["counts"] == report.to_dict()["counts"]
    key = ["split", "label", "sha256"]
    assert frame[key].reset_index(drop=True).equals(frame_again[key].reset_index(drop=True))

    _, other = run(root, tmp_path / "other", seed=4, split=split)
    assert not frame[key].sort_values("sha256").reset_index(drop=True).equals(
        other[key].sort_values("sha256").reset_index(drop=True)
    )


def test_plain_folder_duplicates_never_straddle_splits(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    build_plain(root, per_class=20)
    for index in range(10):  # many copies: with a per-file split some would straddle
        source = next((root / "fake").rglob(f"{index:03d}.jpg"))
        (root / "fake" / "dups").mkdir(exist_ok=True)
        (root / "fake" / "dups" / f"dup{index}.jpg").write_bytes(source.read_bytes())
    report, frame = run(root, tmp_path)
    assert report.by_reason == {"duplicate": 10}
    assert_no_leakage(frame)
    for item in report.items:
        assert item["reason"] == "duplicate" and "/dups/" in item["path"]
    assert_reconciled(report, tmp_path)


# --------------------------------------------------------------------------- bad inputs


def _cmyk_jpeg(path: Path) -> Path:
    return write_jpeg(path, mode="CMYK")


def test_every_bad_input_is_quarantined_or_normalised(tmp_path: Path) -> None:
    root = tmp_path / "src"
    image_root = build_140k(root, per_class=2)
    train_real = image_root / "train" / "real"
    train_fake = image_root / "train" / "fake"

    good = write_jpeg(train_real / "good.jpg")
    truncated = train_real / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (train_real / "empty.jpg").write_bytes(b"")
    (train_real / "text.jpg").write_text("this is not a JPEG\n")
    (train_real / "notes.txt").write_text("hello\n")
    (train_real / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_jpeg(train_real / "oversize.jpg", size=64)  # 4096 px > max_pixels below
    cmyk = _cmyk_jpeg(train_real / "cmyk.jpg")
    gray = write_jpeg(train_real / "gray.jpg", mode="L")
    gray16 = write_png(train_real / "gray16.png", Image.fromarray((pixels(channels=1).astype(np.uint16) * 257)))
    rgba = write_png(train_real / "rgba.png", Image.fromarray(pixels(channels=4), mode="RGBA"))
    png = write_png(train_fake / "plain.png", Image.fromarray(pixels()))
    palette = train_fake / "palette.gif"
    Image.fromarray(pixels()).convert("P").save(palette)
    # duplicate inside one split
    (train_real / "good_copy.jpg").write_bytes(good.read_bytes())
    # the same image in train/fake and test/fake: leakage, kept only in train
    leak = write_jpeg(train_fake / "leak.jpg")
    (image_root / "test" / "fake" / "leak_test.jpg").write_bytes(leak.read_bytes())
    (image_root / "valid" / "fake" / "leak_valid.jpg").write_bytes(leak.read_bytes())
    # the same bytes labelled real and fake: every copy goes
    both = write_jpeg(image_root / "valid" / "real" / "both_real.jpg")
    (image_root / "valid" / "fake" / "both_fake.jpg").write_bytes(both.read_bytes())
    (image_root / "train" / "stray.jpg").write_bytes(good.read_bytes())  # no class folder

    report, frame = run(root, tmp_path, max_pixels=40 * 40)

    items = items_by_name(report)
    expected = {
        "truncated.jpg": "corrupt",
        "empty.jpg": "empty",
        "text.jpg": "not_an_image",
        "notes.txt": "not_an_image",
        ".DS_Store": "not_an_image",
        "oversize.jpg": "too_large",
        "good_copy.jpg": "duplicate",
        "leak_test.jpg": "cross_split_duplicate",
        "leak_valid.jpg": "cross_split_duplicate",
        "both_real.jpg": "label_conflict",
        "both_fake.jpg": "label_conflict",
        "stray.jpg": "unlabeled",
    }
    assert {name: item["reason"] for name, item in items.items()} == expected
    assert items["good_copy.jpg"]["detail"].endswith("good.jpg")
    assert "train" in items["leak_test.jpg"]["detail"]
    assert "4096 pixels" in items["oversize.jpg"]["detail"]
    assert report.by_reason["cross_split_duplicate"] == 2 and report.by_reason["label_conflict"] == 2
    assert_reconciled(report, tmp_path)
    assert report.seen == 12 + 2 + len(expected) + 6  # base, good + leak, bad ones, 6 normalised

    rows = {Path(p).name: row for p, row in zip(frame["original_path"], frame.itertuples(), strict=True)}
    assert rows["leak.jpg"].split == "train"
    assert rows["good.jpg"].path == str(good) and rows["good.jpg"].note == ""
    normalized_dir = tmp_path / "raw" / "normalized"
    for name, source, mode in [
        ("cmyk.jpg", cmyk, "CMYK"),
        ("gray.jpg", gray, "L"),
        ("gray16.png", gray16, "I;16"),
        ("rgba.png", rgba, "RGBA"),
        ("plain.png", png, "RGB"),
        ("palette.gif", palette, "P"),
    ]:
        row = rows[name]
        assert row.original_path == str(source)
        assert row.sha256 == file_sha256(source)  # identity is the original bytes
        assert Path(row.path) == normalized_dir / f"{row.sha256}.png"
        assert row.format == "PNG" and mode in row.note and "PNG/RGB" in row.note
        with Image.open(row.path) as converted:
            assert converted.format == "PNG" and converted.mode == "RGB" and converted.size == (32, 32)
    with Image.open(rows["gray16.png"].path) as converted:  # scaled to 8 bits, not clipped white
        assert np.asarray(converted).min() < 200
    assert sum(report.normalized.values()) == 6
    assert report.normalized["converted JPEG/CMYK to PNG/RGB"] == 1
    assert sorted(p.name for p in normalized_dir.iterdir()) == sorted(
        f"{rows[n].sha256}.png" for n in ("cmyk.jpg", "gray.jpg", "gray16.png", "rgba.png", "plain.png", "palette.gif")
    )
    assert_no_leakage(frame)
    # PIL's globals are restored
    assert Image.MAX_IMAGE_PIXELS != 40 * 40


def test_unreadable_file_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "src"
    image_root = build_140k(root, per_class=2)
    locked = write_jpeg(image_root / "train" / "fake" / "locked.jpg")
    if os.geteuid() == 0:  # root reads through chmod 000: make open() fail for that file instead
        real_open = builtins.open

        def guarded_open(file, *args, **kwargs):
            if str(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    else:
        locked.chmod(0)
    try:
        report, frame = run(root, tmp_path)
    finally:
        locked.chmod(0o644)
    items = items_by_name(report)
    assert items["locked.jpg"]["reason"] == "unreadable"
    assert "Permission denied" in items["locked.jpg"]["detail"]
    assert report.kept == 12
    assert_reconciled(report, tmp_path)


def test_symlinked_and_unlistable_folders_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "faces"
    build_plain(root, per_class=10)
    elsewhere = tmp_path / "elsewhere"
    write_jpeg(elsewhere / "x.jpg")
    (root / "real" / "linked").symlink_to(elsewhere, target_is_directory=True)
    locked = root / "fake" / "locked"
    write_jpeg(locked / "y.jpg")
    real_scandir = os.scandir

    def guarded_scandir(path=".", *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    report, frame = run(root, tmp_path)
    items = {item["path"]: item for item in report.items}
    assert items[str(root / "real" / "linked")]["reason"] == "unreadable"
    assert "not followed" in items[str(root / "real" / "linked")]["detail"]
    assert items[str(locked)]["reason"] == "unreadable"
    assert "cannot be listed" in items[str(locked)]["detail"]
    assert report.kept == 20 and report.seen == 22
    assert_reconciled(report, tmp_path)


# --------------------------------------------------------------------------- zip


def _zip_member(bundle: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o100644) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    bundle.writestr(info, data)


def test_zip_source_refuses_zip_slip(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    build_140k(tree, per_class=2)
    (tree / "train.csv").write_text(",original_path,id,label,label_str,path\n")  # header only
    archive = tmp_path / "faces140k.zip"
    evil = write_jpeg(tmp_path / "evil_source.jpg").read_bytes()
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(tree).as_posix())
        _zip_member(bundle, "../evil.jpg", evil)
        _zip_member(bundle, "/tmp/fakeface_abs_evil.jpg", evil)
        _zip_member(bundle, "real_vs_fake/real-vs-fake/train/real/../../../../../up.jpg", evil)
        _zip_member(bundle, "real_vs_fake/real-vs-fake/train/real/link.jpg", b"/etc/passwd", mode=0o120777)

    report, frame = run(archive, tmp_path)

    raw = tmp_path / "raw"
    assert not (raw / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()
    assert not Path("/tmp/fakeface_abs_evil.jpg").exists()
    assert not (tmp_path / "up.jpg").exists() and not (raw / "up.jpg").exists()
    assert not (raw / "faces140k" / "real_vs_fake" / "real-vs-fake" / "train" / "real" / "link.jpg").exists()
    slips = {item["path"]: item for item in report.items}
    assert set(slips) == {
        f"{archive}::../evil.jpg",
        f"{archive}::/tmp/fakeface_abs_evil.jpg",
        f"{archive}::real_vs_fake/real-vs-fake/train/real/../../../../../up.jpg",
        f"{archive}::real_vs_fake/real-vs-fake/train/real/link.jpg",
    }
    assert all(item["reason"] == "zip_slip" for item in slips.values())
    assert "symbolic link" in slips[f"{archive}::real_vs_fake/real-vs-fake/train/real/link.jpg"]["detail"]
    assert report.kept == 12 and report.seen == 16 and report.by_reason == {"zip_slip": 4}
    assert report.source_name == "140k"
    for row in frame.itertuples():
        assert Path(row.path).is_relative_to(raw / "faces140k")
        assert row.original_path.startswith(f"{archive}::real_vs_fake/")
        assert row.sha256 == file_sha256(row.path)
    assert_reconciled(report, tmp_path)


def test_zip_member_with_bad_crc_is_quarantined_alone(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    build_140k(tree, per_class=2, nested=False)
    marker = b"FAKEFACE-MARKER-" * 8
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
        for path in sorted(tree.rglob("*.jpg")):
            bundle.write(path, path.relative_to(tree).as_posix())
        bundle.writestr("train/real/broken.jpg", marker)
    data = archive.read_bytes()
    archive.write_bytes(data.replace(marker, marker[:-1] + b"!"))  # stored bytes no longer match the CRC
    report, frame = run(archive, tmp_path)
    items = items_by_name(report)
    assert items["broken.jpg"]["reason"] == "corrupt" and "CRC" in items["broken.jpg"]["detail"]
    assert report.kept == 12 and report.seen == 13
    assert_reconciled(report, tmp_path)


def test_zip_of_plain_folder_uses_zip_stem_as_source(tmp_path: Path) -> None:
    build_plain(tmp_path / "wrapper" / "myfaces", per_class=10)
    archive = tmp_path / "myfaces.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted((tmp_path / "wrapper").rglob("*.jpg")):
            bundle.write(path, path.relative_to(tmp_path / "wrapper").as_posix())
    report, frame = run(archive, tmp_path)
    assert report.layout == "folders" and report.kept == 20
    assert set(frame["source"]) == {"myfaces"}


# --------------------------------------------------------------------------- failures


def test_empty_split_raises_and_still_writes_report(tmp_path: Path) -> None:
    root = tmp_path / "src"
    image_root = build_140k(root, per_class=2)
    for path in (image_root / "valid" / "fake").iterdir():
        path.write_bytes(b"")  # both quarantined as empty
    manifest = tmp_path / "out" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("stale\n")
    with pytest.raises(IngestError, match=r"split 'valid' has no 'fake' images"):
        run(root, tmp_path)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["by_reason"] == {"empty": 2}
    assert report["counts"]["valid"]["fake"] == 0
    assert "valid" in report["error"]
    assert report["seen"] == report["kept"] + report["quarantined"] == 12
    assert not manifest.exists()


def test_missing_split_folder_raises(tmp_path: Path) -> None:
    root = tmp_path / "src"
    image_root = build_140k(root, per_class=2)
    for path in (image_root / "test" / "real").iterdir():
        path.unlink()
    (image_root / "test" / "real").rmdir()
    with pytest.raises(IngestError, match=r"split 'test' has no 'real' images"):
        run(root, tmp_path)


@pytest.mark.parametrize("source", ["no/such/folder", "ftp://example.com/x.zip"])
def test_unknown_source(tmp_path: Path, source: str) -> None:
    with pytest.raises(IngestError, match="synthetic"):
        run(source, tmp_path)


def test_file_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "faces.tar").write_text("nope")
    with pytest.raises(IngestError, match="not a .zip"):
        run(tmp_path / "faces.tar", tmp_path)
    (tmp_path / "broken.zip").write_text("nope")
    with pytest.raises(IngestError, match="not a readable zip"):
        run(tmp_path / "broken.zip", tmp_path)


def test_folder_without_layout(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "src" / "a" / "x.jpg")
    write_jpeg(tmp_path / "src" / "b" / "y.jpg")
    with pytest.raises(IngestError, match="no data set layout"):
        run(tmp_path / "src", tmp_path)


# --------------------------------------------------------------------------- kaggle and synthetic


def _clear_kaggle_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))


def test_kaggle_source_downloads_with_kagglehub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    _clear_kaggle_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    downloaded = tmp_path / "kagglehub-cache" / "datasets" / "xhlulu" / "140k" / "versions" / "2"
    image_root = build_140k(downloaded, per_class=2)
    write_kaggle_csvs(downloaded, image_root)
    calls = []

    def fake_download(handle: str, *args, **kwargs) -> str:
        calls.append(handle)
        return str(downloaded)

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    report, frame = run("kaggle:xhlulu/140k-real-and-fake-faces", tmp_path)
    assert calls == ["xhlulu/140k-real-and-fake-faces"]
    assert report.kept == 12 and report.source_name == "140k" and report.csv["rows"] == 12
    assert set(frame["source"]) == {"140k"}
    assert_reconciled(report, tmp_path)


def test_kaggle_token_file_counts_as_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakeface.ingest import kaggle_credentials_found

    home = tmp_path / "home"
    _clear_kaggle_env(monkeypatch, home)
    assert not kaggle_credentials_found()
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "access_token").write_text("token")
    assert kaggle_credentials_found()


def test_kaggle_without_credentials_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    _clear_kaggle_env(monkeypatch, tmp_path / "home")

    def no_network(*args, **kwargs):
        raise AssertionError("must not try to download without credentials")

    monkeypatch.setattr(kagglehub, "dataset_download", no_network)
    with pytest.raises(IngestError) as caught:
        run("kaggle:xhlulu/140k-real-and-fake-faces", tmp_path)
    message = str(caught.value)
    for needle in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "data.source", ".zip"):
        assert needle in message


def test_kaggle_bad_handle(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="owner"):
        run("kaggle:not a handle", tmp_path)


def test_synthetic_source_calls_generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fakeface.data

    calls = []

    def generate(cfg, split, out_dir: Path, seed: int) -> Path:
        calls.append((cfg.images_per_class, out_dir, seed))
        build_140k(out_dir, per_class=2)
        return out_dir

    fake_module = types.ModuleType("fakeface.data.synthetic")
    fake_module.generate = generate
    monkeypatch.setitem(sys.modules, "fakeface.data.synthetic", fake_module)
    monkeypatch.setattr(fakeface.data, "synthetic", fake_module, raising=False)
    stale = tmp_path / "raw" / "synthetic" / "stale.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    report, frame = run("synthetic", tmp_path, seed=11)
    # generated in a staging sibling of raw/ (".raw.partial-<pid>-<hex>"), published as raw/
    [(count, out_dir, seed)] = calls
    assert (count, seed) == (500, 11)
    assert out_dir.name == "synthetic" and out_dir.parent.name.startswith(".raw.partial-")
    assert out_dir.parent.parent == tmp_path and not out_dir.parent.exists()
    assert set(frame["source"]) == {"synthetic"} and report.kept == 12 and report.quarantined == 0
    assert all(Path(p).is_relative_to(tmp_path / "raw" / "synthetic") and Path(p).is_file() for p in frame["path"])
    assert not stale.exists()


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="../shared/data/faces-sample not present")
def test_shared_face_sample(tmp_path: Path) -> None:
    report, frame = run(SHARED_SAMPLE, tmp_path)
    assert report.layout == "folders" and report.seen == 200
    assert_reconciled(report, tmp_path)
    assert_no_leakage(frame)
    assert (frame["format"] == "JPEG").all() and (frame["width"] == 256).all()


# --------------------------------------------------------------------------- images.inspect_image


def _huge_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_inspect_image_reasons(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg")
    info = inspect_image(good, 10_000)
    assert info == ImageInfo(32, 32, "JPEG", "RGB") and not info.needs_normalization and info.note == ""
    assert inspect_image(good, 1000).reason == "too_large"
    (tmp_path / "zero.png").write_bytes(b"")
    assert inspect_image(tmp_path / "zero.png", 10_000).reason == "empty"
    assert inspect_image(tmp_path / "missing.jpg", 10_000).reason == "unreadable"
    assert inspect_image(tmp_path, 10_000).reason == "unreadable"  # a folder
    (tmp_path / "bad.png").write_bytes(b"GIF89a but not really")
    assert inspect_image(tmp_path / "bad.png", 10_000).reason == "not_an_image"
    (tmp_path / "good.dat").write_bytes(good.read_bytes())
    assert inspect_image(tmp_path / "good.dat", 10_000).reason == "not_an_image"
    cmyk = inspect_image(_cmyk_jpeg(tmp_path / "cmyk.jpg"), 10_000)
    assert isinstance(cmyk, ImageInfo) and cmyk.needs_normalization and cmyk.final_format == "PNG"


def test_decompression_bomb_is_too_large_before_decoding(tmp_path: Path) -> None:
    bomb = _huge_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    # inside the stage's limits, PIL refuses to even open it
    with pil_limits(MAX_PIXELS):
        problem = inspect_image(bomb, MAX_PIXELS)
    assert isinstance(problem, Problem) and problem.reason == "too_large"
    # with PIL's own default limit, the header check says too_large before any decoding
    problem = inspect_image(_huge_png_header(tmp_path / "wide.png", 5000, 5000), 1_000_000)
    assert problem.reason == "too_large" and "25000000 pixels" in problem.detail


def test_pil_limits_restores_globals() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pil_limits(123):
            assert Image.MAX_IMAGE_PIXELS == 123 and ImageFile.LOAD_TRUNCATED_IMAGES is False
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before[1]
    assert Image.MAX_IMAGE_PIXELS == before[0]


def test_truncated_jpeg_is_corrupt_even_if_pil_was_told_to_be_lenient(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:-40])
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as another stage might have left it
    try:
        with pil_limits(10_000):
            assert inspect_image(truncated, 10_000).reason == "corrupt"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    assert images_module.IMAGE_REASONS == ("empty", "not_an_image", "corrupt", "too_large", "unreadable")
