"""From image bytes to the model's input: the one implementation every part of the project uses.

A model sees an image as uint8 RGB pixels at its input size, handed to it as float32 in 0..255:
decoded (any format TensorFlow reads, any channel count, made RGB), resized only when its size
differs from the input size (bilinear with antialiasing: downscaling without it aliases the high
frequencies a fake detector looks at), then rounded back to uint8, because the training input
pipeline keeps images as uint8 until it batches them (:mod:`fakeface.data.pipeline`). Training, evaluation,
``predict``, the served model, the explanations and the robustness checks all go through
:func:`decode_uint8` (encoded bytes) or :func:`resize_uint8` (pixels decoded elsewhere, e.g. by
PIL), so a scored image is, to the bit, the image a model of that input size was trained on, also
when the image has another size than the model (256 px faces into a 299 px Xception).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def resize_uint8(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 RGB ``[H, W, 3]`` to uint8 ``[image_size, image_size, 3]``; untouched at that size.

    The resized image is rounded to the nearest grey level (at most half a level from the float
    result) and clipped (antialiased resampling overshoots slightly at edges).
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))

    def resized() -> tf.Tensor:
        scaled = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method="bilinear",
                                 antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(scaled, 0.0, 255.0)), tf.uint8)

    image = tf.cond(same, lambda: tf.cast(image, tf.uint8), resized)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def decode_uint8(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded bytes to uint8 ``[image_size, image_size, 3]`` (works inside ``tf.data`` maps)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return resize_uint8(image, image_size)


def model_input(image_bytes: Any, image_size: int) -> np.ndarray:
    """Encoded bytes to the float32 ``[image_size, image_size, 3]`` array a model scores."""
    return tf.cast(decode_uint8(tf.constant(image_bytes) if isinstance(image_bytes, bytes) else image_bytes,
                                image_size), tf.float32).numpy()


def pixels_model_input(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB pixels (decoded elsewhere) to the float32 array a model scores, as
    :func:`model_input` would give for the same pixels encoded losslessly."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels.astype("float32")), 0, 255).astype(np.uint8)
    return tf.cast(resize_uint8(pixels, image_size), tf.float32).numpy()
