"""The register stage: log the model with MLflow's keras flavor, register it if it is good enough.

The model is always logged to the pipeline's run (signature, an input example, and how to feed
it). It is registered in the Model Registry only when its test AUC passes the quality gate from
params. A registered version then takes the alias ``champion`` (aliases, not the deprecated
stages) only if it is not worse than the version holding it, on the same test images
(:mod:`fakeface.stages.promotion`); otherwise it becomes ``challenger``. Every alias move is
recorded (:mod:`fakeface.tracking.aliases`). A model that fails the gate is logged but not
registered, and the stage says so and exits 0: a weak model is a result, not a crash.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakeface import FakefaceError, read_json
from fakeface.model.contract import make_contract, read_contract
from fakeface.config import Params
from fakeface.stages.paths import RegisterPaths
from fakeface.stages.promotion import DETECTOR_ARTIFACT, choose_alias
from fakeface.tracking.aliases import move_alias, serving_model_name

log = logging.getLogger(__name__)


@dataclass
class Registration:
    registered: bool
    reason: str
    model_name: str
    model_uri: str
    version: str | None = None
    alias: str | None = None
    promoted: bool = False
    test_auc: float | None = None
    comparison: dict[str, Any] | None = None
    serving_uri: str | None = None  # the image-in model beside it (fakeface.inference.served_model)


@contextmanager
def _mlflow_keras_example_fix() -> Iterator[None]:
    """Work around a bug of MLflow's keras flavor (still in MLflow 3.17): ``mlflow.keras.log_model``
    writes the input example into the model folder before creating that folder. Creating it first
    is what MLflow's own fix does; ``exist_ok`` keeps this harmless once a release has it."""
    import mlflow.keras.save as keras_save

    original = keras_save._save_example

    def save_example(mlflow_model: Any, input_example: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path, *args, **kwargs)

    keras_save._save_example = save_example
    try:
        yield
    finally:
        keras_save._save_example = original


class EvaluationFileError(FakefaceError):
    """An evaluation file that is not evaluate's output."""


def read_evaluation(path: Path) -> dict[str, Any]:
    """Evaluate's metrics JSON; the gate needs its ``auc`` (and ``threshold``, stored with the model)."""
    evaluation = read_json(path, EvaluationFileError, "evaluate's metrics", "run the evaluate stage first")
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("auc"), (int, float)):
        raise EvaluationFileError(f"{path}: not evaluate's metrics (no numeric 'auc'; rerun the evaluate stage)")
    return evaluation


def _optional_json(path: Path | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def model_card(paths: RegisterPaths, run_id: str, result: Registration, evaluation: dict[str, Any],
               contract: dict[str, Any]) -> str:
    """The version's model card (:mod:`fakeface.analysis.model_card`), written to ``paths.card``."""
    import mlflow

    from fakeface.analysis.model_card import render_card

    data = mlflow.MlflowClient().get_run(run_id).data
    try:
        index = mlflow.artifacts.load_dict(f"runs:/{run_id}/data/shards_index.json")
    except Exception:  # noqa: BLE001 - a run logged without it (older runs) still gets a card
        index = None
    card = render_card(
        name=result.model_name, version=result.version, run_id=run_id, run_params=data.params, run_tags=data.tags,
        index=index, evaluation=evaluation, contract=contract, robustness=_optional_json(paths.robustness),
        slices=_optional_json(paths.slices), external=_optional_json(paths.external_metrics),
        promotion=result.reason if result.registered else None,
    )
    Path(paths.card).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.card).write_text(card)
    return card


