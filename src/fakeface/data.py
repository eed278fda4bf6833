"""The training input pipeline: shards -> decoded, resized, augmented batches.

Reads the augment stage's TFRecord shards (a few large files instead of 140k small ones), decodes
and resizes in parallel, applies the configured augmentations on the fly with stateless ops, and
prefetches. Everything is deterministic for a given seed: the shuffle is seeded, and each image's
augmentation seed comes from a seeded random stream that is zipped with the examples, so the same
seed gives the same batches in every epoch of every run (and a different draw per epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from fakeface.augmentations import build_augmenter
from fakeface.config import AugmentConfig
from fakeface.shards import INDEX_NAME, decode_image, parse_example, read_index, shard_files

AUTOTUNE = tf.data.AUTOTUNE


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


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
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (or ``(images, labels, paths)`` with ``with_ids``).

    ``images`` are float32 RGB in 0..255 (the model scales them itself); ``labels`` are float32
    ``[batch, 1]`` for a sigmoid head, or one-hot ``[batch, 2]`` for a softmax head. Shuffling and
    augmentation happen only when ``training`` is true; evaluation reads in manifest order.
    ``split`` may name several splits (``("train", "valid")``): their shards are read together.
    """
    splits = [split] if isinstance(split, str) else list(split)
    files = [f for name in splits for f in shard_files(Path(shards_dir), name)]
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 4) or None)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        example = parse_example(serialized)
        image = decode_image(example["image"], image_size)
        return image, example["label"], example["path"]

    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)

    augmenter = build_augmenter(augment) if (training and augment is not None) else None
    if augmenter is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda item, pair: (augmenter(item[0], pair), item[1], item[2]),
            num_parallel_calls=AUTOTUNE,
        )

    def to_targets(image: tf.Tensor, label: tf.Tensor, path: tf.Tensor):
        target = (
            tf.one_hot(label, 2, dtype=tf.float32)
            if one_hot
            else tf.cast(tf.reshape(label, [1]), tf.float32)
        )
        return (image, target, path) if with_ids else (image, target)

    dataset = dataset.map(to_targets, num_parallel_calls=AUTOTUNE).batch(batch_size)
    # TFRecord files do not tell tf.data how many records they hold; the index does. Knowing the
    # number of batches lets Keras size its epochs (a progress bar with an end) instead of running
    # into the end of the data and warning "Your input ran out of data" every epoch.
    index = read_index(Path(shards_dir)) if (Path(shards_dir) / INDEX_NAME).is_file() else None
    if index is not None:
        images = sum(int(index[name]["n"]) for name in splits)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-images // batch_size)))
    return dataset.prefetch(AUTOTUNE).with_options(_options())
