"""On-the-fly, seeded image augmentations in TensorFlow.

Why on the fly: the shards hold each image once, as its original bytes (see :mod:`fakeface.data.shards`);
materialising augmented copies would multiply the data on disk and freeze one draw per image, while
a fresh draw per epoch is what makes augmentation regularise.

Why stateless: every random op takes an explicit seed tensor, so the same image and seed give
bit-identical output eagerly, inside ``tf.data.Dataset.map`` (graph mode) and across parallel map
calls, whatever the thread scheduling. Stateful ``tf.random`` ops would not.

Each augmentation gets its own seed derived from the image's seed by its registered seed index
(see :mod:`fakeface.config.augment`), not by its position among the *enabled* ones, so switching
one augmentation on or off does not change the draws of the others: an ablation changes one thing
only.

The registry: names, parameter classes, order, seed indices and docs live in
:mod:`fakeface.config.augment` (no TensorFlow there); each op below is registered against its name
with ``@OPS.register(name)``, which checks that it takes ``(image, seed, <its config's fields>)``.
:func:`augment_image` walks the registry, so adding an augmentation adds an op here and nothing
else in this module.

The augmentations: geometric (flip, quarter turns, crop, zoom, rotate, stretch), colour
(brightness, contrast, colour jitter, per-channel shift), kernel (unsharp-mask sharpness, Gaussian
blur), the degradations images meet online (down- then up-scaling, JPEG re-compression) and patch
masking.

Augmentations act on the image only; labels are never touched (a flipped, cropped or brighter fake
is still fake). All keep the shape, return float32 and clip to 0..255.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from fakeface.config.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    get_augmentation,
    list_augmentations,
    seed_count,
)
from fakeface.config.registry import Implementations

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
Op = Callable[..., tf.Tensor]

#: The op of each registered augmentation, called as ``op(image, seed, **its parameters)``.
OPS: Implementations[Op] = Implementations(AUGMENTATIONS, leading=("image", "seed"))

#: How out-of-image pixels are filled after a rotation. REFLECT keeps image statistics (no black
#: corners a detector could learn as a cue for "augmented").
ROTATE_FILL_MODE = "REFLECT"


def augmentation_seeds(seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """One independent ``[2]`` seed per augmentation name: row ``seed_index`` of the image seed's
    split into :func:`~fakeface.config.augment.seed_count` (a split's first rows do not depend on
    how many there are, so appending an augmentation leaves the older ones' seeds as they were)."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    split = tf.random.experimental.stateless_split(seed, num=seed_count())
    return {spec.name: split[spec.seed_index] for spec in AUGMENTATIONS}


def _sub_seeds(seed: tf.Tensor, num: int) -> tf.Tensor:
    return tf.random.experimental.stateless_split(seed, num=num)


def _resize_back(crop: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Bilinear resize of a crop to ``size`` (``[H, W]``), the same resampling the readers use."""
    return tf.image.resize(crop, size, method="bilinear")


def _side(fraction: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """``round(fraction * length)`` pixels, at least 1 and at most ``length``."""
    pixels = tf.cast(tf.round(fraction * tf.cast(length, tf.float32)), tf.int32)
    return tf.clip_by_value(pixels, 1, length)


def _clip(image: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(image, 0.0, 255.0)


@OPS.register("flip")
def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirror left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed)


@OPS.register("rot90")
def random_rot90(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rotate by ``k`` quarter turns, ``k ~ U{0, 1, 2, 3}``; an image that is not square turns by
    0 or 2 quarters only, so its shape is kept."""
    turns = tf.random.stateless_uniform([], seed, minval=0, maxval=4, dtype=tf.int32)
    square = tf.equal(tf.shape(image)[0], tf.shape(image)[1])
    turns = tf.where(square, turns, 2 * (turns % 2))
    rotated = tf.image.rot90(image, turns)
    rotated.set_shape(image.shape)  # static shape only: no op (EnsureShape has no GPU kernel)
    return rotated


@OPS.register("crop")
def random_crop(image: tf.Tensor, seed: tf.Tensor, min_fraction: float) -> tf.Tensor:
    """A crop of ``f`` of each side, ``f ~ U[min_fraction, 1]``, at a random place, resized back.

    The same fraction for height and width keeps the aspect ratio (faces are not squashed).
    """
    s = _sub_seeds(seed, 2)
    shape = tf.shape(image)
    fraction = tf.random.stateless_uniform([], s[0], minval=min_fraction, maxval=1.0)
    size = tf.stack([_side(fraction, shape[0]), _side(fraction, shape[1]), shape[2]])
    crop = tf.image.stateless_random_crop(image, size, s[1])
    return _resize_back(crop, shape[:2])


@OPS.register("zoom")
def random_zoom(image: tf.Tensor, seed: tf.Tensor, max_fraction: float) -> tf.Tensor:
    """Zoom in: a centred crop of ``1 - f`` of each side, ``f ~ U[0, max_fraction]``, resized back."""
    shape = tf.shape(image)
    f = tf.random.stateless_uniform([], seed, minval=0.0, maxval=max_fraction)
    h, w = _side(1.0 - f, shape[0]), _side(1.0 - f, shape[1])
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    crop = image[top : top + h, left : left + w]
    return _resize_back(crop, shape[:2])


def rotate(image: tf.Tensor, angle: tf.Tensor, fill_mode: str = ROTATE_FILL_MODE) -> tf.Tensor:
    """Rotate by ``angle`` radians about the image centre (counter-clockwise as displayed).

    ``ImageProjectiveTransformV3`` maps each *output* pixel to the input point it samples from, so
    the matrix below is the inverse rotation, centred on ``((w - 1) / 2, (h - 1) / 2)``.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # Output (x, y) samples input (cos*x - sin*y + tx, sin*x + cos*y + ty): the inverse of a
    # rotation by ``angle`` that is counter-clockwise on screen (y points down).
    tx = cx - (cos * cx - sin * cy)
    ty = cy - (sin * cx + cos * cy)
    transform = tf.stack([cos, -sin, tx, sin, cos, ty, 0.0, 0.0])[tf.newaxis]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform,
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return out[0]


@OPS.register("rotate")
def random_rotate(image: tf.Tensor, seed: tf.Tensor, max_degrees: float) -> tf.Tensor:
    """Rotate by an angle drawn uniformly in ``[-max_degrees, max_degrees]``."""
    limit = max_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([], seed, minval=-limit, maxval=limit)
    return rotate(image, angle)


@OPS.register("brightness")
def random_brightness(image: tf.Tensor, seed: tf.Tensor, max_delta: float) -> tf.Tensor:
    """Add one delta ``~ U[-max_delta, max_delta] * 255`` to every pixel (``max_delta`` is a fraction)."""
    return tf.image.stateless_random_brightness(image, max_delta * 255.0, seed)


@OPS.register("contrast")
def random_contrast(image: tf.Tensor, seed: tf.Tensor, lower: float, upper: float) -> tf.Tensor:
    """Scale each channel's deviation from its mean by a factor ``~ U[lower, upper]``."""
    if upper > lower:
        return tf.image.stateless_random_contrast(image, lower, upper, seed)
    return tf.image.adjust_contrast(image, lower)  # lower == upper: a fixed factor, nothing to draw


@OPS.register("color_jitter")
def random_color_jitter(
    image: tf.Tensor, seed: tf.Tensor, brightness: float, contrast: float, saturation: float, hue: float
) -> tf.Tensor:
    """Scale brightness, contrast (about each channel's mean) and saturation by factors ``~ U[1 - x, 1 + x]``
    and turn the hue by ``~ U[-hue, hue]``, clipping to 0..255 after each."""
    s = _sub_seeds(seed, 2)
    factors = tf.random.stateless_uniform([3], s[0], minval=-1.0, maxval=1.0) * [brightness, contrast, saturation] + 1.0
    delta = tf.random.stateless_uniform([], s[1], minval=-hue, maxval=hue)
    x = _clip(image * factors[0])
    x = _clip(tf.image.adjust_contrast(x, factors[1]))
    x = tf.image.adjust_saturation(x / 255.0, factors[2])  # the HSV ops work on 0..1
    return tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 1.0), delta) * 255.0


