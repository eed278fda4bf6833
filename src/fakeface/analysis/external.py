"""Scoring a detector on labelled sets from elsewhere: does it hold off its own test split?

A detector at 99% on the split it was trained beside can still call most real web photos fake, or
collapse after one JPEG pass. So ``evaluate.external`` names labelled sets (any source and layout
ingest recognises: a ``real/`` + ``fake/`` folder, a zip, a CSV list, the 140k layout, ...), and each
is scored with the same table as the test split: the seed's per-class precision/recall/F1,
accuracy at the model's threshold and at 0.5, ROC AUC, AP, the false-positive rate on its real
images (the share of real faces flagged), and the robustness perturbations.

Each set goes through ingest (so a corrupt, empty or non-image file is counted and reported with
its reason, never silently dropped) and is packed into shards as one test split, so scoring is the
very code that scores the test split. Used by the evaluate stage (``metrics/external.json``,
``external.<name>.*`` in the run) and by ``fakeface evaluate --external`` for any model, registered
ones included, without rerunning the pipeline.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fakeface import FakefaceError
from fakeface.config import DataConfig, EvaluateConfig

log = logging.getLogger(__name__)


class ExternalSetError(FakefaceError):
    """An external set that cannot be scored (no such source, or a class missing)."""


def parse_external(items: list[str]) -> dict[str, str]:
    """``NAME=SOURCE`` or ``SOURCE`` (named after its folder or file) -> {name: source}."""
    sets: dict[str, str] = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep:
            name, source = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(item.rstrip("/")).stem) or "external", item
        if name in sets:
            raise ExternalSetError(f"external set {name!r} is named twice")
        sets[name] = source
    return sets


def score_set(model: Any, threshold: float, name: str, source: str, cfg: EvaluateConfig, *, seed: int = 0,
              max_pixels: int = 40_000_000, work_dir: Path | None = None) -> dict[str, Any]:
    """Every number for one external set (see the module docstring), as a JSON-able dict."""
    from fakeface.analysis.metrics import compute_metrics, predict_split
    from fakeface.ingest import IngestError, ingest
    from fakeface.data.manifest import read_manifest
    from fakeface.analysis.robustness import evaluate_robustness, robustness_json
    from fakeface.data.shards import write_shards

    with tempfile.TemporaryDirectory(prefix=f"fakeface-external-{name}-", dir=work_dir) as scratch:
        root = Path(scratch)
        data = DataConfig(source=source, max_pixels=max_pixels)
        try:
            report = ingest(data, seed, root / "raw", root / "manifest.csv", root / "report.json", every_split=False)
        except IngestError as error:
            raise ExternalSetError(f"external set {name!r} ({source}): {error}") from None
        manifest = read_manifest(root / "manifest.csv").assign(split="test")  # the whole set is scored
        write_shards(manifest, root / "shards", shard_size=1000)
        preds = predict_split(model, root / "shards", "test", cfg.batch_size)
        result = compute_metrics(preds.labels, preds.p_fake, threshold)
        result["threshold_0_5"] = compute_metrics(preds.labels, preds.p_fake, 0.5)
        real = preds.labels == 0
        result["false_positive_rate"] = float(np.mean(preds.p_fake[real] >= threshold))
        result["false_positive_rate_0_5"] = float(np.mean(preds.p_fake[real] >= 0.5))
        table = evaluate_robustness(model, root / "shards", cfg.enabled_perturbations(), threshold,
                                    cfg.batch_size, cfg.robustness_max_images)
        result["robustness"] = robustness_json(table, threshold)["perturbations"]
    result.update(source=source, seen=report.seen, kept=report.kept, quarantined=report.quarantined,
                  quarantined_by_reason=report.by_reason)
    log.info(
        "external %s: %d images (%d of %d files kept; quarantined %s), AUC %.4f, accuracy %.4f at %.4f "
        "(%.4f at 0.5), real flagged fake %.1f%%",
        name, result["n"], report.kept, report.seen, report.by_reason or "none", result["auc"],
        result["accuracy"], threshold, result["threshold_0_5"]["accuracy"], 100 * result["false_positive_rate"],
    )
    return result


def score_sets(model: Any, threshold: float, sets: dict[str, str], cfg: EvaluateConfig, **options: Any) -> dict[str, Any]:
    return {name: score_set(model, threshold, name, source, cfg, **options) for name, source in sets.items()}


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``external.<name>.<metric>`` for MLflow and KFP (the numbers a run comparison needs)."""
    flat: dict[str, float] = {}
    for name, result in results.items():
        prefix = f"external.{name}."
        for key in ("accuracy", "auc", "average_precision", "false_positive_rate", "n", "quarantined"):
            flat[prefix + key] = float(result[key])
        flat[prefix + "accuracy_0_5"] = float(result["threshold_0_5"]["accuracy"])
        for label in ("real", "fake"):
            for key in ("precision", "recall", "f1-score"):
                flat[f"{prefix}{label}_{key.replace('-score', '')}"] = float(result[label][key])
        for perturbation, row in result.get("robustness", {}).items():
            if perturbation != "none" and row.get("auc") is not None:
                flat[f"{prefix}robustness_{perturbation}_auc"] = float(row["auc"])
    return flat


