"""``fakeface predict``: files, folders, lists; .keras files and MLflow URIs; bad files reported
on their own rows; exit 0 when anything was scored, 2 when nothing was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import register_tiny_model
from fakeface.inference.predict import expand_inputs, load_input

pytestmark = pytest.mark.usefixtures("drop_cli_log_handler")

MODEL_NAME = "fakeface-predict-test"


@pytest.fixture(scope="module")
def registered(tracked_model):
    """Train, evaluate (Youden threshold on valid), register as @champion in a module store."""
    root, _, shards, evaluation, _ = register_tiny_model(tracked_model, MODEL_NAME)
    return root, shards, evaluation["threshold"]


@pytest.fixture()
def folder(synthetic_shards, tmp_path):
    """Two real JPEGs from the data set, a PNG, a greyscale JPEG, a corrupt JPEG, a truncated
    JPEG and a text file, some in a subfolder."""
    from fakeface.analysis.robustness import iter_records

    _, shards = synthetic_shards
    records = list(iter_records(shards, "test"))
    root = tmp_path / "incoming"
    (root / "sub").mkdir(parents=True)
    (root / "a_fake.jpg").write_bytes(records[-1]["image"])
    (root / "sub" / "b_real.jpg").write_bytes(records[0]["image"])
    with Image.open(root / "a_fake.jpg") as image:
        image.resize((40, 30)).save(root / "c.png")
        image.convert("L").save(root / "sub" / "d_grey.jpg", quality=95)
    (root / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (root / "f_truncated.jpg").write_bytes(records[1]["image"][:300])
    (root / "notes.txt").write_text("not an image\n")
    (root / ".hidden.jpg").write_bytes(records[2]["image"])  # hidden: skipped
    return root


GOOD = ("a_fake.jpg", "b_real.jpg", "c.png", "d_grey.jpg")
BAD = {"e_corrupt.jpg": "corrupt", "f_truncated.jpg": "corrupt", "notes.txt": "not_an_image"}


def _main(*argv: str) -> int:
    from fakeface.cli.main import main

    return main(["--params", "no-such-params.yaml", "predict", *argv])



def test_expand_inputs_walks_folders_and_reads_lists(folder, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\n{folder / 'c.png'}\n{folder / 'missing.jpg'}\n")
    paths = expand_inputs([str(folder), f"@{listed}"], [str(listed)])
    names = [p.split("/")[-1] for p in paths]
    assert names == ["a_fake.jpg", "c.png", "e_corrupt.jpg", "f_truncated.jpg", "notes.txt", "b_real.jpg",
                     "d_grey.jpg", "missing.jpg"]  # sorted per folder, duplicates dropped, hidden skipped


def test_inputs_are_decoded_as_training_decodes_them(folder):
    from fakeface.data.decode import model_input

    jpeg = folder / "a_fake.jpg"
    np.testing.assert_array_equal(load_input(jpeg, 32), model_input(jpeg.read_bytes(), 32))
    grey = load_input(folder / "sub" / "d_grey.jpg", 32)
    assert grey.shape == (32, 32, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    assert load_input(folder / "c.png", 64).shape == (64, 64, 3)


def test_folder_from_the_registered_champion_to_json(registered, folder, tmp_path, monkeypatch):
    root, _, threshold = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    out = tmp_path / "results.json"
    assert _main(str(folder), "--model", f"models:/{MODEL_NAME}@champion", "--out", str(out)) == 0

    saved = json.loads(out.read_text())
    # the threshold evaluate chose on valid, stored with the model by register
    assert saved["threshold"] == pytest.approx(threshold) and saved["threshold_source"] == "stored with the model"
    assert threshold != 0.5
    assert saved["files"] == 7 and saved["scored"] == 4 and saved["failed"] == 3
    rows = {r["path"].split("/")[-1]: r for r in saved["results"]}
    for name in GOOD:
        row = rows[name]
        assert row["error"] == "" and 0 <= row["p_fake"] <= 1
        assert row["label"] == ("fake" if row["p_fake"] >= threshold else "real")
    for name, reason in BAD.items():
        row = rows[name]
        assert row["p_fake"] is None and row["label"] == "" and row["error"].startswith(reason), row

    # the served model gives the same score as the local file
    import keras

    local = keras.models.load_model(root / "model.keras", compile=False)
    p = float(np.asarray(local.predict_on_batch(load_input(folder / "a_fake.jpg", 32)[None])).ravel()[0])
    assert rows["a_fake.jpg"]["p_fake"] == pytest.approx(p, rel=1e-5)


def test_run_uri_and_list_to_csv_with_explanations(registered, folder, tmp_path, monkeypatch):
    root, _, threshold = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    run_id = json.loads((root / "run.json").read_text())["run_id"]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(str(folder / n) for n in ("a_fake.jpg", "notes.txt", "c.png")) + "\n")
    out, explain = tmp_path / "results.csv", tmp_path / "ig"
    code = _main("--list", str(listed), "--model", f"runs:/{run_id}/model", "--out", str(out),
                 "--explain", str(explain), "--ig-steps", "20")
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "p_fake", "label", "error"]
    assert [p.split("/")[-1] for p in frame["path"]] == ["a_fake.jpg", "notes.txt", "c.png"]
    assert frame["p_fake"].notna().tolist() == [True, False, True]
    assert frame["error"][1].startswith("not_an_image")
    summary = json.loads((explain / "explain.json").read_text())
    assert len(summary["images"]) == 2 and summary["steps"] == 20
    assert all((explain / e["figure"]).stat().st_size > 0 for e in summary["images"])


def test_keras_file_with_threshold_and_stdout(registered, folder, capsys):
    root, _, _ = registered
    code = _main(f"@{_write_list(folder)}", "--model", str(root / "model.keras"), "--threshold", "0.0")
    assert code == 0
    frame = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert frame["label"].tolist() == ["fake", "fake"]  # everything is fake at threshold 0


def _write_list(folder):
    listed = folder / "list.lst"
    listed.write_text(f"{folder / 'a_fake.jpg'}\n{folder / 'sub' / 'b_real.jpg'}\n")
    return listed


def test_the_detector_file_carries_its_threshold(registered, folder, tmp_path, capsys):
    """evaluate writes models/detector.keras: the model with the threshold chosen on valid inside
    it, so a copied file still cuts where it should (not at 0.5); an explicit --threshold wins."""
    from fakeface.model.contract import read_contract

    root, _, threshold = registered
    detector = root / "eval" / "detector.keras"
    contract = read_contract(detector)
    assert contract["threshold"] == pytest.approx(threshold) and contract["threshold_method"] == "youden"
    assert contract["threshold_reliable"] is False  # 6 valid images per class
    assert contract["input"]["shape"] == [32, 32, 3]
    copied = tmp_path / "copy.keras"
    copied.write_bytes(detector.read_bytes())
    out = tmp_path / "r.json"
    assert _main(str(folder / "c.png"), "--model", str(copied), "--out", str(out)) == 0
    saved = json.loads(out.read_text())
    assert saved["threshold"] == pytest.approx(threshold) and saved["threshold_source"] == "stored with the model"
    assert _main(str(folder / "c.png"), "--model", str(copied), "--threshold", "0.25", "--out", str(out)) == 0
    assert json.loads(out.read_text())["threshold"] == 0.25


def test_default_threshold_for_a_plain_file(registered, folder, tmp_path):
    root, _, _ = registered
    out = tmp_path / "r.json"
    assert _main(str(folder / "c.png"), "--model", str(root / "model.keras"), "--out", str(out)) == 0
    saved = json.loads(out.read_text())
    assert saved["threshold"] == 0.5 and saved["threshold_source"] == "default"


def test_nothing_scored_exits_2_but_writes_the_errors(registered, folder, tmp_path, caplog):
    root, _, _ = registered
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in BAD:
        shutil.copy(folder / name, bad / name)
    out = tmp_path / "r.csv"
    assert _main(str(bad), str(tmp_path / "missing.jpg"), "--model", str(root / "model.keras"),
                 "--out", str(out)) == 2
    frame = pd.read_csv(out)
    assert len(frame) == 4 and frame["p_fake"].isna().all() and frame["error"].notna().all()
    assert frame["error"].iloc[-1].startswith("unreadable")
    (tmp_path / "empty").mkdir()
    assert _main(str(tmp_path / "empty"), "--model", str(root / "model.keras")) == 2
    assert "no input files" in caplog.text


def test_bad_model_and_out_exit_2(folder, tmp_path):
    assert _main(str(folder), "--model", str(tmp_path / "nope.keras")) == 2
    assert _main(str(folder), "--model", "x.keras", "--out", str(tmp_path / "r.txt")) == 2
