"""The classifier: backbone + pooling + dropout + a one- or two-unit head, read top to bottom.

Follows the keras-io transfer-learning recipe: the backbone is called with ``training=False`` so
its BatchNormalization layers always run in inference mode, phase 1 trains the head on a frozen
base, phase 2 unfreezes the top layers at a lower learning rate with BatchNorm still frozen (its
statistics were learnt on millions of images; a small batch of faces would wreck them).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers

from fakeface import FakefaceError
from fakeface.model.backbones import apply_preprocessing, get_backbone
from fakeface.model.inputs import TRANSFORMS, get_transform
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
    transform = get_transform(cfg.input_transform)
    size = resolve_image_size(cfg)
    seen = cfg.crop_size or size  # the window the network sees (at most the image: the config checks)
    if transform.name != "pixels" and seen % 2:
        raise ValueError(f"input transform {transform.name!r} works on 2x2 blocks: the size it sees must be even, "
                         f"got {seen}")
    base = spec.build(seen // transform.factor, cfg.weights)

    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if cfg.crop_size:
        # The centre window, cut, never resampled: training feeds random windows re-centred in the
        # image (fakeface.data.pipeline.random_window), so this layer cuts exactly those.
        x = layers.CenterCrop(seen, seen, name="center_crop")(x)
    x = transform.build(x)  # what the network sees of the pixels (fakeface.model.inputs)
    x = apply_preprocessing(x, spec.scaling)
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


#: Layer names of the windows a scoring model averages over (``test_crop_0`` is the centre).
TEST_CROP_PREFIX = "test_crop_"


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` and of every model nested in it (the scoring model holds the
    trained network as one layer)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
    return found


def input_transform_of(model: keras.Model) -> dict[str, Any]:
    """What a saved model does to its input before the backbone, read from its layers: the input
    transform's name, the window it cuts (None: the whole image) and how many windows it scores
    and averages (:func:`scoring_model`)."""
    found = _all_layers(model)
    names = {layer.name for layer in found}
    crop = next((layer for layer in found if layer.name == "center_crop"), None)
    windows = [layer for layer in found if layer.name.startswith(TEST_CROP_PREFIX)]
    side = int(crop.height) if crop is not None else None
    if windows:
        (top, bottom), _ = windows[0].cropping
        side = int(model.input_shape[1]) - top - bottom
    return {"transform": next((t.name for t in TRANSFORMS.values() if t.marker and t.marker in names), "pixels"),
            "crop": side, "test_crops": max(1, len(windows))}


def scoring_model(model: keras.Model, test_crops: int = 1) -> keras.Model:
    """The trained classifier as it is saved: an uncompiled twin (same layers and weights, no
    optimizer, loads anywhere without this package), which with ``test_crops=5`` scores the
    centre window and the four corner windows of the image and averages their p(fake).

    The averaging is layers of the model (``Cropping2D`` per window, the trained network shared,
    ``Average``), so predict, the served model and KServe average exactly as evaluate did."""
    if test_crops == 1:
        return keras.Model(model.inputs, model.outputs, name=model.name)
    crop = model.get_layer("center_crop")
    network = keras.Model(crop.output, model.output, name="network")  # the trained layers after the cut
    size, side = int(model.input_shape[1]), int(crop.height)
    margin = size - side
    if margin <= 0:
        raise ValueError(f"test_crops={test_crops}: the window ({side} px) must be smaller than the image ({size} px)")
    centre = (margin // 2, margin // 2)
    offsets = [centre, (0, 0), (0, margin), (margin, 0), (margin, margin)][:test_crops]
    image = keras.Input(model.input_shape[1:], name="image")
    scores = [
        network(layers.Cropping2D(((top, margin - top), (left, margin - left)), name=f"{TEST_CROP_PREFIX}{k}")(image))
        for k, (top, left) in enumerate(offsets)
    ]
    return keras.Model(image, layers.Average(name=OUTPUT_NAME)(scores), name=model.name)


def probabilities_of_fake(predictions: Any) -> Any:
    """p(fake) from either head: column 0 of a sigmoid, column 1 of a two-way softmax."""
    import numpy as np

    predictions = np.asarray(predictions, dtype="float64")
    if predictions.ndim == 2 and predictions.shape[1] == 2:
        return predictions[:, 1]
    return predictions.reshape(-1)


class ModelFileError(FakefaceError):
    """A model file that cannot be loaded as a Keras model, or that carries code."""


#: The most bytes of a ``.keras`` file's ``config.json`` read to look for code (a real one is KBs).
_CONFIG_LIMIT = 64 << 20


def _code_in(path: Path) -> str | None:
    """What code a ``.keras`` file carries in its ``config.json`` (a ``Lambda`` layer, a Python
    lambda anywhere), read as JSON without running anything; None when none is seen (or the file
    is not a ``.keras`` zip: then Keras' safe mode alone decides)."""
    try:
        with zipfile.ZipFile(path) as bundle:
            info = bundle.getinfo("config.json")
            if info.file_size > _CONFIG_LIMIT:
                return None
            config = json.loads(bundle.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return None
    todo = [config]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                return "a Lambda layer"
            if node.get("class_name") == "__lambda__":
                return "a Python lambda"
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return None


def _refusal(path: Path, what: str) -> ModelFileError:
    return ModelFileError(
        f"{path} contains code ({what}); refusing to run it: a model file is data, and loading one "
        "must not execute what it brings. Rebuild the model without Lambda layers (the fakeface "
        "classifier has none), or load it yourself with safe_mode=False only if you trust its source"
    )


def load_model_file(path: str | Path) -> keras.Model:
    """A saved ``.keras`` model, uncompiled (evaluate, register and predict only run it).

    Loaded in Keras' safe mode (``safe_mode=True``, explicitly, whatever the process's global
    setting): a file carrying code (a ``Lambda`` layer with a Python function) is refused with one
    clear line and its code is never executed; the config is also scanned for such layers first,
    so the message names them. Anything else that is not a loadable Keras model (a truncated
    download, a wrong file) is one clear error naming the file, not a traceback from deep inside
    Keras.
    """
    path = Path(path)
    if (what := _code_in(path)) is not None:
        raise _refusal(path, what)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a bad file
        text = str(error)
        if "safe_mode" in text or "arbitrary code execution" in text:
            what = "a Lambda layer" if "Lambda" in text else text.split(". ")[0]
            raise _refusal(path, what) from None
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise ModelFileError(f"cannot load model {path}: {type(error).__name__}: {first}") from None
