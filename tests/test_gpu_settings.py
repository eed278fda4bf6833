"""The settings a GPU gives ``auto`` (mixed precision, XLA, nondeterministic ops, augmentation in
the training step), forced on the CPU: every recipe trains with them, the augmented images are the
same wherever they are computed, and the run's tags say what Keras and TensorFlow really used."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import small_params

tf = pytest.importorskip("tensorflow")

#: What ``auto`` resolves to on a GPU, forced.
GPU_SETTINGS = {"mixed_precision": "on", "xla": "on", "deterministic": "off", "augment_on": "device"}
#: The smallest input each recipe's backbone takes (no ImageNet download: random weights).
RECIPE_SIZES = {"quickstart": 32, "cpu-faces": 32, "cpu-faces-npr": 32, "kaggle-xception": 71, "kaggle-efficientnet": 32}


class WhatKerasUsed:
    """Records, from inside ``fit``, what the compiled model trains with, and keeps the model."""

    def __init__(self):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                from fakeface.model.devices import determinism_enabled

                strategy = self.model.distribute_strategy
                outer.seen = {
                    "fakeface.xla": str(bool(self.model.jit_compile)).lower(),
                    "fakeface.mixed_precision": self.model.dtype_policy.name,
                    "fakeface.deterministic": str(determinism_enabled()).lower(),
                    "fakeface.replicas": str(strategy.num_replicas_in_sync),
                }

            def on_train_end(self, logs=None):
                outer.model = self.model

        self.callback = Callback()
        self.seen: dict[str, str] = {}
        self.model = None


def _train(params, shards, tmp_path, extra_callbacks=()):
    from fakeface.stages import train
    from fakeface.config.runtime import Runtime
    from fakeface.stages.paths import TrainPaths

    out = tmp_path / "out"
    return train.run(params, TrainPaths.in_artifacts(out, shards=shards),
                     Runtime(checkpoint_dir=tmp_path / "ck", cache_dir=tmp_path / "cache"),
                     extra_callbacks=list(extra_callbacks)), out / "model.keras"


def _recipe_with_gpu_settings(name: str):
    """The recipe at a small size, one epoch, GPU settings forced, each of its augmentations on
    every image (probability 1), so every op runs."""
    from fakeface.config import parse_params
    from fakeface.recipes import load_recipe

    params = load_recipe(name).params().model_dump(mode="json")
    params["train"].update(GPU_SETTINGS, weights="none", image_size=RECIPE_SIZES[name], batch_size=16,
                           head_epochs=0, fine_tune_epochs=1, early_stopping_patience=1)
    for section in params["augment"].values():
        if isinstance(section, dict) and section.get("enabled") and "probability" in section:
            section["probability"] = 1.0
    return parse_params(params)


@pytest.fixture(autouse=True)
def _float32_afterwards():
    """Mixed precision is a process-wide Keras policy: leave the next test the default."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPE_SIZES))
def test_each_recipe_trains_an_epoch_with_the_gpu_settings(name, synthetic_shards, mlflow_store, tmp_path,
                                                           monkeypatch):
    import keras
    import mlflow

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = _recipe_with_gpu_settings(name)
    used = WhatKerasUsed()
    result, model_path = _train(params, shards, tmp_path, [used.callback])

    assert math.isfinite(result.history[-1]["loss"]), result.history
    tags = mlflow.get_run(result.run_id).data.tags
    assert used.seen == {key: tags[key] for key in used.seen}, "the tags say what Keras trained with"
    assert tags["fakeface.xla"] == "true" and tags["fakeface.mixed_precision"] == "mixed_float16"
    assert tags["fakeface.deterministic"] == "false"
    assert tags["fakeface.augmentations"] != "none"
    images = np.random.default_rng(1).uniform(0, 255, (4, RECIPE_SIZES[name], RECIPE_SIZES[name], 3))
    images = images.astype("float32")
    before = used.model(images, training=False)
    assert before.dtype == tf.float32, "the head answers in float32 under mixed precision"
    reloaded = keras.models.load_model(model_path)
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), before.numpy(), atol=1e-6)


@pytest.mark.slow
def test_every_augmentation_at_once_trains_with_the_gpu_settings(synthetic_shards, mlflow_store, tmp_path,
                                                                 monkeypatch):
    """No combination of augmentations fails at the first step: all of them, on the device, XLA on."""
    import mlflow

    from fakeface.config.augment import list_augmentations

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = small_params(train={**GPU_SETTINGS, "head_epochs": 0, "fine_tune_epochs": 1},
                          augment={name: {"enabled": True} for name in list_augmentations()})
    result, _ = _train(params, shards, tmp_path)
    assert math.isfinite(result.history[-1]["loss"])
    # The pixel moves (flip, rot90) run on uint8; JPEG (no GPU kernel) keeps everything computed
    # before it in the input pipeline; only the mask, after it, runs in the training step.
    where = {"flip": "input-uint8", "rot90": "input-uint8", "mask": "step"}
    assert mlflow.get_run(result.run_id).data.tags["fakeface.augmentations"] == (
        " ".join(f"{name}:{where.get(name, 'input')}" for name in list_augmentations())
    )


