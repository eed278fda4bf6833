"""Parameters of ``fakeface ablate`` (``ablation``): an Optuna study over dotted param paths.

Which paths exist is checked where the whole tree is known (:class:`fakeface.config.Params`), so
this module does not need to import it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from fakeface.config.base import Section, refusing


#: A categorical factor's values keep their YAML types (true stays a bool, 0.2 a float).
AblationValue = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]

#: What an ablation may vary: the seed and what shapes training (see fakeface.ablation).
ABLATABLE_PREFIXES = ("seed", "augment.", "train.", "evaluate.threshold")
NOT_ABLATABLE = frozenset({"augment.shard_size", "augment.preview_images"})


class RangeSpec(Section):
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


class PrunerConfig(Section):
    """Stops unpromising trials early, from their per-epoch validation metric."""

    kind: Literal["none", "median", "hyperband"] = Field("none", description="none / median / hyperband")
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


def check_ablatable(paths: Any, known: frozenset[str]) -> None:
    """Refuse a dotted path that is no parameter, or one that cannot change what a trial learns."""
    import difflib

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


class AblationConfig(Section):
    """``fakeface ablate``: an Optuna study over dotted param paths (see fakeface.ablation)."""

    sampler: Literal["one-at-a-time", "grid", "tpe"] = Field(
        "one-at-a-time", description="one-at-a-time (each factor alone, the seed's tables) / grid / tpe"
    )
    search_space: dict[str, Factor] = Field(default_factory=_seed_factors)
    fixed: dict[str, AblationValue] = Field(
        default_factory=lambda: {"train.image_size": 64},
        description="overrides for every trial (the base included); the default fits the synthetic data",
    )
    n_trials: int | None = Field(None, ge=1, description="finished trials wanted; null = every configuration")
    objective: Literal["val_auc", "val_accuracy", "val_loss"] = Field(
        "val_auc", description="on the validation split (val_loss is minimised); the test split never chooses"
    )
    cv_folds: Annotated[int, refusing(1, "1 fold is no cross-validation: 0 (the validation split) or 2 and more")] = Field(
        0, ge=0, le=20, description="0: a trial is scored on the validation split; K >= 2: by the mean over K "
        "stratified, seeded folds of train + valid (K trainings a trial; for small data; the test split is never read)")
    pruner: PrunerConfig = PrunerConfig()
    study_name: str | None = Field(None, description="null: derived from the params and the data")
    workers: int = Field(1, ge=1, description="parallel worker processes on this machine")
    heartbeat_interval: int | None = Field(60, ge=1, description="s; a dead worker's trial is retried")
    max_retry: int = Field(2, ge=0, description="retries of a failed or orphaned trial")

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


