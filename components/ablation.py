"""Kubeflow Pipelines (v2) components of the ablation pipeline, thin wrappers over
:mod:`fakeface.ablation`.

=================  ==========================================  =====================================
component          inputs                                      outputs
=================  ==========================================  =====================================
ablation_prepare   params, storage, workers, shards            ``Output`` (str: the study name),
                                                               ``plan`` (Artifact: plan.json, the
                                                               study name and trials per worker)
ablation_worker    params, storage, plan, worker_index,        ``Output`` (int: trials it ran)
                   shards
ablation_finalize  params, storage, study_name                 ``study`` (Artifact: report.md,
                                                               best_params.yaml, trials.csv, ...,
                                                               summary.json), ``report`` (Markdown),
                                                               ``study_metrics`` (Metrics)
retrain_best       params, storage, study_name, shards         ``model`` (Model), ``evaluation``
                                                               (Artifact: evaluate.json, plots/...),
                                                               ``metrics`` (Metrics),
                                                               ``classification``
                                                               (ClassificationMetrics), ``report``
                                                               (Markdown)
=================  ==========================================  =====================================

``storage`` is the Optuna RDB URL every task shares. Locally (``kfp.local``) it is an absolute
``sqlite:///`` file, since every task runs on this machine. On a cluster leave it empty: the URL
(with its password) then comes from the Kubernetes Secret as ``FAKEFACE_ABLATION_STORAGE``; a
``storage`` argument holding ``user:password@`` is refused, so no password is ever a parameter.

The shares are decided once, by ``ablation_prepare`` (:func:`fakeface.ablation.plan_study`). They
reach the workers in the ``plan`` artifact, not as parameters: kfp.local (2.17) replaces every
task-output *parameter* of a task inside a ``ParallelFor`` with the loop item
(``create_parameter_loop_iteration_task_spec``), while artifacts pass through. Trial folders and
the retrain's checkpoints go to ``FAKEFACE_ABLATION_WORKDIR`` if set, else a scratch folder of
each pod.

No ``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.ablation_runtime import storage_url
from components.stages import IMAGE

__all__ = ["ablation_finalize", "ablation_prepare", "ablation_worker", "retrain_best", "storage_url"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ablation_prepare(params: str, storage: str, workers: int, shards: Input[Dataset], plan: Output[Artifact]) -> str:
    """Create (or reopen) the Optuna study and its MLflow parent run; split the trials left."""
    from components import ablation_runtime as art
    from components import runtime as rt
    from fakeface.ablation.workers import plan_study

    planned = plan_study(rt.begin(params), rt.absolute(shards.path), art.storage_url(storage), workers=workers)
    art.write_plan(plan, planned)
    return planned["study_name"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ablation_worker(
    params: str, storage: str, plan: Input[Artifact], worker_index: int, shards: Input[Dataset]
) -> int:
    """Run this worker's share of the study's trials (each a nested MLflow run)."""
    from components import ablation_runtime as art
    from components import runtime as rt
    from fakeface.ablation.workers import run_worker

    cfg = rt.begin(params)
    planned = art.read_plan(plan)
    shards_dir = rt.absolute(shards.path)
    # Trial folders: FAKEFACE_ABLATION_WORKDIR (e.g. a mounted volume), else a scratch folder of this pod.
    with rt.working_dir(rt.scratch("ablation")):
        return run_worker(cfg, shards_dir, art.storage_url(storage), planned["study_name"],
                          planned["shares"][worker_index], worker_index=worker_index)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ablation_finalize(
    params: str,
    storage: str,
    study_name: str,
    study: Output[Artifact],
    report: Output[Markdown],
    study_metrics: Output[Metrics],
):
    """The study's report, best params and importances, also on the MLflow parent run."""
    from pathlib import Path

    from components import ablation_runtime as art
    from components import runtime as rt
    from fakeface.ablation.report import finalize_study

    rt.begin(params)  # validates them; the study holds the params it was made with
    out = Path(study.path)
    summary = finalize_study(art.storage_url(storage), study_name, out, out / "summary.json")
    art.record_study(summary, study, report, study_metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrain_best(
    params: str,
    storage: str,
    study_name: str,
    shards: Input[Dataset],
    model: Output[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """The best trial's config trained on train + valid (all epochs), evaluated on test."""
    from components import ablation_runtime as art
    from components import runtime as rt
    from fakeface.ablation.retrain import retrain_best as run_retrain
    from fakeface.stage_paths import EvaluatePaths, TrainPaths

    cfg = rt.begin(params)
    train_paths = TrainPaths.in_artifacts(rt.absolute(model.path), shards=rt.absolute(shards.path))
    evaluate_paths = EvaluatePaths.in_artifacts(rt.absolute(evaluation.path))
    # Checkpoints: in FAKEFACE_ABLATION_WORKDIR (e.g. a mounted volume), else a scratch folder of this pod.
    with rt.working_dir(rt.scratch("retrain")):
        result = run_retrain(cfg, art.storage_url(storage), study_name, train_paths, evaluate_paths)
    model.metadata.update(art.retrain_model_metadata(result))
    rt.record_evaluation(result.test, evaluate_paths, evaluation, metrics, classification, report)


COMPONENTS = (ablation_prepare, ablation_worker, ablation_finalize, retrain_best)
