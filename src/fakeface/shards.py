"""TFRecord shards: the contract between the augment stage and every TensorFlow reader.

Why shards: 140k small JPEGs read one ``open()`` at a time starve a GPU; a few hundred large
sequential files do not, and ``tf.data`` can interleave and prefetch them.

Why the *original encoded bytes*: a GAN-face detector learns from the faint traces a generator
leaves (upsampling checkerboards, spectral peaks, the absence of camera noise). Decoding and
re-encoding every image would add a second JPEG pass to both classes and blur exactly those traces,
so a record stores the file as it is on disk and decoding happens in the reader
(:func:`decode_image`). ``write_shards`` checks each file against its manifest sha256 on the way in,
so a shard can never hold bytes other than those ingest vetted.

Layout written by :func:`write_shards`::

    <out_dir>/index.json
    <out_dir>/<split>/<split>-00000-of-00003.tfrecord
    ...

Each record is a ``tf.train.Example`` with the features in :data:`FEATURES`: ``image`` (bytes),
``label`` (int64, index into :data:`fakeface.CLASS_NAMES`: 0 real, 1 fake), ``sha256``, ``path``,
``source``, ``split``, ``format`` (bytes) and ``width``, ``height`` (int64).

``index.json`` has one entry per split (``train``, ``valid``, ``test``), each with ``n`` (images),
``per_class`` (images per class name), ``shards`` (file names inside ``<split>/``),
``shard_counts`` (records per shard), ``shard_size``, ``bytes`` (image bytes stored) and
``digest`` (sha256 over the ordered ``sha256 label`` pairs: equal digests mean the same images,
labels and order).

TensorFlow is imported lazily, inside the functions that need it, so that importing this module
(from the CLI, a Kubeflow component spec or the tests of other stages) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fakeface import CLASS_NAMES, LABEL_INDEX, SPLITS, FakefaceError
from fakeface.logs import progress

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorflow as tf

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
SUFFIX = ".tfrecord"
#: Bumped when the record layout changes, so a reader can refuse shards it does not understand.
FORMAT_VERSION = 1

_BYTES_FEATURES = ("image", "sha256", "path", "source", "split", "format")
_INT_FEATURES = ("label", "width", "height")


class ShardError(FakefaceError):
    """Shards that cannot be written or read as the contract says."""


def shard_name(split: str, index: int, count: int) -> str:
    """``<split>-00000-of-00003.tfrecord``: sortable, and the total tells a reader if one is missing."""
    return f"{split}-{index:05d}-of-{count:05d}{SUFFIX}"


def _features() -> dict[str, Any]:
    import tensorflow as tf

    spec: dict[str, Any] = {name: tf.io.FixedLenFeature([], tf.string) for name in _BYTES_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in _INT_FEATURES})
    return spec


def __getattr__(name: str) -> Any:
    # PEP 562: ``FEATURES`` is built on first use, so ``import fakeface.shards`` does not pull in
    # TensorFlow; ``from fakeface.shards import FEATURES`` still works.
    if name == "FEATURES":
        return _features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- writing


def _example(image: bytes, row: Any, label: int) -> bytes:
    import tensorflow as tf

    def b(value: str | bytes) -> tf.train.Feature:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))

    def i(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        "image": b(image),
        "label": i(label),
        "sha256": b(row.sha256),
        "path": b(row.path),
        "source": b(row.source),
        "split": b(row.split),
        "format": b(row.format),
        "width": i(row.width),
        "height": i(row.height),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Label index (real first), then path: deterministic whatever order the manifest came in.

    Classes are not interleaved: training shuffles with a buffer, and evaluation does not care.
    """
    keyed = rows.assign(_label_index=rows["label"].map(LABEL_INDEX), _path=rows["path"].astype(str))
    keyed = keyed.sort_values(["_label_index", "_path"], kind="stable")
    return keyed.drop(columns=["_label_index", "_path"]).reset_index(drop=True)


