"""One Kubeflow Pipelines (v2) lightweight component per stage, each a thin wrapper.

Every component takes the pipeline's one ``params`` parameter (the whole of ``params.yaml`` as a
JSON object, validated in the pod by :func:`fakeface.config.parse_params`) and calls the same stage
function the CLI and ``dvc repro`` call (:mod:`fakeface.stages`), with the paths of
:mod:`fakeface.stage_paths` laid out in their artifact folders. What they add is only that mapping,
and the artifacts' metadata (:mod:`components.runtime`):

==========  ==========================================  ============================================
stage       inputs                                      outputs
==========  ==========================================  ============================================
ingest      params                                      ``data`` (Dataset: manifest.csv, images)
eda         params, data                                ``report`` (HTML, PNGs inlined)
augment     params, data                                ``shards`` (Dataset)
preview     params, data                                ``preview`` (HTML)
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
    from components import runtime as rt
    from fakeface.stage_paths import IngestPaths

    cfg = rt.with_absolute_source(rt.begin(params))
    with rt.working_dir(data.path, create=True) as root:
        # Relative paths: the manifest then says raw/..., valid wherever the artifact lands.
        report = rt.run_stage("ingest", cfg, IngestPaths.in_artifacts("."))
        copied = rt.make_self_contained(root)
    data.metadata.update(rt.ingest_metadata(report, copied))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def eda(params: str, data: Input[Dataset], report: Output[HTML]):
    """Counts, sizes, pixel statistics, sample grids and Fourier spectra; an MLflow side run."""
    import tempfile

    from components import runtime as rt
    from fakeface.stage_paths import EdaPaths

    cfg = rt.begin(params)
    paths = EdaPaths.in_artifacts(tempfile.mkdtemp(prefix="fakeface-eda-"), manifest=rt.manifest_of(data.path))
    with rt.working_dir(data.path):
        summary = rt.run_stage("eda", cfg, paths)
    rt.write_eda_page(report, paths.out_dir, summary)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def augment(params: str, data: Input[Dataset], shards: Output[Dataset]):
    """Pack the splits into TFRecord shards (index.json); augmentations run later, in training."""
    from components import runtime as rt
    from fakeface.stage_paths import AugmentPaths

    cfg = rt.begin(params)
    paths = AugmentPaths(manifest=rt.manifest_of(data.path), shards=rt.absolute(shards.path))
    with rt.working_dir(data.path):
        index = rt.run_stage("augment", cfg, paths)
    shards.metadata.update(rt.shards_metadata(index))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preview(params: str, data: Input[Dataset], preview: Output[HTML]):
    """A grid of training images under each enabled augmentation, as an HTML page."""
    import tempfile

    from components import runtime as rt
    from fakeface.stage_paths import PreviewPaths

    cfg = rt.begin(params)
    paths = PreviewPaths.in_artifacts(tempfile.mkdtemp(prefix="fakeface-preview-"), manifest=rt.manifest_of(data.path))
    with rt.working_dir(data.path):
        rt.run_stage("preview", cfg, paths)
    rt.write_preview_page(preview, paths.preview, cfg)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(params: str, shards: Input[Dataset], model: Output[Model], train_metrics: Output[Metrics]):
    """Fine-tune the backbone on the shards (two phases), tracked in a new MLflow run."""
    from components import runtime as rt
    from fakeface.stage_paths import TrainPaths

    cfg = rt.begin(params)
    paths = TrainPaths.in_artifacts(rt.absolute(model.path), shards=rt.absolute(shards.path))
    # Checkpoints: FAKEFACE_CHECKPOINT_DIR (e.g. a mounted volume), else a scratch folder of this pod.
    with rt.working_dir(rt.scratch("train")):
        result = rt.run_stage("train", cfg, paths)
    rt.record_training(model, train_metrics, cfg, result)


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
    from components import runtime as rt
    from fakeface.stage_paths import EvaluatePaths, TrainPaths

    cfg = rt.begin(params)
    trained = TrainPaths.in_artifacts(model.path)
    paths = EvaluatePaths.in_artifacts(
        evaluation.path, model=trained.model, run_info=trained.run_info, shards=shards.path
    )
    result = rt.run_stage("evaluate", cfg, paths)
    rt.record_evaluation(result, paths, evaluation, metrics, classification, report)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(params: str, model: Input[Model], evaluation: Input[Artifact], registration: Output[Artifact]):
    """Log the model to the training run; register it (alias) if test AUC passes the gate."""
    from components import runtime as rt
    from fakeface.stage_paths import EvaluatePaths, RegisterPaths, TrainPaths

    cfg = rt.begin(params)
    trained = TrainPaths.in_artifacts(model.path)
    evaluated = EvaluatePaths.in_artifacts(evaluation.path)
    paths = RegisterPaths(
        model=trained.model, evaluation=evaluated.metrics, run_info=trained.run_info, registry=registration.path
    )
    result = rt.run_stage("register", cfg, paths)
    registration.metadata.update(rt.registration_metadata(result))


STAGES = (ingest, eda, augment, preview, train, evaluate, register)
