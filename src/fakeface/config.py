"""Typed, validated pipeline parameters.

``params.yaml`` is read once, at the edge (the CLI or a Kubeflow component), into the
:class:`Params` tree below. Every stage function takes the typed section it needs, never a raw
dict, so a typo or an out-of-range value fails at start-up with the key, the value and what is
allowed, instead of an hour into a GPU run.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from fakeface import FakefaceError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

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
    source: str | list[str] = Field(
        "synthetic",
        description="synthetic | a folder | a .zip | a .csv | kaggle:<owner>/<dataset>, or a list "
        "of them combined into one manifest (its source column says which each row came from)",
    )
    split: SplitFractions = SplitFractions()
    max_pixels: int = Field(
        40_000_000, ge=1, description="larger images are quarantined (decompression bombs)"
    )
    synthetic: SyntheticConfig = SyntheticConfig()
    test_source: str | None = Field(
        None,
        description="cross-dataset evaluation: the source name (manifest source column) whose "
        "images alone form the test split; the other sources give train and valid",
    )
    artifact_categories: list[str] = Field(
        default_factory=list,
        description="ArtiFact categories to keep (e.g. [human_faces]); empty = every category",
    )

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else list(value)
        if not texts or any(not text.strip() for text in texts):
            raise ValueError("must name a source: synthetic, a folder, a .zip, a .csv or kaggle:<id>")
        texts = [text.strip() for text in texts]
        if len(set(texts)) != len(texts):
            raise ValueError(f"a source is listed twice: {texts}")
        if isinstance(value, str) or len(texts) == 1:
            return texts[0]  # a one-item list is the same as the string
        return texts

    @model_validator(mode="after")
    def _cross_dataset(self) -> DataConfig:
        if self.test_source is not None and len(self.sources) < 2:
            raise ValueError(
                "test_source (train on some sources, test on another) needs data.source to be a "
                "list of at least two sources"
            )
        return self

    @property
    def sources(self) -> list[str]:
        """``source`` as a list (one item for a single source)."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


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


class StretchConfig(Toggle):
    """Anisotropic scale: a centred crop of ``fy`` of the height and ``fx`` of the width, each
    ``~ U[1 - max_fraction, 1]`` independently, resized back (so each axis is stretched by its own
    factor ``1 / f``)."""

    max_fraction: float = Field(0.1, gt=0, lt=1)


class ChannelShiftConfig(Toggle):
    """Add an independent offset ``~ U[-max_delta, max_delta] * 255`` to each of R, G and B."""

    max_delta: float = Field(0.05, gt=0, le=1, description="fraction of the 0..255 range")


class SharpnessConfig(Toggle):
    """Unsharp mask: ``image + a * (image - gaussian_blur(image, sigma))``, ``a ~ U[0, max_amount]``."""

    max_amount: float = Field(1.0, gt=0, le=10)
    sigma: float = Field(1.0, gt=0, le=5, description="of the blur the mask subtracts, pixels")


class BlurConfig(Toggle):
    """Gaussian blur with a standard deviation ``~ U[0, max_sigma]`` pixels."""

    max_sigma: float = Field(1.0, gt=0, le=10)


