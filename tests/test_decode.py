"""One decode path from image bytes to model input: the training pipeline, evaluation, predict and
the served model hand a model the same array for the same image, also when it must be resized."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_decode_shape_dtype_rounding_and_passthrough():
    from fakeface.data.decode import decode_uint8, model_input

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    resized = decode_uint8(tf.constant(_encoded(pixels, "PNG")), 32)
    assert resized.shape == (32, 32, 3) and resized.dtype == tf.uint8
    exact = tf.image.resize(tf.cast(pixels, tf.float32), [32, 32], method="bilinear", antialias=True)
    np.testing.assert_array_equal(resized.numpy(), np.clip(np.rint(exact.numpy()), 0, 255).astype(np.uint8))
    # Already the right size: pixels pass through untouched (lossless PNG -> exact).
    square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model_input(_encoded(square, "PNG"), 16), square.astype(np.float32))
    # Grey and RGBA become RGB; works inside tf.data (graph mode).
    grey = _encoded(rng.integers(0, 256, (20, 20), dtype=np.uint8), "PNG")
    rgba = _encoded(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), "PNG")
    jpeg = _encoded(pixels, "JPEG")
    out = list(tf.data.Dataset.from_tensor_slices([grey, rgba, jpeg]).map(lambda b: decode_uint8(b, 24)))
    assert [tuple(o.shape) for o in out] == [(24, 24, 3)] * 3


def test_an_image_resized_for_the_model_is_the_same_array_everywhere(tmp_path):
    """256 px faces into a 299 px model: the training pipeline, evaluation's image loader,
    ``predict`` (files) and the served model's decoder (bytes) give identical arrays."""
    from fakeface.data.pipeline import make_dataset
    from fakeface.stages.evaluate import load_split_images
    from fakeface.data.manifest import file_sha256
    from fakeface.inference.predict import decode_bytes, load_input
    from fakeface.data.shards import write_shards

    rng = np.random.default_rng(4)
    rows = []
    for k, label in enumerate(("real", "fake", "real")):
        smooth = rng.normal(size=(16, 16, 3)).cumsum(0).cumsum(1)
        pixels = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
        path = tmp_path / f"{label}_{k}.jpg"
        Image.fromarray(pixels).resize((256, 256), Image.BICUBIC).save(path, quality=90)
        rows.append({"path": str(path), "label": label, "split": "test", "sha256": file_sha256(path),
                     "width": 256, "height": 256, "format": "JPEG", "source": "test",
                     "original_path": str(path), "note": ""})
    write_shards(pd.DataFrame(rows), tmp_path / "shards", shard_size=10)

    (batch, _, paths), = [tuple(t.numpy() for t in item) for item in
                          make_dataset(tmp_path / "shards", "test", 299, 8, with_ids=True)]
    paths = [p.decode() for p in paths]
    assert batch.shape == (3, 299, 299, 3)
    evaluated = load_split_images(tmp_path / "shards", "test", paths, 299)
    for image, path, from_evaluate in zip(batch, paths, evaluated):
        np.testing.assert_array_equal(load_input(path, 299), image)
        np.testing.assert_array_equal(decode_bytes(open(path, "rb").read(), 299), image)
        np.testing.assert_array_equal(from_evaluate, image)
        np.testing.assert_array_equal(image, np.rint(image))  # whole grey levels, as trained on
