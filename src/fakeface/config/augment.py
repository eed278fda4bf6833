"""Parameters of the training-time augmentations (``augment``) and of shard packing.

This module is the light half of the augmentation registry: each augmentation is one parameter
class registered with :func:`register` (its name, its seed index, its defaults and constraints,
and a docstring saying what it does, which the README's table is rendered from). The TensorFlow
op that implements it is registered against the same name in :mod:`fakeface.data.augmentations`, and
:class:`AugmentConfig` is built from the registry, so neither can list an augmentation the other
lacks. Nothing here imports TensorFlow: validating ``params.yaml`` stays fast.

Adding an augmentation: a class below with ``@register("name", seed_index=<next free index>)``,
its op in :mod:`fakeface.data.augmentations` with ``@OPS.register("name")``, a ``test_<name>_...`` in
``tests/test_augmentations.py``, its line in ``params.yaml``'s ``augment:``, then ``make dvc-deps``
(the stages' params in ``dvc.yaml``) and the README table regenerated (the tests name each one
that is missing).

Where each runs: an augmentation whose TensorFlow ops all have GPU kernels may run inside the
training step (``train.augment_on: device``); one with ``host_only`` (a reason: which op has a CPU
kernel only) always runs in the CPU input pipeline, and so does every augmentation before it, so
the order (and every image a seed gives) is the same wherever they run
(:func:`fakeface.data.pipeline.plan_augmentations`). A test checks each ``host_only`` against the kernels
TensorFlow registers.

Order and seeds: augmentations are applied in registration order (the order of the classes
below). Each one draws from its own seed, ``stateless_split(image_seed, n)[seed_index]``, so
switching one on or off leaves the others' draws alone. A seed index is forever: a new
augmentation takes the next free one even when it is applied earlier, so a params file that
enabled only older ones draws exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import Field, create_model, model_validator

from fakeface.config.base import Section, Toggle
from fakeface.config.registry import Entry, Registry, markdown_table as _table, parameters

T = TypeVar("T", bound=type[Toggle])
C = TypeVar("C", bound=Toggle)


@dataclass(frozen=True, kw_only=True)
class AugmentationSpec(Entry):
    """One registered augmentation: name, parameter class (``enabled`` + the op's arguments) and
    the index of its seed in the per-image split (see the module docstring)."""

    seed_index: int
    #: Why it cannot run on a GPU (its op with a CPU kernel only); empty when it can.
    host_only: str = ""
    fixed: frozenset[str] = frozenset({"enabled", "probability"})


class Sometimes(Toggle):
    """An augmentation applied to a share of the images only (the rest pass untouched)."""

    probability: float = Field(
        1.0, gt=0, le=1, description="share of the images it is applied to (CNNDetection used 0.5 for blur and JPEG)"
    )


AUGMENTATIONS: Registry[AugmentationSpec] = Registry("augmentation")


def register(name: str, seed_index: int, host_only: str = "") -> Callable[[T], T]:
    """Class decorator: register ``name`` with the decorated parameter class (``host_only``: why
    it runs on the CPU only, see the module docstring)."""

    def decorator(config: T) -> T:
        taken = {spec.seed_index: spec.name for spec in AUGMENTATIONS}
        if seed_index in taken:
            raise ValueError(f"augmentation {name!r}: seed index {seed_index} is {taken[seed_index]!r}'s")
        AUGMENTATIONS.add(AugmentationSpec(name, config, seed_index=seed_index, host_only=host_only))
        return config

    return decorator


def list_augmentations() -> list[str]:
    """Registered augmentation names in the order they are applied (``augment.<name>`` params)."""
    return AUGMENTATIONS.names()


def get_augmentation(name: str) -> AugmentationSpec:
    return AUGMENTATIONS.get(name)


def seed_count() -> int:
    """How many seeds to split each image seed into: one per registered augmentation."""
    return len(AUGMENTATIONS)


def _in_order(config: C, low: str, high: str) -> C:
    """``config`` if its field ``low`` does not exceed ``high``: the bounds of a range it draws from."""
    if getattr(config, low) > getattr(config, high):
        raise ValueError(f"{low} ({getattr(config, low)}) must not exceed {high} ({getattr(config, high)})")
    return config


# --------------------------------------------------------------------------- the augmentations


@register("flip", seed_index=0)
class FlipConfig(Toggle):
    """Mirror left-right with probability 1/2."""

    enabled: bool = True


@register("rot90", seed_index=12)
class Rot90Config(Toggle):
    """Rotate by ``k`` quarter turns, ``k`` uniform in 0..3: a pixel move, exact, nothing resampled
    (an image that is not square turns by 0 or 2 quarters)."""


@register("crop", seed_index=1)
class CropConfig(Toggle):
    """Random crop of ``f`` of each side, ``f ~ U[min_fraction, 1]``, at a random place, resized
    back to the input size (aspect ratio kept)."""

    min_fraction: float = Field(0.8, gt=0, le=1)


@register("zoom", seed_index=2)
class ZoomConfig(Toggle):
    """Zoom in: a centred crop of ``1 - f`` of each side, ``f ~ U[0, max_fraction]``, resized back."""

    max_fraction: float = Field(0.1, gt=0, lt=1)


@register("rotate", seed_index=3)
class RotateConfig(Toggle):
    """Rotate about the centre by an angle ``~ U[-max_degrees, max_degrees]``, bilinear, edges
    reflected (no black corners a detector could learn as a cue)."""

    max_degrees: float = Field(10.0, gt=0, le=180)


@register("brightness", seed_index=4)
class BrightnessConfig(Toggle):
    """Add one offset ``~ U[-max_delta, max_delta] * 255`` to every pixel."""

    max_delta: float = Field(0.1, gt=0, le=1, description="fraction of the 0..255 range")


@register("contrast", seed_index=5)
class ContrastConfig(Toggle):
    """Scale each channel's deviation from its mean by a factor ``~ U[lower, upper]``."""

    lower: float = Field(0.9, gt=0)
    upper: float = Field(1.1, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ContrastConfig:
        return _in_order(self, "lower", "upper")


@register("color_jitter", seed_index=14)
class ColorJitterConfig(Toggle):
    """Colour jitter: brightness, contrast and saturation each scaled by a factor ``~ U[1 - x, 1 + x]``,
    the hue turned by ``~ U[-hue, hue]`` of the colour circle, in that order; pointwise, so the
    relations between neighbouring pixels (the traces a generator leaves) are only rescaled."""

    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    saturation: float = Field(0.1, ge=0, lt=1)
    hue: float = Field(0.05, ge=0, le=0.5, description="fraction of the colour circle")


@register("stretch", seed_index=6)
class StretchConfig(Toggle):
    """Anisotropic scale: a centred crop of ``fy`` of the height and ``fx`` of the width, each
    ``~ U[1 - max_fraction, 1]`` independently, resized back."""

    max_fraction: float = Field(0.1, gt=0, lt=1)


@register("channel_shift", seed_index=7)
class ChannelShiftConfig(Toggle):
    """Add an independent offset ``~ U[-max_delta, max_delta] * 255`` to each of R, G and B."""

    max_delta: float = Field(0.05, gt=0, le=1, description="fraction of the 0..255 range")


@register("sharpness", seed_index=8)
class SharpnessConfig(Toggle):
    """Unsharp mask: ``x + a * (x - gaussian_blur(x, sigma))``, ``a ~ U[0, max_amount]``."""

    max_amount: float = Field(1.0, gt=0, le=10)
    sigma: float = Field(1.0, gt=0, le=5, description="of the blur the mask subtracts, pixels")


@register("blur", seed_index=9)
class BlurConfig(Sometimes):
    """Gaussian blur with a standard deviation ``~ U[0, max_sigma]`` pixels, edges mirrored."""

    max_sigma: float = Field(1.0, gt=0, le=10)


@register("downscale", seed_index=10,
          host_only="the antialiased resize (ScaleAndTranslate) has a CPU kernel only")
class DownscaleConfig(Sometimes):
    """Resize down to ``f`` of each side, ``f ~ U[min_factor, 1]`` (antialiased), then back up
    (bilinear)."""

    min_factor: float = Field(0.5, gt=0, lt=1)


# After the pixel changes: as on the web, an image is resized and then re-compressed.
@register("jpeg", seed_index=11, host_only="JPEG coding (EncodeJpeg, DecodeJpeg) has CPU kernels only")
class JpegConfig(Sometimes):
    """JPEG re-compression at a quality drawn uniformly from the integers ``min_quality..max_quality``."""

    min_quality: int = Field(60, ge=1, le=100)
    max_quality: int = Field(95, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> JpegConfig:
        return _in_order(self, "min_quality", "max_quality")


# After everything that changes pixels: a hidden patch, as the SAFE detector trains with, makes
# the network look at the whole face instead of one telltale region.
@register("mask", seed_index=13)
class MaskConfig(Sometimes):
    """Random patch masking: a square of ``f`` of the side, ``f ~ U[0, max_fraction]``, at a random
    place, set to black."""

    max_fraction: float = Field(0.25, gt=0, le=1)


# --------------------------------------------------------------------------- the section


if sorted(spec.seed_index for spec in AUGMENTATIONS) != list(range(len(AUGMENTATIONS))):
    # A gap would leave a seed unused and make seed_count() wrong; caught at import.
    raise ValueError("augmentation seed indices must be 0..n-1, each used once")

#: Names in the order they are applied (kept for callers of the pre-registry constant).
AUGMENTATION_ORDER: tuple[str, ...] = tuple(list_augmentations())


class AugmentSection(Section):
    """The ``augment`` keys that are not augmentations; :class:`AugmentConfig` adds one field per
    registered augmentation (its parameter class, with its defaults)."""

    shard_size: int = Field(1000, ge=1, description="images per TFRecord shard")
    preview_images: int = Field(4, ge=1, le=16, description="training images (rows) in the preview grid")

    def enabled(self) -> list[str]:
        """Names of the switched-on augmentations, in the order they are applied."""
        return [name for name in list_augmentations() if getattr(self, name).enabled]


AugmentConfig = create_model(  # type: ignore[call-overload]
    "AugmentConfig",
    __base__=AugmentSection,
    __module__=__name__,
    __doc__="The ``augment`` section: shard packing and one entry per registered augmentation.",
    **{spec.name: (spec.config, spec.config()) for spec in AUGMENTATIONS},
)


def markdown_table() -> str:
    """The registered augmentations as a markdown table (README.md holds a copy; a test compares)."""
    rows = [
        (str(i), f"`augment.{spec.name}`", "; ".join(parameters(spec.config)), spec.doc,
         f"no: {spec.host_only}" if spec.host_only else "yes")
        for i, spec in enumerate(AUGMENTATIONS, start=1)
    ]
    return _table(("order", "key", "parameters (default, allowed)", "what it does", "GPU kernel"), rows)