class JpegConfig(Toggle):
    """JPEG re-compression at a quality drawn uniformly from the integers ``min_quality..max_quality``."""

    min_quality: int = Field(60, ge=1, le=100)
    max_quality: int = Field(95, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> JpegConfig:
        if self.min_quality > self.max_quality:
            raise ValueError(
                f"min_quality ({self.min_quality}) must not exceed max_quality ({self.max_quality})"
            )
        return self


class DownscaleConfig(Toggle):
    """Resize down to ``f`` of each side, ``f ~ U[min_factor, 1]``, then back up (bilinear)."""

    min_factor: float = Field(0.5, gt=0, lt=1)


class AugmentConfig(_Section):
    shard_size: int = Field(1000, ge=1, description="images per TFRecord shard")
    preview_images: int = Field(4, ge=1, le=16)
    flip: Toggle = Toggle(enabled=True)
    crop: CropConfig = CropConfig()
    rotate: RotateConfig = RotateConfig()
    zoom: ZoomConfig = ZoomConfig()
    brightness: BrightnessConfig = BrightnessConfig()
    contrast: ContrastConfig = ContrastConfig()
    stretch: StretchConfig = StretchConfig()
    channel_shift: ChannelShiftConfig = ChannelShiftConfig()
    sharpness: SharpnessConfig = SharpnessConfig()
    blur: BlurConfig = BlurConfig()
    downscale: DownscaleConfig = DownscaleConfig()
    jpeg: JpegConfig = JpegConfig()

    def enabled(self) -> list[str]:
        """Names of the switched-on augmentations, in the order they are applied."""
        return [name for name in AUGMENTATION_ORDER if getattr(self, name).enabled]


#: The order augmentations are applied in, and each one's seed index (see fakeface.augmentations).
#: New ones are appended at the END: the first entries' seeds then stay the same, so a params file
#: that enabled only the older ones draws exactly as before.
AUGMENTATION_ORDER = (
    "flip",
    "crop",
    "zoom",
    "rotate",
    "brightness",
    "contrast",
    "stretch",
    "channel_shift",
    "sharpness",
    "blur",
    "downscale",
    "jpeg",  # last: as on the web, an image is resized and then re-compressed
)


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


class _Perturbation(_Section):
    """One robustness check: applied to the original decoded test images (see fakeface.robustness)."""

    enabled: bool = True


class JpegPerturbation(_Perturbation):
    """Re-encode as JPEG at ``quality`` (PIL, 4:2:0 chroma), decode again."""

    kind: Literal["jpeg"]
    quality: int = Field(75, ge=1, le=100)


class BlurPerturbation(_Perturbation):
    """Gaussian blur with standard deviation ``sigma`` pixels of the original image."""

    kind: Literal["blur"]
    sigma: float = Field(1.0, gt=0, le=20)


class ScalePerturbation(_Perturbation):
    """Resize by ``factor`` (< 1 down, > 1 up) and back to the original size, bilinear + antialias."""

    kind: Literal["scale"]
    factor: float = Field(0.5, gt=0.05, le=8)

    @field_validator("factor")
    @classmethod
    def _not_one(cls, value: float) -> float:
        if value == 1:
            raise ValueError("factor 1 leaves the image unchanged; use < 1 (down) or > 1 (up)")
        return value


class CropPerturbation(_Perturbation):
    """Central crop keeping ``fraction`` of each side, resized back to the original size."""

    kind: Literal["crop"]
    fraction: float = Field(0.8, gt=0.05, lt=1)


Perturbation = Annotated[
    Union[JpegPerturbation, BlurPerturbation, ScalePerturbation, CropPerturbation],
    Field(discriminator="kind"),
]


def _default_robustness() -> dict[str, Any]:
    return {
        "jpeg_q95": JpegPerturbation(kind="jpeg", quality=95),
        "jpeg_q75": JpegPerturbation(kind="jpeg", quality=75),
        "jpeg_q50": JpegPerturbation(kind="jpeg", quality=50),
        "blur_sigma1": BlurPerturbation(kind="blur", sigma=1.0),
        "downscale_half": ScalePerturbation(kind="scale", factor=0.5),
        "upscale_2x": ScalePerturbation(kind="scale", factor=2.0),
        "crop_80": CropPerturbation(kind="crop", fraction=0.8),
    }


class SlicesConfig(_Section):
    """Brightness bands by mean luma (0..255) of the decoded image: dark < a <= mid < b <= bright."""

    brightness_edges: tuple[float, float] = (85.0, 170.0)

    @field_validator("brightness_edges")
    @classmethod
    def _ascending(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] < value[1] < 255:
            raise ValueError(f"need 0 < dark/mid edge < mid/bright edge < 255, got {list(value)}")
        return value


class ExplainConfig(_Section):
    """Integrated gradients (Sundararajan et al. 2017) for a few test images per class."""

    enabled: bool = True
    images_per_class: int = Field(2, ge=0, le=50, description="right and wrong ones when available")
    baseline: Literal["black", "noise"] = "black"
    steps: int = Field(64, ge=20, le=1000, description="interpolation steps m (trapezoidal rule)")
    batch_size: int = Field(32, ge=1, description="interpolated images per gradient batch")
    seed: int = Field(0, ge=0, description="for the noise baseline")


class EvaluateConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1, description="p(fake) at or above which we say fake")
    threshold_method: Literal["fixed", "max_f1", "youden"] = Field(
        "max_f1", description="fixed: use threshold; max_f1 / youden: chosen on the valid split"
    )
    batch_size: int = Field(64, ge=1)
    calibration_bins: int = Field(10, ge=2, le=100, description="equal-width bins for ECE and the reliability plot")
    robustness_max_images: int = Field(
        1000, ge=0, description="test images for the robustness checks (evenly spaced); 0 = all"
    )
    robustness: dict[str, Perturbation] = Field(default_factory=_default_robustness)
    slices: SlicesConfig = SlicesConfig()
    explain: ExplainConfig = ExplainConfig()

    @field_validator("robustness", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, spec in value.items():
                if isinstance(spec, dict) and "kind" not in spec:
                    raise ValueError(f"perturbation {name!r} needs a kind: jpeg, blur, scale or crop")
        return value

    @field_validator("robustness")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            # no dots: the name is a key of dotted overrides (dvc exp run -S evaluate.robustness.NAME.enabled=false)
            if name == "none" or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise ValueError(
                    f"perturbation name {name!r}: use letters, digits, '_' and '-' ('none' is the clean row)"
                )
        return value

    def enabled_perturbations(self) -> dict[str, Any]:
        return {name: spec for name, spec in self.robustness.items() if spec.enabled}


class RegisterConfig(_Section):
    model_name: str = Field("fakeface-detector", min_length=1)
    alias: str = Field("champion", min_length=1)
    min_test_auc: float = Field(0.8, ge=0, le=1, description="quality gate for registration")


class TrackingConfig(_Section):
    """Where runs go. The tracking *URI* is not a param: it comes from MLFLOW_TRACKING_URI."""

    experiment: str = Field("fakeface", min_length=1)


# --------------------------------------------------------------------------- ablation

#: A categorical factor's values keep their YAML types (true stays a bool, 0.2 a float).
AblationValue = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]

