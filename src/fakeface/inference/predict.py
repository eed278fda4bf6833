"""``fakeface predict``: score new image files with a trained model.

Inputs: files, folders (searched recursively, hidden files and folders skipped) and list files
(``@list.txt`` or ``--list list.txt``: one path a line, blank lines and ``#`` comments ignored,
relative paths taken from the current directory, as if typed on the command line).

Models: a local Keras file (``models/model.keras``), an MLflow model URI (``runs:/<run_id>/model``,
``models:/<name>@<alias>``, ``models:/<name>/<version>``) or a local MLflow model folder. The
decision threshold is, in order: ``--threshold``; the ``fakeface.threshold`` the register stage
stored in the MLflow model's metadata (the one evaluate chose on the valid split); 0.5.

Each file goes through what the training data went through: ingest's checks
(:func:`fakeface.data.images.inspect_image`: extension, header, pixel limit, full decode), then an RGB
JPEG's bytes are decoded as in training (:func:`fakeface.data.decode.model_input`), and any other image
is converted to 8-bit RGB as ingest normalises it (:func:`fakeface.data.images.to_rgb`) and resized the
same way (:func:`fakeface.data.decode.pixels_model_input`). A file that fails any step gets a
row with its error and no score; it never stops the batch.

Encoded bytes without a file (the images posted to the served model, :mod:`fakeface.inference.served_model`)
take the same road through :func:`decode_bytes`: the same content checks on the bytes
(:func:`inspect_bytes`), then the same decoding (:func:`to_model_input_from_bytes`, which
:func:`load_input` calls too), so a served score is ``predict``'s score for the same file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakeface import CLASS_NAMES, FakefaceError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "gs://", "file:/")


class InputError(FakefaceError):
    """One file that cannot be scored; the message goes into its row (never stops the batch)."""


@dataclass
class LoadedModel:
    model: Any
    source: str
    image_size: int
    threshold: float
    threshold_source: str  # argument | model metadata | default


@dataclass
class Row:
    """One file's result, the columns of the served model's answer (:mod:`fakeface.inference.served_model`):
    ``p_fake`` None (JSON null, an empty CSV cell) without a score; ``label`` and ``error`` empty
    strings when there is none."""

    path: str
    p_fake: float | None = None
    label: str = ""
    error: str = ""


@dataclass
class PredictReport:
    model: str
    threshold: float
    threshold_source: str
    rows: list[Row] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(not row.error for row in self.rows)

    @property
    def failed(self) -> int:
        return len(self.rows) - self.scored


# --------------------------------------------------------------------------- model


def _is_uri(spec: str) -> bool:
    return spec.startswith(URI_SCHEMES)


def _metadata_threshold(metadata: dict[str, Any] | None) -> float | None:
    value = ((metadata or {}).get("fakeface") or {}).get("threshold")
    return float(value) if value is not None else None


def load_model(spec: str, threshold: float | None = None) -> LoadedModel:
    """A Keras model from a file, an MLflow URI or an MLflow model folder, with its threshold."""
    metadata: dict[str, Any] | None = None
    path = Path(spec)
    if _is_uri(spec) or (path.is_dir() and (path / "MLmodel").is_file()):
        import mlflow

        from fakeface import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            if _is_uri(spec):
                metadata = mlflow.models.get_model_info(spec).metadata
            else:
                metadata = mlflow.models.Model.load(str(path / "MLmodel")).metadata
            model = mlflow.keras.load_model(spec)
        except mlflow.exceptions.MlflowException as error:
            raise FakefaceError(f"cannot load model {spec}: {error.message}") from None
    elif path.is_file():
        from fakeface.model.contract import read_contract
        from fakeface.model.classifier import load_model_file

        model = load_model_file(path)
        contract = read_contract(path)
        metadata = {"fakeface": contract} if contract else None
        if contract is None and threshold is None:
            log.warning(
                "%s carries no threshold (a model as train wrote it): cutting at %.2f; the detector "
                "evaluate writes (models/detector.keras) carries the one chosen on the valid split",
                spec, DEFAULT_THRESHOLD,
            )
    else:
        raise FakefaceError(
            f"model {spec!r} not found: give a .keras file, runs:/<run_id>/model or models:/<name>@<alias>"
        )
    if threshold is not None:
        chosen, source = float(threshold), "argument"
    elif (stored := _metadata_threshold(metadata)) is not None:
        chosen, source = stored, "stored with the model"
    else:
        chosen, source = DEFAULT_THRESHOLD, "default"
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise FakefaceError(f"{spec}: expected a model taking [batch, size, size, 3] images, got {shape}")
    log.info("model %s: %d px input, threshold %.4f (%s)", spec, shape[1], chosen, source)
    return LoadedModel(model, spec, int(shape[1]), chosen, source)


# --------------------------------------------------------------------------- inputs


def _read_list(list_file: str | Path) -> list[str]:
    try:
        text = Path(list_file).read_text()
    except OSError as error:
        raise FakefaceError(f"cannot read list file {list_file}: {error.strerror or error}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [str(Path(root) / name) for name in sorted(files) if not name.startswith(".")]
    return found


def expand_inputs(items: Iterable[str], list_files: Iterable[str] = ()) -> list[str]:
    """Files to score, in the order given: folders expanded (sorted), ``@list`` files read.

    A path that does not exist is kept (it gets an error row). Duplicates are dropped.
    """
    queue: list[str] = []
    for item in items:
        queue += _read_list(item[1:]) if item.startswith("@") else [item]
    for list_file in list_files:
        queue += _read_list(list_file)
    paths: list[str] = []
    for item in queue:
        paths += _walk(Path(item)) if Path(item).is_dir() else [item]
    return list(dict.fromkeys(paths))


#: What :func:`decode_bytes` opens (PIL's names): the formats of ingest's image extensions. An
#: image in any other format PIL knows is refused as ``not_an_image``, as its file would be.
BYTES_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")  # JPEG covers MPO


def inspect_bytes(data: bytes, max_pixels: int = 40_000_000) -> Any:
    """:func:`fakeface.data.images.inspect_stream` (the content checks ingest makes) on encoded bytes (there is no file:
    no name, so no extension check): the header, the pixel limit from the header before any
    decoding, then a full decode. Returns its :class:`fakeface.data.images.ImageInfo`; raises
    :class:`InputError` with the same reason words (``empty``, ``not_an_image``, ``too_large``,
    ``corrupt``)."""
    import io

    from fakeface.data.images import Problem, inspect_stream

    if not data:
        raise InputError("empty: zero bytes")
    found = inspect_stream(io.BytesIO(data), max_pixels, formats=BYTES_FORMATS,
                           not_image="content is not a JPEG, PNG, WebP, GIF, BMP, TIFF or PPM image")
    if isinstance(found, Problem):
        raise InputError(f"{found.reason}: {found.detail}")
    return found


def to_model_input_from_bytes(data: bytes, info: Any, size: int) -> np.ndarray:
    """Checked encoded bytes (``info``: their :class:`fakeface.data.images.ImageInfo`) to float32
    ``[size, size, 3]`` as training sees them: an RGB JPEG's bytes are decoded as they are (never
    re-encoded); any other image becomes 8-bit RGB as ingest normalises it, then is resized as
    training resizes (:mod:`fakeface.data.decode`)."""
    import io

    import tensorflow as tf
    from PIL import Image

    from fakeface.data.decode import model_input, pixels_model_input
    from fakeface.data.images import to_rgb

    try:
        if info.is_rgb_jpeg:  # training decodes these bytes as they are
            return model_input(data, size)
        with Image.open(io.BytesIO(data)) as image:  # as ingest's normalize_image, then as training decodes it
            image.load()
            pixels = np.asarray(to_rgb(image), dtype=np.uint8)
        return pixels_model_input(pixels, size)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise InputError(f"corrupt: decode failed: {type(error).__name__}: {error}") from None


def decode_bytes(data: bytes, size: int, max_pixels: int = 40_000_000) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, WebP, ...) to float32 ``[size, size, 3]`` exactly as
    :func:`load_input` turns a file holding them; :class:`InputError` if they cannot be. What the
    served model (:mod:`fakeface.inference.served_model`) calls for each posted image."""
    return to_model_input_from_bytes(data, inspect_bytes(data, max_pixels), size)


