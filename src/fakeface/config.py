"""Typed, validated pipeline parameters.

``params.yaml`` is read once, at the edge (the CLI or a Kubeflow component), into the
:class:`Params` tree below. Every stage function takes the typed section it needs, never a raw
dict, so a typo or an out-of-range value fails at start-up with the key, the value and what is
allowed, instead of an hour into a GPU run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from fakeface import FakefaceError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PARAMS_PATH = Path("params.yaml")


class ConfigError(FakefaceError):
    """A parameter file that cannot be used; the message names each bad key."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class SplitFractions(_Section):
    """Fractions for sources that have no split of their own (a plain real/ + fake/ folder)."""

    train: float = Field(0.8, gt=0, lt=1)
    valid: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must sum to 1, got {total:g}")
        return self


class SyntheticConfig(_Section):
    """The embedded default data set (see :mod:`fakeface.synthetic`)."""

    images_per_class: int = Field(500, ge=10, description="per class, over all splits")
    image_size: int = Field(64, ge=16, le=1024)
    jpeg_quality: int = Field(92, ge=50, le=100)


class DataConfig(_Section):
    source: str = Field(
        "synthetic",
        description="synthetic | a folder | a .zip | kaggle:<owner>/<dataset>",
    )
    split: SplitFractions = SplitFractions()
    max_pixels: int = Field(
        40_000_000, ge=1, description="larger images are quarantined (decompression bombs)"
    )
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a source: synthetic, a folder, a .zip or kaggle:<id>")
        return value.strip()


# --------------------------------------------------------------------------- eda


class EdaConfig(_Section):
    sample_per_class: int = Field(200, ge=1, description="images per class for pixel statistics")
    grid_images: int = Field(16, ge=1, le=64, description="images per class in the sample grid")
    spectrum_size: int = Field(64, ge=16, le=512, description="side of the Fourier spectra")


# --------------------------------------------------------------------------- augment


class Toggle(_Section):
    enabled: bool = False


class CropConfig(Toggle):
    """Random crop of ``min_fraction``..1 of each side, resized back to the input size."""

    min_fraction: float = Field(0.8, gt=0, le=1)


class RotateConfig(Toggle):
    max_degrees: float = Field(10.0, gt=0, le=180)


class ZoomConfig(Toggle):
    """Zoom in by up to ``max_fraction`` (a centred crop of 1 - f, resized back)."""

    max_fraction: float = Field(0.1, gt=0, lt=1)


class BrightnessConfig(Toggle):
    max_delta: float = Field(0.1, gt=0, le=1, description="fraction of the 0..255 range")


class ContrastConfig(Toggle):
    lower: float = Field(0.9, gt=0)
    upper: float = Field(1.1, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ContrastConfig:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must not exceed upper ({self.upper})")
        return self


class AugmentConfig(_Section):
    shard_size: int = Field(1000, ge=1, description="images per TFRecord shard")
    preview_images: int = Field(4, ge=1, le=16)
    flip: Toggle = Toggle(enabled=True)
    crop: CropConfig = CropConfig()
    rotate: RotateConfig = RotateConfig()
    zoom: ZoomConfig = ZoomConfig()
    brightness: BrightnessConfig = BrightnessConfig()
    contrast: ContrastConfig = ContrastConfig()

    def enabled(self) -> list[str]:
        """Names of the switched-on augmentations, in the order they are applied."""
        return [name for name in AUGMENTATION_ORDER if getattr(self, name).enabled]


AUGMENTATION_ORDER = ("flip", "crop", "zoom", "rotate", "brightness", "contrast")


# --------------------------------------------------------------------------- train

Auto = Literal["auto", "on", "off"]


class TrainConfig(_Section):
    backbone: str = "smallcnn"
    weights: str = Field("none", description="imagenet | none | path to a weights file")
    image_size: int | None = Field(None, ge=16, le=1024, description="null: the backbone default")
    batch_size: int = Field(32, ge=1)
    head_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    head_units: int | None = Field(None, ge=1, le=2, description="null: 1 for sigmoid, 2 for softmax")
    pooling: Literal["avg", "max"] = "avg"
    dropout: float = Field(0.2, ge=0, lt=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    learning_rate: float = Field(0.01, gt=0, le=1)
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    head_epochs: int = Field(1, ge=0, description="phase 1: base frozen, head only")
    fine_tune_epochs: int = Field(6, ge=0, description="phase 2: top layers unfrozen")
    fine_tune_layers: int = Field(0, ge=0, description="top layers to unfreeze; 0 = all")
    fine_tune_learning_rate: float = Field(0.001, gt=0, le=1)
    early_stopping_patience: int = Field(3, ge=1)
    shuffle_buffer: int = Field(2048, ge=1)
    mixed_precision: Auto = "auto"
    xla: Auto = "auto"
    checkpoint_dir: str = "checkpoints"

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if value.lower() in ("imagenet", "none", "null", ""):
            return "none" if value.lower() in ("none", "null", "") else "imagenet"
        if not value.endswith((".h5", ".keras", ".weights.h5")):
            raise ValueError(
                f"must be 'imagenet', 'none' or a path to a .h5 / .weights.h5 file, got {value!r}"
            )
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from fakeface.backbones import BACKBONES  # local import: keras is heavy

        key = value.lower()
        if key not in BACKBONES:
            raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(sorted(BACKBONES))}")
        return key

    @model_validator(mode="after")
    def _head(self) -> TrainConfig:
        units = self.resolved_head_units
        if self.head_activation == "softmax" and units == 1:
            raise ValueError(
                "head_units=1 with head_activation=softmax is refused: a softmax over one unit "
                "always outputs 1.0, so the model predicts 'fake' for every image (it scored 50% "
                "in the seed project's ablation). Use sigmoid with 1 unit or softmax with 2 units."
            )
        if self.head_activation == "sigmoid" and units == 2:
            raise ValueError(
                "head_units=2 with head_activation=sigmoid is refused: two independent sigmoids "
                "do not form one probability. Use sigmoid with 1 unit or softmax with 2 units."
            )
        if self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError("head_epochs + fine_tune_epochs must be at least 1")
        return self

    @property
    def resolved_head_units(self) -> int:
        if self.head_units is not None:
            return self.head_units
        return 1 if self.head_activation == "sigmoid" else 2


# --------------------------------------------------------------------------- evaluate, register


class EvaluateConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1, description="p(fake) at or above which we say fake")
    batch_size: int = Field(64, ge=1)


class RegisterConfig(_Section):
    model_name: str = Field("fakeface-detector", min_length=1)
    alias: str = Field("champion", min_length=1)
    min_test_auc: float = Field(0.8, ge=0, le=1, description="quality gate for registration")


class TrackingConfig(_Section):
    """Where runs go. The tracking *URI* is not a param: it comes from MLFLOW_TRACKING_URI."""

    experiment: str = Field("fakeface", min_length=1)


# ``register`` is the stage's name; it shadows ABCMeta.register on the class, which we never use.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(_Section):
    seed: int = Field(42, ge=0)
    data: DataConfig = DataConfig()
    eda: EdaConfig = EdaConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    tracking: TrackingConfig = TrackingConfig()

    def flat(self) -> dict[str, Any]:
        """Dotted keys to scalar values, as MLflow params and DVC ``-S`` overrides spell them."""
        return _flatten(self.model_dump())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
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
