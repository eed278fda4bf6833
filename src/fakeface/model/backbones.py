"""A registry of convolutional backbones, built by name with their own defaults (timm style).

Each entry knows how to build the feature extractor (no classification top), which input size it
was trained at, the smallest input it accepts, and how ImageNet expects pixels to be scaled. The
scaling is returned as a Keras layer made from built-in layers only, so it is saved inside the
model: a saved model takes raw RGB pixels in 0..255 and needs no code of ours to be loaded or
served (MLflow, TF Serving, ``predict``).

Keras is imported inside the builders so that reading this registry (config validation, the CLI's
``--help``) does not pay TensorFlow's start-up time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Scaling = Literal["tf", "caffe", "unit", "raw"]
"""How a backbone expects pixels: ``tf`` = [-1, 1]; ``caffe`` = BGR minus the ImageNet mean;
``unit`` = [0, 1] (our own small network); ``raw`` = 0..255 as they are, for Keras applications
that scale inside themselves (MobileNetV3 and EfficientNetV2 are built with
``include_preprocessing=True``: their first layers are a ``Rescaling`` (MobileNetV3: to [-1, 1];
EfficientNetV2-B*: to [0, 1] then ImageNet mean/std ``Normalization``), and their
``preprocess_input`` is the identity). Scaling again in front of them would scale twice."""

# ImageNet channel means for caffe-style networks (VGG), in RGB order.
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[..., Any]
    default_size: int
    min_size: int
    scaling: Scaling
    has_imagenet: bool = True

    def build(self, image_size: int, weights: str) -> Any:
        """The feature extractor for ``image_size`` square RGB inputs.

        ``weights`` is ``imagenet`` (downloaded by Keras on first use), ``none`` (random init) or a
        path to a weights file for this backbone without its top, passed to Keras as it is.
        """
        if image_size < self.min_size:
            raise ValueError(
                f"backbone {self.name!r} needs an input of at least {self.min_size} px, "
                f"got {image_size}"
            )
        if weights == "imagenet" and not self.has_imagenet:
            raise ValueError(f"backbone {self.name!r} has no ImageNet weights; use weights: none")
        keras_weights = None if weights == "none" else weights
        return self.builder(image_size=image_size, weights=keras_weights)


def _application(constructor_name: str, **extra: Any) -> Callable[..., Any]:
    def build(image_size: int, weights: str | None) -> Any:
        import keras

        constructor = getattr(keras.applications, constructor_name)
        return constructor(
            include_top=False,
            weights=weights,
            input_shape=(image_size, image_size, 3),
            **extra,
        )

    build.__name__ = f"build_{constructor_name.lower()}"
    return build


def _small_cnn(image_size: int, weights: str | None) -> Any:
    """A few-layer CNN that trains in seconds on a CPU: the quick start's and the tests' network.

    The first two convolutions run at full resolution before any pooling, because the evidence
    this detector looks for (periodic up-sampling traces) lives at the highest frequencies and a
    stride or pool would alias it away.
    """
    import keras
    from keras import layers

    def conv_bn_relu(x: Any, filters: int, name: str) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        # momentum 0.9: the moving statistics must keep up within a few short epochs.
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = conv_bn_relu(inputs, 32, "block1a")
    x = conv_bn_relu(x, 32, "block1b")
    x = layers.MaxPooling2D(2, name="block1_pool")(x)
    x = conv_bn_relu(x, 64, "block2")
    x = layers.MaxPooling2D(2, name="block2_pool")(x)
    x = conv_bn_relu(x, 64, "block3")
    model = keras.Model(inputs, x, name="smallcnn")
    if weights is not None:
        model.load_weights(weights)
    return model


def _npr_resnet(image_size: int, weights: str | None) -> Any:
    """The small from-scratch network of the NPR and SAFE detectors: the first two stages of a
    ResNet-50 (a 3x3 stride-2 stem, max-pool, 3 bottleneck blocks of 64 and 4 of 128 filters),
    about 1.4M parameters, no ImageNet weights. Shallow and narrow on purpose: the traces it looks
    for are local, and a few hundred faces cannot train a deep network."""
    import keras
    from keras import layers

    def batchnorm(name: str) -> Any:
        # Moving statistics with momentum 0.9, not Keras' 0.99: a few hundred images make a few
        # dozen steps, after which 0.99 still remembers its initial mean 0 / variance 1 and the
        # model scores every validation image alike.
        return layers.BatchNormalization(momentum=0.9, name=name)

    def bottleneck(x: Any, filters: int, stride: int, name: str) -> Any:
        shortcut = x
        if stride != 1 or x.shape[-1] != 4 * filters:
            shortcut = layers.Conv2D(4 * filters, 1, strides=stride, use_bias=False, name=f"{name}_down")(x)
            shortcut = batchnorm(f"{name}_down_bn")(shortcut)
        y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv1")(x)
        y = layers.ReLU(name=f"{name}_relu1")(batchnorm(f"{name}_bn1")(y))
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = layers.ReLU(name=f"{name}_relu2")(batchnorm(f"{name}_bn2")(y))
        y = layers.Conv2D(4 * filters, 1, use_bias=False, name=f"{name}_conv3")(y)
        y = batchnorm(f"{name}_bn3")(y)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))

    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Conv2D(64, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(batchnorm("stem_bn")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for index in range(3):
        x = bottleneck(x, 64, 1, f"stage1_block{index + 1}")
    for index in range(4):
        x = bottleneck(x, 128, 2 if index == 0 else 1, f"stage2_block{index + 1}")
    model = keras.Model(inputs, x, name="nprnet")
    if weights is not None:
        model.load_weights(weights)
    return model


#: The backbones by name. A plain dict, not :class:`fakeface.config.registry.Registry` like the other
#: families: the image's weight-baking step (docker/bake_weights.py) loads this file alone, before
#: the package is installed, so it imports nothing of fakeface.
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("xception", _application("Xception"), 299, 71, "tf"),
        BackboneSpec("mobilenetv2", _application("MobileNetV2"), 224, 32, "tf"),
        BackboneSpec("inceptionv3", _application("InceptionV3"), 299, 75, "tf"),
        BackboneSpec("vgg19", _application("VGG19"), 224, 32, "caffe"),
        # Keras requires >= 32 px for these three; they rescale internally (see Scaling).
        BackboneSpec("mobilenetv3small", _application("MobileNetV3Small", include_preprocessing=True), 224, 32, "raw"),
        BackboneSpec("mobilenetv3large", _application("MobileNetV3Large", include_preprocessing=True), 224, 32, "raw"),
        BackboneSpec("efficientnetv2b0", _application("EfficientNetV2B0", include_preprocessing=True), 224, 32, "raw"),
        # The best published setup on the 140k set (99.06% test accuracy, Informatica 47(7), 2023);
        # Keras' EfficientNet (v1) rescales and normalises inside itself.
        BackboneSpec("efficientnetb0", _application("EfficientNetB0"), 224, 32, "raw"),
        BackboneSpec("smallcnn", _small_cnn, 64, 16, "unit", has_imagenet=False),
        # The NPR / SAFE detectors' network, trained from scratch (no ImageNet weights exist).
        BackboneSpec("nprnet", _npr_resnet, 256, 32, "unit", has_imagenet=False),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; expected one of {', '.join(sorted(BACKBONES))}"
        ) from None


def apply_preprocessing(inputs: Any, scaling: Scaling) -> Any:
    """Pixels 0..255 RGB -> what the backbone was trained on, with serialisable built-in layers.

    ``caffe`` needs RGB->BGR and the mean subtracted; a frozen 1x1 convolution does both (a
    permutation matrix as kernel, minus the mean as bias), so no custom layer has to be
    registered when the model is loaded elsewhere.
    """
    import numpy as np
    from keras import layers

    if scaling == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    if scaling == "unit":
        return layers.Rescaling(1.0 / 255.0, name="preprocess")(inputs)
    if scaling == "raw":
        # The backbone scales inside itself (include_preprocessing=True); an identity layer keeps
        # a "preprocess" layer in every model without touching the pixels.
        return layers.Identity(name="preprocess")(inputs)
    if scaling == "caffe":
        layer = layers.Conv2D(3, 1, trainable=False, name="preprocess")
        outputs = layer(inputs)
        permute_rgb_to_bgr = np.eye(3, dtype="float32")[:, ::-1].reshape(1, 1, 3, 3)
        bias = -np.array(_CAFFE_MEAN_RGB[::-1], dtype="float32")
        layer.set_weights([permute_rgb_to_bgr, bias])
        return outputs
    raise ValueError(f"unknown scaling {scaling!r}")