def _clear_split_dir(split_dir: Path) -> None:
    """Remove shards from an earlier run: a stale ``-of-00005`` file must not outlive a rerun."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in split_dir.glob(f"*{SUFFIX}"):
        stale.unlink()


def _write_split(split: str, rows: pd.DataFrame, split_dir: Path, shard_size: int) -> dict[str, Any]:
    import tensorflow as tf

    _clear_split_dir(split_dir)
    n = len(rows)
    count = math.ceil(n / shard_size)
    names = [shard_name(split, k, count) for k in range(count)]
    digest = hashlib.sha256()
    stored_bytes = 0
    shard_counts = [0] * count
    writer = None
    try:
        rows_iter = progress(rows.itertuples(index=False), desc=f"shards {split}", total=n)
        for position, row in enumerate(rows_iter):
            shard, offset = divmod(position, shard_size)
            if offset == 0:
                if writer is not None:
                    writer.close()
                writer = tf.io.TFRecordWriter(str(split_dir / names[shard]))
            data = Path(row.path).read_bytes()  # one file in memory at a time
            # The manifest's sha256 identifies the *original* file; a normalised image (a
            # converted PNG, noted in ``note``) has other bytes, so only untouched files are checked.
            actual = hashlib.sha256(data).hexdigest() if not row.note else row.sha256
            if actual != row.sha256:
                raise ShardError(
                    f"{row.path}: sha256 {actual[:12]}... does not match the manifest "
                    f"({str(row.sha256)[:12]}...); the file changed after ingest. "
                    "Re-run the ingest stage."
                )
            label = LABEL_INDEX[row.label]
            writer.write(_example(data, row, label))
            digest.update(f"{row.sha256} {label}\n".encode())
            stored_bytes += len(data)
            shard_counts[shard] += 1
    finally:
        if writer is not None:
            writer.close()
    per_class = {name: int((rows["label"] == name).sum()) for name in CLASS_NAMES}
    return {
        "n": n,
        "per_class": per_class,
        "shards": names,
        "shard_counts": shard_counts,
        "shard_size": shard_size,
        "bytes": stored_bytes,
        "digest": digest.hexdigest(),
        "format_version": FORMAT_VERSION,
    }


def write_shards(manifest: pd.DataFrame, out_dir: Path, shard_size: int) -> dict:
    """Pack each split of ``manifest`` into TFRecord shards of at most ``shard_size`` images.

    Streams: one image file is in memory at a time, so 140k images need no more RAM than one.
    Returns the index (also written to ``out_dir/index.json``, last, so a crash mid-way leaves no
    index and readers refuse the half-written shards).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / INDEX_NAME
    index_path.unlink(missing_ok=True)

    index: dict[str, Any] = {}
    for split in SPLITS:
        rows = _ordered(manifest[manifest["split"] == split])
        index[split] = _write_split(split, rows, out_dir / split, shard_size)
        entry = index[split]
        log.info(
            "%s: %d images (%s) in %d shard(s), %.1f MB",
            split,
            entry["n"],
            ", ".join(f"{k} {v}" for k, v in entry["per_class"].items()),
            len(entry["shards"]),
            entry["bytes"] / 1e6,
        )

    tmp = index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, index_path)
    return index


# --------------------------------------------------------------------------- reading


def read_index(shards_dir: Path) -> dict:
    """The ``index.json`` written by :func:`write_shards`; a clear error if there is none."""
    path = Path(shards_dir) / INDEX_NAME
    if not path.is_file():
        raise ShardError(
            f"{path}: shard index not found (run the augment stage first, or an earlier run "
            "stopped before it finished)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShardError(f"{path}: not a shard index (invalid JSON: {error})") from None


def shard_files(shards_dir: Path, split: str) -> list[str]:
    """Sorted paths of the shards of ``split``, checked against ``index.json`` when present.

    The index check catches a split folder with a stale or missing shard, which would otherwise
    silently train or evaluate on the wrong images.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise ShardError(f"{shards_dir}: shards directory not found (run the augment stage first)")
    split_dir = shards_dir / split
    pattern = f"{split}-*-of-*{SUFFIX}"
    found = sorted(str(p) for p in split_dir.glob(pattern)) if split_dir.is_dir() else []
    index_path = shards_dir / INDEX_NAME
    if index_path.is_file():
        expected = sorted(str(split_dir / name) for name in read_index(shards_dir)[split]["shards"])
        if found != expected:
            missing = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            raise ShardError(
                f"{split_dir}: shards do not match {index_path} (missing {missing}, not in the "
                f"index {extra}); re-run the augment stage"
            )
    if not found:
        raise ShardError(f"{split_dir}: no {split} shards (is the {split} split empty?)")
    return found


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized record to a dict of scalar tensors (``image`` still encoded); for ``map``."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, _features())


def decode_image(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes to float32 ``[image_size, image_size, 3]`` in 0..255.

    Any format TensorFlow decodes (JPEG, PNG, GIF first frame, BMP, WebP) and any channel count
    (grey, RGBA) become RGB. Resizing is bilinear with antialiasing (downscaling without it aliases
    high frequencies, which is the band a fake detector looks at) and is skipped when the image is
    already the right size, so the decoded pixels reach the model untouched.
    """
    import tensorflow as tf

    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(
        same,
        lambda: image,
        lambda: tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True),
    )
    image = tf.clip_by_value(image, 0.0, 255.0)  # antialiased resampling can overshoot slightly
    return tf.ensure_shape(image, [image_size, image_size, 3])
