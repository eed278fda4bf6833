"""Every stage's input and output paths, named once.

Each stage function takes ``(params, paths)`` where ``paths`` is one of the dataclasses below.
Their defaults are the project layout ``dvc.yaml`` uses (and the CLI's option defaults, derived
from the fields); :meth:`StagePaths.in_artifacts` gives the layout inside Kubeflow artifact
folders, where each output file keeps the short name its field declares. The CLI, ``dvc.yaml`` (a
test compares them) and the Kubeflow components therefore cannot disagree on a file name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

P = TypeVar("P", bound="StagePaths")

INPUT, OUTPUT = "input", "output"


def _path(default: str, role: str, name: str | None, help_text: str) -> Any:
    return field(default=Path(default), metadata={"role": role, "name": name, "help": help_text})


def inp(default: str, help_text: str, name: str | None = None) -> Any:
    """An input path (a DVC dep); ``name``: its file name inside the producing stage's artifact."""
    return _path(default, INPUT, name, help_text)


def out(default: str, help_text: str, name: str | None = None) -> Any:
    """An output path (a DVC out); ``name``: its file name inside this stage's artifact folder."""
    return _path(default, OUTPUT, name or Path(default).name, help_text)


def manifest_input() -> Any:
    """Ingest's manifest, read by eda, augment and preview."""
    return inp("data/manifest.csv", "the ingested manifest", name="manifest.csv")


@dataclass(frozen=True)
class StagePaths:
    """Base of the per-stage path sets: the roles and names of the fields, and the two layouts."""

    #: The stage these paths belong to, given as a class keyword: ``class EdaPaths(StagePaths, stage="eda")``.
    stage: ClassVar[str] = ""

    def __init_subclass__(cls, stage: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.stage = stage

    @classmethod
    def roles(cls, role: str) -> list[str]:
        """Field names of one role (:data:`INPUT` or :data:`OUTPUT`), in declaration order."""
        return [f.name for f in fields(cls) if f.metadata["role"] == role]

    @classmethod
    def option(cls, name: str) -> str:
        """The CLI option of a field: ``run_info`` -> ``--run-info``."""
        return "--" + name.replace("_", "-")

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def in_artifacts(cls: type[P], out_dir: str | Path, **inputs: str | Path) -> P:
        """The Kubeflow layout: every output inside ``out_dir`` under its short name; inputs given."""
        out_dir = Path(out_dir)
        values: dict[str, Path] = {name: Path(value) for name, value in inputs.items()}
        for f in fields(cls):
            if f.metadata["role"] == OUTPUT:
                values[f.name] = out_dir / f.metadata["name"]
        return cls(**values)

    @classmethod
    def check_names(cls) -> None:
        """Two outputs with one short name would overwrite each other in an artifact folder."""
        names = [f.metadata["name"] for f in fields(cls) if f.metadata["role"] == OUTPUT]
        if len(set(names)) != len(names):
            raise ValueError(f"{cls.__name__}: outputs share a file name: {names}")

    def as_dict(self) -> dict[str, Path]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class IngestPaths(StagePaths, stage="ingest"):
    raw_dir: Path = out("data/raw", "normalised and extracted images", name="raw")
    manifest: Path = out("data/manifest.csv", "one row per kept image: path, label, split, sha256, ...")
    report: Path = out("data/ingest_report.json", "what was kept and quarantined, and why")


@dataclass(frozen=True)
class EdaPaths(StagePaths, stage="eda"):
    manifest: Path = manifest_input()
    out_dir: Path = out("reports/eda", "counts, sizes, pixel statistics, grids, spectra", name="eda")


@dataclass(frozen=True)
class AugmentPaths(StagePaths, stage="augment"):
    manifest: Path = manifest_input()
    shards: Path = out("data/shards", "TFRecord shards per split and index.json", name="shards")


@dataclass(frozen=True)
class PreviewPaths(StagePaths, stage="preview"):
    manifest: Path = manifest_input()
    preview: Path = out("reports/augment/preview.png", "a grid of training images, each augmentation alone and all")


@dataclass(frozen=True)
class TrainPaths(StagePaths, stage="train"):
    shards: Path = inp("data/shards", "the packed shards")
    model: Path = out("models/model.keras", "the trained Keras model")
    run_info: Path = out("models/run.json", "the MLflow run the later stages log to")
    history: Path = out("plots/train/history.csv", "per-epoch loss, accuracy and AUC", name="history.csv")
    metrics: Path = out("metrics/train.json", "best validation AUC, epochs run", name="train.json")


@dataclass(frozen=True)
class EvaluatePaths(StagePaths, stage="evaluate"):
    model: Path = inp("models/model.keras", "the trained model", name="model.keras")
    run_info: Path = inp("models/run.json", "the training run", name="run.json")
    shards: Path = inp("data/shards", "the packed shards (valid chooses the threshold, test scores)")
    metrics: Path = out("metrics/evaluate.json", "test metrics at the chosen threshold and at 0.5")
    detector: Path = out("models/detector.keras", "the model with its threshold and input contract inside "
                         "(what predict and register use)")
    robustness: Path = out("metrics/robustness.json", "test metrics under each perturbation")
    external_metrics: Path = out("metrics/external.json", "every external set's metrics (evaluate.external)")
    slices: Path = out("metrics/slices.json", "metrics by source, size, format and brightness")
    plots: Path = out("plots/evaluate", "ROC, PR, confusion, calibration and robustness CSVs", name="plots")
    reports: Path = out("reports/evaluate", "figures and the classification table", name="reports")
    explain: Path = out("reports/explain", "integrated-gradients heatmaps", name="explain")


@dataclass(frozen=True)
class RegisterPaths(StagePaths, stage="register"):
    model: Path = inp("models/detector.keras", "the model with its contract (threshold, input)", name="detector.keras")
    evaluation: Path = inp("metrics/evaluate.json", "the test metrics (the gate reads test AUC)", name="evaluate.json")
    run_info: Path = inp("models/run.json", "the training run", name="run.json")
    robustness: Path = inp("metrics/robustness.json", "test metrics under each perturbation", name="robustness.json")
    slices: Path = inp("metrics/slices.json", "metrics by slice", name="slices.json")
    external_metrics: Path = inp("metrics/external.json", "external sets' metrics", name="external.json")
    shards: Path = inp("data/shards", "the packed shards (the new model and the champion both score the test split)")
    registry: Path = out("models/registry.json", "what was registered (name, version, alias) or why not")
    card: Path = out("models/model_card.md", "the version's model card (data, training, metrics, threshold, limits)")


ALL: tuple[type[StagePaths], ...] = (
    IngestPaths,
    EdaPaths,
    AugmentPaths,
    PreviewPaths,
    TrainPaths,
    EvaluatePaths,
    RegisterPaths,
)
for _paths in ALL:
    _paths.check_names()
