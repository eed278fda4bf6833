"""What the Kubeflow tests share: reading a compiled pipeline, and the reference a local run is
compared with.

A compiled pipeline is YAML of two documents: the PipelineSpec, then the Kubernetes platform spec
written by kfp-kubernetes. The reference is the stage functions run in this process, the way
``dvc repro`` runs them, with their files laid out as the pipeline's steps lay out their
artifacts, so the two runs' outputs can be compared file by file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


def load_compiled(path: Path) -> tuple[str, dict, dict]:
    """The compiled file's text, its PipelineSpec and its Kubernetes platform spec."""
    text = path.read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return text, spec, platform


def executor_spec(spec: dict, name: str) -> dict:
    """The container a step runs (image, command, env, resources)."""
    return spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]


def k8s_spec(platform: dict, name: str) -> dict:
    """A step's Kubernetes settings (secrets, volumes, node selection); {} when it has none."""
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].get(f"exec-{name}", {})


def compile_twice(compile_pipeline: Callable[..., Path], folder: Path, params) -> tuple[bytes, bytes]:
    """The bytes of two compilations of one pipeline with the same params (they must be equal)."""
    first = compile_pipeline(folder / "a.yaml", params).read_bytes()
    second = compile_pipeline(folder / "b.yaml", params).read_bytes()
    return first, second


def run_stages_in_process(params, root: Path, mp: pytest.MonkeyPatch, evaluation: Path) -> tuple[dict, dict]:
    """ingest, augment, train and evaluate in this process under ``root`` (``data``, ``shards``,
    ``model``, ``work``; evaluate's outputs in ``evaluation``), tracking to an MLflow store of
    their own; returns evaluate's result and the shard index. ``mp`` keeps the working folder and
    the tracking URI it sets, for the caller to undo."""
    from fakeface.stages import get_stage
    from fakeface.stages.paths import AugmentPaths, EvaluatePaths, IngestPaths, TrainPaths

    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    data, shards, model, work = (root / name for name in ("data", "shards", "model", "work"))
    for folder in (data, work):
        folder.mkdir(parents=True)
    mp.chdir(data)
    get_stage("ingest").run(params, IngestPaths.in_artifacts("."))
    index = get_stage("augment").run(params, AugmentPaths(manifest=Path("manifest.csv"), shards=shards))
    mp.chdir(work)
    trained = TrainPaths.in_artifacts(model, shards=shards)
    get_stage("train").run(params, trained)
    result = get_stage("evaluate").run(
        params, EvaluatePaths.in_artifacts(evaluation, model=trained.model, run_info=trained.run_info, shards=shards)
    )
    return result, index
