"""Integrated gradients: exact on a linear model, complete within tolerance on a trained tiny
CNN, heatmaps written, right and wrong predictions picked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fakeface.config import ConfigError, parse_params
from fakeface.analysis.explain import (
    explain_images,
    heatmap,
    integrated_gradients,
    make_baseline,
    select_examples,
)

#: Completeness tolerance with m = 300 on the trained 32 px smallcnn: the sum of attributions is
#: within 1% of F(x) - F(baseline) (relative, for |F(x) - F(x')| >= 0.01) and within 0.005 absolute.
REL_TOLERANCE = 0.01
ABS_TOLERANCE = 0.005


def _linear_model(size: int = 8):
    """F(x) = sigmoid-free linear score in a 1-unit 'sigmoid' slot: IG is exact for it."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(seed=1),
                                 bias_initializer="zeros")(x)
    return keras.Model(inputs, outputs)


def test_linear_model_attributions_are_exact():
    model = _linear_model()
    weights = model.layers[-1].get_weights()[0].reshape(8, 8, 3)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    result = integrated_gradients(model, images, "black", steps=20, batch_size=7)
    np.testing.assert_allclose(result.attributions, images * weights[None], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.attribution_sums, result.delta, rtol=1e-4)
    assert result.p_baseline == pytest.approx([0.0, 0.0], abs=1e-6)


def test_steps_and_baseline_are_validated():
    model = _linear_model()
    images = np.zeros((1, 8, 8, 3), "float32")
    for steps in (19, 1001):
        with pytest.raises(ValueError, match="between 20 and 1000"):
            integrated_gradients(model, images, steps=steps)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("white", (8, 8, 3))
    with pytest.raises(ConfigError, match="evaluate.explain.steps = 10"):
        parse_params({"evaluate": {"explain": {"steps": 10}}})
    with pytest.raises(ConfigError, match="evaluate.explain.baseline"):
        parse_params({"evaluate": {"explain": {"baseline": "blur"}}})
    noise = make_baseline("noise", (8, 8, 3), seed=3)
    assert noise.min() >= 0 and noise.max() <= 255 and noise.std() > 50
    np.testing.assert_array_equal(noise, make_baseline("noise", (8, 8, 3), seed=3))


def test_select_examples_mixes_right_and_wrong():
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.95])
    # real: wrong = [1] (p .9), right = [0, 2] most confident first; fake: wrong = [4], right = [5, 3]
    assert select_examples(labels, p, 0.5, 2) == [1, 0, 4, 5]
    assert select_examples(labels, p, 0.5, 3) == [1, 0, 2, 4, 5, 3]
    # no wrong predictions: filled from the right ones
    assert select_examples(np.array([0, 1]), np.array([0.1, 0.9]), 0.5, 2) == [0, 1]
    assert select_examples(labels, p, 0.5, 0) == []


def test_heatmap_is_scaled_and_clipped():
    attributions = np.zeros((4, 4, 3))
    attributions[0, 0] = [1, 1, 1]
    attributions[1, 1] = [-0.5, 0, 0]
    magnitude, signed = heatmap(attributions, percentile=100), heatmap(attributions, signed=True, percentile=100)
    assert magnitude.max() == 1 and magnitude[1, 1] == pytest.approx(0.5 / 3) and magnitude.min() == 0
    assert signed[1, 1] == pytest.approx(-0.5 / 3)
    assert heatmap(np.zeros((2, 2, 3))).max() == 0


@pytest.fixture(scope="module")
def trained_model(tiny_model):
    import keras

    model_path, shards, _ = tiny_model
    return keras.models.load_model(model_path, compile=False), shards


def test_completeness_on_a_trained_model(trained_model, tmp_path):
    from fakeface.stages.evaluate import load_split_images, predict_split

    model, shards = trained_model
    preds = predict_split(model, shards, "test", 64)
    chosen = select_examples(preds.labels, preds.p_fake, 0.5, 2)
    paths = [preds.paths[i] for i in chosen]
    images = load_split_images(shards, "test", paths, 32)
    for baseline in ("black", "noise"):
        summary = explain_images(model, images, paths, tmp_path / baseline, threshold=0.5,
                                 labels=preds.labels[chosen], baseline=baseline, steps=300, batch_size=64)
        entries = summary["images"]
        assert len(entries) == 4 and {e["actual"] for e in entries} == {"real", "fake"}
        # F(x) is the model's own p(fake) for each image
        np.testing.assert_allclose([e["p_fake"] for e in entries], preds.p_fake[chosen], rtol=1e-4, atol=1e-5)
        for entry in entries:
            assert entry["abs_error"] <= ABS_TOLERANCE, entry
            assert entry["attribution_sum"] == pytest.approx(entry["delta"], abs=ABS_TOLERANCE)
            if entry["rel_error"] is not None:
                assert entry["rel_error"] <= REL_TOLERANCE, entry
            assert (tmp_path / baseline / entry["figure"]).stat().st_size > 0
        saved = json.loads((tmp_path / baseline / "explain.json").read_text())
        assert saved["steps"] == 300 and saved["rule"] == "trapezoidal" and saved["baseline"] == baseline
        print(f"{baseline}: max abs error {saved['max_abs_error']:.2e}, max rel error {saved['max_rel_error']}")


def test_more_steps_do_not_worsen_completeness(trained_model):
    from fakeface.stages.evaluate import load_split_images, predict_split

    model, shards = trained_model
    preds = predict_split(model, shards, "test", 64)
    images = load_split_images(shards, "test", preds.paths[:2], 32)
    coarse = integrated_gradients(model, images, "black", steps=20, batch_size=32)
    fine = integrated_gradients(model, images, "black", steps=300, batch_size=32)
    assert fine.abs_error.max() <= coarse.abs_error.max() + 1e-4
