"""The study's results: the seed project's ablation tables, and the study's end on MLflow.

Per factor, per value: the trial that ran that value with every other factor at its base value
(the one-at-a-time slice; a grid holds it too), else the best trial that ran that value; its
per-class precision, recall, F1 and support, and the accuracy, all on the **validation** split.
Then the best trial, the parameter importances, every trial, and the optimisation history.
:func:`write_report` writes them from a stored study (``fakeface ablate report``, no training);
:func:`finalize_study` also puts them, the best params and the importances on the parent run.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from fakeface import FakefaceError
from fakeface.analysis.metrics import classification_table
from fakeface.ablation.parent_run import parent_run
from fakeface.ablation.space import CONFIG_PARAM, SPEC_ATTR, format_value, same_value, trial_params
from fakeface.ablation.study import best_trial, importances, load_study, resolve_storage, trial_overrides
from fakeface.config import parse_params

log = logging.getLogger(__name__)

FILES = ("report.md", "best_params.yaml", "importances.json", "trials.csv", "optimization_history.png")


def _value(trial: FrozenTrial) -> str:
    return "" if trial.value is None else f"{trial.value:.4f}"


def _last_report(trial: FrozenTrial) -> str:
    if not trial.intermediate_values:
        return ""
    step = max(trial.intermediate_values)
    return f"{trial.intermediate_values[step]:.4f} @ epoch {step}"


def _differences(overrides: dict[str, Any], base: dict[str, Any]) -> str:
    changed = [f"{k}={format_value(v)}" for k, v in overrides.items() if not same_value(v, base.get(k))]
    return ", ".join(changed) or "base"


def _pick(trials: list[FrozenTrial], path: str, value: Any, base: dict[str, Any], spec: dict[str, Any],
          maximize: bool) -> tuple[FrozenTrial | None, str]:
    """The trial that shows ``path = value``: others at base if one ran so, else the best."""
    having = [t for t in trials if same_value(trial_overrides(t, spec).get(path), value)]
    if not having:
        return None, "not run"
    alone = [t for t in having
             if all(same_value(v, base.get(k)) for k, v in trial_overrides(t, spec).items() if k != path)]
    pool, note = (alone, "others at base") if alone else (having, f"best of {len(having)} trials with this value")
    complete = [t for t in pool if t.state == TrialState.COMPLETE]
    if complete:
        best = (max if maximize else min)(complete, key=lambda t: t.value)
        if alone and len(complete) > 1:
            note += f" (best of {len(complete)} runs)"
        return best, note
    return max(pool, key=lambda t: t.number), note


def render_report(study: optuna.Study) -> tuple[str, dict[str, Any]]:
    """The markdown report and a JSON-safe summary of the study."""
    spec = study.user_attrs[SPEC_ATTR]
    base_params = parse_params(spec["base"])
    base_flat = base_params.flat()
    base = {f["path"]: base_flat[f["path"]] for f in spec["factors"]}
    maximize = spec["direction"] == "maximize"
    objective = spec["objective"]
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    best = best_trial(study)
    imps = importances(study)
    n_valid = next((t.user_attrs["valid_metrics"]["n"] for t in finished if "valid_metrics" in t.user_attrs), None)

    out: list[str] = [f"# Ablation study `{study.study_name}`", ""]
    out.append(
        f"Sampler **{spec['sampler']}**, objective **{objective}** ({spec['direction']}). "
        f"Trials: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running, "
        f"{count[TrialState.WAITING]} waiting."
    )
    out.append("")
    out.append(
        "> All per-class precision, recall, F1 and accuracy figures below are measured on the "
        f"**validation split**{f' ({n_valid} images)' if n_valid else ''}, with the model each trial "
        f"trained, at threshold {base_params.evaluate.threshold:g}. The test split is never used to "
        "choose a configuration: retrain the chosen one and evaluate it on test."
    )
    out.append("")
    base_desc = ", ".join(f"{k}={format_value(v)}" for k, v in base.items())
    out.append(f"Base configuration: {base_desc}" + (
        f"; fixed for every trial: {', '.join(f'{k}={format_value(v)}' for k, v in spec['fixed'].items())}"
        if spec["fixed"] else ""
    ) + ".")
    out.append("")

    summary: dict[str, Any] = {
        "study": study.study_name,
        "sampler": spec["sampler"],
        "objective": objective,
        "direction": spec["direction"],
        "n_trials": len(trials),
        "n_complete": count[TrialState.COMPLETE],
        "n_pruned": count[TrialState.PRUNED],
        "n_failed": count[TrialState.FAIL],
        "best": None,
        "importances": imps,
    }

    out += ["## Best trial", ""]
    if best is None:
        out += ["No trial has completed yet.", ""]
    else:
        overrides = trial_overrides(best, spec)
        summary["best"] = {"number": best.number, "value": best.value, "overrides": overrides,
                           "config": best.params.get(CONFIG_PARAM),
                           "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}
        out.append(f"Trial **#{best.number}** ({_differences(overrides, base)}): {objective} = "
                   f"**{best.value:.4f}**; MLflow run `{best.user_attrs.get('mlflow_run_id', '?')}`.")
        out += ["", "| parameter | value | base |", "|---|---|---|"]
        for key, value in overrides.items():
            mark = "" if same_value(value, base.get(key)) else " ←"
            out.append(f"| `{key}` | {format_value(value)}{mark} | {format_value(base.get(key))} |")
        out.append("")
        if "valid_metrics" in best.user_attrs:
            out.append(classification_table(best.user_attrs["valid_metrics"]))

    out += ["## Factors", ""]
    for factor in spec["factors"]:
        path = factor["path"]
        out += [f"### `{path}`", ""]
        if factor["kind"] == "range" and spec["sampler"] == "tpe":
            out += ["Sampled continuously by TPE: see the trials table below.", ""]
            continue
        values = list(factor["values"])
        if not any(same_value(v, base[path]) for v in values):
            values.insert(0, base[path])
        picks = [(value, *_pick(finished, path, value, base, spec, maximize)) for value in values]
        out += [f"| value | trial | state | {objective} | accuracy | real F1 | fake F1 | which trial |",
                "|---|---:|---|---:|---:|---:|---:|---|"]
        for value, trial, note in picks:
            label = f"{format_value(value)}{' (base)' if same_value(value, base[path]) else ''}"
            if trial is None:
                out.append(f"| {label} | | not run | | | | | |")
                continue
            metrics = trial.user_attrs.get("valid_metrics")
            state = trial.state.name.lower()
            if trial.state == TrialState.PRUNED:
                state = f"pruned ({_last_report(trial)})"
            cells = (f"{metrics['accuracy']:.4f} | {metrics['real']['f1-score']:.4f} | "
                     f"{metrics['fake']['f1-score']:.4f}") if metrics else " | | "
            out.append(f"| {label} | {trial.number} | {state} | {_value(trial)} | {cells} | {note} |")
        out.append("")
        for value, trial, _ in picks:
            if trial is None or "valid_metrics" not in trial.user_attrs:
                continue
            out.append(f"#### `{path}` = {format_value(value)}{' (base)' if same_value(value, base[path]) else ''}"
                       f" · trial {trial.number} · {objective} {_value(trial)}")
            out += ["", f"*Validation split, the model trial {trial.number} trained "
                        f"({_differences(trial_overrides(trial, spec), base)}).*", ""]
            out.append(classification_table(trial.user_attrs["valid_metrics"]))

    if imps:
        out += ["## Parameter importances", "",
                "Optuna's importance evaluator over the complete trials (a one-at-a-time design "
                "varies one factor at a time, so read these as a rough ranking).", "",
                "| parameter | importance |", "|---|---:|"]
        out += [f"| `{k}` | {v:.3f} |" for k, v in imps.items()]
        out.append("")

    folds = int(spec.get("cv_folds") or 0)
    if folds >= 2:
        out += ["## Cross-validation", "",
                f"Each trial is scored by the mean {objective} over {folds} folds of the train + valid images "
                "(stratified, seeded; the same folds for every trial). The spread says how much one split "
                "would have decided by chance.", "",
                "| # | configuration | mean | sd | min | max | per fold |", "|---:|---|---:|---:|---:|---:|---|"]
        for trial in sorted((t for t in finished if "cv_folds" in t.user_attrs), key=lambda t: t.number):
            values = trial.user_attrs["cv_folds"]
            out.append(f"| {trial.number} | {_differences(trial_overrides(trial, spec), base)} | "
                       f"{sum(values) / len(values):.4f} | {statistics.pstdev(values):.4f} | {min(values):.4f} | "
                       f"{max(values):.4f} | {', '.join(f'{v:.3f}' for v in values)} |")
        out.append("")
        summary["cv_folds"] = {str(t.number): t.user_attrs["cv_folds"] for t in finished if "cv_folds" in t.user_attrs}

    out += ["## Trials", "", f"| # | state | configuration | {objective} | last report | epochs |",
            "|---:|---|---|---:|---|---:|"]
    ordered = sorted(trials, key=lambda t: (t.value is None, -(t.value or 0) if maximize else (t.value or 0)))
    for trial in ordered:
        config = _differences(trial_overrides(trial, spec), base) if trial.params else "(not started)"
        note = trial.user_attrs.get("error", "")
        state = trial.state.name.lower() + (f": {note[:80]}" if note else "")
        out.append(f"| {trial.number} | {state} | {config} | {_value(trial)} | {_last_report(trial)} | "
                   f"{trial.user_attrs.get('epochs', '')} |")
    out.append("")
    return "\n".join(out), summary


def write_report(study: optuna.Study, folder: str | Path) -> dict[str, Any]:
    """``report.md``, ``best_params.yaml``, ``importances.json``, ``trials.csv`` and the plot."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).unlink(missing_ok=True)
    text, summary = render_report(study)
    (folder / "report.md").write_text(text)
    (folder / "importances.json").write_text(json.dumps(summary["importances"], indent=2) + "\n")
    best = best_trial(study)
    if best is not None:
        spec = study.user_attrs[SPEC_ATTR]
        params = trial_params(parse_params(spec["base"]), trial_overrides(best, spec))
        (folder / "best_params.yaml").write_text(
            f"# Best trial #{best.number} of study {study.study_name}: {spec['objective']} {best.value:.4f}"
            " (validation split)\n" + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
        )
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    frame.to_csv(folder / "trials.csv", index=False)
    if summary["n_complete"]:
        _history_plot(study, folder / "optimization_history.png")
    log.info("ablation report in %s", folder)
    return summary


