"""The input pipeline at the decode limit: uint8 until batched, an optional decoded cache, and
augmentation on the device; none of them may change what the model learns from for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import small_params

tf = pytest.importorskip("tensorflow")


def batches(dataset, n=4):
    return [tuple(t.numpy() for t in item) for item in dataset.take(n)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.fixture()
def crop_and_flip():
    return small_params(augment={"crop": {"enabled": True}, "flip": {"enabled": True}}).augment


def test_flip_on_uint8_draws_what_the_float_augmenter_draws(synthetic_shards, crop_and_flip):
    """The flip runs on uint8 pixels before the batch is converted; each image's flip must be the
    one augment_image (float32, all augmentations in order) would make with the same seed."""
    from fakeface.data.augmentations import augment_image, only
    from fakeface.data.pipeline import make_dataset

    params, shards = synthetic_shards
    flip = only(crop_and_flip, "flip")
    ((images, seeds), _), = [((x.numpy(), s.numpy()), y.numpy()) for (x, s), y in
                             make_dataset(shards, "train", 32, 8, training=True, augment=crop_and_flip, seed=5,
                                          augment_on_device=True).take(1)]
    (plain, _), = batches(make_dataset(shards, "train", 32, 8, training=True, augment=None, seed=5), 1)
    assert images.dtype == np.float32
    flipped = 0
    for image, original, seed in zip(images, plain, seeds):
        expected = augment_image(original, seed, flip).numpy()
        np.testing.assert_array_equal(image, expected)
        flipped += int(not np.array_equal(image, original))
    assert 0 < flipped < len(images), "a fair coin flips some images and not others"


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_cache_changes_the_speed_not_the_batches(synthetic_shards, crop_and_flip, cache, tmp_path):
    from fakeface.data.pipeline import make_dataset

    _, shards = synthetic_shards

    def dataset(mode):
        return make_dataset(shards, "train", 32, 8, training=True, augment=crop_and_flip, seed=2,
                            cache=mode, cache_dir=tmp_path)

    reference = dataset("none")
    cached = dataset(cache)
    for _ in range(2):  # the first epoch fills the cache, the second reads it (and reshuffles)
        assert_same_batches(batches(reference, 100), batches(cached, 100))
    if cache == "disk":
        folders = list(tmp_path.glob("decoded-*"))
        assert len(folders) == 1 and any(folders[0].iterdir())


def test_disk_cache_is_keyed_by_data_splits_and_size(synthetic_shards):
    from fakeface.data.pipeline import cache_key

    _, shards = synthetic_shards
    key = cache_key(shards, ["train"], 32)
    assert key == cache_key(shards, ["train"], 32)
    assert len({key, cache_key(shards, ["train"], 64), cache_key(shards, ["train", "valid"], 32)}) == 3


def test_memory_cache_that_would_not_fit_is_refused_with_its_size(synthetic_shards, monkeypatch):
    import psutil

    from fakeface.data.pipeline import CacheError, make_dataset

    _, shards = synthetic_shards
    available = type("Memory", (), {"available": 1_000_000})()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: available)
    with pytest.raises(CacheError, match=r"needs 0\.0 GiB .* use train.cache=disk"):
        make_dataset(shards, "train", 256, 8, training=True, cache="memory")


def _train_weights(params, shards, tmp_path, name):
    import keras

    from fakeface.stages import train
    from fakeface.config.runtime import Runtime
    from fakeface.stages.paths import TrainPaths

    out = tmp_path / name
    result = train.run(params, TrainPaths.in_artifacts(out, shards=shards),
                       Runtime(checkpoint_dir=out / "ck", cache_dir=tmp_path / "cache"))
    return result, keras.models.load_model(out / "model.keras").get_weights()


def test_cache_and_device_augmentation_train_the_same_weights(synthetic_shards, mlflow_store, tmp_path,
                                                              monkeypatch):
    """For a seed on a CPU: the default pipeline, a cached one and augmentation inside the training
    step give bit-identical weights (deterministic ops are on without a GPU)."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    sections = {"augment": {"crop": {"enabled": True}}}
    base = dict(head_epochs=0, fine_tune_epochs=1)
    reference, weights = _train_weights(small_params(train={**base, "augment_on": "cpu"}, **sections),
                                        shards, tmp_path, "cpu")
    for name, extra in (("cached", {"cache": "memory"}), ("device", {"augment_on": "device"})):
        result, other = _train_weights(small_params(train={**base, **extra}, **sections), shards, tmp_path, name)
        assert result.history[-1]["loss"] == reference.history[-1]["loss"], name
        for first, second in zip(weights, other):
            np.testing.assert_array_equal(first, second)
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["fakeface.deterministic"] == "true" and tags["fakeface.augment_on"] == "device"
