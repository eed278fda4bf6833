"""Parameters of the robustness checks (``evaluate.robustness``): the perturbation registry's light half.

Each kind of perturbation is one parameter class registered with :func:`register`: its ``kind``
(the ``Literal`` of its ``kind`` field, which is also the discriminator of ``params.yaml``
entries), its defaults and constraints, and a docstring saying what it does (the README's table
is rendered from it). The numpy function that applies it is registered against the same kind in
:mod:`fakeface.analysis.robustness`. The discriminated union :data:`Perturbation` that
``evaluate.robustness`` validates against, and the error listing the kinds, are built from the
registry, so a new kind is one class here plus its function (and its test). No TensorFlow, PIL or
numpy is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, Union, get_args

from pydantic import Field

from fakeface.config.base import Section, refusing
from fakeface.config.registry import Entry, Registry, parameters, spoken_list
from fakeface.config.registry import markdown_table as _table

T = TypeVar("T", bound=type["PerturbationConfig"])


@dataclass(frozen=True)
class PerturbationSpec(Entry):
    """One registered kind: its parameter class; ``kind`` and ``enabled`` are not passed to its
    function, every other field is, by name."""

    fixed: frozenset[str] = field(default=frozenset({"enabled", "kind"}))


PERTURBATIONS: Registry[PerturbationSpec] = Registry("perturbation")


class PerturbationConfig(Section):
    """Base of every perturbation: applied to the original decoded test images (see
    :mod:`fakeface.analysis.robustness`), and switched off with ``enabled: false``."""

    enabled: bool = True


def register(config: T) -> T:
    """Class decorator: register a perturbation under the value of its ``kind: Literal[...]``."""
    kinds = get_args(config.model_fields["kind"].annotation) if "kind" in config.model_fields else ()
    if len(kinds) != 1:
        raise TypeError(f"{config.__name__} needs a field kind: Literal['<its kind>']")
    PERTURBATIONS.add(PerturbationSpec(kinds[0], config))
    return config


def list_perturbations() -> list[str]:
    """Registered kinds, in registration order."""
    return PERTURBATIONS.names()


def get_perturbation(kind: str) -> PerturbationSpec:
    return PERTURBATIONS.get(kind)


# --------------------------------------------------------------------------- the kinds


@register
class JpegPerturbation(PerturbationConfig):
    """Re-encode as JPEG at ``quality`` (PIL, 4:2:0 chroma), decode again."""

    kind: Literal["jpeg"]
    quality: int = Field(75, ge=1, le=100)


@register
class BlurPerturbation(PerturbationConfig):
    """Gaussian blur with standard deviation ``sigma`` pixels of the original image (PIL)."""

    kind: Literal["blur"]
    sigma: float = Field(1.0, gt=0, le=20)


@register
class ScalePerturbation(PerturbationConfig):
    """Resize by ``factor`` (< 1 down, > 1 up) and back to the original size, bilinear + antialias:
    what survives a round trip through a smaller (or larger) copy."""

    kind: Literal["scale"]
    factor: Annotated[float, refusing(1, "factor 1 leaves the image unchanged; use < 1 (down) or > 1 (up)")] = Field(
        0.5, gt=0.05, le=8)


@register
class CropPerturbation(PerturbationConfig):
    """Central crop keeping ``fraction`` of each side, resized back to the original size."""

    kind: Literal["crop"]
    fraction: float = Field(0.8, gt=0.05, lt=1)


# --------------------------------------------------------------------------- built from the registry


#: One ``evaluate.robustness`` entry: the registered class its ``kind`` names.
Perturbation = Annotated[
    Union[tuple(spec.config for spec in PERTURBATIONS)],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="kind"),
]


def default_robustness() -> dict[str, Any]:
    """The checks ``evaluate.robustness`` runs by default (``params.yaml`` spells them out)."""
    return {
        "jpeg_q95": JpegPerturbation(kind="jpeg", quality=95),
        "jpeg_q75": JpegPerturbation(kind="jpeg", quality=75),
        "jpeg_q50": JpegPerturbation(kind="jpeg", quality=50),
        "blur_sigma1": BlurPerturbation(kind="blur", sigma=1.0),
        "downscale_half": ScalePerturbation(kind="scale", factor=0.5),
        "upscale_2x": ScalePerturbation(kind="scale", factor=2.0),
        "crop_80": CropPerturbation(kind="crop", fraction=0.8),
    }


def check_kinds(entries: Any) -> Any:
    """Before validation: an entry without ``kind`` fails naming it and the registered kinds
    (pydantic's own message for a missing discriminator names neither)."""
    if isinstance(entries, Mapping):
        for name, spec in entries.items():
            if isinstance(spec, Mapping) and "kind" not in spec:
                raise ValueError(f"perturbation {name!r} needs a kind: {spoken_list(list_perturbations())}")
    return entries


def describe(spec: PerturbationConfig) -> str:
    """``quality=50``, ``sigma=1``...: the settings of an entry, for tables."""
    values = get_perturbation(spec.kind).kwargs(spec)  # type: ignore[attr-defined]
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def markdown_table() -> str:
    """The registered kinds as a markdown table (README.md holds a copy; a test compares)."""
    defaults: dict[str, list[str]] = {}
    for name, spec in default_robustness().items():
        defaults.setdefault(spec.kind, []).append(f"`{name}` ({describe(spec)})")
    rows = [
        (f"`{spec.name}`", "; ".join(parameters(spec.config, exclude=("kind",))), spec.doc,
         ", ".join(defaults.get(spec.name, [])) or "none")
        for spec in PERTURBATIONS
    ]
    return _table(("kind", "parameters (default, allowed)", "what it does", "in the default set"), rows)
