"""Input transforms and the small from-scratch network: exact on known inputs, and carried by the
saved model so every scorer applies them as training did."""

from __future__ import annotations

import numpy as np
import pytest


def _apply(name, images):
    import keras

    from fakeface.model.inputs import get_transform

    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, get_transform(name).build(inputs))
    return np.asarray(model.predict_on_batch(images))


def test_npr_is_zero_on_a_nearest_upsampled_image_and_the_residual_otherwise():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 8, 8, 3)).astype("float32")
    upsampled = small.repeat(2, axis=1).repeat(2, axis=2)
    assert np.array_equal(_apply("npr", upsampled), np.zeros_like(upsampled))
    image = rng.integers(0, 256, (2, 16, 16, 3)).astype("float32")
    expected = image - image[:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)
    assert np.array_equal(_apply("npr", image), expected)


def test_highpass_is_the_haar_diagonal_band():
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (1, 4, 4, 3)).astype("float32").repeat(2, axis=1).repeat(2, axis=2)
    assert np.array_equal(_apply("highpass", blocks), np.zeros((1, 4, 4, 3), "float32"))
    image = rng.integers(0, 256, (2, 8, 8, 3)).astype("float32")
    a, b, c, d = image[:, ::2, ::2], image[:, ::2, 1::2], image[:, 1::2, ::2], image[:, 1::2, 1::2]
    assert np.allclose(_apply("highpass", image), (a - b - c + d) / 2, atol=1e-4)
    checker = np.indices((8, 8)).sum(axis=0) % 2 * 255.0
    out = _apply("highpass", np.repeat(checker[None, :, :, None], 3, axis=3).astype("float32"))
    assert np.allclose(out, -255.0)  # (0 - 255 - 255 + 0) / 2 in every block


def test_nprnet_is_the_two_stage_resnet_of_about_1_4m_parameters():
    from fakeface.model.backbones import get_backbone

    base = get_backbone("nprnet").build(64, "none")
    assert 1.3e6 < base.count_params() < 1.6e6
    assert base.output_shape == (None, 8, 8, 512)


@pytest.mark.parametrize(("transform", "marker"), [("npr", "npr_subsample"), ("highpass", "haar_hh")])
def test_the_transform_stays_fixed_while_the_network_trains(transform, marker):
    from fakeface.config import TrainConfig
    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    cfg = TrainConfig(backbone="smallcnn", weights="none", image_size=32, input_transform=transform)
    model = build_classifier(cfg).model
    compile_model(model, cfg, 0.05, 10, xla=False)
    kernel = [w.copy() for w in model.get_layer(marker).get_weights()]
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, np.array([[0], [1], [1], [1]], "float32"))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # it learned
    assert all(np.array_equal(a, b) for a, b in zip(kernel, model.get_layer(marker).get_weights()))