def load_input(path: str | Path, size: int, max_pixels: int = 40_000_000) -> np.ndarray:
    """One file to float32 ``[size, size, 3]`` as training sees it; :class:`InputError` if it
    cannot be. Call inside :func:`fakeface.data.images.pil_limits`."""
    from fakeface.data.images import Problem, inspect_image

    info = inspect_image(path, max_pixels)
    if isinstance(info, Problem):
        raise InputError(f"{info.reason}: {info.detail}")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"unreadable: {type(error).__name__}: {error}") from None
    return to_model_input_from_bytes(data, info, size)


# --------------------------------------------------------------------------- scoring


def predict_files(
    loaded: LoadedModel, paths: Sequence[str], batch_size: int = 64, max_pixels: int = 40_000_000
) -> list[Row]:
    """Score ``paths`` in batches with a progress bar; one :class:`Row` per path, in order."""
    from fakeface.data.images import pil_limits
    from fakeface.logs import progress
    from fakeface.model.classifier import probabilities_of_fake

    rows = [Row(path=str(p)) for p in paths]
    starts = range(0, len(rows), batch_size)
    with pil_limits(max_pixels):
        for start in progress(starts, desc="predict", total=len(starts), unit="batch"):
            batch: list[np.ndarray] = []
            members: list[int] = []
            for index in range(start, min(start + batch_size, len(rows))):
                try:
                    batch.append(load_input(rows[index].path, loaded.image_size, max_pixels))
                    members.append(index)
                except InputError as error:
                    rows[index].error = str(error)
                    log.warning("%s: %s", rows[index].path, error)
                except Exception as error:  # anything else about one file must not stop the batch
                    rows[index].error = f"unexpected: {type(error).__name__}: {error}"
                    log.warning("%s: %s", rows[index].path, rows[index].error)
            if not batch:
                continue
            scores = probabilities_of_fake(loaded.model.predict_on_batch(np.stack(batch)))
            for index, score in zip(members, scores):
                rows[index].p_fake = float(score)
                rows[index].label = CLASS_NAMES[int(score >= loaded.threshold)]
    return rows