@OPS.register("stretch")
def random_stretch(image: tf.Tensor, seed: tf.Tensor, max_fraction: float) -> tf.Tensor:
    """Anisotropic scale: a centred crop of ``fy`` of the height and ``fx`` of the width, each
    ``~ U[1 - max_fraction, 1]`` independently, resized back (height stretched by ``1 / fy``,
    width by ``1 / fx``)."""
    shape = tf.shape(image)
    f = tf.random.stateless_uniform([2], seed, minval=1.0 - max_fraction, maxval=1.0)
    h, w = _side(f[0], shape[0]), _side(f[1], shape[1])
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    crop = image[top : top + h, left : left + w]
    return _resize_back(crop, shape[:2])


@OPS.register("channel_shift")
def random_channel_shift(image: tf.Tensor, seed: tf.Tensor, max_delta: float) -> tf.Tensor:
    """Add an independent offset ``~ U[-max_delta, max_delta] * 255`` to each channel."""
    limit = max_delta * 255.0
    offsets = tf.random.stateless_uniform([3], seed, minval=-limit, maxval=limit)
    return image + offsets


def _gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """A normalised 1-D Gaussian of ``2 * radius + 1`` taps (a delta as ``sigma`` goes to 0)."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    return kernel / tf.reduce_sum(kernel)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """Separable Gaussian blur of ``[H, W, C]``; edges mirrored (no dark border).

    ``radius`` is static (a Python int, from the largest sigma allowed) so the traced graph has
    fixed-size kernels; ``sigma`` may be a drawn tensor.
    """
    if radius < 1:
        return image
    kernel = _gaussian_kernel(sigma, radius)
    channels = tf.shape(image)[-1]
    x = image[tf.newaxis]
    # SYMMETRIC needs the pad to be at most the side; clamp for tiny images.
    pad_h = tf.minimum(radius, tf.shape(image)[0])
    pad_w = tf.minimum(radius, tf.shape(image)[1])
    x = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="SYMMETRIC")
    k_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    k_w = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    x = tf.nn.depthwise_conv2d(x, k_h, strides=[1, 1, 1, 1], padding="VALID")
    x = tf.nn.depthwise_conv2d(x, k_w, strides=[1, 1, 1, 1], padding="VALID")
    # When the pad had to be clamped, VALID output is smaller: crop/resize keeps [H, W].
    out = x[0]
    return tf.image.resize_with_crop_or_pad(out, tf.shape(image)[0], tf.shape(image)[1])


def _radius(max_sigma: float) -> int:
    return int(math.ceil(3.0 * max_sigma))


@OPS.register("blur")
def random_blur(image: tf.Tensor, seed: tf.Tensor, max_sigma: float) -> tf.Tensor:
    """Gaussian blur with ``sigma ~ U[0, max_sigma]`` pixels."""
    sigma = tf.random.stateless_uniform([], seed, minval=0.0, maxval=max_sigma)
    return gaussian_blur(image, sigma, _radius(max_sigma))


@OPS.register("sharpness")
def random_sharpness(image: tf.Tensor, seed: tf.Tensor, max_amount: float, sigma: float) -> tf.Tensor:
    """Unsharp mask: ``image + a * (image - blur(image))`` with ``a ~ U[0, max_amount]``."""
    amount = tf.random.stateless_uniform([], seed, minval=0.0, maxval=max_amount)
    blurred = gaussian_blur(image, tf.constant(sigma, tf.float32), _radius(sigma))
    return image + amount * (image - blurred)


@OPS.register("downscale")
def random_downscale(image: tf.Tensor, seed: tf.Tensor, min_factor: float) -> tf.Tensor:
    """Resize to ``f`` of each side, ``f ~ U[min_factor, 1]`` (bilinear, antialiased), and back."""
    shape = tf.shape(image)
    f = tf.random.stateless_uniform([], seed, minval=min_factor, maxval=1.0)
    small = tf.image.resize(
        image, tf.stack([_side(f, shape[0]), _side(f, shape[1])]), method="bilinear", antialias=True
    )
    return _resize_back(small, shape[:2])


@OPS.register("jpeg")
def random_jpeg(image: tf.Tensor, seed: tf.Tensor, min_quality: int, max_quality: int) -> tf.Tensor:
    """Encode as JPEG at a quality drawn from the integers ``min_quality..max_quality``, decode.

    ``tf.image.adjust_jpeg_quality`` takes no seed; the quality is drawn statelessly here and
    passed in, so the output is still a function of the seed (JPEG coding itself is deterministic).
    """
    quality = tf.random.stateless_uniform(
        [], seed, minval=min_quality, maxval=max_quality + 1, dtype=tf.int32
    )
    pixels = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.cast(tf.image.adjust_jpeg_quality(pixels, quality), tf.float32)


@OPS.register("mask")
def random_mask(image: tf.Tensor, seed: tf.Tensor, max_fraction: float) -> tf.Tensor:
    """A square of ``f`` of the side, ``f ~ U[0, max_fraction]``, at a random place, set to 0."""
    s = _sub_seeds(seed, 3)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    fraction = tf.random.stateless_uniform([], s[0], minval=0.0, maxval=max_fraction)
    side = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32))
    top = tf.random.stateless_uniform([], s[1], minval=0, maxval=height - side + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], s[2], minval=0, maxval=width - side + 1, dtype=tf.int32)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return tf.where(inside[:, :, None], tf.zeros_like(image), image)


OPS.check_complete()  # every registered augmentation has its op, or this module fails to import


def _apply(name: str, image: tf.Tensor, seed: tf.Tensor, section) -> tf.Tensor:
    """One augmentation with its own seed; one with ``probability`` below 1 applies to that share
    of the images, decided by a coin drawn from a seed folded out of its own (so the op's draw
    itself, and every other augmentation's, is the same as at probability 1)."""
    spec = get_augmentation(name)

    def apply() -> tf.Tensor:
        return _clip(OPS.get(name)(image, seed, **spec.kwargs(section)))

    probability = getattr(section, "probability", 1.0)
    if probability >= 1.0:
        return apply()
    coin = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1)) < probability
    return tf.cond(coin, apply, lambda: image)