def run(params: Params, paths: RegisterPaths) -> Registration:
    """Log the model to the training run; register it and point the alias at it if it passes."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from fakeface import tracking
    from fakeface.model.classifier import load_model_file

    # MLflow runs the model on the input example through model.predict, whose progress bar would
    # land in the log as control characters; register trains nothing, so bars are off for good.
    keras.config.disable_interactive_logging()
    cfg = params.register
    evaluation = read_evaluation(Path(paths.evaluation))
    test_auc = float(evaluation["auc"])
    model = load_model_file(paths.model)
    size = int(model.input_shape[1])
    # The contract evaluate put inside the detector file; an older file without one gets it rebuilt
    # from the evaluation (the threshold it reports).
    contract = read_contract(paths.model) or make_contract(
        size, float(evaluation.get("threshold", 0.5)), evaluation.get("threshold_selection")
    )
    example = np.full((1, size, size, 3), 127.0, dtype="float32")
    signature = infer_signature(example, np.asarray(model.predict_on_batch(example)))
    passes = test_auc >= cfg.min_test_auc

    with tracking.resume_run(paths.run_info, params.tracking.experiment) as run:
        tracking.log_stage_settings("register", cfg.model_dump(), tagged=("model_name", "alias", "min_test_auc"))
        with _mlflow_keras_example_fix():
            info = mlflow.keras.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example,
                registered_model_name=cfg.model_name if passes else None,
                metadata={"fakeface": contract},
                # The flavor's own requirements, stated: inferring them imports the model in a
                # subprocess and costs about 13 s per registration.
                pip_requirements=[*mlflow.keras.get_default_pip_requirements(), f"tensorflow=={tf.__version__}"],
            )
        mlflow.log_dict(contract, "model_contract.json")
        mlflow.log_artifact(str(paths.model), DETECTOR_ARTIFACT)
        from fakeface.inference.served_model import register_serving  # the image-in model: what serve and KServe run

        if passes:
            client = MlflowClient()
            version = info.registered_model_version
            if version is None:  # older clients: look it up from the run
                versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
                version = max(int(v.version) for v in versions if v.name == cfg.model_name)
            version = str(version)
            client.set_model_version_tag(cfg.model_name, version, "test_auc", f"{test_auc:.4f}")
            register_serving(paths.model, contract, cfg.model_name, version, params.data.max_pixels)
            decision = choose_alias(client, cfg, model, Path(paths.shards), params.evaluate.batch_size, version)
            move_alias(client, cfg.model_name, decision.alias, version,
                       action="register", reason=f"run {run.info.run_id}: {decision.reason}")
            for key, value in decision.tags().items():
                client.set_model_version_tag(cfg.model_name, version, key, value)
            if decision.comparison:
                mlflow.log_dict(decision.comparison, "champion_comparison.json")
                mlflow.log_metrics({"champion_test_auc": decision.comparison["auc_reference"],
                                    "auc_difference_vs_champion": decision.comparison["difference"],
                                    "auc_difference_p_worse": decision.comparison["p_worse"]})
            mlflow.set_tag("register.alias", decision.alias)
            result = Registration(
                registered=True,
                reason=f"test AUC {test_auc:.4f} >= gate {cfg.min_test_auc}; @{decision.alias}: {decision.reason}",
                model_name=cfg.model_name,
                model_uri=f"models:/{cfg.model_name}@{decision.alias}",
                version=version,
                alias=decision.alias,
                promoted=decision.promoted,
                test_auc=test_auc,
                comparison=decision.comparison or None,
                serving_uri=f"models:/{serving_model_name(cfg.model_name)}@{decision.alias}",
            )
            (log.info if decision.promoted else log.warning)(
                "registered %s version %s as @%s: %s", cfg.model_name, version, decision.alias, decision.reason)
        else:
            result = Registration(
                registered=False,
                reason=f"test AUC {test_auc:.4f} < gate {cfg.min_test_auc}: logged, not registered",
                model_name=cfg.model_name,
                model_uri=info.model_uri,
                test_auc=test_auc,
            )
            log.warning("not registered: %s", result.reason)
            result.serving_uri = register_serving(paths.model, contract, cfg.model_name, None, params.data.max_pixels)
        mlflow.set_tag("register.registered", str(result.registered).lower())
        card = model_card(paths, run.info.run_id, result, evaluation, contract)
        mlflow.log_text(card, "model_card.md")
        if result.registered:
            MlflowClient().update_model_version(cfg.model_name, str(result.version), description=card)

    out_path = Path(paths.registry)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result
