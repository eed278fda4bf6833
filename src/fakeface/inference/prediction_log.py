"""The served model's prediction log: one JSON line per scored image, and reading a window back.

Off by default (``fakeface serve --prediction-log TARGET``). A record holds what a later check
needs and nothing a leak could hurt with::

    {"time": "2026-12-06T10:00:00.123Z", "model_name": ..., "model_version": ..., "p_fake": 0.93,
     "label": "fake", "error": "", "sha256": ..., "bytes": 48211}

never the image, never a credential, never the client's address. ``error`` is the kind of a
failed image (``not_image``, ``too_large``, ...), with ``p_fake`` null.

TARGET is a folder (one file per UTC day, ``predictions-YYYYMMDD.jsonl``, appended; a day's file
stops growing at ``max_bytes`` and the dropped records are counted, so a busy server cannot fill
its disk) or an S3 prefix ``s3://bucket/prefix`` (one object per request,
``prefix/YYYY/MM/DD/HHMMSS-<id>.jsonl``, written with boto3 from the environment's credentials
and ``AWS_ENDPOINT_URL``). :func:`read_records` reads either back for ``fakeface monitor``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fakeface import FakefaceError

log = logging.getLogger(__name__)

#: Default cap of one day's local log file.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
RECORD_FIELDS = ("time", "model_name", "model_version", "p_fake", "label", "error", "sha256", "bytes")


class PredictionLogError(FakefaceError):
    """A prediction log that cannot be written or read."""


def _split_s3(target: str) -> tuple[str, str]:
    bucket, _, prefix = target[len("s3://"):].partition("/")
    if not bucket:
        raise PredictionLogError(f"{target}: an S3 target is s3://bucket[/prefix]")
    return bucket, prefix.strip("/")


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")  # endpoint and keys from the environment (AWS_ENDPOINT_URL, AWS_*)


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PredictionLog:
    """Appends records to a folder or an S3 prefix; thread-safe (the server scores in threads)."""

    def __init__(self, target: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.target = str(target)
        self.max_bytes = max_bytes
        self.dropped = 0
        self.lock = threading.Lock()
        if self.target.startswith("s3://"):
            self.bucket, self.prefix = _split_s3(self.target)
            self.client = _s3_client()
        else:
            self.folder = Path(self.target)
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise PredictionLogError(f"prediction log {self.folder}: {error.strerror}") from None

    def write(self, records: list[dict[str, Any]]) -> int:
        """Append ``records``; returns how many were kept (the rest are over the day's cap)."""
        if not records:
            return 0
        lines = "".join(json.dumps({key: record.get(key) for key in RECORD_FIELDS}) + "\n" for record in records)
        stamp = datetime.now(timezone.utc)
        if self.target.startswith("s3://"):
            key = f"{self.prefix}/{stamp:%Y/%m/%d/%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl".lstrip("/")
            self.client.put_object(Bucket=self.bucket, Key=key, Body=lines.encode())
            return len(records)
        path = self.folder / f"predictions-{stamp:%Y%m%d}.jsonl"
        with self.lock:
            size = path.stat().st_size if path.exists() else 0
            if size + len(lines) > self.max_bytes:
                self.dropped += len(records)
                log.warning("prediction log %s is at its cap of %d bytes: %d record(s) dropped", path,
                            self.max_bytes, self.dropped)
                return 0
            with path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
        return len(records)


def _lines_of(target: str) -> Iterable[str]:
    if target.startswith("s3://"):
        bucket, prefix = _split_s3(target)
        client = _s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".jsonl"))
        for key in keys:
            yield from client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        return
    folder = Path(target)
    files = sorted(folder.glob("predictions-*.jsonl")) if folder.is_dir() else [folder] if folder.is_file() else []
    if not files:
        raise PredictionLogError(f"{target}: no prediction log there (predictions-*.jsonl files, or an s3:// prefix)")
    for path in files:
        with path.open(encoding="utf-8") as handle:
            yield from handle


def read_records(target: str, since: datetime | None = None, last: int | None = None,
                 model_version: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """The records of ``target`` (scored ones with a p(fake)), newer than ``since``, of
    ``model_version`` when given, the ``last`` of them; and how many lines were unreadable."""
    records, broken = [], 0
    for line in _lines_of(str(target)):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            broken += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("p_fake"), (int, float)):
            continue
        if model_version is not None and str(record.get("model_version", "")) != model_version:
            continue
        if since is not None:
            try:
                stamp = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
            except (KeyError, ValueError):
                broken += 1
                continue
            if stamp < since:
                continue
        records.append(record)
    records.sort(key=lambda record: str(record.get("time", "")))
    return (records[-last:] if last else records), broken
