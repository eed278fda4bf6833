"""TFRecord shards: the contract between the augment stage and every TensorFlow reader.

Why shards: 140k small JPEGs read one ``open()`` at a time starve a GPU; a few hundred large
sequential files do not, and ``tf.data`` can interleave and prefetch them.

Why the *original encoded bytes*: a GAN-face detector learns from the faint traces a generator
leaves (upsampling checkerboards, spectral peaks, the absence of camera noise). Decoding and
re-encoding every image would add a second JPEG pass to both classes and blur exactly those traces,
so a record stores the file as it is on disk and decoding happens in the reader
(:func:`fakeface.data.decode.decode_uint8`). ``write_shards`` checks each file against its manifest sha256 on the way in,
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
``shard_counts`` (records per shard), ``shard_size``, ``bytes`` (image bytes stored),
``digest`` (sha256 over the ordered ``sha256 label`` pairs: equal digests mean the same images,
labels and order), and per shard file its size (``shard_bytes``) and sha256 (``shard_sha256``).

Integrity: :func:`write_shards` builds the whole folder beside ``out_dir`` and renames it into
place only when complete, so a killed or failed run (a full disk included: "disk full writing
<path>") leaves the previous shards, or none, never a partial set. Every reader gets its files
from :func:`shard_files`, which checks each file's size and sha256 against ``index.json`` before
returning it: a truncated or altered shard is a :class:`ShardError` naming the file, never read
silently. The check reads each file once per process: 1.2-1.6 s per GiB from the page cache on
a shared 2-core machine with SHA-NI (SHA-256 runs at 1.7 GB/s in memory), the disk's read speed
from a cold disk (5.8 s per GiB at 190 MB/s; that read also warms the cache for training). A
checked file is not hashed again while its inode, size and times are unchanged.

TensorFlow is imported lazily, inside the functions that need it, so that importing this module
(from the CLI, a Kubeflow component spec or the tests of other stages) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fakeface import CLASS_NAMES, LABEL_INDEX, SPLITS, FakefaceError, read_json
from fakeface.data.atomic import commit_dir, is_disk_full, staging_dir
from fakeface.logs import progress

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorflow as tf

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
SUFFIX = ".tfrecord"
#: Bumped when the record or index layout changes, so a reader can refuse shards it does not
#: understand. 2: ``index.json`` holds each shard file's size and sha256.
FORMAT_VERSION = 2


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
    # PEP 562: ``FEATURES`` is built on first use, so ``import fakeface.data.shards`` does not pull in
    # TensorFlow; ``from fakeface.data.shards import FEATURES`` still works.
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


def _write_split(split: str, rows: pd.DataFrame, split_dir: Path, shard_size: int) -> dict[str, Any]:
    import tensorflow as tf

    split_dir.mkdir(parents=True, exist_ok=True)
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
    files = [split_dir / name for name in names]
    return {
        "n": n,
        "per_class": per_class,
        "shards": names,
        "shard_counts": shard_counts,
        "shard_size": shard_size,
        "bytes": stored_bytes,
        "digest": digest.hexdigest(),
        "shard_bytes": [path.stat().st_size for path in files],
        "shard_sha256": [_file_sha256(path) for path in files],
        "format_version": FORMAT_VERSION,
    }


def write_shards(manifest: pd.DataFrame, out_dir: Path, shard_size: int) -> dict:
    """Pack each split of ``manifest`` into TFRecord shards of at most ``shard_size`` images.

    Streams: one image file is in memory at a time, so 140k images need no more RAM than one.
    Everything is written into a new sibling folder of ``out_dir`` that replaces it only when
    complete (``index.json`` last, with every shard's size and sha256): a crash, a kill or a full
    disk leaves the previous ``out_dir`` as it was (or none), and the partial folder is removed
    (one a killed run left is removed by the next run). Returns the index.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out_dir = Path(out_dir)
    with _disk_full_is_an_error(out_dir):
        target = out_dir.resolve() if out_dir.is_symlink() else out_dir  # a link to another disk stays one
        staging = staging_dir(target)
        try:
            index = _write_all(manifest, staging, shard_size)
            commit_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when committed
    return index


def _write_all(manifest: pd.DataFrame, out_dir: Path, shard_size: int) -> dict:
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
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index


@contextmanager
def _disk_full_is_an_error(path: Path) -> Iterator[None]:
    """ENOSPC/EDQUOT (and TensorFlow's ResourceExhaustedError, what its file writers raise for
    them) while writing ``path``: one :class:`ShardError` line, "disk full writing <path>: ..."."""
    try:
        yield
    except Exception as error:
        full = is_disk_full(error)
        if not (full or type(error).__name__ == "ResourceExhaustedError"):  # tf.errors, not imported here
            raise
        where = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        text = getattr(error, "strerror", None) or "no space left on device"
        raise ShardError(
            f"disk full writing {path}: {text} ({shutil.disk_usage(where).free:,} bytes free "
            "there); the previous shards are as they were and nothing partial was left"
        ) from None


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --------------------------------------------------------------------------- reading


def read_index(shards_dir: Path) -> dict:
    """The ``index.json`` written by :func:`write_shards`; a clear error if there is none."""
    return read_json(Path(shards_dir) / INDEX_NAME, ShardError, "a shard index",
                     "run the augment stage first, or an earlier run stopped before it finished")


#: Shards whose digest this process has checked: (path, inode, size, mtime, ctime) -> sha256.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


def shard_files(shards_dir: Path, split: str) -> list[str]:
    """Sorted paths of the shards of ``split``, each checked against ``index.json`` first.

    The folder must hold exactly the files the index lists (a stale or missing shard would
    silently train or evaluate on the wrong images), and each file must have the size and sha256
    the index recorded: a truncated or altered shard is a :class:`ShardError` naming it.
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
    entry = read_index(shards_dir)[split]
    expected = sorted(str(split_dir / name) for name in entry["shards"])
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        raise ShardError(
            f"{split_dir}: shards do not match {index_path} (missing {missing}, not in the "
            f"index {extra}); re-run the augment stage"
        )
    if not found:
        raise ShardError(f"{split_dir}: no {split} shards (is the {split} split empty?)")
    _verify(split_dir, entry, index_path)
    return found


def _verify(split_dir: Path, entry: dict[str, Any], index_path: Path) -> None:
    """Each shard of ``entry`` has the size and sha256 ``index.json`` recorded, or a ShardError."""
    sizes, digests = entry.get("shard_bytes"), entry.get("shard_sha256")
    if not isinstance(sizes, list) or not isinstance(digests, list) or not (
        len(sizes) == len(digests) == len(entry["shards"])
    ):
        raise ShardError(
            f"{index_path}: no per-file digests (written by an older fakeface, format_version "
            f"{entry.get('format_version')}); re-run the augment stage (dvc repro augment)"
        )
    for name, size, digest in zip(entry["shards"], sizes, digests, strict=True):
        path = split_dir / name
        status = path.stat()
        if status.st_size != size:
            raise ShardError(
                f"{path}: {status.st_size:,} bytes where {index_path} recorded {size:,}: the shard is "
                "truncated or altered; refusing to read it. Re-run the augment stage (dvc repro augment)"
            )
        key = (str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
        if _VERIFIED.get(key) == digest:
            continue
        actual = _file_sha256(path)
        if actual != digest:
            raise ShardError(
                f"{path}: sha256 {actual[:12]}... differs from the {str(digest)[:12]}... {index_path} "
                "recorded: the shard is altered; refusing to read it. Re-run the augment stage "
                "(dvc repro augment)"
            )
        _VERIFIED[key] = digest


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized record to a dict of scalar tensors (``image`` still encoded); for ``map``."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, _features())
