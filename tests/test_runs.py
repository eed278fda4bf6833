"""``fakeface runs``: sorting, formats, and runs that lack the metric."""

from __future__ import annotations

import math

import mlflow
import pytest

from conftest import ROOT
from fakeface import FakefaceError
from fakeface.tracking.runs import DEFAULT_PARAMS, RunRow, fetch_runs, parse_param_columns, render, runs_table, sort_rows


def _row(run_id: str, auc: float | None, backbone: str = "xception", start: int = 0, **metrics) -> RunRow:
    values = dict(metrics)
    if auc is not None:
        values["test_auc"] = auc
    return RunRow(run_id=run_id, run_name=f"run-{run_id}", status="FINISHED", start_time=start,
                  params={"train.backbone": backbone, "train.learning_rate": "0.01"}, metrics=values)


def test_sort_puts_best_first_and_rows_without_the_metric_last():
    rows = [_row("a" * 8, 0.7), _row("b" * 8, None), _row("c" * 8, 0.9), _row("d" * 8, math.nan),
            _row("e" * 8, 0.8)]
    assert [r.run_id[0] for r in sort_rows(rows, "test_auc")] == ["c", "e", "a", "b", "d"]
    assert [r.run_id[0] for r in sort_rows(rows, "test_auc", ascending=True)] == ["a", "e", "c", "b", "d"]
    # a metric no run has: the order is kept, nothing crashes
    assert [r.run_id[0] for r in sort_rows(rows, "no_such_metric")] == list("abcde")


def test_text_table_is_aligned_and_shows_missing_values_as_dashes():
    rows = sort_rows([_row("11111111", 0.75), _row("22222222", None), _row("33333333", 0.5)], "test_auc")
    text = render(rows, DEFAULT_PARAMS[:1], ["test_auc", "test_fake_f1"], "text")
    lines = text.splitlines()
    assert lines[0].split() == ["run", "run_id", "started", "backbone", "test_auc", "test_fake_f1"]
    assert set(lines[1]) <= {"-", " "}
    assert [line.split()[1] for line in lines[2:]] == ["11111111", "33333333", "22222222"]
    assert lines[2].split()[-2:] == ["0.7500", "-"] and lines[4].split()[-2:] == ["-", "-"]
    # numbers right-aligned under their header
    end = lines[0].index("test_auc") + len("test_auc")
    assert lines[2].index("0.7500") + 6 == end and lines[3].index("0.5000") + 6 == end
    assert lines[4][end - 1] == "-"


def test_markdown_table():
    rows = sort_rows([_row("aaaaaaaa", 0.6, backbone="vgg|19"), _row("bbbbbbbb", 0.95)], "test_auc")
    md = render(rows, DEFAULT_PARAMS[:2], ["test_auc"], "markdown").splitlines()
    assert md[0] == "| run | run_id | started | backbone | optimizer | test_auc |"
    assert md[1] == "|---|---|---|---|---|---:|"
    assert md[2].startswith("| run-bbbbbbbb | bbbbbbbb |") and md[2].endswith("| xception | - | 0.9500 |")
    assert "vgg\\|19" in md[3]  # a pipe in a value does not break the table
    with pytest.raises(FakefaceError, match="format 'html'"):
        render(rows, fmt="html")


def test_param_columns_can_be_added():
    columns = parse_param_columns(["train.momentum", "bs=train.batch_size", "train.backbone"])
    assert columns[-2:] == [("momentum", "train.momentum"), ("bs", "train.batch_size")]
    assert sum(key == "train.backbone" for _, key in columns) == 1


def _log_run(name: str, params: dict, metrics: dict, tags: dict | None = None) -> str:
    with mlflow.start_run(run_name=name, tags=tags) as run:
        if params:
            mlflow.log_params(params)
        if metrics:
            mlflow.log_metrics(metrics)
        return run.info.run_id


def test_runs_table_from_a_tracking_store(mlflow_store, capsys):
    from fakeface.cli.main import main

    mlflow.set_experiment("runs-test")
    base = {"train.optimizer": "adam", "train.head_activation": "sigmoid", "train.dropout": 0.2,
            "augment.flip.enabled": True}
    weak = _log_run("weak", {**base, "train.backbone": "smallcnn"}, {"test_auc": 0.61, "test_fake_f1": 0.5})
    best = _log_run("best", {**base, "train.backbone": "xception"}, {"test_auc": 0.97, "test_accuracy": 0.9})
    crashed = _log_run("crashed", {**base, "train.backbone": "vgg19"}, {"best_val_auc": 0.7})
    _log_run("eda", {}, {"n": 3.0}, tags={"fakeface.stage": "eda"})

    rows = fetch_runs("runs-test")
    assert {r.run_name for r in rows} == {"weak", "best", "crashed"}  # the eda side run left out
    assert len(fetch_runs("runs-test", include_side_runs=True)) == 4

    text = runs_table("runs-test")
    body = text.splitlines()[2:5]
    assert [line.split()[1] for line in body] == [best[:8], weak[:8], crashed[:8]]
    assert "1 without test_auc at the bottom" in text

    params_file = str(ROOT / "params.yaml")
    assert main(["--params", params_file, "runs", "--experiment", "runs-test", "--format", "markdown",
                 "--sort", "test_fake_f1", "--metric", "test_real_f1", "--param", "train.momentum"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| run | run_id | started | backbone |")
    assert md[0].endswith("| momentum | test_auc | test_accuracy | test_fake_f1 | best_val_auc | test_real_f1 |")
    assert md[2].startswith(f"| weak | {weak[:8]} |")  # the only run with test_fake_f1
    assert {md[3].split(" | ")[0], md[4].split(" | ")[0]} == {"| best", "| crashed"}

    assert main(["--params", params_file, "runs", "--experiment", "nope"]) == 2


def test_unknown_experiment_names_the_ones_there(mlflow_store):
    mlflow.set_experiment("present")
    with pytest.raises(FakefaceError, match="no experiment named 'absent'.*present"):
        fetch_runs("absent")
