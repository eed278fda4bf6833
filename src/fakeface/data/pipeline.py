"""The training input pipeline: shards -> decoded, resized, augmented batches, at the decode limit.

Reads the augment stage's TFRecord shards (a few large files instead of 140k small ones). A GPU
node has few CPU cores for the images a GPU can take, so the pipeline does as little per image as
it can beyond the JPEG decode that no pipeline avoids:

* one fused map per image: parse, decode to **uint8** (resized only when the image is not already
  the input size), and the augmentations that need no arithmetic (flip) on the uint8 pixels;
* batch, then convert the whole batch to float32 at once (per image it moved four times the bytes
  through every later step); augmentations that compute (crop, blur, JPEG, ...) run per image in
  float32 on the CPU, or on the device inside the training step (``train.augment_on``);
* an optional cache of the decoded uint8 images (``train.cache``: ``memory`` or ``disk``), so
  epochs after the first skip decoding altogether.

Deterministic for a given seed: the shuffle is seeded, and each image's augmentation seed comes
from a seeded random stream zipped with the examples, so the same seed gives the same batches in
every run (and a different draw per epoch). The shuffle permutes the same number of elements with
the same buffer and seed whether it runs on the encoded records (no cache) or on the cached
decoded images, so caching changes the speed, not the batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from fakeface import FakefaceError
from fakeface.data.augmentations import OPS, augmentation_seeds, build_augmenter
from fakeface.config import AugmentConfig
from fakeface.config.augment import get_augmentation
from fakeface.data.decode import decode_uint8
from fakeface.data.shards import INDEX_NAME, parse_example, read_index, shard_files

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
#: Augmentations that only move pixels: exact on uint8, so they run before the float conversion.
UINT8_AUGMENTATIONS = frozenset({"flip", "rot90"})
#: The memory cache may take at most this share of the memory available when training starts.
MEMORY_CACHE_SHARE = 0.5


class CacheError(FakefaceError):
    """A cache that cannot be used as asked (it would not fit in memory)."""


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


@dataclass(frozen=True)
class AugmentationPlan:
    """Where each enabled augmentation of a training run is computed.

    ``uint8``: pixel moves, exact on uint8, in the per-image decode map; ``host``: the rest, per
    image in float32 in the CPU input pipeline; ``device``: per image in float32 inside the
    training step, on the training device. Each part keeps every augmentation's own seed and the
    parts run in registry order, so the plan changes where an image is computed, never the image.
    """

    uint8: AugmentConfig | None = None
    host: AugmentConfig | None = None
    device: AugmentConfig | None = None
    #: Each enabled augmentation's place: ``input-uint8``, ``input`` or ``step``.
    where: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """``name:place`` pairs in the order they are applied (``none`` when nothing is enabled)."""
        return " ".join(f"{name}:{place}" for name, place in self.where.items()) or "none"


def _only(augment: AugmentConfig, names: list[str]) -> AugmentConfig | None:
    """``augment`` with just ``names`` enabled (None when empty)."""
    if not names:
        return None
    update = {name: getattr(augment, name).model_copy(update={"enabled": name in names})
              for name in augment.enabled()}
    return augment.model_copy(update=update)


def plan_augmentations(augment: AugmentConfig | None, on_device: bool = False) -> AugmentationPlan:
    """Split the enabled augmentations between the input pipeline and the training step.

    On the device (``on_device``) the step takes the longest tail of the float augmentations that
    all have GPU kernels; everything up to the last host-only one (JPEG coding, the antialiased
    resize: :attr:`~fakeface.config.augment.AugmentationSpec.host_only`) stays in the input
    pipeline, where it runs in parallel on the CPU cores, since moving it behind a device
    augmentation would change the order and so the images.
    """
    if augment is None or not augment.enabled():
        return AugmentationPlan()
    enabled = augment.enabled()
    pixel_moves = [name for name in enabled if name in UINT8_AUGMENTATIONS]
    computing = [name for name in enabled if name not in UINT8_AUGMENTATIONS]
    split = len(computing)
    if on_device:
        host_only = [i for i, name in enumerate(computing) if get_augmentation(name).host_only]
        split = host_only[-1] + 1 if host_only else 0
    host, device = computing[:split], computing[split:]
    where = {name: "input-uint8" if name in pixel_moves else "input" if name in host else "step"
             for name in enabled}
    return AugmentationPlan(_only(augment, pixel_moves), _only(augment, host), _only(augment, device), where)


def cache_key(shards_dir: Path, splits: Sequence[str], image_size: int) -> str:
    """What identifies a decoded cache: the shards' digests, the splits and the image size."""
    index = read_index(shards_dir)
    payload = {"digests": [index[s].get("digest") for s in splits], "splits": list(splits), "size": image_size}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def decoded_bytes(shards_dir: Path, splits: Sequence[str], image_size: int) -> int:
    """Bytes the decoded uint8 images of ``splits`` take (what a cache holds)."""
    index = read_index(shards_dir)
    return sum(int(index[s]["n"]) for s in splits) * image_size * image_size * 3


def check_memory_cache(shards_dir: Path, splits: Sequence[str], image_size: int) -> int:
    """Refuse a memory cache that would not fit; returns its size in bytes (logged before use)."""
    import psutil

    need = decoded_bytes(shards_dir, splits, image_size)
    available = psutil.virtual_memory().available
    if need > MEMORY_CACHE_SHARE * available:
        raise CacheError(
            f"train.cache=memory needs {need / 2**30:.1f} GiB for {image_size} px images, more than "
            f"{MEMORY_CACHE_SHARE:.0%} of the {available / 2**30:.1f} GiB available: use train.cache=disk"
        )
    return need


