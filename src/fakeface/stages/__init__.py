"""The pipeline's stages, registered once: what each runs, reads and writes.

Every stage is a module with one function of the same shape, ``run(params, paths[, runtime])``:
the validated :class:`~fakeface.config.Params`, its :mod:`~fakeface.stages.paths` dataclass, and,
for stages that keep scratch state, the :class:`~fakeface.config.runtime.Runtime`. The registry below
adds what the adapters need to know about it, so none of them repeats it:

* the CLI builds one subcommand per stage, with an option per path (defaults: the DVC layout);
* ``dvc.yaml`` lists, per stage, exactly these params keys and these paths (a test checks it), so
  ``dvc repro`` reruns what a change touches and nothing else;
* the Kubeflow components call the same ``run`` with their artifact folders.

``params`` are the keys a stage reads, at the level it reads them: packing the shards reads only
``augment.shard_size``, so switching an augmentation reruns preview and train, never the packing.
This module imports no TensorFlow: the stage module is imported when the stage runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeface import FakefaceError
from fakeface.config.registry import Registry
from fakeface.config import Params
from fakeface.config.augment import list_augmentations
from fakeface.config.runtime import Runtime
from fakeface.stages.paths import (
    INPUT,
    OUTPUT,
    AugmentPaths,
    EdaPaths,
    EvaluatePaths,
    IngestPaths,
    PreviewPaths,
    RegisterPaths,
    StagePaths,
    TrainPaths,
)

#: The training-time augmentations, each its own params key (``augment.flip``, ...).
AUGMENTATION_KEYS = tuple(f"augment.{name}" for name in list_augmentations())


@dataclass(frozen=True)
class Stage:
    """One stage: its module (with ``run``), paths, the params keys it reads, and its runtime
    settings (fields of :class:`~fakeface.config.runtime.Runtime` it uses, e.g. ``checkpoint_dir``)."""

    name: str
    module: str
    paths: type[StagePaths]
    params: tuple[str, ...]
    help: str
    runtime: tuple[str, ...] = ()
    #: Whether the stage runs TensorFlow (the CLI then silences its start-up noise first).
    tensorflow: bool = True

    def run(self, params: Params, paths: StagePaths, runtime: Runtime | None = None, **options: Any) -> Any:
        """Check that the inputs exist, import the stage's module and call its ``run``."""
        self.check_inputs(paths)
        function = importlib.import_module(self.module).run
        if self.runtime:
            options["runtime"] = runtime or Runtime.from_env()
        return function(params, paths, **options)


    def check_inputs(self, paths: StagePaths) -> None:
        """A missing input is a clear one-line error naming it and the stage that makes it, not a
        traceback from deep inside TensorFlow or pandas."""
        for name in paths.roles(INPUT):
            path = Path(getattr(paths, name))
            if not path.exists():
                makers = [s.name for s in STAGES
                          if any(getattr(s.paths(), out) == path for out in s.paths.roles(OUTPUT))]
                hint = f" (an output of the {makers[0]} stage: run it first)" if makers else ""
                raise MissingInputError(f"{self.name}: {paths.help(name)} not found at {path}{hint}")


class MissingInputError(FakefaceError):
    """A stage's input path does not exist."""


#: The stages in pipeline order.
STAGES: Registry[Stage] = Registry("stage", documented=False)


def register_stage(stage: Stage) -> Stage:
    """Add a stage (in pipeline order); a second stage of the same name is an error."""
    if stage.paths.stage != stage.name:
        raise ValueError(f"stage {stage.name!r} has the paths of {stage.paths.stage!r}")
    return STAGES.add(stage)


def list_stages() -> list[str]:
    """Stage names in pipeline order."""
    return STAGES.names()


def get_stage(name: str) -> Stage:
    return STAGES.get(name)


register_stage(Stage(
    "ingest", "fakeface.ingest", IngestPaths, ("seed", "data"),
    "scan a source into a manifest, quarantining bad images", tensorflow=False,
))
register_stage(Stage(
    "eda", "fakeface.stages.eda", EdaPaths, ("seed", "eda", "tracking"),
    "counts, sizes, pixel statistics, sample grids and Fourier spectra (an MLflow side run)",
    tensorflow=False,
))
register_stage(Stage(
    "augment", "fakeface.stages.augment", AugmentPaths, ("augment.shard_size",),
    "pack the splits into TFRecord shards (augmentations run on the fly in training)",
))
register_stage(Stage(
    "preview", "fakeface.stages.preview", PreviewPaths, ("seed", "augment.preview_images", *AUGMENTATION_KEYS),
    "a grid of training images under each enabled augmentation",
))
register_stage(Stage(
    "train", "fakeface.stages.train", TrainPaths, ("seed", *AUGMENTATION_KEYS, "train", "tracking"),
    "fine-tune the backbone (two phases, resumable), tracked in MLflow",
    runtime=("checkpoint_dir", "cpu_replicas"),
))
register_stage(Stage(
    "evaluate", "fakeface.stages.evaluate", EvaluatePaths, ("evaluate", "tracking"),
    "test-split metrics at a threshold chosen on valid, calibration, robustness, slices, IG heatmaps",
))
register_stage(Stage(
    "register", "fakeface.stages.register", RegisterPaths,
    ("register", "tracking", "evaluate.batch_size", "data.max_pixels"),
    "log the model to MLflow, register it if it passes the gate, champion if it is not worse",
))


#: The params keys the ablation's steps read (``ablation/dvc.yaml`` lists them; the Kubeflow
#: ablation pipeline's typed parameters follow them): the study reads what shapes a trial's
#: training and validation; retraining the best also evaluates on test.
ABLATION_PARAMS: dict[str, tuple[str, ...]] = {
    "ablate": ("seed", *AUGMENTATION_KEYS, "train", "evaluate.threshold", "evaluate.batch_size", "tracking", "ablation"),
    "retrain": ("seed", *AUGMENTATION_KEYS, "train", "evaluate", "tracking", "ablation"),
}
