"""Run-time glue shared by the Kubeflow components: parameters, folders, report pages.

The components (:mod:`fakeface.components.stages`, :mod:`fakeface.components.ablation`) are
compiled to self-contained function sources; at run time (in the project image, or on this machine
under ``kfp.local``) they call their step in :mod:`fakeface.components.steps` or
:mod:`fakeface.components.ablation_steps`, which use this module. Nothing here is stage logic: it turns KFP inputs into the arguments the stage
functions take, and the stage functions' files into KFP artifacts.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("fakeface.kubeflow")

#: ROC points kept in the ClassificationMetrics artifact (its metadata lives in the KFP metadata
#: store; a 20k-image test split can give thousands of points). The full curve is in the
#: evaluation artifact (plots/roc.csv) and in MLflow.
MAX_ROC_POINTS = 200


def step_params(step: str, values: dict[str, Any]):
    """A step's start: logging as the CLI sets it up, no MLflow telemetry from pods (unless asked
    for), TensorFlow's start-up noise silenced; returns the step's validated params, built from
    its typed parameters (``values``: the component's ``locals()``)."""
    from fakeface.components.parameters import to_params
    from fakeface.logs import preload_tensorflow, setup_logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    setup_logging()
    preload_tensorflow()
    return to_params(step, values)


def absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).absolute()


def manifest_of(dataset_dir: str | os.PathLike[str]) -> Path:
    """The manifest inside an ingested data set artifact."""
    from fakeface.stages.paths import IngestPaths

    return absolute(IngestPaths.in_artifacts(dataset_dir).manifest)


