"""The search space: a study's spec, each trial's params, and the study's default name.

Pure functions of the params (and the data's index): nothing here opens a storage, trains or
talks to MLflow, so a bad search space fails before anything starts. A trial is the base params
(``params.yaml`` plus ``ablation.fixed``) with one point of ``ablation.search_space`` applied at
dotted param paths (``train.optimizer``, ``augment.flip.enabled``, ...), validated by
:func:`fakeface.config.parse_params`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import optuna

from fakeface.config import ConfigError, Params, RangeSpec, parse_params

#: The one-at-a-time sampler's own parameter: the name of the configuration a trial runs.
CONFIG_PARAM = "ablation.config"
#: Study user attributes: the spec (everything a worker needs) and the MLflow parent run.
SPEC_ATTR = "fakeface.spec"
MLFLOW_ATTR = "fakeface.mlflow"
#: Bumped when the spec's meaning changes, so an old study is never resumed under new rules.
SPEC_VERSION = 2


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a params tree with ``{"train.optimizer": "adam", ...}`` set in it."""
    tree = copy.deepcopy(tree)
    for path, value in overrides.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def base_params(params: Params) -> Params:
    """The params every trial starts from: ``params.yaml`` with ``ablation.fixed`` applied."""
    return parse_params(
        apply_overrides(params.model_dump(mode="json"), params.ablation.fixed), "ablation.fixed"
    )


def trial_params(base: Params, overrides: dict[str, Any]) -> Params:
    """One trial's params: ``base`` with the trial's factor values, validated."""
    return parse_params(apply_overrides(base.model_dump(mode="json"), overrides), "ablation trial")


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same kind: ``True == 1`` in Python, but not as a factor value."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def format_value(value: Any) -> str:
    """A factor value as params.yaml spells it (``true``, ``null``, ``0.001``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(overrides: dict[str, Any]) -> str:
    """``train.optimizer=adam, train.dropout=0.3``."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items())


def _factor(path: str, space: Any, current: Any, sampler: str) -> dict[str, Any]:
    """One factor of the spec, JSON-safe; one-at-a-time widens it to hold the base value."""
    if isinstance(space, RangeSpec):
        if sampler != "tpe" and not space.values:
            raise ConfigError(f"ablation.search_space.{path}: the {sampler} sampler tries `values`; give some")
        factor = {
            "path": path, "kind": "range", "low": space.low, "high": space.high, "log": space.log,
            "step": space.step, "int": space.is_int, "values": list(space.values),
        }
        if sampler == "one-at-a-time" and isinstance(current, (int, float)):
            # The base point must lie in the distribution every trial suggests from.
            factor["low"], factor["high"] = min(space.low, current), max(space.high, current)
        return factor
    choices = list(space)
    if sampler == "one-at-a-time" and not any(same_value(current, c) for c in choices):
        choices.append(current)
    return {"path": path, "kind": "categorical", "choices": choices, "values": list(choices)}


def _one_at_a_time(factors: list[dict[str, Any]], base_flat: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's tables: the base configuration, then each factor's other values alone."""
    at_base = {f["path"]: base_flat[f["path"]] for f in factors}
    configs = [{"name": "base", "factor": None, "overrides": at_base}]
    for f in factors:
        for value in f["values"]:
            if not same_value(value, at_base[f["path"]]):
                configs.append({
                    "name": f"{f['path']}={format_value(value)}", "factor": f["path"],
                    "overrides": {**at_base, f["path"]: value},
                })
    return configs


def build_spec(params: Params, shards_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything a worker needs to run the study, JSON-safe (stored in the study's user attrs).

    Raises :class:`ConfigError` naming every configuration that params validation refuses, before
    anything trains. ``key`` digests what makes two studies the same study (sampler, objective,
    factors, the base's seed, augment, train and threshold, and the data): a change of any gets a
    new default study name, so a study is never resumed with other settings.
    """
    cfg = params.ablation
    base = base_params(params)
    base_flat = base.flat()
    factors = [_factor(path, space, base_flat[path], cfg.sampler) for path, space in cfg.search_space.items()]

    configs: list[dict[str, Any]] | None = None
    n_configs: int | None = None
    if cfg.sampler == "one-at-a-time":
        configs = _one_at_a_time(factors, base_flat)
        candidates = [c["overrides"] for c in configs]
        n_configs = len(configs)
    elif cfg.sampler == "grid":
        paths = [f["path"] for f in factors]
        candidates = [dict(zip(paths, combo)) for combo in itertools.product(*(f["values"] for f in factors))]
        n_configs = len(candidates)
    else:
        candidates = []
        if cfg.n_trials is None:
            raise ConfigError("ablation.n_trials: the tpe sampler needs a number of trials")
    _check_candidates(base, candidates)

    key_payload = {
        "version": SPEC_VERSION,
        "sampler": cfg.sampler,
        "objective": cfg.objective,
        "cv_folds": cfg.cv_folds,
        "factors": factors,
        "seed": base.seed,
        "augment": base.augment.model_dump(mode="json", exclude={"shard_size", "preview_images"}),
        "train": base.train.model_dump(mode="json"),
        "threshold": base.evaluate.threshold,
        "data": _data_digest(shards_dir),
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "version": SPEC_VERSION,
        "key": key,
        "sampler": cfg.sampler,
        "objective": cfg.objective,
        "cv_folds": cfg.cv_folds,
        "direction": cfg.direction,
        "seed": base.seed,
        "factors": factors,
        "configs": configs,
        "n_configs": n_configs,
        "base": base.model_dump(mode="json"),
        "fixed": dict(cfg.fixed),
        "experiment": params.tracking.experiment,
    }


def _check_candidates(base: Params, candidates: list[dict[str, Any]]) -> None:
    errors = []
    for overrides in candidates:
        try:
            trial_params(base, overrides)
        except ConfigError as error:
            errors.append(f"{describe(overrides)}:\n    " + str(error).split("\n", 1)[-1].strip())
    if errors:
        raise ConfigError(
            f"ablation: {len(errors)} of {len(candidates)} configuration(s) are invalid params:\n  "
            + "\n  ".join(errors)
        )


def _data_digest(shards_dir: str | Path | None) -> str | None:
    if shards_dir is None:
        return None
    index = Path(shards_dir) / "index.json"
    return hashlib.sha256(index.read_bytes()).hexdigest() if index.is_file() else None


def default_study_name(spec: dict[str, Any]) -> str:
    """Derived from the search space, the base params and the data: change any, get a new study."""
    return f"ablation-{spec['sampler']}-{spec['key'][:10]}"


def study_name(params: Params, shards_dir: str | Path | None, name: str | None = None) -> str:
    """``name`` if given, else ``ablation.study_name``, else the one derived from the spec."""
    return name or params.ablation.study_name or default_study_name(build_spec(params, shards_dir))


def suggest(trial: optuna.Trial, factor: dict[str, Any]) -> Any:
    """Ask the trial's sampler for one factor's value, from the factor's full distribution."""
    path = factor["path"]
    if factor["kind"] == "categorical":
        return trial.suggest_categorical(path, factor["choices"])
    if factor["int"]:
        return trial.suggest_int(
            path, int(factor["low"]), int(factor["high"]), step=int(factor["step"] or 1), log=factor["log"]
        )
    return trial.suggest_float(path, float(factor["low"]), float(factor["high"]), step=factor["step"], log=factor["log"])