def _history_plot(study: optuna.Study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_optimization_history(study)
    figure = axes.figure
    figure.set_size_inches(7, 4)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The study's counts and its best trial, as numbers (MLflow and Kubeflow metrics)."""
    numbers = {f"n_{k}": float(summary[f"n_{k}"]) for k in ("complete", "pruned", "failed")}
    if summary["best"] is not None:
        numbers["best_value"] = float(summary["best"]["value"])
        numbers["best_trial"] = float(summary["best"]["number"])
    return numbers


def finalize_study(
    storage: str | None,
    study_name: str,
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the report (``out_dir``) and the summary (``metrics_path``), and end the parent run
    with them, the best params (tags ``best.*``) and the importances (metrics ``importance.*``).

    Raises :class:`FakefaceError` (after all that) when no trial completed: there is nothing to
    retrain, and a launch that trained nothing should not look like a success.
    """
    from mlflow.entities import Metric, RunTag

    study = load_study(resolve_storage(storage), study_name)
    client, parent = parent_run(study)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir) if out_dir else Path(tmp)
        summary = write_report(study, folder)
        now = int(time.time() * 1000)
        numbers = summary_metrics(summary)
        numbers.update({f"importance.{k}": v for k, v in summary["importances"].items()})
        tags = [RunTag(f"best.{k}", str(v)) for k, v in (summary["best"] or {}).get("overrides", {}).items()]
        client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()], tags=tags)
        client.log_artifacts(parent, str(folder), "ablation")
        client.set_terminated(parent, status="FINISHED")
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if summary["n_complete"] == 0:
        raise FakefaceError(f"study {study_name!r}: no trial completed ({summary['n_failed']} failed); see the log")
    return summary
