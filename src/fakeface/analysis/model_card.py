"""The model card of a registered version: what it was trained on, how, how it scores, where it
breaks, and what its threshold is worth, on one Markdown page.

Written by register (``models/model_card.md``), logged to the MLflow run, set as the registered
version's description (the Models page shows it), and shown as the Kubeflow register step's
Markdown artifact. Everything in it comes from the run and the evaluation files: nothing is typed
by hand, so it cannot disagree with the numbers.
"""

from __future__ import annotations

from typing import Any

from fakeface import CLASS_NAMES

#: A perturbation that costs more ROC AUC than this is listed as a known weakness.
WEAK_AUC_DROP = 0.1


def _input_line(spec: dict[str, Any]) -> str:
    """What the model takes and what it does to it before the backbone (the contract's ``input``)."""
    parts = [f"Input: {spec.get('shape')} RGB 0..255, input transform `{spec.get('transform', 'pixels')}`"]
    if spec.get("crop"):
        parts.append(f"centre {spec['crop']} px window")
    if spec.get("test_crops", 1) > 1:
        parts.append(f"p(fake) averaged over {spec['test_crops']} windows (centre and corners)")
    return ", ".join(parts) + " and preprocessing inside the model; output p(fake)."

def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _training(run_params: dict[str, str]) -> list[str]:
    keys = ("train.backbone", "train.weights", "train.image_size", "train.optimizer", "train.learning_rate",
            "train.head_epochs", "train.fine_tune_epochs", "train.fine_tune_layers", "seed")
    lines = [f"| `{k}` | {run_params[k]} |" for k in keys if k in run_params]
    augmentations = sorted({k.split(".")[1] for k, v in run_params.items()
                            if k.startswith("augment.") and k.endswith(".enabled") and v == "True"})
    lines.append(f"| augmentations | {', '.join(augmentations) or 'none'} |")
    return ["| setting | value |", "|---|---|", *lines]


def _data(run_params: dict[str, str], run_tags: dict[str, str], index: dict[str, Any] | None) -> list[str]:
    lines = [f"- Source: `{run_params.get('data.source', 'unknown')}`"]
    if index:
        counts = ", ".join(f"{split} {int(entry['n']):,}" for split, entry in index.items() if isinstance(entry, dict) and "n" in entry)
        lines.append(f"- Images: {counts}")
        digests = ", ".join(f"{split} `{str(entry.get('digest', ''))[:16]}`" for split, entry in index.items()
                            if isinstance(entry, dict) and "digest" in entry)
        lines.append(f"- Shard digests: {digests}")
    for tag in ("data.dvc_md5", "git.commit"):
        if tag in run_tags:
            lines.append(f"- `{tag}`: `{run_tags[tag]}`")
    return lines


def _metrics(evaluation: dict[str, Any]) -> list[str]:
    rows = ["| class | precision | recall | f1-score | support |", "|---|---:|---:|---:|---:|"]
    for name in CLASS_NAMES:
        row = evaluation[name]
        rows.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | {row['support']} |")
    return [*rows, "",
            f"Accuracy {evaluation['accuracy']:.4f} at the threshold, {evaluation['threshold_0_5']['accuracy']:.4f} at 0.5; "
            f"ROC AUC {evaluation['auc']:.4f}; average precision {evaluation['average_precision']:.4f}; "
            f"{evaluation['n']} test images."]


def _threshold(evaluation: dict[str, Any], contract: dict[str, Any]) -> list[str]:
    selection = evaluation.get("threshold_selection", {})
    counts = contract.get("threshold_counts") or selection.get("counts") or {}
    lines = [f"- Threshold **{evaluation['threshold']:.4f}** ({selection.get('method', 'fixed')}"
             + (f" on the {selection['split']} split" if selection.get("split") else "") + "), stored in the model."]
    if counts:
        lines.append(f"- Chosen on {', '.join(f'{k} {v}' for k, v in counts.items())} validation images.")
    lines.append("- Reliability: " + ("reliable." if contract.get("threshold_reliable", True) else
                 "**unreliable**: fewer than 100 validation images per class; it may sit far from where a "
                 "larger sample would put it."))
    return lines


def _robustness(robustness: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    if not robustness:
        return ["No robustness checks were run."], []
    rows = ["| perturbation | ROC AUC | accuracy | AUC drop |", "|---|---:|---:|---:|"]
    weak = []
    for name, row in robustness.get("perturbations", {}).items():
        rows.append(f"| {name} | {_fmt(row.get('auc'))} | {_fmt(row.get('accuracy'))} | {_fmt(row.get('auc_drop'))} |")
        if name != "none" and (row.get("auc_drop") or 0) > WEAK_AUC_DROP:
            weak.append(name)
    return rows, weak


def _external(external: dict[str, Any] | None) -> list[str]:
    if not external:
        return ["No external sets were scored (`evaluate.external`): how it does on faces from elsewhere is unknown."]
    rows = ["| set | images | ROC AUC | accuracy | real flagged fake |", "|---|---:|---:|---:|---:|"]
    for name, r in external.items():
        rows.append(f"| {name} | {r['n']} | {r['auc']:.4f} | {r['accuracy']:.4f} | {100 * r['false_positive_rate']:.1f}% |")
    return rows


def _slices(slices: dict[str, Any] | None) -> list[str]:
    if not slices:
        return []
    rows = ["| slice | value | images | accuracy | ROC AUC |", "|---|---|---:|---:|---:|"]
    for kind, values in slices.get("slices", {}).items():
        for value, row in values.items():
            rows.append(f"| {kind} | {value} | {row.get('n')} | {_fmt(row.get('accuracy'))} | {_fmt(row.get('auc'))} |")
    return rows


def render_card(*, name: str, version: str | None, run_id: str, run_params: dict[str, str], run_tags: dict[str, str],
                index: dict[str, Any] | None, evaluation: dict[str, Any], contract: dict[str, Any],
                robustness: dict[str, Any] | None, slices: dict[str, Any] | None,
                external: dict[str, Any] | None, promotion: str | None = None) -> str:
    robust_rows, weak = _robustness(robustness)
    limits = [
        "- Trained and tested on one data source: scores on faces from other cameras, generators or "
        "pipelines are only known for the external sets above.",
        "- p(fake) is a score, not a calibrated probability outside the test distribution (see the "
        "run's calibration report).",
    ]
    if weak:
        limits.append(f"- Weak under {', '.join(weak)} (ROC AUC drops more than {WEAK_AUC_DROP}): "
                      "re-compressed, blurred or rescaled images may pass as real.")
    if not contract.get("threshold_reliable", True):
        limits.append("- The threshold was chosen on too few validation images to trust its exact value.")
    title = f"# Model card: {name}" + (f" version {version}" if version else " (logged, not registered)")
    sections = [
        title, "", f"MLflow run `{run_id}`. {_input_line(contract.get('input', {}))}", "",
        "## Data", "", *_data(run_params, run_tags, index), "",
        "## Training", "", *_training(run_params), "",
        "## Test metrics (at the stored threshold)", "", *_metrics(evaluation), "",
        *(["## Promotion", "", promotion, ""] if promotion else []),
        "## Threshold", "", *_threshold(evaluation, contract), "",
        "## External sets", "", *_external(external), "",
        "## Robustness", "", *robust_rows, "",
    ]
    slice_rows = _slices(slices)
    if slice_rows:
        sections += ["## Slices", "", *slice_rows, ""]
    sections += ["## Known limits", "", *limits, ""]
    return "\n".join(sections)