@pytest.mark.slow
def test_augmentation_in_the_xla_step_trains_and_says_where_it_ran(synthetic_shards, mlflow_store, tmp_path,
                                                                   monkeypatch):
    """Rotation's projective transform cannot be compiled by XLA; in the step it runs before the
    compiled part, and the run records each augmentation's place."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    _, shards = synthetic_shards
    params = small_params(train={**GPU_SETTINGS, "head_epochs": 0, "fine_tune_epochs": 1},
                          augment={"crop": {"enabled": True}, "rotate": {"enabled": True},
                                   "blur": {"enabled": True}})
    used = WhatKerasUsed()
    result, _ = _train(params, shards, tmp_path, [used.callback])
    assert math.isfinite(result.history[-1]["loss"])
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["fakeface.xla"] == "true" == used.seen["fakeface.xla"]
    assert tags["fakeface.augmentations"] == "flip:input-uint8 crop:step rotate:step blur:step"


def test_the_same_seed_gives_the_same_images_in_the_pipeline_and_in_the_step(synthetic_shards):
    """Augmentations moved into the training step compute, for each image's seed, exactly what
    the CPU pipeline computes."""
    from fakeface.config.augment import list_augmentations
    from fakeface.data.pipeline import make_dataset, plan_augmentations
    from fakeface.model.classifier import build_classifier
    from fakeface.model.train_step import AugmentingTrainer

    params, shards = synthetic_shards
    movable = [name for name in list_augmentations() if name not in ("jpeg", "downscale")]
    augment = small_params(augment={name: {"enabled": True} for name in movable}).augment
    plan = plan_augmentations(augment, on_device=True)
    assert plan.device is not None and "rotate" in plan.device.enabled()
    host = make_dataset(shards, "train", 32, 8, training=True, augment=augment, seed=3)
    split = make_dataset(shards, "train", 32, 8, training=True, augment=augment, seed=3, augment_on_device=True)
    trainer = AugmentingTrainer(build_classifier(params.train).model, plan.device)
    for (expected, _), ((images, seeds), _) in zip(host.take(3), split.take(3)):
        np.testing.assert_array_equal(trainer.augment_batch(images, seeds).numpy(), expected.numpy())


def test_the_step_takes_the_tail_after_the_last_host_only_augmentation():
    from fakeface.data.pipeline import plan_augmentations

    augment = small_params(augment={"crop": {"enabled": True}, "downscale": {"enabled": True},
                                    "rotate": {"enabled": True}}).augment
    assert plan_augmentations(augment, on_device=False).describe() == (
        "flip:input-uint8 crop:input rotate:input downscale:input")
    assert plan_augmentations(augment, on_device=True).describe() == (
        "flip:input-uint8 crop:input rotate:input downscale:input")
    augment = small_params(augment={"crop": {"enabled": True}, "rotate": {"enabled": True}}).augment
    plan = plan_augmentations(augment, on_device=True)
    assert plan.describe() == "flip:input-uint8 crop:step rotate:step"
    assert plan.host is None and plan.device.enabled() == ["crop", "rotate"] and plan.uint8.enabled() == ["flip"]


def test_host_only_augmentations_are_the_ones_without_gpu_kernels():
    """Each augmentation's ``host_only`` agrees with the kernels this TensorFlow registers: trace
    its op and look for an op with a CPU kernel and none for the GPU."""
    from tensorflow.python.framework import kernels

    from fakeface.data.augmentations import OPS
    from fakeface.config import AugmentConfig
    from fakeface.config.augment import AUGMENTATIONS

    defaults = AugmentConfig()
    # Graph structure (arguments, branches, calls) runs wherever its caller runs.
    structural = {"Placeholder", "StatelessIf", "If", "StatelessWhile", "While", "PartitionedCall",
                  "StatefulPartitionedCall", "NoOp", "Identity", "Const"}
    for spec in AUGMENTATIONS:
        kwargs = spec.kwargs(getattr(defaults, spec.name))
        graph_def = tf.function(lambda image, seed: OPS.get(spec.name)(image, seed, **kwargs)).get_concrete_function(
            tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int64)).graph.as_graph_def()
        op_types = {node.op for node in graph_def.node}
        op_types |= {node.op for function in graph_def.library.function for node in function.node_def}
        cpu_only = set()
        for op_type in op_types - structural:
            registered = {kernel.device_type for kernel in kernels.get_registered_kernels_for_op(op_type).kernel}
            if "CPU" in registered and "GPU" not in registered:
                cpu_only.add(op_type)
        assert bool(cpu_only) == bool(spec.host_only), (spec.name, sorted(cpu_only))
    assert {spec.name for spec in AUGMENTATIONS if spec.host_only} == {"downscale", "jpeg"}


def test_xla_and_deterministic_ops_are_not_both_forced():
    from fakeface.config import ConfigError

    with pytest.raises(ConfigError, match="xla=on with deterministic=on is refused"):
        small_params(train={"xla": "on", "deterministic": "on"})


@pytest.mark.parametrize(("asked", "gpus", "expected"), [
    ({}, 0, dict(mixed_precision=False, xla=False, deterministic=True, augment_on_device=False)),
    ({}, 1, dict(mixed_precision=True, xla=True, deterministic=False, augment_on_device=True)),
    ({"xla": "on"}, 0, dict(mixed_precision=False, xla=True, deterministic=False, augment_on_device=False)),
    ({"deterministic": "on"}, 1, dict(mixed_precision=True, xla=False, deterministic=True, augment_on_device=True)),
])
def test_auto_resolves_by_the_machine_and_yields_to_what_is_set(asked, gpus, expected):
    from fakeface.model.devices import resolve

    settings = resolve(small_params(train=asked).train, gpus)
    assert {name: getattr(settings, name) for name in expected} == expected
