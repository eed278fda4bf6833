"""Kubeflow Pipelines (v2) components of the ablation pipeline (issue 5), thin wrappers again.

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
                                                               (ClassificationMetrics)
=================  ==========================================  =====================================

``storage`` is the Optuna RDB URL every task shares. Locally (``kfp.local``) it is an absolute
``sqlite:///`` file, since every task runs on this machine. On a cluster leave it empty: the URL
(with its password) then comes from the Kubernetes Secret as ``FAKEFACE_ABLATION_STORAGE``; a
``storage`` argument holding ``user:password@`` is refused, so no password is ever a parameter.

The shares are decided once, by ``ablation_prepare``: workers started at different times would
otherwise each see a different number of trials left, and with a grid two workers could run the
same configuration. They reach the workers in the ``plan`` artifact, not as parameters: kfp.local
(2.17) replaces every task-output *parameter* of a task inside a ``ParallelFor`` with the loop
item (``create_parameter_loop_iteration_task_spec``), while artifacts pass through.

No ``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components._ablation_runtime import storage_url
from components.stages import IMAGE

__all__ = ["ablation_finalize", "ablation_prepare", "ablation_worker", "retrain_best", "storage_url"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ablation_prepare(params: str, storage: str, workers: int, shards: Input[Dataset], plan: Output[Artifact]) -> str:
    """Create (or reopen) the Optuna study and its MLflow parent run; split the trials left."""
    import json
    from pathlib import Path

    from components import _runtime as rt
    from components._ablation_runtime import storage_url
    from fakeface import ablation

    rt.begin()
    cfg = rt.parse_params(params)
    url = ablation.resolve_storage(cfg, storage_url(storage))
    name = ablation.prepare_study(cfg, Path(shards.path), url)
    study = ablation.load_study(url, name, cfg)
    target = ablation.study_target(study.user_attrs[ablation.SPEC_ATTR], cfg.ablation.n_trials)
    shares = ablation.split_trials(max(0, target - ablation.n_finished(study)), workers)
    shares += [0] * (workers - len(shares))
    Path(plan.path).write_text(json.dumps({"study_name": name, "shares": shares}) + "\n")
    plan.metadata.update({"study_name": name, "shares": shares})
    return name


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ablation_worker(
    params: str, storage: str, plan: Input[Artifact], worker_index: int, shards: Input[Dataset]
) -> int:
    """Run this worker's share of the study's trials (each a nested MLflow run)."""
    import json
    import tempfile
    from pathlib import Path

    from components import _runtime as rt
    from components._ablation_runtime import storage_url
    from fakeface import ablation

    rt.begin()
    cfg = rt.parse_params(params)
    url = ablation.resolve_storage(cfg, storage_url(storage))
    planned = json.loads(Path(plan.path).read_text())
    study_name, n_trials = planned["study_name"], planned["shares"][worker_index]
    if n_trials <= 0:
        return 0
    shards_dir = Path(shards.path).absolute()
    # ablation.workdir (trial folders, checkpoints) is relative: a scratch folder of this pod.
    with rt.working_dir(tempfile.mkdtemp(prefix="fakeface-ablation-")):
        return ablation.run_worker(cfg, shards_dir, url, study_name, n_trials, worker_index=worker_index)


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

    from components import _runtime as rt
    from components._ablation_runtime import storage_url
    from fakeface import ablation

    rt.begin()
    cfg = rt.parse_params(params)
    url = ablation.resolve_storage(cfg, storage_url(storage))
    out = Path(study.path)
    out.mkdir(parents=True, exist_ok=True)
    summary = ablation.finalize_study(url, study_name, out, out / "summary.json")
    if summary["n_complete"] == 0:
        raise RuntimeError(f"study {study_name!r}: no trial completed ({summary['n_failed']} failed)")
    Path(report.path).write_text((out / "report.md").read_text())
    for key in ("n_complete", "n_pruned", "n_failed"):
        study_metrics.log_metric(key, float(summary[key]))
    if summary["best"] is not None:
        study_metrics.log_metric("best_value", float(summary["best"]["value"]))
        study_metrics.log_metric("best_trial", float(summary["best"]["number"]))
    study.metadata.update({"study_name": study_name, "n_complete": summary["n_complete"]})


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
):
    """The best trial's config trained on train + valid (all epochs), evaluated on test."""
    import tempfile
    from pathlib import Path

    import mlflow
    import yaml

    from components import _runtime as rt
    from components._ablation_runtime import storage_url
    from fakeface import ablation
    from fakeface.evaluate import evaluate as run_evaluate
    from fakeface.train import train as run_train

    rt.begin()
    cfg = rt.parse_params(params)
    url = ablation.resolve_storage(cfg, storage_url(storage))
    best = ablation.best_params(url, study_name)
    model_dir = Path(model.path).absolute()
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "best_params.yaml").write_text(yaml.safe_dump(best.model_dump(mode="json"), sort_keys=False))
    shards_dir = Path(shards.path).absolute()
    with rt.working_dir(tempfile.mkdtemp(prefix="fakeface-retrain-")):
        result = run_train(
            best, shards_dir, model_dir / "model.keras", model_dir / "run.json", model_dir / "history.csv",
            model_dir / "train.json", train_splits=("train", "valid"), validation_split=None,
        )
    client = mlflow.MlflowClient()
    client.set_tag(result.run_id, "fakeface.stage", "ablation-retrain")
    client.set_tag(result.run_id, "fakeface.ablation.study", study_name)

    out = Path(evaluation.path)
    out.mkdir(parents=True, exist_ok=True)
    # The retrained model has seen the valid split: a threshold chosen on it would be optimistic,
    # so the retrain is evaluated at the fixed evaluate.threshold.
    test = run_evaluate(
        best.evaluate.model_copy(update={"threshold_method": "fixed"}),
        model_dir / "model.keras",
        shards_dir,
        out / "evaluate.json",
        out / "plots",
        out / "reports",
        run_info_path=model_dir / "run.json",
        experiment=best.tracking.experiment,
    )
    for name in ("accuracy", "auc", "average_precision", "threshold"):
        metrics.log_metric(name, float(test[name]))
    confusion = test["confusion"]
    classification.log_confusion_matrix(
        ["real", "fake"], [[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]]
    )
    fpr, tpr, threshold = rt.roc_points(out / "plots" / "roc.csv")
    classification.log_roc_curve(fpr, tpr, threshold)
    model.metadata.update(
        {
            "framework": "keras",
            "file": "model.keras",
            "backbone": best.train.backbone,
            "mlflow_run_id": result.run_id,
            "epochs": result.epochs_run,
            "train_splits": "train+valid",
            "study_name": study_name,
        }
    )
    evaluation.metadata.update({"auc": test["auc"], "accuracy": test["accuracy"], "n": test["n"]})


COMPONENTS = (ablation_prepare, ablation_worker, ablation_finalize, retrain_best)
