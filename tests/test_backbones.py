"""The backbone registry: every backbone builds, trains a step, and saves without custom code."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fakeface.model.backbones import BACKBONES, apply_preprocessing, get_backbone  # noqa: E402
from fakeface.config import parse_params  # noqa: E402
from fakeface.model.classifier import build_classifier, freeze_base, probabilities_of_fake, unfreeze_top  # noqa: E402
from fakeface.stages.train import compile_model  # noqa: E402

SMALL_SIZES = {
    "xception": 71,
    "inceptionv3": 75,
    "mobilenetv2": 32,
    "vgg19": 32,
    "mobilenetv3small": 32,
    "mobilenetv3large": 32,
    "efficientnetv2b0": 32,
    "efficientnetb0": 32,
    "smallcnn": 32,
    "nprnet": 32,
}


def _train_cfg(**overrides):
    return parse_params({"train": {"weights": "none", **overrides}}).train


def test_every_registered_backbone_is_tested():
    assert set(SMALL_SIZES) == set(BACKBONES)


@pytest.mark.parametrize("name", list(SMALL_SIZES))
def test_backbone_builds_and_takes_a_training_step(name):
    keras.utils.set_random_seed(0)
    cfg = _train_cfg(backbone=name, image_size=SMALL_SIZES[name], fine_tune_layers=0)
    classifier = build_classifier(cfg)
    model = classifier.model
    unfreeze_top(classifier.base, 0)
    compile_model(model, cfg, 0.01, 10, xla=False)
    x = np.random.default_rng(0).uniform(0, 255, (4, cfg.image_size, cfg.image_size, 3)).astype("float32")
    y = np.array([[0], [1], [1], [1]], dtype="float32")  # unbalanced: a zero-mean gradient would not move the bias
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    after = model.get_weights()
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "a step must change weights"
    p = probabilities_of_fake(model.predict_on_batch(x))
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))


def test_registry_defaults_match_keras_applications():
    assert get_backbone("xception").default_size == 299
    assert get_backbone("Xception").scaling == "tf"
    assert get_backbone("vgg19").scaling == "caffe"
    with pytest.raises(ValueError, match="unknown backbone"):
        get_backbone("resnet9")


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="at least 71 px"):
        get_backbone("xception").build(32, "none")


@pytest.mark.parametrize(
    "scaling, expected",
    [
        ("tf", lambda rgb: rgb / 127.5 - 1.0),
        ("unit", lambda rgb: rgb / 255.0),
        ("raw", lambda rgb: rgb),
        # keras.applications.vgg19.preprocess_input: RGB->BGR, minus the ImageNet mean
        ("caffe", lambda rgb: rgb[..., ::-1] - np.array([103.939, 116.779, 123.68])),
    ],
)
def test_preprocessing_matches_the_backbone_convention(scaling, expected):
    rgb = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, apply_preprocessing(inputs, scaling))
    np.testing.assert_allclose(model.predict_on_batch(rgb), expected(rgb), rtol=1e-5, atol=1e-3)


def test_vgg_preprocessing_equals_keras_own():
    from keras.applications import vgg19

    rgb = np.random.default_rng(2).uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, apply_preprocessing(inputs, "caffe"))
    np.testing.assert_allclose(model.predict_on_batch(rgb), vgg19.preprocess_input(rgb.copy()), atol=1e-3)


_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.mark.parametrize(
    "name, module, expected",
    [
        # MobileNetV3: one Rescaling to [-1, 1] inside the model.
        ("mobilenetv3small", "mobilenet_v3", lambda rgb: rgb / 127.5 - 1.0),
        ("mobilenetv3large", "mobilenet_v3", lambda rgb: rgb / 127.5 - 1.0),
        # EfficientNetV2-B*: Rescaling to [0, 1], then the ImageNet mean / std Normalization.
        ("efficientnetv2b0", "efficientnet_v2", lambda rgb: (rgb / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD),
    ],
)
def test_self_scaling_backbones_see_raw_pixels_scaled_exactly_once(name, module, expected):
    """Our preprocessing is keras' own preprocess_input (the identity) and the base scales once."""
    import importlib

    spec = get_backbone(name)
    assert spec.scaling == "raw"
    rgb = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inputs = keras.Input((32, 32, 3))
    ours = keras.Model(inputs, apply_preprocessing(inputs, spec.scaling)).predict_on_batch(rgb)
    keras_own = importlib.import_module(f"keras.applications.{module}").preprocess_input(rgb.copy())
    np.testing.assert_allclose(ours, keras_own, atol=1e-5)

    base = spec.build(32, "none")
    scaling_layers = [
        layer for layer in base.layers if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
    ]
    rescalings = [layer for layer in scaling_layers if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescalings) == 1, "the base must scale 0..255 exactly once"
    inside = keras.Model(base.input, scaling_layers[-1].output).predict_on_batch(ours)
    np.testing.assert_allclose(inside, expected(rgb), rtol=1e-4, atol=1e-4)


def test_fine_tune_unfreezes_only_the_top_layers_and_never_batchnorm():
    cfg = _train_cfg(backbone="mobilenetv2", image_size=32)
    classifier = build_classifier(cfg)
    base = classifier.base
    freeze_base(base)
    assert not classifier.base.trainable_weights
    unfreeze_top(base, 20)
    top = base.layers[-20:]
    assert all(not layer.trainable for layer in base.layers[:-20])
    assert any(layer.trainable for layer in top)
    batchnorms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batchnorms and all(not layer.trainable for layer in batchnorms)


def test_weights_file_is_loaded_into_the_base(tmp_path):
    donor = get_backbone("mobilenetv2").build(32, "none")
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    donor.save_weights(path)
    cfg = _train_cfg(backbone="mobilenetv2", image_size=32, weights=str(path))
    base = build_classifier(cfg).base
    for a, b in zip(donor.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_two_unit_softmax_head_and_saved_model_reload_without_custom_objects(tmp_path):
    cfg = _train_cfg(backbone="vgg19", image_size=32, head_activation="softmax")
    model = build_classifier(cfg).model
    assert model.output_shape == (None, 2)
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(reloaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    probs = model.predict_on_batch(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_imagenet_is_refused_for_a_network_without_it():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        BACKBONES["smallcnn"].build(32, "imagenet")
