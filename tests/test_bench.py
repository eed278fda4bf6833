"""The bench's table writing on fake numbers (the real benchmark is not run in CI: `make bench`)."""

from __future__ import annotations

import json

import pytest

from bench.report import COLUMNS, markdown, rows

FAKE = {
    "input": {"shards": 2000.0, "idfd": 800.0, "decode_limit": 3000.0, "decode_limit_pil": 1300.0,
              "shards_full": 600.0, "cache_memory": 7000.0, "cache_disk": 5000.0, "images": 1000, "size": 256,
              "batch": 64, "threads": 2, "train_step": {"none": 100.0, "memory": 180.0}},
    "training": {"batch": 32, "warmup": 3, "steps": 10, "smallcnn_64": 150.0, "mobilenetv2_128": 45.0,
                 "gpu": "skipped: no GPU"},
    "inference": {"images": 1000, "size": 64, "batch_size": 64, "per_image_n": 100, "batch": 300.0,
                  "per_image": 15.0},
    "scale": {"small": {"n": 1000, "wall_s": 5.0, "rss_mb": 700.0},
              "large": {"n": 10000, "wall_s": 65.0, "rss_mb": 750.0}},
    "pipeline": {"noop_repro_s": 3.0, "dvc_repro_s": 100.0, "kfp_local_s": 150.0, "params_note": "tiny"},
}


def _verdicts(table_rows):
    return {row["benchmark"]: row["verdict"] for row in table_rows}


def test_rows_carry_targets_and_verdicts():
    verdicts = _verdicts(rows(FAKE))
    assert verdicts["input: shards / image_dataset_from_directory"] == "PASS"  # 2.5x >= 2x
    assert verdicts["input: shards / decode limit"] == "MISS"  # 0.67 < 0.9
    assert verdicts["input: cache_memory / decode limit"] == "PASS"  # 2.33 >= 2
    assert verdicts["input: shards_full / decode limit"] == "-"  # reported, no target
    assert verdicts["train step CPU fed by make_dataset: smallcnn 64 px, cache memory"] == "-"
    assert verdicts["predict: batch / per-image"] == "PASS"  # 20x
    assert verdicts["scale: wall-time ratio (10x images)"] == "MISS"  # 13 > 12
    assert verdicts["scale: peak RSS ratio"] == "PASS"
    assert verdicts["pipeline: dvc repro, nothing changed"] == "PASS"
    assert verdicts["pipeline: kfp.local / dvc repro"] == "MISS"  # 1.5 > 1.3
    assert verdicts["train step GPU: Xception 299 px (+/- mixed precision, XLA)"] == "skipped"
    assert verdicts["train step CPU: smallcnn 64 px"] == "-"  # a rate with no target


def test_markdown_has_the_columns_and_every_row():
    results = {"meta": {"date": "today", "cpus": 2, "total_s": 1.0}, "raw": FAKE, "rows": rows(FAKE)}
    text = markdown(results)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| "))
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(COLUMNS)
    assert sum(line.startswith("| ") for line in lines) == len(results["rows"]) + 1
    assert "| >= 2x | PASS |" in text and "| >= 0.90 | MISS |" in text and "skipped: no GPU" in text
    json.dumps(results)  # what latest.json holds must serialise


def test_a_failed_section_shows_as_a_miss():
    verdicts = _verdicts(rows({"pipeline": {"error": "section exited 1"}}))
    assert verdicts == {"pipeline: FAILED": "MISS"}


def test_container_rows():
    """The opt-in containers section: image, builds, DockerRunner against SubprocessRunner."""
    raw = {"containers": {"image_bytes": 3.3e9, "base_s": 30.0, "cold_build_s": 150.0, "code_rebuild_s": 12.0,
                          "nochange_rebuild_s": 5.0, "subprocess_s": 100.0, "docker_s": 140.0,
                          "docker_cached_s": 60.0, "params_note": "tiny"}}
    table = {row["benchmark"]: row for row in rows(raw)}
    assert table["containers: image size"]["measured"] == "3.30 GB"
    assert table["containers: rebuild after a code-only change"]["verdict"] == "PASS"
    assert table["containers: DockerRunner / SubprocessRunner"]["verdict"] == "PASS"  # 1.4 <= 1.5
    assert table["containers: cached second run / first run"]["verdict"] == "PASS"
    slow = rows({"containers": {**raw["containers"], "docker_s": 160.0}})
    assert _verdicts(slow)["containers: DockerRunner / SubprocessRunner"] == "MISS"
    skipped = rows({"containers": {"skipped": "no container engine"}})
    assert [row["verdict"] for row in skipped] == ["skipped"]


def test_crossval_summarises_each_condition_over_the_folds_and_tables_every_fold():
    from bench.crossval import fold_table, summarise

    def rates(real, fake):
        return {"real_acc": real, "fake_acc": fake, "mean_acc": (real + fake) / 2, "ap": 0.8, "auc": 0.9}

    folds = [
        {"fold": k, "epochs": 10, "train_s": 100.0 + k, "auc": auc, "papers": {
            "none": {"threshold": rates(real, 1.0), "0.5": rates(0.5, 1.0)},
            "jpeg_q75": {"threshold": rates(0.5, 0.5), "0.5": rates(0.0, 1.0)}}}
        for k, (auc, real) in enumerate([(0.8, 0.6), (1.0, 1.0)])
    ]
    summary = summarise(folds)
    assert summary["auc"] == pytest.approx({"mean": 0.9, "sd": 0.1, "min": 0.8, "max": 1.0})
    assert summary["papers"]["none"]["threshold"]["real_acc"]["mean"] == 0.8
    assert summary["papers"]["none"]["threshold"]["mean_acc"]["min"] == 0.8
    assert summary["papers"]["jpeg_q75"]["0.5"]["mean_acc"]["sd"] == 0.0
    table = fold_table(folds).splitlines()
    assert len(table) == 2 + 2 * 2  # header, rule, a row per fold and condition
    assert table[2].startswith("| 0 | as they are | 0.600 | 1.000 | 0.800 |") and "| JPEG q75 |" in table[3]
