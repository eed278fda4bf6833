"""Recipes: every shipped profile validates, `fakeface recipe use` writes what it says, and each
recipe's model takes a training step (the GPU recipes at a small size, without downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from fakeface.config import load_params
from fakeface.recipes import RecipeError, list_recipes, load_recipe

GPU_RECIPES = {"kaggle-xception": 71, "kaggle-efficientnet": 32}  # the smallest size each backbone takes


def test_the_shipped_recipes_validate_and_say_what_they_are_for():
    assert set(list_recipes()) == {"quickstart", "kaggle-xception", "kaggle-efficientnet", "cpu-faces", "cpu-faces-npr"}
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.description and recipe.purpose and recipe.cost, name
        recipe.params()  # validated against the config


def test_real_data_recipes_train_robustly():
    for name in ("kaggle-xception", "kaggle-efficientnet", "cpu-faces"):
        augment = load_recipe(name).params().augment
        for step in ("jpeg", "blur", "downscale"):
            section = getattr(augment, step)
            assert section.enabled and section.probability == 0.5, (name, step)
    assert load_recipe("kaggle-efficientnet").params().train.backbone == "efficientnetb0"
    seed_setup = load_recipe("kaggle-xception").params().train
    assert (seed_setup.backbone, seed_setup.weights, seed_setup.head_epochs > 0) == ("xception", "imagenet", True)
    assert load_recipe("quickstart").params() == load_params("params.yaml")  # the documented defaults
    # the artifact-preserving recipe resamples nothing: no resize, blur, downscale or re-compression
    npr = load_recipe("cpu-faces-npr").params()
    assert (npr.train.backbone, npr.train.input_transform, npr.train.image_size) == ("nprnet", "npr", 256)
    assert npr.augment.enabled() == ["flip"]


def test_recipe_use_writes_params_yaml(tmp_path, monkeypatch, capsys):
    from fakeface.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["recipe", "use", "cpu-faces", "--source", "my-faces"]) == 0
    written = load_params(tmp_path / "params.yaml")
    assert written == load_recipe("cpu-faces").params("my-faces")
    assert written.data.source == "my-faces" and written.train.image_size == 256
    assert (tmp_path / "params.yaml").read_text().startswith("# Recipe cpu-faces:")
    assert main(["recipe", "use", "no-such-recipe"]) == 2
    assert "unknown recipe 'no-such-recipe'" in capsys.readouterr().err


@pytest.mark.parametrize("name", [*GPU_RECIPES, "cpu-faces", "cpu-faces-npr"])
def test_each_recipes_model_takes_a_training_step(name):
    """The GPU recipes to one step at a small size with random weights (no ImageNet download, no
    GPU here); the CPU recipe at its real size."""
    import keras

    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    train = load_recipe(name).params().train
    if name in GPU_RECIPES:
        train = train.model_copy(update={"weights": "none", "image_size": GPU_RECIPES[name]})
    classifier = build_classifier(train)
    compile_model(classifier.model, train, train.learning_rate, 10, xla=False)
    size = classifier.image_size
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = np.array([[0.0], [1.0]], dtype="float32")
    logs = classifier.model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    keras.backend.clear_session()
    yaml.safe_dump(train.model_dump(mode="json"))  # a recipe's train section serialises (params.yaml)