@pytest.mark.parametrize(("transform", "crop", "test_crops"), [("npr", None, 1), ("highpass", None, 1), ("npr", 48, 5)])
def test_a_transformed_model_saves_loads_and_serves_with_identical_scores(transform, crop, test_crops, tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    from fakeface.config import TrainConfig
    from fakeface.inference.predict import load_model, predict_files
    from fakeface.inference.served_model import request_body, save_serving_model
    from fakeface.model.classifier import build_classifier, input_transform_of, scoring_model
    from fakeface.model.contract import make_contract, read_contract, write_model_with_contract
    from PIL import Image

    classifier = build_classifier(TrainConfig(backbone="nprnet", weights="none", image_size=64, crop_size=crop,
                                              input_transform=transform, test_crops=test_crops))
    model = scoring_model(classifier.model, test_crops)
    assert input_transform_of(model) == {"transform": transform, "crop": crop, "test_crops": test_crops}
    model.save(tmp_path / "model.keras")
    detector = write_model_with_contract(tmp_path / "model.keras", tmp_path / "detector.keras",
                                         make_contract(64, 0.5, front=input_transform_of(model)))
    assert read_contract(detector)["input"]["transform"] == transform
    assert read_contract(detector)["input"]["test_crops"] == test_crops
    rng = np.random.default_rng(2)
    files = []
    for k in range(3):
        path = tmp_path / f"face{k}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    images = np.stack([np.asarray(Image.open(f), "float32") for f in files])
    direct = np.asarray(model.predict_on_batch(images)).reshape(-1)
    loaded = load_model(str(detector))
    assert np.allclose(np.asarray(loaded.model.predict_on_batch(images)).reshape(-1), direct, atol=1e-6)
    scored = [row.p_fake for row in predict_files(loaded, files)]
    served = mlflow.pyfunc.load_model(str(save_serving_model(detector, tmp_path / "serving")))
    answer = served.predict(pd.DataFrame(request_body(open(f, "rb").read() for f in files)["dataframe_split"]["data"],
                                         columns=["image"]))
    assert np.allclose(scored, direct, atol=1e-6) and np.allclose(answer["p_fake"], direct, atol=1e-6)


@pytest.mark.parametrize(("size", "crop"), [(40, 24), (41, 24)])
def test_a_training_window_is_cut_never_resampled_and_the_model_cuts_exactly_it(size, crop):
    import keras
    import tensorflow as tf

    from fakeface.data.pipeline import random_window

    image = np.random.default_rng(4).integers(0, 256, (size, size, 3), dtype=np.uint8)
    placed = random_window(tf.constant(image), crop, tf.constant([5, 9], tf.int64)).numpy()
    assert placed.shape == image.shape and placed.dtype == np.uint8
    cut = np.asarray(keras.layers.CenterCrop(crop, crop)(placed[None].astype("float32")))[0].astype(np.uint8)
    windows = [(dy, dx) for dy in range(size - crop + 1) for dx in range(size - crop + 1)
               if np.array_equal(image[dy:dy + crop, dx:dx + crop], cut)]
    assert len(windows) == 1  # the source pixels, unchanged
    assert int(placed.astype(int).sum()) == int(cut.astype(int).sum())  # nothing else around it
    again = random_window(tf.constant(image), crop, tf.constant([5, 9], tf.int64)).numpy()
    assert np.array_equal(again, placed)  # deterministic for the seed


def test_a_cropping_model_scores_only_its_centre_window():
    from fakeface.config import TrainConfig
    from fakeface.model.classifier import build_classifier, input_transform_of
    from fakeface.model.contract import make_contract

    model = build_classifier(TrainConfig(backbone="smallcnn", weights="none", image_size=48, crop_size=32,
                                         input_transform="npr")).model
    assert input_transform_of(model) == {"transform": "npr", "crop": 32, "test_crops": 1}
    assert make_contract(48, 0.5, front=input_transform_of(model))["input"]["crop"] == 32
    image = np.random.default_rng(5).uniform(0, 255, (1, 48, 48, 3)).astype("float32")
    border = image.copy()
    border[:, :8] = 0.0
    border[:, :, -8:] = 255.0  # outside the centre 32 px window
    inside = image.copy()
    inside[:, 24, 24] = 255.0 - inside[:, 24, 24]
    score = model.predict_on_batch(image)
    assert np.array_equal(model.predict_on_batch(border), score)
    assert not np.array_equal(model.predict_on_batch(inside), score)


def test_training_feeds_windows_and_the_trained_model_carries_its_front(synthetic_shards, tmp_path, monkeypatch):
    from conftest import small_params
    from fakeface.config.runtime import Runtime
    from fakeface.data.pipeline import make_dataset
    from fakeface.model.classifier import input_transform_of, load_model_file
    from fakeface.stages import train
    from fakeface.stages.paths import TrainPaths

    _, shards = synthetic_shards
    images, _ = next(iter(make_dataset(shards, "train", 32, 8, training=True, window=16, seed=1)))
    images = images.numpy()
    assert np.all(images[:, :8] == 0) and np.all(images[:, 24:] == 0) and np.all(images[:, :, :8] == 0)
    assert images[:, 8:24, 8:24].std() > 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = small_params(train={"crop_size": 16, "input_transform": "npr", "head_epochs": 0,
                                 "fine_tune_epochs": 1, "test_crops": 5})
    paths = TrainPaths.in_artifacts(tmp_path, shards=shards)
    train.run(params, paths, Runtime(checkpoint_dir=tmp_path / "ck"))
    assert input_transform_of(load_model_file(paths.model)) == {"transform": "npr", "crop": 16, "test_crops": 5}
    # evaluate scores through the averaging model and says so in the detector's contract
    from fakeface.model.contract import read_contract
    from fakeface.stages import evaluate
    from fakeface.stages.paths import EvaluatePaths

    evaluated = EvaluatePaths.in_artifacts(tmp_path / "eval", model=paths.model, run_info=paths.run_info, shards=shards)
    result = evaluate.run(params, evaluated, track=False)
    front = read_contract(evaluated.detector)["input"]
    assert (front["transform"], front["crop"], front["test_crops"]) == ("npr", 16, 5)
    assert 0.0 <= result["auc"] <= 1.0 and any((tmp_path / "eval" / "explain").iterdir())


def test_a_five_window_model_averages_the_centre_and_the_four_corners():
    from fakeface.config import TrainConfig
    from fakeface.model.classifier import build_classifier, scoring_model

    model = build_classifier(TrainConfig(backbone="smallcnn", weights="none", image_size=48, crop_size=32,
                                         input_transform="npr", test_crops=5)).model
    averaged = scoring_model(model, 5)
    image = np.random.default_rng(6).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    scores = []
    for top, left in [(8, 8), (0, 0), (0, 16), (16, 0), (16, 16)]:
        placed = np.zeros_like(image)  # the window moved to the centre, where the trained model cuts
        placed[:, 8:40, 8:40] = image[:, top:top + 32, left:left + 32]
        scores.append(np.asarray(model.predict_on_batch(placed)))
    assert len({float(s[0, 0]) for s in scores}) == 5  # five different windows, five different scores
    assert np.allclose(averaged.predict_on_batch(image), np.mean(scores, axis=0), atol=1e-6)
    assert np.array_equal(scoring_model(model, 1).predict_on_batch(image), model.predict_on_batch(image))


def test_test_crops_need_a_window_smaller_than_the_image():
    from pydantic import ValidationError

    from fakeface.config import TrainConfig
    from fakeface.model.classifier import build_classifier, scoring_model

    # refused where params are read, before any training
    with pytest.raises(ValidationError, match="set crop_size below it"):
        TrainConfig(backbone="smallcnn", test_crops=5)
    with pytest.raises(ValidationError, match=r"must be smaller than the image \(32 px\)"):
        TrainConfig(backbone="smallcnn", image_size=32, crop_size=32, test_crops=5)
    with pytest.raises(ValidationError, match="crop_size 40 is larger than the image size 32"):
        TrainConfig(backbone="smallcnn", image_size=32, crop_size=40)
    whole = TrainConfig(backbone="smallcnn", weights="none", image_size=32, crop_size=32)
    with pytest.raises(ValueError, match="must be smaller than the image"):
        scoring_model(build_classifier(whole).model, 5)


def test_the_model_card_names_the_transform_the_window_and_the_averaging():
    from fakeface.analysis.metrics import compute_metrics
    from fakeface.analysis.model_card import render_card
    from fakeface.model.contract import make_contract

    labels, p_fake = np.array([0, 1, 0, 1]), np.array([0.2, 0.8, 0.6, 0.4])
    evaluation = {**compute_metrics(labels, p_fake, 0.5), "threshold_0_5": compute_metrics(labels, p_fake, 0.5)}

    def card(front):
        contract = make_contract(256, 0.5, front=front)
        return render_card(name="d", version="1", run_id="r", run_params={}, run_tags={}, index=None,
                           evaluation=evaluation, contract=contract, robustness=None, slices=None, external=None)

    assert "input transform `npr`, centre 224 px window, p(fake) averaged over 5 windows (centre and corners)" in card(
        {"transform": "npr", "crop": 224, "test_crops": 5})
    plain = card(None)
    assert "input transform `pixels` and preprocessing" in plain and "window" not in plain.split("\n")[2]
