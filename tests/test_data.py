"""The training input pipeline: shapes, labels, order, and determinism for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from fakeface.data.shards import ShardError

from fakeface.config import AugmentConfig
from fakeface.data.pipeline import make_dataset
from fakeface.data.shards import read_index


def _first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_batches_have_the_model_input_contract(synthetic_shards):
    _, shards = synthetic_shards
    images, labels = _first_batch(make_dataset(shards, "valid", 32, 5))
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 1.0  # raw pixels
    assert labels.shape == (5, 1) and set(np.unique(labels)) <= {0.0, 1.0}


def test_softmax_targets_are_one_hot_and_ids_come_along(synthetic_shards):
    _, shards = synthetic_shards
    images, targets, paths = next(iter(make_dataset(shards, "test", 32, 4, one_hot=True, with_ids=True)))
    assert targets.shape == (4, 2)
    np.testing.assert_array_equal(targets.numpy().sum(axis=1), 1.0)
    assert all(p.decode().endswith(".jpg") for p in paths.numpy())


def test_evaluation_reads_every_image_once_in_a_fixed_order(synthetic_shards):
    _, shards = synthetic_shards
    n = read_index(shards)["test"]["n"]
    first = [p for _, _, ids in make_dataset(shards, "test", 32, 5, with_ids=True) for p in ids.numpy()]
    second = [p for _, _, ids in make_dataset(shards, "test", 32, 5, with_ids=True) for p in ids.numpy()]
    assert first == second and len(first) == len(set(first)) == n


def test_training_stream_is_deterministic_for_a_seed_and_varies_per_epoch(synthetic_shards):
    _, shards = synthetic_shards
    augment = AugmentConfig(brightness={"enabled": True, "max_delta": 0.2})

    def make(seed):
        return make_dataset(shards, "train", 32, 8, training=True, augment=augment, seed=seed)

    a, b = make(7), make(7)
    epoch1_a, epoch1_b = _first_batch(a), _first_batch(b)
    np.testing.assert_array_equal(epoch1_a[0], epoch1_b[0])
    np.testing.assert_array_equal(epoch1_a[1], epoch1_b[1])
    epoch2_a = _first_batch(a)  # iterating again is the next epoch: a new shuffle and new draws
    assert not np.array_equal(epoch1_a[0], epoch2_a[0])
    other_seed = _first_batch(make(8))
    assert not np.array_equal(epoch1_a[0], other_seed[0])


def test_no_augmentation_outside_training(synthetic_shards):
    _, shards = synthetic_shards
    augment = AugmentConfig(brightness={"enabled": True, "max_delta": 0.5})
    plain = _first_batch(make_dataset(shards, "valid", 32, 4))
    with_cfg = _first_batch(make_dataset(shards, "valid", 32, 4, augment=augment))
    np.testing.assert_array_equal(plain[0], with_cfg[0])


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(ShardError, match="run the augment stage first"):
        make_dataset(tmp_path / "nope", "train", 32, 4)
