"""Metrics by slice: source, original size, format, brightness band; one-class slices say why
they have no AUC instead of crashing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fakeface.config import ConfigError, parse_params
from fakeface.analysis.slices import (
    BANDS,
    SINGLE_CLASS,
    brightness_band,
    mean_luma,
    read_properties,
    slice_metrics,
    slices_markdown,
    write_slices,
)


def test_luma_and_bands():
    assert mean_luma(np.full((2, 2, 3), 100, np.uint8)) == pytest.approx(100)
    assert mean_luma(np.array([[[255, 0, 0]]])) == pytest.approx(0.299 * 255)
    edges = (85.0, 170.0)
    assert [brightness_band(v, edges) for v in (0, 84.9, 85, 169.9, 170, 255)] == [
        "dark", "dark", "mid", "mid", "bright", "bright"
    ]
    assert list(brightness_band(np.array([10.0, 100.0, 200.0]), edges)) == list(BANDS)
    with pytest.raises(ConfigError, match="brightness_edges"):
        parse_params({"evaluate": {"slices": {"brightness_edges": [170, 85]}}})


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 1, 0],
            "p_fake": [0.1, 0.7, 0.8, 0.6, 0.3, 0.2],
            "source": ["ffhq", "ffhq", "stylegan", "stylegan", "stylegan", "ffhq"],
            "size": ["256x256"] * 4 + ["1024x1024"] * 2,
            "format": ["JPEG"] * 6,
            "brightness": ["mid", "mid", "mid", "dark", "bright", "bright"],
        }
    )


def test_slice_metrics_on_a_hand_example():
    result = slice_metrics(_frame(), threshold=0.5)
    assert list(result) == ["source", "size", "format", "brightness"]
    ffhq = result["source"]["ffhq"]  # all real: accuracy only
    assert ffhq == {"n": 3, "real": 3, "fake": 0, "accuracy": pytest.approx(2 / 3), "auc": None, "note": SINGLE_CLASS}
    assert result["source"]["stylegan"]["accuracy"] == pytest.approx(2 / 3)
    big = result["size"]["256x256"]  # two of each class: AUC defined
    assert big["real"] == 2 and big["fake"] == 2 and big["auc"] == pytest.approx(0.75)
    assert "note" not in big
    assert result["format"]["JPEG"]["n"] == 6
    assert list(result["size"]) == ["256x256", "1024x1024"]  # largest slice first
    assert result["brightness"]["dark"]["auc"] is None

    table = slices_markdown(result, 0.5)
    assert "| source dataset | ffhq | 3 | 3 | 0 | 0.6667 | n/a (one class) |" in table
    assert "| original size (w x h) | 256x256 | 4 | 2 | 2 | 0.7500 | 0.7500 |" in table


def test_properties_come_from_the_shards(synthetic_shards, tmp_path):
    from fakeface.analysis.robustness import decode_original, iter_records

    _, shards = synthetic_shards
    frame = read_properties(shards, "test", (85.0, 170.0))
    assert len(frame) == 12 and set(frame["label"]) == {0, 1}
    assert set(frame["source"]) == {"synthetic"} and set(frame["format"]) == {"JPEG"}
    assert set(frame["size"]) == {"32x32"}
    assert set(frame["brightness"]) <= set(BANDS)
    first = next(iter_records(shards, "test"))
    assert frame["path"][0] == first["path"]
    assert frame["luma"][0] == pytest.approx(mean_luma(decode_original(first["image"])), abs=1e-3)

    scored = frame.assign(p_fake=np.linspace(0, 1, len(frame)))
    result = write_slices(scored, 0.5, tmp_path / "slices.json", tmp_path / "slices.md", (85.0, 170.0))
    saved = json.loads((tmp_path / "slices.json").read_text())
    assert saved == result and saved["slices"]["source"]["synthetic"]["n"] == 12
    assert saved["slices"]["size"]["32x32"]["auc"] is not None
    assert "| format | JPEG | 12 |" in (tmp_path / "slices.md").read_text()
