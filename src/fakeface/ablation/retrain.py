"""Retrain the study's best configuration on train + valid, and test it on the test split.

The study chose its best trial on the validation split; that trial's model saw only the train
split. The retrain trains the chosen configuration once more on train + valid together, for all
its configured epochs (there is no split left to stop early on), then evaluates it on the test
split, the first and only time the ablation touches it. The threshold is the fixed
``evaluate.threshold`` of the chosen configuration: a threshold chosen on the valid split would be
optimistic for a model that trained on it.

``fakeface ablate retrain`` and the DVC stage ``retrain`` (``ablation/dvc.yaml``) write to
``models/best/``, ``metrics/best/`` and ``reports/best/``; the Kubeflow ``retrain_best`` component
writes to its artifacts. The model's MLflow run is tagged ``fakeface.stage=ablation-retrain``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fakeface.ablation.space import study_name as derive_study_name
from fakeface.ablation.study import best_params, resolve_storage
from fakeface.config import Params
from fakeface.config.runtime import Runtime
from fakeface.stages.paths import EvaluatePaths, TrainPaths

log = logging.getLogger(__name__)

#: Written next to the retrained model: the full params it was trained with.
BEST_PARAMS_FILE = "best_params.yaml"


@dataclass
class RetrainResult:
    """What :func:`retrain_best` did: which study, with which params, and the test metrics."""

    study_name: str
    #: The params the model was trained and tested with (see :func:`retrain_params`).
    params: Params
    #: The MLflow run of the retrained model (training curves, test metrics, plots).
    run_id: str
    epochs: int
    #: The test metrics, as :func:`fakeface.stages.evaluate.run` returns them.
    test: dict[str, Any]


def retrain_runtime(workdir: str | Path | None = None) -> Runtime:
    """The runtime settings, with the retrain's checkpoints in ``<ablation work folder>/retrain``.

    Not the train stage's checkpoint folder: the retrain is another run (other params, other
    splits), and would wipe the checkpoints a killed ``fakeface train`` resumes from.
    """
    runtime = Runtime.from_env(ablation_workdir=workdir)
    return dataclasses.replace(runtime, checkpoint_dir=Path(runtime.ablation_workdir) / "retrain")


def retrain_params(params: Params, best: Params) -> Params:
    """``params`` with what the study chose: the best trial's seed, augment, train and threshold.

    Those are the only sections a trial can vary (see ``fakeface.config.ablation``); the rest
    (how to evaluate, where to track) stays the caller's. The threshold is the chosen one, fixed:
the model has seen the valid split, so a threshold chosen on it would be optimistic.
    """
    evaluate = params.evaluate.model_copy(update={"threshold": best.evaluate.threshold, "threshold_method": "fixed"})
    return params.model_copy(update={"seed": best.seed, "augment": best.augment, "train": best.train,
                                     "evaluate": evaluate})


def retrain_best(
    params: Params,
    storage: str | None,
    study_name: str | None,
    train_paths: TrainPaths,
    evaluate_paths: EvaluatePaths,
    runtime: Runtime | None = None,
) -> RetrainResult:
    """Train the study's best configuration on train + valid, then evaluate it on test.

    ``storage`` None: ``$FAKEFACE_ABLATION_STORAGE``, then the runtime default; ``study_name``
    None: ``ablation.study_name``, else the name derived from ``params`` and the shards (the study
    ``fakeface ablate`` ran with the same params). The model, its run info, history and train
    summary go to ``train_paths`` (and ``best_params.yaml`` next to the model); the test metrics,
    plots and reports to ``evaluate_paths``, whose inputs (model, run info, shards) are taken
    from ``train_paths``: the model evaluated is the one just trained. ``runtime`` gives the
    checkpoint folder (default: :func:`retrain_runtime`).
    """
    import mlflow

    from fakeface.stages import evaluate
    from fakeface.stages import train

    url = resolve_storage(storage)
    name = derive_study_name(params, train_paths.shards, study_name)
    chosen = retrain_params(params, best_params(url, name))
    model_dir = Path(train_paths.model).parent
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / BEST_PARAMS_FILE).write_text(
        f"# The best configuration of study {name}, retrained on train + valid\n"
        + yaml.safe_dump(chosen.model_dump(mode="json"), sort_keys=False)
    )
    log.info("retraining the best configuration of study %r on train + valid", name)
    result = train.run(
        chosen, train_paths, runtime or retrain_runtime(), train_splits=("train", "valid"), validation_split=None
    )
    client = mlflow.MlflowClient()
    client.set_tag(result.run_id, "fakeface.stage", "ablation-retrain")
    client.set_tag(result.run_id, "fakeface.ablation.study", name)

    evaluate_paths = dataclasses.replace(
        evaluate_paths, model=train_paths.model, run_info=train_paths.run_info, shards=train_paths.shards
    )
    test = evaluate.run(chosen, evaluate_paths)
    log.info("best configuration of %r on test: AUC %.4f, accuracy %.4f at threshold %g",
             name, test["auc"], test["accuracy"], test["threshold"])
    return RetrainResult(name, chosen, result.run_id, result.epochs_run, test)
