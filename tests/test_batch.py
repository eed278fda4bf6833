"""Batch scoring: a folder with good and bad files scored by the batch pipeline under kfp.local
(a process per task, two parallel shares), every file accounted for once; the planning and merging
rules on their own; the compiled pipeline is golden (tests/test_kubeflow.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_scoring_images

pytestmark = pytest.mark.timeout(900)


@pytest.fixture()
def folder_with_bad_files(synthetic_shards, tmp_path):
    _, shards = synthetic_shards
    folder = tmp_path / "incoming"
    write_scoring_images(shards, folder)
    (folder / "nested").mkdir()
    (folder / "nested" / "e_copy.jpg").write_bytes((folder / "a_fake.jpg").read_bytes())
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (folder / "g_notes.txt").write_text("not an image\n")
    (folder / "h_empty.png").write_bytes(b"")
    return folder


@pytest.fixture()
def detector(tiny_model, tmp_path):
    from fakeface.model.contract import make_contract, write_model_with_contract

    model, _, _ = tiny_model
    return write_model_with_contract(model, tmp_path / "detector.keras", make_contract(32, 0.5))


def test_plan_splits_every_file_once_and_merge_refuses_a_missing_share(folder_with_bad_files, tmp_path):
    from fakeface.inference.batch import BatchError, merge, plan

    planned = plan(str(folder_with_bad_files), 3)
    files = [item for share in planned["shares"] for item in share]
    assert planned["n"] == 8 == len(set(files)) and sorted(len(s) for s in planned["shares"]) == [2, 3, 3]
    assert plan(str(folder_with_bad_files), 20)["n"] == 8  # more workers than files: empty shares
    table = pd.DataFrame({"path": planned["shares"][0], "p_fake": 0.5, "label": "fake", "error": "",
                          "model": "m", "threshold": 0.5})
    table.to_csv(tmp_path / "share0.csv", index=False)
    with pytest.raises(BatchError, match="missing"):
        merge([tmp_path / "share0.csv"], planned)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no files"):
        plan(str(tmp_path / "empty"), 2)
    with pytest.raises(BatchError, match="not a folder"):
        plan(str(tmp_path / "share0.csv"), 2)


def test_the_batch_pipeline_scores_a_folder_under_the_local_runner(folder_with_bad_files, detector, tmp_path,
                                                                   mlflow_store, monkeypatch):
    import mlflow

    from fakeface.inference.predict import load_model, predict_files
    from fakeface.pipelines.batch import run_batch_local

    monkeypatch.chdir(tmp_path)
    outputs = run_batch_local(str(folder_with_bad_files), str(detector), workdir=tmp_path / "kfp",
                              mlflow_tracking_uri=mlflow_store, workers=2)
    results = Path(outputs["results"].path)
    table = pd.read_csv(results / "results.csv", keep_default_na=False)
    listed = sorted(str(p) for p in folder_with_bad_files.rglob("*") if p.is_file())
    assert sorted(table["path"]) == listed  # every file, once
    errors = dict(zip(table["path"].map(lambda p: Path(p).name), table["error"].map(lambda e: e.split(":")[0])))
    assert errors["f_corrupt.jpg"] == "corrupt" and errors["g_notes.txt"] == "not_an_image"
    assert errors["h_empty.png"] == "empty"
    assert [name for name, error in errors.items() if not error] == ["a_fake.jpg", "b_real.jpg", "c.png",
                                                                     "d_grey.jpg", "e_copy.jpg"]
    # the same scores predict gives, file by file
    rows = predict_files(load_model(str(detector)), list(table["path"]))
    scored = table[table["error"] == ""]
    expected = {row.path: row.p_fake for row in rows if not row.error}
    assert [pytest.approx(expected[p], abs=1e-6) for p in scored["path"]] == list(scored["p_fake"].astype(float))
    summary = json.loads((results / "summary.json").read_text())
    assert (summary["files"], summary["scored"], summary["failed"]) == (8, 5, 3)
    assert summary["errors"] == {"corrupt": 1, "not_an_image": 1, "empty": 1}
    assert "8 files" in Path(outputs["report"].path).read_text()
    runs = mlflow.search_runs(experiment_names=["fakeface-batch"])
    assert len(runs) == 1 and runs["metrics.failed"].iloc[0] == 3


def test_the_compiled_batch_pipeline_fans_out_over_the_workers_and_back_in():
    from conftest import ROOT
    from kfp_helpers import load_compiled

    _, spec, platform = load_compiled(ROOT / "pipelines" / "compiled" / "batch.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(name for name in tasks if name.startswith("for-loop"))
    assert tasks[loop]["parameterIterator"]["items"]["raw"] == "[0, 1, 2, 3]"
    assert sorted(tasks["batch-merge"]["dependentTasks"]) == ["batch-plan", loop]
    assert all(not task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "source", "model_uri", "evaluate_batch_size", "data_max_pixels", "tracking_experiment"}
    assert spec["root"]["inputDefinitions"]["parameters"]["model_uri"]["defaultValue"] == \
        "models:/fakeface-detector@champion"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # every task reads S3 (the source, the model, MLflow's artifacts): the Secret by name only
    assert all(spec_["secretAsEnv"] for spec_ in executors.values())