#: Folded into an image's seed for its training window, so the window and the augmentations draw
#: from different streams.
WINDOW_SEED = 104_729


def random_window(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """A random ``size``-pixel square of ``image``, cut (never resampled) and placed back at the
    centre of an image of the original size, zeros around it: what the model's centre crop
    (``train.crop_size``) then cuts out is exactly that window. Deterministic for ``seed``."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    cut = tf.image.stateless_random_crop(image, [size, size, 3], seed=seed)
    return tf.image.pad_to_bounding_box(cut, (height - size) // 2, (width - size) // 2, height, width)


def make_dataset(
    shards_dir: str | Path,
    split: str | Sequence[str],
    image_size: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    shuffle_buffer: int = 2048,
    one_hot: bool = False,
    with_ids: bool = False,
    cache: str = "none",
    cache_dir: str | Path | None = None,
    augment_on_device: bool = False,
    window: int | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (``(images, labels, paths)`` with ``with_ids``).

    ``images`` are float32 RGB in 0..255 (the model scales them itself); ``labels`` are float32
    ``[batch, 1]`` for a sigmoid head, or one-hot ``[batch, 2]`` for a softmax head. Shuffling and
    augmentation happen only when ``training`` is true; evaluation reads in manifest order.
    ``split`` may name several splits (``("train", "valid")``): their shards are read together.

    ``cache``: ``none`` (decode every epoch), ``memory`` (refused when it would not fit) or
    ``disk`` (files under ``cache_dir``, named by the data, splits and size, so a change of either
    never reads a stale cache). ``augment_on_device``: the augmentations that
    :func:`plan_augmentations` gives the training step are not applied here; the batches then
    carry each image's ``[2]`` seed as ``((images, seeds), labels)`` for the step to apply them
    (:class:`fakeface.model.train_step.AugmentingTrainer`). ``window``: in training, each image is
    first cut to a random ``window``-pixel square, re-centred (:func:`random_window`), before any
    augmentation.
    """
    shards_dir = Path(shards_dir)
    splits = [split] if isinstance(split, str) else list(split)
    files = [f for name in splits for f in shard_files(shards_dir, name)]
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 4) or None)
    plan = plan_augmentations(augment if training else None, augment_on_device)
    uint8_part, float_part = plan.uint8, plan.host
    with_seeds = plan.device is not None
    cached = cache != "none"

    def decode(serialized: tf.Tensor):
        example = parse_example(serialized)
        return decode_uint8(example["image"], image_size), example["label"], example["path"]

    if cached:
        dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)
        dataset = dataset.cache(_cache_file(shards_dir, splits, image_size, cache, cache_dir))
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)

    if training and (uint8_part or float_part or with_seeds or window):
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))
        float_augmenter = build_augmenter(float_part) if float_part is not None else None

        def augment_one(item, pair):
            image, label, path = item
            if window:
                image = random_window(image, window, tf.random.experimental.stateless_fold_in(pair, WINDOW_SEED))
            if uint8_part is not None:  # pixel moves, exact on uint8: no float conversion per image
                seeds = augmentation_seeds(pair)
                for name in uint8_part.enabled():
                    image = OPS.get(name)(image, seeds[name])
            if float_augmenter is not None:
                image = float_augmenter(tf.cast(image, tf.float32), pair)
            return image, label, path, pair

        dataset = dataset.map(augment_one, num_parallel_calls=AUTOTUNE)
    else:
        def no_seed(image, label, path):
            return image, label, path, tf.zeros([2], tf.int64)

        dataset = dataset.map(no_seed)

    def to_batch(images, labels, paths, pairs):
        images = tf.cast(images, tf.float32)  # one conversion per batch (a no-op after float augmentations)
        targets = tf.one_hot(labels, 2, dtype=tf.float32) if one_hot else tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
        if with_ids:
            return images, targets, paths
        # The seeds ride with the images (the model's input): a third element would be taken for
        # sample weights by Keras (under a distribution strategy it builds the loss from them).
        return ((images, pairs), targets) if with_seeds else (images, targets)

    dataset = dataset.batch(batch_size).map(to_batch, num_parallel_calls=AUTOTUNE)
    # TFRecord files do not tell tf.data how many records they hold; the index does. Knowing the
    # number of batches lets Keras size its epochs (a progress bar with an end) instead of running
    # into the end of the data and warning "Your input ran out of data" every epoch.
    if (shards_dir / INDEX_NAME).is_file():
        index = read_index(shards_dir)
        images = sum(int(index[name]["n"]) for name in splits)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-images // batch_size)))
    return dataset.prefetch(AUTOTUNE).with_options(_options())


def _cache_file(shards_dir: Path, splits: Sequence[str], image_size: int, cache: str, cache_dir: str | Path | None) -> str:
    need = decoded_bytes(shards_dir, splits, image_size)
    if cache == "memory":
        check_memory_cache(shards_dir, splits, image_size)
        log.info("caching %.2f GiB of decoded %d px images in memory", need / 2**30, image_size)
        return ""
    if cache != "disk":
        raise CacheError(f"train.cache must be none, memory or disk, got {cache!r}")
    folder = Path(cache_dir or ".cache") / f"decoded-{cache_key(shards_dir, splits, image_size)}"
    folder.mkdir(parents=True, exist_ok=True)
    log.info("caching %.2f GiB of decoded %d px images on disk in %s", need / 2**30, image_size, folder)
    return str(folder / "images")
