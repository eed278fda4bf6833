"""The classifier: backbone + pooling + dropout + a one- or two-unit head, read top to bottom.

Follows the keras-io transfer-learning recipe: the backbone is called with ``training=False`` so
its BatchNormalization layers always run in inference mode, phase 1 trains the head on a frozen
base, phase 2 unfreezes the top layers at a lower learning rate with BatchNorm still frozen (its
statistics were learnt on millions of images; a small batch of faces would wreck them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers

from fakeface import FakefaceError
from fakeface.backbones import apply_preprocessing, get_backbone
from fakeface.config import TrainConfig

log = logging.getLogger(__name__)

OUTPUT_NAME = "p_fake"


@dataclass
class Classifier:
    model: keras.Model
    base: keras.Model
    image_size: int


def resolve_image_size(cfg: TrainConfig) -> int:
    return cfg.image_size or get_backbone(cfg.backbone).default_size


def build_classifier(cfg: TrainConfig) -> Classifier:
    """Build the full model; its input is raw RGB pixels in 0..255 at the backbone's size."""
    spec = get_backbone(cfg.backbone)
    size = resolve_image_size(cfg)
    base = spec.build(size, cfg.weights)

    inputs = keras.Input((size, size, 3), name="image")
    x = apply_preprocessing(inputs, spec.scaling)
    # Pretrained BatchNorm statistics are kept (inference mode, always); a base trained from
    # scratch (weights: none) has no statistics worth keeping, so its BatchNorm trains as usual.
    x = base(x, training=False) if pretrained(cfg) else base(x)
    pool = layers.GlobalAveragePooling2D if cfg.pooling == "avg" else layers.GlobalMaxPooling2D
    x = pool(name="pool")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    # float32 output even under mixed precision: a float16 sigmoid saturates near 0 and 1.
    outputs = layers.Dense(
        cfg.resolved_head_units, activation=cfg.head_activation, dtype="float32", name=OUTPUT_NAME
    )(x)
    model = keras.Model(inputs, outputs, name=f"fakeface_{spec.name}")
    log.info(
        "built %s at %d px (weights=%s, head=%d x %s, %s params)",
        spec.name,
        size,
        cfg.weights,
        cfg.resolved_head_units,
        cfg.head_activation,
        f"{model.count_params():,}",
    )
    return Classifier(model=model, base=base, image_size=size)


def pretrained(cfg: TrainConfig) -> bool:
    return cfg.weights != "none"


def freeze_base(base: keras.Model) -> None:
    """Phase 1: only the head learns."""
    base.trainable = False


def unfreeze_top(base: keras.Model, n_layers: int, freeze_batchnorm: bool = True) -> int:
    """Phase 2: unfreeze the top ``n_layers`` of the base (0 = all), BatchNorm kept frozen.

    ``freeze_batchnorm=False`` is for a base trained from scratch, whose BatchNorm must learn.
    Returns the number of weighted layers left trainable, for the log.
    """
    base.trainable = True
    cutoff = 0 if n_layers <= 0 else max(len(base.layers) - n_layers, 0)
    trainable = 0
    for index, layer in enumerate(base.layers):
        frozen_bn = freeze_batchnorm and isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= cutoff and not frozen_bn
        trainable += int(layer.trainable and bool(layer.weights))
    return trainable


def probabilities_of_fake(predictions: Any) -> Any:
    """p(fake) from either head: column 0 of a sigmoid, column 1 of a two-way softmax."""
    import numpy as np

    predictions = np.asarray(predictions, dtype="float64")
    if predictions.ndim == 2 and predictions.shape[1] == 2:
        return predictions[:, 1]
    return predictions.reshape(-1)


class ModelFileError(FakefaceError):
    """A model file that cannot be loaded as a Keras model."""


def load_model_file(path: str | Path) -> keras.Model:
    """A saved ``.keras`` model, uncompiled (evaluate, register and predict only run it).

    Anything that is not a loadable Keras model (a truncated download, a wrong file) is one clear
    error naming the file, not a traceback from deep inside Keras.
    """
    path = Path(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a bad file
        raise ModelFileError(f"cannot load model {path}: {type(error).__name__}: {error}") from None