def report_markdown(results: dict[str, Any]) -> str:
    """The seed's table per external set, with its false-positive rate and what was quarantined."""
    from fakeface.analysis.metrics import classification_table

    if not results:
        return "No external sets (evaluate.external is empty).\n"
    parts = []
    for name, result in results.items():
        parts.append(
            f"## External set {name}: `{result['source']}`\n\n"
            f"{result['kept']} of {result['seen']} files scored; quarantined: "
            f"{json.dumps(result['quarantined_by_reason']) if result['quarantined'] else 'none'}.\n\n"
            f"### At the model's threshold {result['threshold']:.4f}\n\n{classification_table(result)}\n"
            f"Real images flagged fake: {100 * result['false_positive_rate']:.1f}% "
            f"({100 * result['false_positive_rate_0_5']:.1f}% at 0.5).\n\n"
            f"### At 0.5\n\n{classification_table(result['threshold_0_5'])}\n"
        )
        rows = [f"| {k} | {v.get('auc') if v.get('auc') is None else round(v['auc'], 4)} | {round(v['accuracy'], 4)} |"
                for k, v in result.get("robustness", {}).items()]
        if rows:
            parts.append("### Robustness\n\n| perturbation | AUC | accuracy |\n|---|---:|---:|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def evaluate_external(model_spec: str, sets: dict[str, str], cfg: EvaluateConfig, out_dir: Path, *,
                      threshold: float | None = None, seed: int = 0, max_pixels: int = 40_000_000) -> dict[str, Any]:
    """``fakeface evaluate --external``: score any model (a ``.keras`` file, ``runs:/...``,
    ``models:/name@alias``) on ``sets`` at its stored threshold (``threshold`` wins), without the
    pipeline. Writes ``external.json`` and ``external.md`` to ``out_dir``; for an MLflow model, the
    ``external.<name>.*`` metrics also go to the run that produced it, so ``fakeface runs`` and the
    MLflow UI show them beside its test metrics."""
    from fakeface.inference.predict import load_model

    loaded = load_model(model_spec, threshold)
    results = score_sets(loaded.model, loaded.threshold, sets, cfg, seed=seed, max_pixels=max_pixels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "external.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "external.md").write_text(report_markdown(results))
    if model_spec.startswith(("models:/", "runs:/")):
        import mlflow

        run_id = mlflow.models.get_model_info(model_spec).run_id
        if run_id:
            with mlflow.start_run(run_id=run_id):
                mlflow.log_metrics(flat_metrics(results))
                mlflow.log_artifact(str(out_dir / "external.md"), "external")
            log.info("external metrics logged to run %s", run_id)
    return results
