"""Config validation: a wrong value fails at start-up naming the key, the value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from fakeface.config import ConfigError, Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_file_is_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Every section of the typed config is spelled out in params.yaml, so users see every knob.
    assert set(raw) == set(Params.model_fields)
    assert params.train.backbone == "smallcnn"
    assert params.data.source == "synthetic"


def test_unknown_choice_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as err:
        parse_params({"train": {"optimizer": "adamw"}})
    message = str(err.value)
    assert "train.optimizer = 'adamw'" in message
    assert "'sgd'" in message and "'adam'" in message


def test_unknown_backbone_lists_the_registry():
    with pytest.raises(ConfigError, match=r"train.backbone = 'resnet9'.*xception"):
        parse_params({"train": {"backbone": "resnet9"}})


def test_misspelt_key_is_an_error_not_a_silent_default():
    with pytest.raises(ConfigError, match=r"train.dropuot: unknown key"):
        parse_params({"train": {"dropuot": 0.3}})


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"train.dropout = 1.5"):
        parse_params({"train": {"dropout": 1.5}})


def test_one_unit_softmax_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="always outputs 1.0"):
        parse_params({"train": {"head_activation": "softmax", "head_units": 1}})


def test_heads_resolve_their_units():
    assert parse_params({"train": {"head_activation": "softmax"}}).train.resolved_head_units == 2
    assert parse_params({}).train.resolved_head_units == 1


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="must sum to 1"):
        parse_params({"data": {"split": {"train": 0.8, "valid": 0.3, "test": 0.1}}})


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        parse_params({"train": {"optimizer": "rmsprop", "batch_size": 0}, "seed": -1})
    assert "3 invalid parameter(s)" in str(err.value)


def test_weights_accepts_imagenet_none_or_a_weights_file():
    assert parse_params({"train": {"weights": "ImageNet"}}).train.weights == "imagenet"
    assert parse_params({"train": {"weights": "base.weights.h5"}}).train.weights == "base.weights.h5"
    with pytest.raises(ConfigError, match="train.weights"):
        parse_params({"train": {"weights": "resnet"}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_flat_params_use_dotted_keys():
    flat = parse_params({}).flat()
    assert flat["train.backbone"] == "smallcnn"
    assert flat["augment.flip.enabled"] is True
    assert flat["data.split.train"] == 0.8


def test_cli_exits_2_with_the_message(tmp_path, capsys):
    from fakeface.cli.main import main

    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  optimizer: adamw\n")
    assert main(["--params", str(bad), "params"]) == 2
    assert "train.optimizer = 'adamw'" in capsys.readouterr().err


def test_a_section_level_refusal_names_the_section_not_its_every_value():
    from fakeface.config import ConfigError, parse_params

    with pytest.raises(ConfigError) as err:
        parse_params({"train": {"test_crops": 5}}, "params.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "params.yaml: 1 invalid parameter(s):"
    assert lines[1].startswith("  - train: test_crops=5 averages windows of crop_size") and "backbone" not in lines[1]