def scratch(stage: str) -> Path:
    """A fresh scratch folder of this pod (relative runtime paths, e.g. checkpoints, land here)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"fakeface-{stage}-"))


@contextlib.contextmanager
def working_dir(path: str | os.PathLike[str], create: bool = False) -> Iterator[Path]:
    """Run a stage inside ``path`` (the stage functions write relative paths, e.g. ``raw/...``)."""
    target = Path(path)
    if create:
        target.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(target)
    try:
        yield target
    finally:
        os.chdir(previous)


def with_absolute_source(params):
    """A relative ``data.source`` folder or zip, resolved before ingest moves into its artifact."""
    def absolute(source: str) -> str:
        if source.lower() == "synthetic" or source.lower().startswith("kaggle:"):
            return source
        path = Path(source).expanduser()
        if path.is_absolute() or not path.exists():
            return source
        return str(path.resolve())

    source = params.data.source  # one source, or a list of them
    resolved = absolute(source) if isinstance(source, str) else [absolute(s) for s in source]
    if resolved == source:
        return params
    data = params.data.model_copy(update={"source": resolved})
    return params.model_copy(update={"data": data})


def make_self_contained(dataset_dir: Path, manifest_name: str = "manifest.csv") -> int:
    """Copy images the manifest references outside ``dataset_dir`` into it; rewrite their paths.

    Ingest references RGB JPEGs where they are (a local folder, the kagglehub cache). A Kubeflow
    artifact must carry its files, since the next step runs in another pod: such rows are copied,
    byte for byte (the sha256 in the manifest still holds), to ``files/<split>/<label>/``. Returns
    the number of files copied (0 for the synthetic source, which is written inside).
    """
    from fakeface.data.manifest import read_manifest, write_manifest

    dataset_dir = Path(dataset_dir).resolve()
    manifest_path = dataset_dir / manifest_name
    frame = read_manifest(manifest_path)
    copied = 0
    paths = []
    for row in frame.itertuples(index=False):
        path = Path(row.path)
        absolute = path if path.is_absolute() else (dataset_dir / path)
        if absolute.resolve().is_relative_to(dataset_dir):
            paths.append(row.path)
            continue
        relative = Path("files") / row.split / row.label / f"{str(row.sha256)[:16]}_{path.name}"
        (dataset_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(absolute, dataset_dir / relative)
        paths.append(relative.as_posix())
        copied += 1
    if copied:
        frame["path"] = paths
        write_manifest(frame, manifest_path)
        log.info("copied %d image(s) from outside the data set into %s/files", copied, dataset_dir)
    return copied


# --------------------------------------------------------------------------- artifact metadata


def ingest_metadata(report, copied: int) -> dict[str, Any]:
    counts = {f"{split}_{label}": n for split, row in report.counts.items() for label, n in row.items()}
    return {"source": report.source_name, "seen": report.seen, "kept": report.kept,
            "quarantined": report.quarantined, "copied_in": copied, **counts}


def shards_metadata(index: dict[str, Any]) -> dict[str, Any]:
    return {
        **{f"{split}_images": int(entry["n"]) for split, entry in index.items()},
        **{f"{split}_digest": entry["digest"] for split, entry in index.items()},
    }


def record_training(model, train_metrics, params, result) -> None:
    """The Model artifact's metadata and the train step's Metrics."""
    model.metadata.update({
        "framework": "keras", "file": "model.keras", "backbone": params.train.backbone,
        "mlflow_run_id": result.run_id, "epochs": result.epochs_run, "best_val_auc": result.best_val_auc,
    })
    train_metrics.log_metric("best_val_auc", float(result.best_val_auc))
    train_metrics.log_metric("epochs", float(result.epochs_run))


def record_evaluation(result: dict[str, Any], paths, evaluation, metrics, classification, report) -> None:
    """Evaluate's numbers as KFP Metrics, its confusion matrix and ROC curve as
    ClassificationMetrics (shown in the KFP UI), its table as Markdown."""
    for name in ("accuracy", "auc", "average_precision", "threshold"):
        metrics.log_metric(name, float(result[name]))
    if isinstance(result.get("calibration"), dict) and "ece" in result["calibration"]:
        metrics.log_metric("ece", float(result["calibration"]["ece"]))
    external = Path(paths.external_metrics)
    if external.is_file():
        from fakeface.analysis.external import flat_metrics

        for name, value in flat_metrics(json.loads(external.read_text())).items():
            metrics.log_metric(name, value)
    confusion = result["confusion"]
    # rows: actual real, actual fake; columns: predicted real, predicted fake
    classification.log_confusion_matrix(
        ["real", "fake"], [[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]]
    )
    classification.log_roc_curve(*roc_points(Path(paths.plots) / "roc.csv"))
    Path(report.path).write_text((Path(paths.reports) / "classification_report.md").read_text())
    evaluation.metadata.update({"auc": result["auc"], "accuracy": result["accuracy"], "n": result["n"]})


def registration_metadata(result) -> dict[str, Any]:
    return {"registered": result.registered, "reason": result.reason, "model_name": result.model_name,
            "model_uri": result.model_uri, "version": result.version or "", "alias": result.alias or "",
            "promoted": result.promoted}


# --------------------------------------------------------------------------- report pages


def write_eda_page(report, out_dir: Path, summary: dict[str, Any]) -> None:
    """The EDA report as one HTML page (grids and spectra inlined) for the KFP UI."""
    images = [(f"Sample: {name}", Path(out_dir) / f"grid_{name}.png") for name in ("real", "fake")]
    images.append(("Mean log spectrum per class, difference and azimuthal average", Path(out_dir) / "spectrum.png"))
    run_id = summary.get("mlflow_run_id", "")
    Path(report.path).write_text(html_page("fakeface EDA", images, summary, intro=f"MLflow run {run_id}"))
    report.metadata["mlflow_run_id"] = run_id


def write_preview_page(page, preview_png: Path, params) -> None:
    intro = "Augmentations enabled: " + (", ".join(params.augment.enabled()) or "none")
    Path(page.path).write_text(html_page("fakeface augmentation preview", [("Preview", Path(preview_png))], intro=intro))



def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(title: str, images: Sequence[tuple[str, Path]], details: dict[str, Any] | None = None,
              intro: str = "") -> str:
    """A standalone HTML page (PNGs inlined as base64) for the KFP UI's HTML viewer."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f8fa;padding:1em;"
        "overflow:auto;font-size:12px}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for caption, path in images:
        if Path(path).is_file():
            parts.append(f"<h2>{html.escape(caption)}</h2>")
            parts.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(Path(path))}">')
    if details is not None:
        parts.append("<h2>Summary</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(details, indent=2, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def roc_points(roc_csv: Path, max_points: int = MAX_ROC_POINTS) -> tuple[list[float], list[float], list[float]]:
    """fpr, tpr, threshold from evaluate's ``roc.csv``, thinned evenly to at most ``max_points``.

    The first and last points (0,0) and (1,1) are always kept.
    """
    import pandas as pd

    frame = pd.read_csv(roc_csv)
    n = len(frame)
    if n > max_points:
        step = (n - 1) / (max_points - 1)
        keep = sorted({round(k * step) for k in range(max_points)})
        frame = frame.iloc[keep]
    return (
        [float(v) for v in frame["fpr"]],
        [float(v) for v in frame["tpr"]],
        [float(v) for v in frame["threshold"]],
    )