def augment_image(image: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Apply the enabled augmentations of ``cfg`` in registry order.

    ``image`` is float32 ``[H, W, 3]`` in 0..255, ``seed`` an int32/int64 tensor of shape ``[2]``.
    Same image and seed give identical output; with nothing enabled the image is returned as is.
    Each step clips to 0..255, so e.g. a brightness push past white is not undone by the contrast
    step into values no real pixel had.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    enabled = cfg.enabled()
    if not enabled:
        return image
    static_shape = image.shape  # e.g. [224, 224, 3] from decode_image; resizes lose it
    seeds = augmentation_seeds(seed)
    for name in enabled:
        image = _apply(name, image, seeds[name], getattr(cfg, name))
    # Keep the static shape for the traced graph, so batches keep a known [.., H, W, 3] spec.
    image.set_shape(static_shape)
    return image


def build_augmenter(cfg: AugmentConfig) -> Augmenter:
    """``(image, seed) -> image`` for ``cfg``; the identity when nothing is enabled.

    The enabled list is resolved here, in Python, so the traced ``tf.data`` graph holds only the
    ops that run.
    """
    if not cfg.enabled():
        return lambda image, seed: tf.convert_to_tensor(image, tf.float32)

    def augmenter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return augment_image(image, seed, cfg)

    return augmenter


def only(cfg: AugmentConfig, name: str) -> AugmentConfig:
    """A copy of ``cfg`` with just ``name`` enabled (its parameters kept): for previews and tests."""
    get_augmentation(name)  # an unknown name fails, listing the known ones
    update = {
        other: getattr(cfg, other).model_copy(update={"enabled": other == name})
        for other in list_augmentations()
    }
    return cfg.model_copy(update=update)

