"""The external data sets: each layout is ingested on its own, on a miniature from ``ingest_data``;
several sources combine into one manifest with a ``source`` column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import ConfigError, DataConfig, parse_params
from fakeface.ingest import IngestError, IngestReport, ingest
from fakeface.data.manifest import read_manifest
from ingest_data import build_artifact, build_ciplab, build_csv_set, build_split_folders, write_jpeg


def run(source, tmp_path: Path, seed: int = 7) -> tuple[IngestReport, pd.DataFrame]:
    cfg = DataConfig(source=source if isinstance(source, list) else str(source))
    manifest = tmp_path / "out" / "manifest.csv"
    report = ingest(cfg, seed, tmp_path / "raw", manifest, tmp_path / "out" / "report.json")
    assert report.seen == report.kept + report.quarantined
    assert report.quarantined == len(report.items) == sum(report.by_reason.values())
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report.to_dict()))
    frame = read_manifest(manifest)
    assert frame.groupby("sha256")["split"].nunique().max() == 1
    assert not frame["sha256"].duplicated().any()
    return report, frame


def every_split_has_both(frame: pd.DataFrame) -> None:
    for split in SPLITS:
        assert set(frame[frame["split"] == split]["label"]) == set(CLASS_NAMES), split


# --------------------------------------------------------------------------- ArtiFact


def test_artifact_is_recognised_and_labelled_from_metadata(tmp_path: Path) -> None:
    root = build_artifact(tmp_path / "artifact")
    write_jpeg(root / "ffhq" / "images" / "stray.jpg")  # on disk, not listed
    meta = root / "stylegan2" / "metadata.csv"
    frame = pd.read_csv(meta)
    frame.loc[len(frame)] = {"filename": "gone.jpg", "image_path": "images/gone.jpg", "target": 1, "category": "cat"}
    frame.to_csv(meta, index=False)

    report, manifest = run(root, tmp_path)
    assert report.layout == "artifact" and report.source_name == "artifact"
    assert set(manifest["source"]) == {"artifact"}
    assert report.kept == 24 and report.by_reason == {"missing_file": 1, "unlabeled": 1}
    generators = manifest["note"].str.extract(r"generator=([^;]+)")[0]
    labels = dict(zip(generators, manifest["label"]))
    assert labels == {"celebahq": "real", "ffhq": "real", "stylegan2": "fake", "taming_transformer": "fake"}
    assert set(manifest["note"].str.extract(r"category=([^;]+)")[0]) == {"human_faces", "cat"}
    every_split_has_both(manifest)  # no split of its own: split by data.split


# --------------------------------------------------------------------------- CIPLAB


def test_ciplab_keeps_the_difficulty_in_the_note(tmp_path: Path) -> None:
    report, manifest = run(build_ciplab(tmp_path / "ciplab-zip"), tmp_path)
    assert report.layout == "ciplab" and set(manifest["source"]) == {"ciplab"}
    assert report.kept == 18 and report.quarantined == 0
    fakes = manifest[manifest["label"] == "fake"]
    difficulty = fakes["note"].str.extract(r"difficulty=(\w+)")[0]
    assert sorted(difficulty) == sorted(["easy", "mid", "hard"] * 3)
    for name, level in zip(fakes["original_path"], difficulty):
        assert Path(name).name.startswith(f"{level}_")
    assert (manifest[manifest["label"] == "real"]["note"] == "").all()
    every_split_has_both(manifest)


# --------------------------------------------------------------------------- Real vs Fake Face Classification


def test_split_folders_with_other_spellings_keep_their_split(tmp_path: Path) -> None:
    """{Train,Validation,Test}/{Real,Fake}: the layout of several Kaggle real-vs-fake face sets."""
    root = build_split_folders(tmp_path / "rvf-faces")
    report, manifest = run(root, tmp_path)
    assert report.layout == "splits" and set(manifest["source"]) == {"rvf-faces"}
    assert report.counts == {
        "train": {"real": 4, "fake": 4},
        "valid": {"real": 2, "fake": 2},
        "test": {"real": 2, "fake": 2},
    }
    for row in manifest.itertuples():
        folder = Path(row.original_path).parts[-3].lower()
        assert {"train": "train", "validation": "valid", "test": "test"}[folder] == row.split
        assert Path(row.original_path).parent.name.lower() == row.label


# --------------------------------------------------------------------------- generic CSV


@pytest.mark.parametrize("as_file", [True, False])
def test_generic_csv_with_split(tmp_path: Path, as_file: bool) -> None:
    csv_path = build_csv_set(tmp_path / "mine", with_split=True)
    listed = pd.read_csv(csv_path)
    report, manifest = run(csv_path if as_file else csv_path.parent, tmp_path)
    assert report.layout == "csv" and set(manifest["source"]) == {"list" if as_file else "mine"}
    assert report.kept == 12 and report.quarantined == 0
    expected_label = {
        row.path: (row.label if row.label in CLASS_NAMES else CLASS_NAMES[int(row.label)])
        for row in listed.itertuples()
    }
    expected_split = {row.path: {"val": "valid"}.get(row.split, row.split) for row in listed.itertuples()}
    for row in manifest.itertuples():
        rel = Path(row.original_path).resolve().relative_to(csv_path.parent.resolve()).as_posix()
        assert row.label == expected_label[rel]
        assert row.split == expected_split[rel]


def test_generic_csv_without_split_is_split_by_params_and_unlisted_files_are_reported(tmp_path: Path) -> None:
    csv_path = build_csv_set(tmp_path / "mine", with_split=False)
    write_jpeg(csv_path.parent / "imgs" / "extra.jpg")
    frame = pd.read_csv(csv_path)
    frame.loc[len(frame)] = {"path": "imgs/missing.jpg", "label": "fake"}
    frame.loc[len(frame)] = {"path": "imgs/000.jpg", "label": "maybe"}  # unusable label
    frame.to_csv(csv_path, index=False)
    report, manifest = run(csv_path, tmp_path)
    assert report.kept == 12
    assert report.by_reason == {"missing_file": 1, "unlabeled": 1}
    assert report.csv["list"] == {"missing": 1, "unreadable_rows": 1}
    every_split_has_both(manifest)


# --------------------------------------------------------------------------- several sources


def test_several_sources_make_one_manifest_with_a_source_column(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "artifact")
    ciplab = build_ciplab(tmp_path / "ciplab-zip")
    plain = tmp_path / "my-faces"
    for label in CLASS_NAMES:
        for k in range(6):
            write_jpeg(plain / label / f"{k}.jpg")
    # The same bytes in two sources are kept once.
    (plain / "real" / "copy.jpg").write_bytes((artifact / "ffhq" / "images" / "human_faces" / "img000.jpg").read_bytes())

    report, manifest = run([str(artifact), str(ciplab), str(plain)], tmp_path)
    assert report.source == [str(artifact), str(ciplab), str(plain)]
    assert report.source_name == "artifact+ciplab+my-faces"
    assert report.layout == "artifact+ciplab+folders"
    counts = manifest["source"].value_counts().to_dict()
    assert counts == {"artifact": 24, "ciplab": 18, "my-faces": 12}
    assert report.by_reason in ({"duplicate": 1}, {"cross_split_duplicate": 1})
    every_split_has_both(manifest)
    # Deterministic for a seed.
    again, second = run([str(artifact), str(ciplab), str(plain)], tmp_path / "again")
    assert list(second["split"]) == list(manifest["split"])


def test_source_names_must_differ(tmp_path: Path) -> None:
    a = build_ciplab(tmp_path / "a")
    b = build_ciplab(tmp_path / "b")
    with pytest.raises(IngestError, match="distinct"):
        run([str(a), str(b)], tmp_path)


def test_data_source_accepts_a_string_or_a_list() -> None:
    assert DataConfig(source=" synthetic ").source == "synthetic"
    assert DataConfig(source=["synthetic"]).source == "synthetic"
    assert DataConfig(source=["a", "b"]).sources == ["a", "b"]
    assert DataConfig().sources == ["synthetic"]
    for bad in ([], ["a", " "], ["a", "a"]):
        with pytest.raises(ConfigError, match="data.source"):
            parse_params({"data": {"source": bad}})
    flat = parse_params({"data": {"source": ["a", "b"]}}).flat()
    assert flat["data.source"] == ["a", "b"]


# --------------------------------------------------------------------------- params: categories, cross-dataset


def test_artifact_categories_are_chosen_in_params(tmp_path: Path) -> None:
    root = build_artifact(tmp_path / "artifact")
    cfg = DataConfig(source=str(root), artifact_categories=["human_faces"])
    manifest = tmp_path / "out" / "manifest.csv"
    report = ingest(cfg, 7, tmp_path / "raw", manifest, tmp_path / "out" / "report.json")
    frame = read_manifest(manifest)
    assert set(frame["note"].str.extract(r"category=([^;]+)")[0]) == {"human_faces"}
    assert report.kept == 12 and report.by_reason == {"excluded": 12}
    assert report.seen == report.kept + report.quarantined


def test_cross_dataset_evaluation_tests_on_one_source_only(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path / "artifact")
    ciplab = build_ciplab(tmp_path / "ciplab-zip")
    # A copy of a training image inside the test source must not leak into test.
    (ciplab / "real_and_fake_face" / "training_real" / "copy.jpg").write_bytes(
        (artifact / "ffhq" / "images" / "cat" / "img001.jpg").read_bytes()
    )
    cfg = DataConfig(source=[str(artifact), str(ciplab)], test_source="ciplab")
    manifest = tmp_path / "out" / "manifest.csv"
    report = ingest(cfg, 7, tmp_path / "raw", manifest, tmp_path / "out" / "report.json")
    frame = read_manifest(manifest)
    assert set(frame[frame["split"] == "test"]["source"]) == {"ciplab"}
    assert set(frame[frame["split"] != "test"]["source"]) == {"artifact"}
    assert (frame["source"] == "ciplab").sum() == 18  # all of it, the copy left out
    assert report.by_reason == {"cross_split_duplicate": 1}
    every_split_has_both(frame)
    with pytest.raises(IngestError, match="none of the sources"):
        ingest(
            DataConfig(source=[str(artifact), str(ciplab)], test_source="ffhq"),
            7, tmp_path / "raw2", tmp_path / "o2" / "m.csv", tmp_path / "o2" / "r.json",
        )
    with pytest.raises(ConfigError, match="at least two sources"):
        parse_params({"data": {"source": "synthetic", "test_source": "synthetic"}})
