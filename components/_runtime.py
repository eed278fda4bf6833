"""Run-time glue shared by the Kubeflow components: parameters, folders, report pages.

The components in :mod:`components.stages` are compiled to self-contained function sources; at run
time (in the project image, or on this machine under ``kfp.local``) they import this module and
:mod:`fakeface`. Nothing here is stage logic: it turns KFP inputs into the arguments the stage
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


def begin() -> None:
    """Logging as the CLI sets it up; no MLflow telemetry from pods (unless asked for)."""
    from fakeface.logs import setup_logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    setup_logging()


def parse_params(params_json: str):
    """The pipeline's one ``params`` parameter (JSON) -> validated :class:`fakeface.config.Params`."""
    from fakeface.config import ConfigError, parse_params

    try:
        raw = json.loads(params_json) if params_json.strip() else {}
    except json.JSONDecodeError as error:
        raise ConfigError(f"pipeline parameter 'params' is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"pipeline parameter 'params' must be a JSON object of sections, got {type(raw).__name__}"
        )
    return parse_params(raw, "pipeline parameter 'params'")


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
    from fakeface.manifest import read_manifest, write_manifest

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


# --------------------------------------------------------------------------- report pages


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
