"""TFRecord shards: the bytes in are the bytes out, labels and counts are right, errors are clear."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakeface import CLASS_NAMES, LABEL_INDEX
from fakeface.data.manifest import file_sha256, read_manifest, write_manifest

tf = pytest.importorskip("tensorflow")

from fakeface.data.shards import (  # noqa: E402
    FEATURES,
    ShardError,
    parse_example,
    read_index,
    shard_files,
    write_shards,
)


def make_manifest(root: Path, counts: dict[tuple[str, str], int], size: int = 32) -> Path:
    """Small JPEGs (random noise, so every file differs) and their manifest CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for (split, label), n in counts.items():
        folder = root / "images" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            path = folder / f"{label}_{k:03d}.jpg"
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, format="JPEG", quality=90)
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "split": split,
                    "sha256": file_sha256(path),
                    "width": size,
                    "height": size,
                    "format": "JPEG",
                    "source": "test",
                    "original_path": str(path),
                    "note": "",
                }
            )
    manifest_path = root / "manifest.csv"
    write_manifest(pd.DataFrame(rows), manifest_path)
    return manifest_path


COUNTS = {
    ("train", "real"): 4,
    ("train", "fake"): 3,  # 7 train images: shard_size 3 -> 3 shards (3, 3, 1)
    ("valid", "real"): 1,
    ("valid", "fake"): 2,
    ("test", "real"): 2,
    ("test", "fake"): 1,
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    manifest = read_manifest(make_manifest(root, COUNTS))
    out = root / "shards"
    index = write_shards(manifest, out, shard_size=3)
    return manifest, out, index


def _records(files: list[str]) -> list[dict]:
    records = []
    for raw in tf.data.TFRecordDataset(files):
        example = parse_example(raw)
        records.append({k: v.numpy() for k, v in example.items()})
    return records


def test_round_trip_bytes_labels_and_metadata(written):
    manifest, out, _ = written
    by_path = {row.path: row for row in manifest.itertuples(index=False)}
    seen = []
    for split in ("train", "valid", "test"):
        for record in _records(shard_files(out, split)):
            path = record["path"].decode()
            row = by_path[path]
            # The stored bytes are the file, bit for bit (no re-encoding).
            assert record["image"] == Path(path).read_bytes()
            assert hashlib.sha256(record["image"]).hexdigest() == row.sha256 == record["sha256"].decode()
            assert record["label"] == LABEL_INDEX[row.label]
            assert CLASS_NAMES[record["label"]] == row.label
            assert record["split"].decode() == split == row.split
            assert record["source"].decode() == "test"
            assert record["format"].decode() == "JPEG"
            assert (record["width"], record["height"]) == (32, 32)
            seen.append(path)
    # Every image exactly once.
    assert sorted(seen) == sorted(manifest["path"])
    assert len(seen) == len(set(seen))


def test_index_counts_and_shard_size(written):
    manifest, out, index = written
    assert read_index(out) == index == json.loads((out / "index.json").read_text())
    train = index["train"]
    assert train["n"] == 7
    assert train["per_class"] == {"real": 4, "fake": 3}
    assert train["shards"] == [f"train-0000{k}-of-00003.tfrecord" for k in range(3)]
    assert train["shard_counts"] == [3, 3, 1]
    files = shard_files(out, "train")
    assert [Path(f).name for f in files] == train["shards"]
    assert [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files] == [3, 3, 1]
    assert index["valid"]["per_class"] == {"real": 1, "fake": 2}
    assert index["test"]["n"] == 3 and len(index["test"]["shards"]) == 1
    assert sum(entry["n"] for entry in index.values()) == len(manifest)


def test_order_is_label_then_path_and_digest_is_deterministic(written, tmp_path):
    manifest, _, index = written
    records = _records(shard_files(written[1], "train"))
    keys = [(int(r["label"]), r["path"].decode()) for r in records]
    assert keys == sorted(keys)
    # Same content in a shuffled manifest: same order, same digest.
    again = write_shards(manifest.sample(frac=1.0, random_state=3), tmp_path / "again", shard_size=3)
    assert {s: e["digest"] for s, e in again.items()} == {s: e["digest"] for s, e in index.items()}


def test_rewrite_removes_stale_shards(written, tmp_path):
    manifest, _, _ = written
    out = tmp_path / "shards"
    write_shards(manifest, out, shard_size=1)
    assert len(shard_files(out, "train")) == 7
    write_shards(manifest, out, shard_size=10)
    assert [Path(f).name for f in shard_files(out, "train")] == ["train-00000-of-00001.tfrecord"]


def test_changed_file_is_refused(tmp_path):
    manifest = read_manifest(make_manifest(tmp_path, {("train", "real"): 2}))
    Path(manifest["path"][0]).write_bytes(b"not the vetted bytes")
    with pytest.raises(ShardError, match="does not match the manifest"):
        write_shards(manifest, tmp_path / "shards", shard_size=2)
    assert not (tmp_path / "shards" / "index.json").exists()


def test_missing_dir_and_empty_split_errors(tmp_path):
    with pytest.raises(ShardError, match="augment stage"):
        shard_files(tmp_path / "nowhere", "train")
    with pytest.raises(ShardError, match="augment stage"):
        read_index(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split"):
        shard_files(tmp_path, "holdout")
    manifest = read_manifest(make_manifest(tmp_path, {("train", "real"): 1, ("train", "fake"): 1}))
    index = write_shards(manifest, tmp_path / "shards", shard_size=5)
    assert index["test"] == {**index["test"], "n": 0, "shards": []}
    with pytest.raises(ShardError, match="no test shards"):
        shard_files(tmp_path / "shards", "test")
    # A shard gone missing after writing is caught by the index check.
    Path(shard_files(tmp_path / "shards", "train")[0]).unlink()
    with pytest.raises(ShardError, match="do not match"):
        shard_files(tmp_path / "shards", "train")


def test_features_spec():
    names = {"image", "label", "sha256", "path", "source", "split", "format", "width", "height"}
    assert set(FEATURES) == names
    assert FEATURES["label"].dtype == tf.int64 and FEATURES["image"].dtype == tf.string


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _copy(out: Path, tmp_path: Path, name: str = "copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(out, copy)
    return copy


def test_index_records_each_shard_files_size_and_sha256(written):
    _, out, index = written
    for split, entry in index.items():
        assert entry["format_version"] == 2
        for name, size, digest in zip(entry["shards"], entry["shard_bytes"], entry["shard_sha256"], strict=True):
            data = (out / split / name).read_bytes()
            assert len(data) == size and hashlib.sha256(data).hexdigest() == digest


def test_truncated_or_altered_shard_is_refused_naming_it(written, tmp_path):
    truncated = _copy(written[1], tmp_path, "truncated")
    shard = truncated / "train" / "train-00000-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ShardError, match=rf"{shard}: .* bytes where .*index.json recorded .*truncated or altered"):
        shard_files(truncated, "train")

    altered = _copy(written[1], tmp_path, "altered")
    shard = altered / "train" / "train-00001-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit changed
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{shard}: sha256 .* differs from .*altered"):
        shard_files(altered, "train")
    assert len(shard_files(altered, "valid")) == 1  # the other splits still read


def test_shards_without_file_digests_are_refused(written, tmp_path):
    copy = _copy(written[1], tmp_path)
    index = json.loads((copy / "index.json").read_text())
    for entry in index.values():
        entry.pop("shard_sha256")
        entry["format_version"] = 1
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="no per-file digests .*re-run the augment stage"):
        shard_files(copy, "train")
    (copy / "index.json").unlink()
    with pytest.raises(ShardError, match="shard index not found"):
        shard_files(copy, "train")


def test_a_failed_write_leaves_the_previous_shards_and_no_partial_folder(written, tmp_path):
    manifest, out, _ = written
    target = _copy(out, tmp_path)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    broken = manifest.copy()
    broken.loc[len(broken) - 1, "sha256"] = "0" * 64  # the last row fails its check mid-way
    with pytest.raises(ShardError, match="does not match the manifest"):
        write_shards(broken, target, shard_size=3)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_an_output_folder_that_is_a_link_stays_a_link(written, tmp_path):
    """data/shards linked to another disk: the new shards go there, the link stays."""
    manifest, _, _ = written
    elsewhere = tmp_path / "big-disk" / "shards"
    elsewhere.mkdir(parents=True)
    (elsewhere / "stale.txt").write_text("old")
    link = tmp_path / "shards"
    link.symlink_to(elsewhere)
    write_shards(manifest, link, shard_size=3)
    assert link.is_symlink() and link.resolve() == elsewhere.resolve()
    assert len(shard_files(link, "train")) == 3 and not (elsewhere / "stale.txt").exists()
