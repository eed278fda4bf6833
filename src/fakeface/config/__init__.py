"""Typed, validated pipeline parameters: the one place their defaults live.

``params.yaml`` is read once, at the edge (the CLI or a Kubeflow component), into the
:class:`Params` tree below. Every stage function takes the validated tree, never a raw dict, so a
typo or an out-of-range value fails at start-up with the key, the value and what is allowed,
instead of an hour into a GPU run.

The defaults of every field are the project's defaults: ``params.yaml`` spells the same values out
with comments (a test fails when the two disagree), so a pipeline compiled from Python, or
``predict`` run outside a project, behaves as ``dvc repro`` does. Where things run (checkpoint and
work folders, study storage) is not a parameter: see :mod:`fakeface.config.runtime`.

One module per stage group: :mod:`~fakeface.config.data`, :mod:`~fakeface.config.augment`,
:mod:`~fakeface.config.train`, :mod:`~fakeface.config.evaluate`, :mod:`~fakeface.config.ablation`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from fakeface.config.ablation import AblationConfig, PrunerConfig, RangeSpec, check_ablatable
from fakeface.config.augment import AUGMENTATION_ORDER, AugmentConfig
from fakeface.config.base import ConfigError, Section, Toggle
from fakeface.config.data import DataConfig, EdaConfig, SplitFractions, SyntheticConfig
from fakeface.config.evaluate import (
    EvaluateConfig,
    ExplainConfig,
    RegisterConfig,
    SlicesConfig,
    TrackingConfig,
)
from fakeface.config.train import TrainConfig

__all__ = [
    "AUGMENTATION_ORDER",
    "AblationConfig",
    "AugmentConfig",
    "ConfigError",
    "DEFAULT_PARAMS_PATH",
    "DataConfig",
    "EdaConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "Params",
    "PrunerConfig",
    "RangeSpec",
    "RegisterConfig",
    "Section",
    "SlicesConfig",
    "SplitFractions",
    "SyntheticConfig",
    "Toggle",
    "TrackingConfig",
    "TrainConfig",
    "flatten",
    "load_params",
    "parse_params",
]

DEFAULT_PARAMS_PATH = Path("params.yaml")

# ``register`` is the stage's name; it shadows ABCMeta.register on the class, which we never use.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    """The whole parameter tree, one section per stage (see ``params.yaml`` for each key)."""

    seed: int = Field(42, ge=0, description="one seed for splits, synthetic data, shuffling, augmentation and weights")
    data: DataConfig = DataConfig()
    eda: EdaConfig = EdaConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    tracking: TrackingConfig = TrackingConfig()
    ablation: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _ablation_paths(self) -> Params:
        # Checked here, where every path is known: a factor or fixed value must name a parameter.
        known = frozenset(self.flat())
        for field in ("search_space", "fixed"):
            try:
                check_ablatable(getattr(self.ablation, field), known)
            except ValueError as error:
                raise ValueError(f"ablation.{field}: {error}") from None
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys to scalar values, as MLflow params and DVC ``-S`` overrides spell them."""
        return flatten(self.model_dump())

    def section(self, dotted: str) -> Any:
        """The value at a dotted key (``"augment.flip"``, ``"seed"``)."""
        value: Any = self
        for part in dotted.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid parameter(s):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (misspelt, or not a parameter of this section)")
        elif isinstance(item.get("input"), dict):  # a whole section's check: its keys are above, not its values
            lines.append(f"  - {key}: {message}")
        else:
            lines.append(f"  - {key} = {item.get('input')!r}: {message}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a parameter tree; raise :class:`ConfigError` naming every bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))
