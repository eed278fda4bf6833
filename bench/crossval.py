"""K-fold cross-validation of a recipe on a small real/fake folder (../shared/data/faces-sample).

    python -m bench.crossval [--recipe cpu-faces] [--folds 5] [--source DIR] [--out FILE]

Each image is ingested once (bad files quarantined as in the pipeline); the kept images are cut
into K folds per class, seeded. Fold k is the test set, fold k+1 the validation set (early
stopping, the threshold), the rest the training set; the recipe's training and evaluation run as
the stages run them. Reported per fold and as mean and spread: ROC AUC, accuracy at the threshold
chosen on validation, and the false-positive rate on the real test images (real faces flagged
fake), plus the same after JPEG q75 re-compression (robustness); and as detection papers report
(:func:`fakeface.analysis.metrics.detection_rates`): accuracy on real and on fake images apart,
their mean, AP and ROC AUC, at the stored threshold and at 0.5, on the test images as they are,
after JPEG q75 and after a 0.5x downscale. ``--markdown FILE`` writes the per-fold table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "faces-sample"


def folds_of(manifest, k: int, seed: int) -> list[list[int]]:
    """Row positions of each fold: the ablation's folds (:func:`fakeface.ablation.folds.fold_of`)."""
    from fakeface.ablation.folds import fold_of

    assigned = fold_of(manifest["label"].to_numpy(), k, seed)
    return [np.flatnonzero(assigned == fold).tolist() for fold in range(k)]


def run_fold(params, manifest, folds, fold: int, work: Path) -> dict[str, Any]:
    from fakeface.stages import evaluate
    from fakeface.stages import train
    from fakeface.config.runtime import Runtime
    from fakeface.data.shards import write_shards
    from fakeface.stages.paths import EvaluatePaths, TrainPaths

    k = len(folds)
    split = np.array(["train"] * len(manifest), dtype=object)
    split[folds[fold]] = "test"
    split[folds[(fold + 1) % k]] = "valid"
    frame = manifest.assign(split=split)
    root = work / f"fold{fold}"
    write_shards(frame, root / "shards", params.augment.shard_size)
    trained = TrainPaths.in_artifacts(root / "model", shards=root / "shards")
    started = time.perf_counter()
    result = train.run(params, trained, Runtime(checkpoint_dir=root / "ck", cache_dir=root / "cache"))
    paths = EvaluatePaths.in_artifacts(root / "eval", model=trained.model, run_info=trained.run_info,
                                       shards=root / "shards")
    metrics = evaluate.run(params, paths, track=False)
    robustness = json.loads(paths.robustness.read_text())["perturbations"]
    real = metrics["confusion"]
    return {"papers": paper_rates(params, paths, metrics["threshold"]), **{
        "fold": fold, "epochs": result.epochs_run, "train_s": time.perf_counter() - started,
        "auc": metrics["auc"], "accuracy": metrics["accuracy"], "threshold": metrics["threshold"],
        "false_positive_rate": real["fp"] / max(1, real["fp"] + real["tn"]),
        "accuracy_0_5": metrics["threshold_0_5"]["accuracy"],
        "auc_jpeg_q75": (robustness.get("jpeg_q75") or {}).get("auc"),
    }}


#: The conditions of the papers' tables: the test images as they are ("none"), then two of the
#: default robustness checks: re-compressed at JPEG q75, down-scaled to half and back.
PAPER_CONDITIONS = ("none", "jpeg_q75", "downscale_half")
CONDITION_NAMES = {"none": "as they are", "jpeg_q75": "JPEG q75", "downscale_half": "0.5x down and up"}


def paper_rates(params, paths, threshold: float) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`~fakeface.analysis.metrics.detection_rates` of the fold's detector per condition, at
    the stored threshold and at 0.5."""
    from fakeface.analysis.metrics import detection_rates
    from fakeface.analysis.robustness import robustness_predictions
    from fakeface.config.robustness import default_robustness
    from fakeface.model.classifier import load_model_file

    perturbations = {name: spec for name, spec in default_robustness().items() if name in PAPER_CONDITIONS}
    scores = robustness_predictions(load_model_file(paths.detector), paths.shards, perturbations,
                                    params.evaluate.batch_size)
    labels = scores["label"].to_numpy()
    return {name: {"threshold": detection_rates(labels, scores[name].to_numpy(), threshold),
                   "0.5": detection_rates(labels, scores[name].to_numpy(), 0.5)} for name in PAPER_CONDITIONS}


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "sd": statistics.pstdev(values), "min": min(values), "max": max(values)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("auc", "accuracy", "false_positive_rate", "accuracy_0_5", "auc_jpeg_q75", "threshold", "train_s"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = _spread(values)
    papered = [r["papers"] for r in rows if "papers" in r]
    if papered:
        out["papers"] = {
            condition: {cut: {rate: _spread([p[condition][cut][rate] for p in papered]) for rate in rates}
                        for cut, rates in cuts.items()}
            for condition, cuts in papered[0].items()
        }
    return out


def fold_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per fold and condition, the papers' numbers at the stored threshold and at 0.5."""
    lines = ["| fold | test images | real acc | fake acc | mean acc | AP | ROC AUC | mean acc at 0.5 | "
             "train s (epochs) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for condition, cuts in row.get("papers", {}).items():
            at, half = cuts["threshold"], cuts["0.5"]
            lines.append(f"| {row['fold']} | {CONDITION_NAMES.get(condition, condition)} | {at['real_acc']:.3f} | "
                         f"{at['fake_acc']:.3f} | "
                         f"{at['mean_acc']:.3f} | {at['ap']:.3f} | {at['auc']:.3f} | {half['mean_acc']:.3f} | "
                         f"{row['train_s']:.0f} ({row['epochs']}) |")
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    """The per-fold table of a result (:func:`main`'s JSON) under a title naming the recipe and its overrides."""
    over = (" with " + ", ".join(f"`{o}`" for o in result["overrides"])) if result["overrides"] else ""
    return (f"# `{result['recipe']}`{over}: {len(result['folds'])}-fold cross-validation on {result['images']} images"
            "\n\n" + fold_table(result["folds"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crossval", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu-faces")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--source", default=str(SAMPLE))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (YAML value)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the per-fold table (markdown) here")
    args = parser.parse_args(argv)
    if not Path(args.source).is_dir():
        print(f"crossval: {args.source} is not present; skipped", file=sys.stderr)
        return 0
    import os

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    from fakeface.ingest import ingest
    from fakeface.logs import setup_logging
    from fakeface.data.manifest import read_manifest
    from fakeface.cli.pipeline import apply_overrides
    from fakeface.recipes import load_recipe

    setup_logging("WARNING")
    params = apply_overrides(load_recipe(args.recipe).params(args.source), args.set)
    with tempfile.TemporaryDirectory(prefix="fakeface-crossval-") as scratch:
        work = Path(scratch)
        ingest(params.data, params.seed, work / "raw", work / "manifest.csv", work / "report.json", every_split=False)
        manifest = read_manifest(work / "manifest.csv")
        folds = folds_of(manifest, args.folds, params.seed)
        rows = []
        for fold in range(args.folds):
            rows.append(run_fold(params, manifest, folds, fold, work))
            print(json.dumps(rows[-1]), flush=True)
    result = {"recipe": args.recipe, "overrides": args.set, "source": args.source, "images": len(manifest),
              "folds": rows, "summary": summarise(rows)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
