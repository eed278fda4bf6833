"""Scoring a large collection with a registered model: list it, split it, score each share, merge.

The batch-scoring pipeline (:mod:`fakeface.pipelines.batch`) runs these on a cluster, one share
per parallel task; ``fakeface pipeline run-local --pipeline batch`` runs the same steps here. The
source is a folder (searched recursively, as ``fakeface predict`` does) or an S3 prefix
``s3://bucket/prefix`` (credentials and ``AWS_ENDPOINT_URL`` from the environment, the
Kubernetes Secret on a cluster). Each file is scored by :func:`fakeface.inference.predict.predict_files`,
so a file that cannot be read or decoded gets a row with its error instead of stopping the batch,
and the merged table accounts for every listed file exactly once.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from fakeface import FakefaceError

log = logging.getLogger(__name__)

COLUMNS = ("path", "p_fake", "label", "error", "model", "threshold")


class BatchError(FakefaceError):
    """A batch that cannot be planned or merged (no files, a missing share)."""


def list_inputs(source: str) -> list[str]:
    """Every file of ``source`` (a folder, recursively, sorted; or an S3 prefix: its keys as
    ``s3://`` URIs, sorted)."""
    source = str(source).strip()
    if source.startswith("s3://"):
        import boto3

        bucket, _, prefix = source[len("s3://"):].partition("/")
        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = sorted(f"s3://{bucket}/{item['Key']}" for page in pages for item in page.get("Contents", [])
                       if not item["Key"].endswith("/"))
    else:
        from fakeface.inference.predict import expand_inputs

        if not Path(source).is_dir():
            raise BatchError(f"batch source {source}: not a folder (give a folder or an s3://bucket/prefix)")
        items = expand_inputs([source])
    if not items:
        raise BatchError(f"batch source {source}: no files there")
    return items


def plan(source: str, workers: int) -> dict[str, Any]:
    """The files and each worker's share (contiguous, sizes differing by one at most)."""
    if workers < 1:
        raise BatchError(f"workers must be 1 or more, got {workers}")
    items = list_inputs(source)
    bounds = [round(k * len(items) / workers) for k in range(workers + 1)]
    return {"source": source, "n": len(items), "shares": [items[a:b] for a, b in zip(bounds, bounds[1:])]}


def _local_copies(items: list[str], folder: Path) -> list[str]:
    """Local paths for ``items``: files as they are, S3 objects downloaded under ``folder``."""
    if not any(item.startswith("s3://") for item in items):
        return list(items)
    import boto3

    client = boto3.client("s3")
    local = []
    for index, item in enumerate(items):
        if not item.startswith("s3://"):
            local.append(item)
            continue
        bucket, _, key = item[len("s3://"):].partition("/")
        path = folder / f"{index:07d}{Path(key).suffix}"
        try:
            client.download_file(bucket, key, str(path))
        except Exception as error:  # noqa: BLE001 - one object that cannot be fetched is that object's row
            log.warning("%s: %s", item, error)
        local.append(str(path))
    return local


def score_share(items: list[str], model: str, out_csv: Path, batch_size: int = 64,
                max_pixels: int = 40_000_000) -> pd.DataFrame:
    """Score ``items`` with ``model`` (a detector file or an MLflow URI); one row each, in order."""
    from dataclasses import asdict

    from fakeface.inference.predict import load_model, predict_files

    loaded = load_model(model)
    with tempfile.TemporaryDirectory(prefix="fakeface-batch-") as folder:
        rows = predict_files(loaded, _local_copies(items, Path(folder)), batch_size, max_pixels) if items else []
    frame = pd.DataFrame([asdict(row) for row in rows], columns=["path", "p_fake", "label", "error"])
    frame["path"] = list(items)  # the listed names, not the downloaded copies
    frame["model"] = loaded.source
    frame["threshold"] = loaded.threshold
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    log.info("scored %d of %d file(s) with %s", int(frame["error"].fillna("").eq("").sum()), len(frame), model)
    return frame


def merge(share_tables: list[Path], planned: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The shares as one table (in the plan's order) and its summary; every planned file must be
    in it exactly once."""
    frames = [pd.read_csv(path, keep_default_na=False, na_values={"p_fake": [""]}) for path in share_tables]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    table["error"] = table["error"].astype(str)
    if planned is not None:
        expected = [item for share in planned["shares"] for item in share]
        if sorted(table["path"]) != sorted(expected):
            missing = sorted(set(expected) - set(table["path"]))
            raise BatchError(f"the shares hold {len(table)} rows for {len(expected)} planned files "
                             f"(missing: {missing[:3]})")
        table = table.set_index("path").loc[expected].reset_index()
    scored = table[table["error"] == ""]
    errors = table.loc[table["error"] != "", "error"].str.split(":").str[0].value_counts().to_dict()
    summary = {
        "files": int(len(table)), "scored": int(len(scored)), "failed": int(len(table) - len(scored)),
        "labelled_fake": int((scored["label"] == "fake").sum()), "labelled_real": int((scored["label"] == "real").sum()),
        "fake_share": float((scored["label"] == "fake").mean()) if len(scored) else None,
        "mean_p_fake": float(scored["p_fake"].mean()) if len(scored) else None,
        "errors": {str(k): int(v) for k, v in errors.items()},
        "model": str(table["model"].iloc[0]) if len(table) else None,
        "threshold": float(table["threshold"].iloc[0]) if len(table) else None,
    }
    return table, summary


def write_outputs(table: pd.DataFrame, summary: dict[str, Any], out_dir: Path, experiment: str | None = None,
                  source: str = "") -> Path:
    """``results.csv`` and ``summary.json`` in ``out_dir``; both logged to an MLflow run in
    ``<experiment>-batch`` when ``experiment`` is given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "summary.json").write_text(json.dumps({"source": source, **summary}, indent=2) + "\n")
    if experiment:
        import mlflow

        from fakeface import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        mlflow.set_experiment(f"{experiment}-batch")
        with mlflow.start_run(run_name=f"batch {summary['files']} files"):
            mlflow.set_tags({"fakeface.batch.model": summary["model"] or "", "fakeface.batch.source": source})
            mlflow.log_metrics({key: summary[key] for key in ("files", "scored", "failed", "labelled_fake")})
            mlflow.log_artifacts(str(out_dir), "batch")
    return out_dir