#: What an ablation may vary: the seed and what shapes training (see fakeface.ablation).
ABLATABLE_PREFIXES = ("seed", "augment.", "train.", "evaluate.threshold")
NOT_ABLATABLE = frozenset({"augment.shard_size", "augment.preview_images", "train.checkpoint_dir"})


class RangeSpec(_Section):
    """A numeric factor: ``tpe`` samples [low, high]; ``grid`` and ``one-at-a-time`` try ``values``.

    Integers when low, high (and step) are integers (e.g. ``train.fine_tune_layers``), else floats.
    """

    low: StrictInt | StrictFloat
    high: StrictInt | StrictFloat
    log: bool = False
    step: StrictInt | StrictFloat | None = Field(None, gt=0)
    values: list[StrictInt | StrictFloat] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log=true needs low > 0 and no step")
        outside = [v for v in self.values if not self.low <= v <= self.high]
        if outside:
            raise ValueError(f"values {outside} lie outside [{self.low}, {self.high}]")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)


class PrunerConfig(_Section):
    """Stops unpromising trials early, from their per-epoch validation metric."""

    kind: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = Field(2, ge=0, description="median: trials before any pruning")
    n_warmup_steps: int = Field(1, ge=0, description="median: epochs before a trial may be pruned")
    min_resource: int = Field(1, ge=1, description="hyperband: epochs every trial gets")
    reduction_factor: int = Field(3, ge=2, description="hyperband: 1/n of the trials go on per rung")