def write_results(report: PredictReport, out: str | Path | None) -> str | None:
    """CSV (``.csv`` or ``-``/None: stdout) or JSON (``.json``); returns the text for stdout."""
    import pandas as pd

    frame = pd.DataFrame([asdict(row) for row in report.rows], columns=["path", "p_fake", "label", "error"])
    if out is None or str(out) == "-":
        return frame.to_csv(index=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        payload = {
            "model": report.model,
            "threshold": report.threshold,
            "threshold_source": report.threshold_source,
            "files": len(report.rows),
            "scored": report.scored,
            "failed": report.failed,
            "results": [asdict(row) for row in report.rows],
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")
    elif out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise FakefaceError(f"--out {out}: use a .csv or .json file name (or - for CSV on stdout)")
    return None


def predict(
    inputs: Sequence[str],
    model: str,
    out: str | Path | None = None,
    *,
    list_files: Sequence[str] = (),
    threshold: float | None = None,
    batch_size: int = 64,
    max_pixels: int = 40_000_000,
    explain_dir: str | Path | None = None,
    explain_max: int = 16,
    ig_steps: int = 64,
    ig_baseline: str = "black",
    ig_batch_size: int = 32,
) -> PredictReport:
    """Score files and write the results; raises :class:`FakefaceError` (exit 2) if none scored.

    The results file is written even then, so each failure can be read from its row.
    """
    if threshold is not None and not 0 <= threshold <= 1:
        raise FakefaceError(f"--threshold must be between 0 and 1, got {threshold}")
    if out is not None and str(out) != "-" and Path(out).suffix.lower() not in (".csv", ".json"):
        raise FakefaceError(f"--out {out}: use a .csv or .json file name (or - for CSV on stdout)")
    if batch_size < 1:
        raise FakefaceError(f"--batch-size must be at least 1, got {batch_size}")
    if explain_dir is not None and not 20 <= ig_steps <= 1000:
        raise FakefaceError(f"--ig-steps must be between 20 and 1000, got {ig_steps}")
    paths = expand_inputs(inputs, list_files)
    if not paths:
        raise FakefaceError("no input files: give files, folders, @list.txt or --list")
    loaded = load_model(model, threshold)
    rows = predict_files(loaded, paths, batch_size, max_pixels)
    report = PredictReport(loaded.source, loaded.threshold, loaded.threshold_source, rows)
    text = write_results(report, out)
    if text is not None:
        import sys

        sys.stdout.write(text)
    log.info(
        "scored %d of %d file(s) (threshold %.4f, %s)%s",
        report.scored, len(rows), loaded.threshold, loaded.threshold_source,
        "" if out is None or str(out) == "-" else f"; results in {out}",
    )
    if explain_dir is not None and report.scored:
        explain_scored(loaded, rows, Path(explain_dir), explain_max, ig_steps, ig_baseline, ig_batch_size, max_pixels)
    if report.scored == 0:
        raise FakefaceError(f"none of the {len(rows)} file(s) could be scored (see the error column)")
    return report


def explain_scored(
    loaded: LoadedModel,
    rows: list[Row],
    out_dir: Path,
    limit: int,
    steps: int,
    baseline: str,
    batch_size: int,
    max_pixels: int,
) -> dict[str, Any]:
    """IG heatmaps for the first ``limit`` scored files, under ``out_dir`` (with ``explain.json``)."""
    from fakeface.analysis.explain import explain_images
    from fakeface.data.images import pil_limits

    chosen = [row for row in rows if not row.error][: max(limit, 0)]
    if not chosen:
        return {}
    with pil_limits(max_pixels):
        images = np.stack([load_input(row.path, loaded.image_size, max_pixels) for row in chosen])
    return explain_images(
        loaded.model, images, [row.path for row in chosen], out_dir, threshold=loaded.threshold,
        baseline=baseline, steps=steps, batch_size=batch_size,
    )
