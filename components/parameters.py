"""Typed pipeline parameters, one per leaf of the params tree that a stage reads.

A Kubeflow run form and run comparison should show the knobs people change (``train_backbone``,
``train_dropout``), and a change of one should change the cache key of the steps that read it
only. So each component takes, as typed parameters, exactly the leaves under the params keys its
stage reads (:data:`fakeface.stages.Stage.params`, the same keys ``dvc.yaml`` lists), and the
pipeline takes the union, with ``params.yaml``'s values as defaults.

A leaf is a field whose value is not a section: ``train.dropout``, ``augment.crop.enabled``. Its
parameter name replaces the dots with underscores (``augment_crop_enabled``; a test checks the
names are unique). Scalars keep their type (``bool``, ``int``, ``float``, ``str``); anything else
(an optional value, a list of sources, the robustness checks) travels as YAML text, parsed back
with the rest when the step validates its params.

This module is light (no kfp, no TensorFlow): the component generator, the pipelines and the
steps in their pods all use it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from fakeface.config import Params, parse_params
from fakeface.stages import ABLATION_PARAMS, get_stage, list_stages

SIMPLE = (bool, int, float, str)


@dataclass(frozen=True)
class Parameter:
    """One typed pipeline parameter: its name, the dotted params key, and its Python type."""

    name: str
    key: str
    type: type
    encoded: bool  # True: the value travels as YAML text

    def value_of(self, params: Params) -> Any:
        value = _plain(params.section(self.key))
        if not self.encoded:
            return value
        if isinstance(value, str) and yaml.safe_load(value) == value:
            return value  # a plain word or path reads back as itself: no quotes in the run form
        return json.dumps(value)  # JSON is YAML: the step parses either


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _kind(annotation: Any) -> tuple[type, bool]:
    """The parameter type of a field annotation, and whether the value travels encoded."""
    if annotation in SIMPLE:
        return annotation, False
    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if len(kinds) == 1 and kinds <= set(SIMPLE):
            return kinds.pop(), False
    if typing.get_origin(annotation) is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    return str, True


def _leaves(model: BaseModel, prefix: str = "") -> list[Parameter]:
    found = []
    for name, field in type(model).model_fields.items():
        key, value = f"{prefix}{name}", getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(_leaves(value, f"{key}."))
        else:
            kind, encoded = _kind(field.annotation)
            found.append(Parameter(key.replace(".", "_"), key, kind, encoded))
    return found


def all_parameters() -> list[Parameter]:
    """Every leaf of the params tree, in ``params.yaml`` order."""
    return _leaves(Params())


#: The params keys each Kubeflow step reads: a stage's (as dvc.yaml lists them), and the
#: ablation pipeline's study and retrain steps (as ablation/dvc.yaml lists them).
STEP_KEYS: dict[str, tuple[str, ...]] = {
    **{name: get_stage(name).params for name in list_stages()},
    "ablation_prepare": ABLATION_PARAMS["ablate"],
    "ablation_worker": ABLATION_PARAMS["ablate"],
    "ablation_finalize": ABLATION_PARAMS["ablate"],
    "retrain_best": ABLATION_PARAMS["retrain"],
    # batch scoring: no stage params but how to decode and score, and where MLflow runs go
    "batch_plan": (),
    "batch_score": ("evaluate.batch_size", "data.max_pixels"),
    "batch_merge": ("tracking.experiment",),
}


def step_parameters(step: str) -> list[Parameter]:
    """The leaves step ``step`` reads, in ``params.yaml`` order."""
    keys = STEP_KEYS[step]
    return [p for p in all_parameters() if any(p.key == k or p.key.startswith(f"{k}.") for k in keys)]


def pipeline_parameters(steps: list[str]) -> list[Parameter]:
    """The union of the steps' parameters, in ``params.yaml`` order."""
    wanted = {p.key for name in steps for p in step_parameters(name)}
    return [p for p in all_parameters() if p.key in wanted]


def arguments(params: Params, parameters: list[Parameter]) -> dict[str, Any]:
    """Values of ``parameters`` in ``params``: pipeline defaults, or a run's arguments."""
    return {p.name: p.value_of(params) for p in parameters}


def to_params(step: str, values: dict[str, Any]) -> Params:
    """A step's validated params from its typed parameters (``locals()`` of the component; other
    names, its artifacts, are ignored). Keys the step does not read keep their defaults."""
    tree = Params().model_dump(mode="json")
    for parameter in step_parameters(step):
        if parameter.name not in values:
            continue
        value = values[parameter.name]
        if parameter.encoded and isinstance(value, str):
            value = yaml.safe_load(value)
        node = tree
        *path, last = parameter.key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return parse_params(tree, f"the {step} step's parameters")