#: A factor: a list of values (categorical) or a mapping with low/high (a numeric range).
Factor = Annotated[
    Union[Annotated[list[AblationValue], Tag("values")], Annotated[RangeSpec, Tag("range")]],
    Discriminator(lambda v: "range" if isinstance(v, (dict, RangeSpec)) else "values"),
]


def _seed_factors() -> dict[str, Any]:
    """The seed project's ablation: each of these tried alone from the base config."""
    return {
        "augment.flip.enabled": [True, False],
        "train.optimizer": ["sgd", "adam"],
        "train.head_activation": ["sigmoid", "softmax"],
        "train.dropout": [0.2, 0.3],
        "train.backbone": ["smallcnn", "mobilenetv2"],
    }


def _flatten_space(tree: Any, prefix: str = "") -> Any:
    """Nested ``{train: {optimizer: [...]}}`` or dotted ``{train.optimizer: [...]}``: both, dotted."""
    if not isinstance(tree, dict):
        return tree
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "low" not in value and "high" not in value:
            flat.update(_flatten_space(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@functools.cache
def _param_paths() -> frozenset[str]:
    return frozenset(Params().flat())


def _check_ablatable(paths: Any) -> None:
    import difflib

    known = _param_paths()
    for path in paths:
        if path not in known:
            close = difflib.get_close_matches(path, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path!r} is not a parameter{hint}")
        if path in NOT_ABLATABLE or not path.startswith(ABLATABLE_PREFIXES):
            raise ValueError(
                f"{path!r} cannot be ablated: only seed, augment.*, train.* and evaluate.threshold "
                "change what a trial trains or measures"
            )


class AblationConfig(_Section):
    """``fakeface ablate``: an Optuna study over dotted param paths (see fakeface.ablation)."""

    sampler: Literal["one-at-a-time", "grid", "tpe"] = "one-at-a-time"
    search_space: dict[str, Factor] = Field(default_factory=_seed_factors)
    fixed: dict[str, AblationValue] = Field(default_factory=dict, description="overrides for every trial")
    n_trials: int | None = Field(None, ge=1, description="finished trials wanted; null = every configuration")
    objective: Literal["val_auc", "val_accuracy", "val_loss"] = "val_auc"
    pruner: PrunerConfig = PrunerConfig()
    storage: str = Field("sqlite:///ablation/optuna.db", min_length=1)
    study_name: str | None = Field(None, description="null: derived from the params and the data")
    workers: int = Field(1, ge=1, description="parallel worker processes on this machine")
    heartbeat_interval: int | None = Field(60, ge=1, description="s; a dead worker's trial is retried")
    max_retry: int = Field(2, ge=0, description="retries of a failed or orphaned trial")
    workdir: str = Field("checkpoints/ablation", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = dict(value)
            for key in ("search_space", "fixed"):
                if isinstance(value.get(key), dict):
                    value[key] = _flatten_space(value[key])
        return value

    @field_validator("search_space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("needs at least one factor")
        for path, spec in value.items():
            if isinstance(spec, list):
                if not spec:
                    raise ValueError(f"{path!r}: no values")
                if len({repr(v) for v in spec}) != len(spec):
                    raise ValueError(f"{path!r}: repeated values {spec}")
        _check_ablatable(value)
        return value

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_ablatable(value)
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> AblationConfig:
        both = sorted(set(self.search_space) & set(self.fixed))
        if both:
            raise ValueError(f"{', '.join(both)}: both fixed and searched")
        return self

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.objective == "val_loss" else "maximize"


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
    ablation: AblationConfig = AblationConfig()

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
