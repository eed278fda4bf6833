"""One Kubeflow Pipelines (v2) lightweight component per stage, each a thin wrapper.

Every component takes the pipeline's one ``params`` parameter (the whole of ``params.yaml`` as a
JSON object, validated in the pod by :func:`fakeface.config.parse_params`) and calls the same stage
function the CLI and ``dvc repro`` call. What they add is only the mapping between KFP artifacts
and the stage's paths:

==========  ==========================================  ============================================
stage       inputs                                      outputs
==========  ==========================================  ============================================
ingest      params                                      ``data`` (Dataset: manifest.csv, images)
eda         params, data                                ``report`` (HTML, PNGs inlined)
augment     params, data                                ``shards`` (Dataset), ``preview`` (HTML)
train       params, shards                              ``model`` (Model: model.keras, run.json,
                                                        history.csv, train.json), ``train_metrics``
evaluate    params, model, shards                       ``evaluation`` (Artifact: evaluate.json,
                                                        robustness.json, slices.json, plots/,
                                                        reports/, explain/), ``metrics`` (Metrics),
                                                        ``classification`` (ClassificationMetrics),
                                                        ``report`` (Markdown)
register    params, model, evaluation                   ``registration`` (Artifact: registry.json)
==========  ==========================================  ============================================

Every component runs in the project image (:data:`IMAGE`, from the ``FAKEFACE_IMAGE`` environment
variable when this module is imported, else ``ghcr.io/fakeface/fakeface:<version>``), which has
this package, ``fakeface`` and ``kfp`` installed: nothing is pip-installed when a pod starts
(``install_kfp_package=False``, no ``packages_to_install``).

The function bodies are shipped as source code, so they import what they use inside themselves.
No ``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

import os

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from fakeface import __version__

DEFAULT_IMAGE = f"ghcr.io/fakeface/fakeface:{__version__}"
#: The project image every component runs in; ``FAKEFACE_IMAGE`` overrides it at compile time.
IMAGE = os.environ.get("FAKEFACE_IMAGE") or DEFAULT_IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(params: str, data: Output[Dataset]):
    """Ingest data.source into a self-contained data set: manifest.csv, ingest_report.json, images."""
    from pathlib import Path

    from components import _runtime as rt
    from fakeface.ingest import ingest as run_ingest

    rt.begin()
    cfg = rt.with_absolute_source(rt.parse_params(params))
    with rt.working_dir(data.path, create=True) as root:
        # Relative paths: the manifest then says raw/..., valid wherever the artifact lands.
        report = run_ingest(cfg.data, cfg.seed, Path("raw"), Path("manifest.csv"), Path("ingest_report.json"))
        copied = rt.make_self_contained(root)
    data.metadata.update(
        {
            "source": report.source_name,
            "seen": report.seen,
            "kept": report.kept,
            "quarantined": report.quarantined,
            "copied_in": copied,
            **{f"{split}_{label}": n for split, row in report.counts.items() for label, n in row.items()},
        }
    )


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def eda(params: str, data: Input[Dataset], report: Output[HTML]):
    """Counts, sizes, pixel statistics, sample grids and Fourier spectra; an MLflow side run."""
    import tempfile
    from pathlib import Path

    from components import _runtime as rt
    from fakeface import tracking
    from fakeface.eda import eda as run_eda

    rt.begin()
    cfg = rt.parse_params(params)
    out_dir = Path(tempfile.mkdtemp(prefix="fakeface-eda-"))
    with rt.working_dir(data.path):
        summary = run_eda(cfg.eda, cfg.seed, Path("manifest.csv"), out_dir)
    run_id = tracking.log_side_run("eda", cfg.tracking.experiment, out_dir, summary)
    images = [(f"Sample: {name}", out_dir / f"grid_{name}.png") for name in ("real", "fake")]
    images.append(("Mean log spectrum per class, difference and azimuthal average", out_dir / "spectrum.png"))
    page = rt.html_page("fakeface EDA", images, summary, intro=f"MLflow run {run_id}")
    Path(report.path).write_text(page)
    report.metadata["mlflow_run_id"] = run_id


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def augment(params: str, data: Input[Dataset], shards: Output[Dataset], preview: Output[HTML]):
    """Pack the splits into TFRecord shards (index.json) and preview the configured augmentations."""
    import tempfile
    from pathlib import Path

    from components import _runtime as rt
    from fakeface.augment import augment as run_augment

    rt.begin()
    cfg = rt.parse_params(params)
    shards_dir = Path(shards.path).absolute()
    preview_png = Path(tempfile.mkdtemp(prefix="fakeface-augment-")) / "preview.png"
    with rt.working_dir(data.path):
        index = run_augment(cfg.augment, cfg.seed, Path("manifest.csv"), shards_dir, preview_png)
    intro = "Augmentations enabled: " + (", ".join(cfg.augment.enabled()) or "none")
    Path(preview.path).write_text(rt.html_page("fakeface augmentation preview", [("Preview", preview_png)], intro=intro))
    shards.metadata.update({f"{split}_images": int(entry["n"]) for split, entry in index.items()})
    shards.metadata.update({f"{split}_digest": entry["digest"] for split, entry in index.items()})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(params: str, shards: Input[Dataset], model: Output[Model], train_metrics: Output[Metrics]):
    """Fine-tune the backbone on the shards (two phases), tracked in a new MLflow run."""
    import tempfile
    from pathlib import Path

    from components import _runtime as rt
    from fakeface.train import train as run_train

    rt.begin()
    cfg = rt.parse_params(params)
    out = Path(model.path).absolute()
    out.mkdir(parents=True, exist_ok=True)
    shards_dir = Path(shards.path).absolute()
    # train.checkpoint_dir is relative to the working directory: a scratch folder of this pod
    # (an absolute checkpoint_dir, e.g. on a mounted volume, is used as it is).
    with rt.working_dir(tempfile.mkdtemp(prefix="fakeface-train-")):
        result = run_train(
            cfg, shards_dir, out / "model.keras", out / "run.json", out / "history.csv", out / "train.json"
        )
    model.metadata.update(
        {
            "framework": "keras",
            "file": "model.keras",
            "backbone": cfg.train.backbone,
            "mlflow_run_id": result.run_id,
            "epochs": result.epochs_run,
            "best_val_auc": result.best_val_auc,
        }
    )
    train_metrics.log_metric("best_val_auc", float(result.best_val_auc))
    train_metrics.log_metric("epochs", float(result.epochs_run))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    params: str,
    model: Input[Model],
    shards: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Test metrics at the chosen threshold, curves, calibration, robustness, slices, IG heatmaps."""
    from pathlib import Path

    from components import _runtime as rt
    from fakeface.evaluate import evaluate as run_evaluate

    rt.begin()
    cfg = rt.parse_params(params)
    model_dir = Path(model.path)
    out = Path(evaluation.path)
    out.mkdir(parents=True, exist_ok=True)
    result = run_evaluate(
        cfg.evaluate,
        model_dir / "model.keras",
        Path(shards.path),
        out / "evaluate.json",
        out / "plots",
        out / "reports",
        run_info_path=model_dir / "run.json",
        experiment=cfg.tracking.experiment,
        robustness_path=out / "robustness.json",
        slices_path=out / "slices.json",
        explain_dir=out / "explain",
    )
    for name in ("accuracy", "auc", "average_precision", "threshold"):
        metrics.log_metric(name, float(result[name]))
    if isinstance(result.get("calibration"), dict) and "ece" in result["calibration"]:
        metrics.log_metric("ece", float(result["calibration"]["ece"]))
    confusion = result["confusion"]
    # rows: actual real, actual fake; columns: predicted real, predicted fake
    classification.log_confusion_matrix(
        ["real", "fake"], [[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]]
    )
    fpr, tpr, threshold = rt.roc_points(out / "plots" / "roc.csv")
    classification.log_roc_curve(fpr, tpr, threshold)
    Path(report.path).write_text((out / "reports" / "classification_report.md").read_text())
    evaluation.metadata.update({"auc": result["auc"], "accuracy": result["accuracy"], "n": result["n"]})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(params: str, model: Input[Model], evaluation: Input[Artifact], registration: Output[Artifact]):
    """Log the model to the training run; register it (alias) if test AUC passes the gate."""
    from pathlib import Path

    from components import _runtime as rt
    from fakeface.register import register as run_register

    rt.begin()
    cfg = rt.parse_params(params)
    model_dir = Path(model.path)
    result = run_register(
        cfg.register,
        model_dir / "model.keras",
        Path(evaluation.path) / "evaluate.json",
        model_dir / "run.json",
        Path(registration.path),
        experiment=cfg.tracking.experiment,
    )
    registration.metadata.update(
        {
            "registered": result.registered,
            "reason": result.reason,
            "model_name": result.model_name,
            "model_uri": result.model_uri,
            "version": result.version or "",
        }
    )


STAGES = (ingest, eda, augment, train, evaluate, register)
