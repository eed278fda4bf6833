"""What each training-pipeline component does in its pod: artifacts in, the stage, artifacts out.

The generated components (:mod:`components.stages`) call these with their validated params and
their KFP artifacts. Each maps the artifacts to the stage's paths
(:meth:`fakeface.stages.paths.StagePaths.in_artifacts`), runs the very ``run`` the CLI and DVC call
(:mod:`fakeface.stages`), and records metadata, metrics and report pages for the KFP UI.
"""

from __future__ import annotations

import os
from pathlib import Path

from fakeface.components import runtime as rt
from fakeface.config.runtime import ENV as RUNTIME_ENV
from fakeface.config.runtime import Runtime
from fakeface.stages import paths as stage_paths
from fakeface.stages import get_stage


def ingest_step(params, data) -> None:
    params = rt.with_absolute_source(params)
    with rt.working_dir(data.path, create=True) as root:
        # Relative paths: the manifest then says raw/..., valid wherever the artifact lands.
        report = get_stage("ingest").run(params, stage_paths.IngestPaths.in_artifacts("."))
        copied = rt.make_self_contained(root)
    data.metadata.update(rt.ingest_metadata(report, copied))


def eda_step(params, data, report) -> None:
    paths = stage_paths.EdaPaths.in_artifacts(rt.scratch("eda"), manifest=rt.manifest_of(data.path))
    with rt.working_dir(data.path):
        summary = get_stage("eda").run(params, paths)
    rt.write_eda_page(report, paths.out_dir, summary)


def augment_step(params, data, shards) -> None:
    paths = stage_paths.AugmentPaths(manifest=rt.manifest_of(data.path), shards=rt.absolute(shards.path))
    with rt.working_dir(data.path):
        index = get_stage("augment").run(params, paths)
    shards.metadata.update(rt.shards_metadata(index))


def preview_step(params, data, preview) -> None:
    paths = stage_paths.PreviewPaths.in_artifacts(rt.scratch("preview"), manifest=rt.manifest_of(data.path))
    with rt.working_dir(data.path):
        get_stage("preview").run(params, paths)
    rt.write_preview_page(preview, paths.preview, params)


def train_step(params, shards, model, train_metrics) -> None:
    paths = stage_paths.TrainPaths.in_artifacts(rt.absolute(model.path), shards=rt.absolute(shards.path))
    with rt.working_dir(rt.scratch("train")):
        result = get_stage("train").run(params, paths, runtime=checkpoint_runtime(params, paths.shards))
    rt.record_training(model, train_metrics, params, result)


def checkpoint_runtime(params, shards: Path) -> Runtime:
    """Checkpoints on the volume at ``FAKEFACE_CHECKPOINT_DIR`` (a cluster's PersistentVolumeClaim),
    in a folder of their own per training identity (params and data), so a retried or rescheduled
    pod of the same run resumes at its last finished epoch while other runs sharing the volume
    keep theirs; without the variable, in this pod's scratch folder."""
    root = os.environ.get(RUNTIME_ENV["checkpoint_dir"])
    if not root:
        return Runtime(checkpoint_dir=Path("checkpoints"))
    from fakeface.stages.train import fingerprint

    return Runtime(checkpoint_dir=Path(root) / fingerprint(params, shards))


def evaluate_step(params, model, shards, evaluation, metrics, classification, report) -> None:
    trained = stage_paths.TrainPaths.in_artifacts(model.path)
    paths = stage_paths.EvaluatePaths.in_artifacts(
        evaluation.path, model=trained.model, run_info=trained.run_info, shards=Path(shards.path)
    )
    result = get_stage("evaluate").run(params, paths)
    rt.record_evaluation(result, paths, evaluation, metrics, classification, report)


def register_step(params, model, evaluation, shards, registration, card) -> None:
    trained = stage_paths.TrainPaths.in_artifacts(model.path)
    evaluated = stage_paths.EvaluatePaths.in_artifacts(evaluation.path)
    paths = stage_paths.RegisterPaths(
        model=evaluated.detector, evaluation=evaluated.metrics, run_info=trained.run_info,
        robustness=evaluated.robustness, slices=evaluated.slices, external_metrics=evaluated.external_metrics,
        shards=Path(shards.path), registry=Path(registration.path), card=Path(card.path),
    )
    result = get_stage("register").run(params, paths)
    registration.metadata.update(rt.registration_metadata(result))
