"""Robustness perturbations do what they say, and the table has a row per enabled one.

Every registered kind needs an example in ``EXAMPLES`` (a test below checks): it is run through
:func:`perturbation_fn`, as evaluate runs it.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakeface.config import ConfigError, parse_params
from fakeface.config.robustness import (
    BlurPerturbation,
    CropPerturbation,
    JpegPerturbation,
    ScalePerturbation,
    list_perturbations,
)
from fakeface.analysis.robustness import (
    FUNCTIONS,
    center_crop_resized,
    evenly_spaced,
    gaussian_blur,
    jpeg_recompress,
    perturbation_fn,
    rescale_round_trip,
    robustness_predictions,
    robustness_table,
    write_robustness,
)


def _image(h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth colour gradients plus a one-pixel checkerboard (the kind of trace a GAN leaves)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w * 180 + 30, y / h * 180 + 30, (x + y) / (w + h) * 120 + 60], axis=-1)
    checker = ((x + y) % 2)[..., None] * 24 - 12
    return np.clip(base + checker, 0, 255).astype(np.uint8)


def _high_frequency_energy(image: np.ndarray) -> float:
    """Spectral energy above a quarter of the sampling rate (grey image, mean removed)."""
    grey = image.astype("float64").mean(axis=-1)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = grey.shape
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    return float(spectrum[np.hypot(fy, fx) > 0.25].sum())


def test_jpeg_recompression_changes_the_image_more_at_lower_quality():
    image = _image()
    q95, q50 = jpeg_recompress(image, 95), jpeg_recompress(image, 50)
    assert q50.shape == image.shape and q50.dtype == np.uint8
    error95 = np.abs(q95.astype(int) - image).mean()
    error50 = np.abs(q50.astype(int) - image).mean()
    assert error50 > 0 and error50 > error95
    # a re-encode at q50 is a different file than one at q95
    assert not np.array_equal(q50, q95)


def test_blur_lowers_high_frequency_energy():
    image = _image()
    blurred = gaussian_blur(image, 1.0)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    assert _high_frequency_energy(blurred) < 0.2 * _high_frequency_energy(image)
    assert _high_frequency_energy(gaussian_blur(image, 2.0)) < _high_frequency_energy(blurred)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_scaling_keeps_the_shape(factor):
    image = _image(48, 64)
    scaled = rescale_round_trip(image, factor)
    assert scaled.shape == image.shape and scaled.dtype == np.uint8
    assert not np.array_equal(scaled, image)


def _checkerboard_amplitude(image: np.ndarray) -> float:
    """Amplitude of the (N/2, N/2) Fourier component: the one-pixel checkerboard."""
    grey = image.astype("float64").mean(axis=-1)
    y, x = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    return float(abs((grey * (-1.0) ** (x + y)).mean()))


def test_downscaling_loses_the_finest_detail():
    image = _image()
    assert _checkerboard_amplitude(image) == pytest.approx(12, abs=0.5)
    assert _checkerboard_amplitude(rescale_round_trip(image, 0.5)) < 1
    assert _checkerboard_amplitude(gaussian_blur(image, 1.0)) < 2


def test_crop_keeps_the_shape_and_zooms_in():
    image = np.zeros((50, 40, 3), np.uint8)
    image[:5] = image[-5:] = image[:, :4] = image[:, -4:] = 255  # a white frame
    cropped = center_crop_resized(image, 0.8)
    assert cropped.shape == image.shape
    assert cropped[0, 0].max() < 255 and image[0, 0].max() == 255  # the frame is cut away
    assert cropped.mean() < image.mean()


#: One entry per registered kind, with the function it must amount to.
EXAMPLES = {
    "jpeg": (JpegPerturbation(kind="jpeg", quality=50), lambda image: jpeg_recompress(image, 50)),
    "blur": (BlurPerturbation(kind="blur", sigma=1.5), lambda image: gaussian_blur(image, 1.5)),
    "scale": (ScalePerturbation(kind="scale", factor=0.5), lambda image: rescale_round_trip(image, 0.5)),
    "crop": (CropPerturbation(kind="crop", fraction=0.7), lambda image: center_crop_resized(image, 0.7)),
}


def test_every_registered_kind_has_an_example_and_a_function():
    assert list(EXAMPLES) == list_perturbations()
    FUNCTIONS.check_complete()


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_perturbation_fn_maps_each_kind(kind):
    image = _image(40, 56)
    spec, expected = EXAMPLES[kind]
    out = perturbation_fn(spec)(image)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    np.testing.assert_array_equal(out, expected(image))  # the registered function, its parameters


def test_model_input_matches_the_training_decoder():
    """Perturbed pixels reach the model as the training decoder would deliver them."""
    from fakeface.data.decode import model_input, pixels_model_input

    for shape in ((48, 80), (32, 32)):
        image = _image(*shape)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        expected = model_input(buffer.getvalue(), 32)
        np.testing.assert_array_equal(pixels_model_input(image, 32), expected)


def test_robustness_params_are_validated():
    cfg = parse_params({}).evaluate
    assert list(cfg.robustness) == [
        "jpeg_q95", "jpeg_q75", "jpeg_q50", "blur_sigma1", "downscale_half", "upscale_2x", "crop_80"
    ]
    off = parse_params({"evaluate": {"robustness": {"q50": {"kind": "jpeg", "quality": 50, "enabled": False},
                                                    "b": {"kind": "blur", "sigma": 2}}}}).evaluate
    assert list(off.enabled_perturbations()) == ["b"]
    for bad, message in (
        ({"q": {"kind": "jpeg", "quality": 0}}, r"evaluate.robustness.q.jpeg.quality = 0"),
        ({"s": {"kind": "scale", "factor": 1}}, "factor 1 leaves the image unchanged"),
        ({"c": {"kind": "crop", "fraction": 1.2}}, r"evaluate.robustness.c.crop.fraction"),
        ({"x": {"quality": 50}}, "needs a kind: " + ", ".join(list_perturbations()[:-1]) + " or "),
        ({"x": {"kind": "noise"}}, r"evaluate.robustness.x"),
        ({"none": {"kind": "blur"}}, "'none' is the clean row"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_params({"evaluate": {"robustness": bad}})


def test_evenly_spaced_keeps_both_ends():
    assert list(evenly_spaced(12, 0)) == list(range(12))
    assert list(evenly_spaced(12, 4)) == [0, 4, 7, 11]
    assert list(evenly_spaced(3, 10)) == [0, 1, 2]


def test_table_has_a_row_per_enabled_perturbation(synthetic_shards, tmp_path):
    from fakeface.model.classifier import build_classifier

    params, shards = synthetic_shards
    model = build_classifier(params.train).model  # untrained: the table's shape is what is tested
    cfg = parse_params({"evaluate": {"robustness": {
        "jpeg_q50": {"kind": "jpeg", "quality": 50},
        "blur": {"kind": "blur", "sigma": 1.0},
        "off": {"kind": "crop", "fraction": 0.8, "enabled": False},
    }}}).evaluate
    enabled = cfg.enabled_perturbations()
    predictions = robustness_predictions(model, shards, enabled, batch_size=5, max_images=0)
    assert len(predictions) == 12 and set(predictions["label"]) == {0, 1}
    assert list(predictions.columns) == ["path", "label", "none", "jpeg_q50", "blur"]
    # the clean column equals what the tf.data evaluation path gives
    from fakeface.stages.evaluate import predict_split

    clean = predict_split(model, shards, "test", 64)
    by_path = dict(zip(clean.paths, clean.p_fake))
    np.testing.assert_allclose(predictions["none"], [by_path[p] for p in predictions["path"]], rtol=1e-5, atol=1e-6)

    table = robustness_table(predictions, enabled, threshold=0.5)
    assert list(table["perturbation"]) == ["none", "jpeg_q50", "blur"]
    assert list(table["kind"]) == ["none", "jpeg", "blur"] and table["settings"][1] == "quality=50"
    assert table["auc_drop"][0] == 0 and table["n"].eq(12).all()

    written = write_robustness(table, 0.5, tmp_path / "robustness.json", tmp_path / "r.png", tmp_path / "r.csv")
    assert all(p.stat().st_size > 0 for p in written)
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert list(saved["perturbations"]) == ["none", "jpeg_q50", "blur"]
    assert saved["n"] == 12 and saved["perturbations"]["blur"]["accuracy"] == pytest.approx(table["accuracy"][2])
    assert "settings" in pd.read_csv(tmp_path / "r.csv").columns

    subsample = robustness_predictions(model, shards, {}, max_images=4)
    assert len(subsample) == 4 and set(subsample["label"]) == {0, 1}
