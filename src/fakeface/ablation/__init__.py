"""``fakeface ablate``: ablation and tuning with Optuna; every trial a nested MLflow run.

A trial is the base params (``params.yaml`` plus ``ablation.fixed``) with one point of
``ablation.search_space`` applied at dotted param paths, trained by :func:`fakeface.stages.train.run` on
the train split and measured on the **validation** split only; the test split is never used to
choose. The chosen configuration is then retrained on train + valid and tested, once, on test.

==================  ======================================================================
module              job
==================  ======================================================================
``space``           the spec of a study, each trial's params, the study's default name
``study``           the Optuna study: storage, samplers, pruners, create/reopen, results
``parent_run``      the study's MLflow parent run
``objective``       one trial: train, measure on valid, log the child run, prune
``workers``         running the trials: one worker, spawned processes, the Kubeflow plan
``report``          the seed-style tables; finalizing the study on its parent run
``retrain``         the best configuration on train + valid, evaluated on test
==================  ======================================================================

Its command line, ``fakeface ablate [report|retrain]``, is :mod:`fakeface.cli.ablation`.

The modules import one another in that order only (no cycles). The names below are importable
from the package itself; they load their module on first use, so building the ``fakeface``
parser (which imports :mod:`fakeface.cli.ablation`) does not import Optuna.

On one machine: :func:`run_study`. On Kubeflow: :func:`plan_study` once, :func:`run_worker` per
pod, then :func:`finalize_study` and :func:`retrain_best`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools see; at run time, __getattr__ imports a module on first use
    from fakeface.ablation.report import finalize_study, render_report, summary_metrics, write_report
    from fakeface.ablation.retrain import RetrainResult, retrain_best, retrain_runtime
    from fakeface.ablation.space import CONFIG_PARAM, SPEC_ATTR, build_spec, default_study_name, study_name
    from fakeface.ablation.study import best_params, load_study, n_finished, prepare_study, resolve_storage, study_target
    from fakeface.ablation.workers import plan_study, resolve_workdir, run_study, run_worker, split_trials

#: Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(["finalize_study", "render_report", "summary_metrics", "write_report"], "report"),
    **dict.fromkeys(["RetrainResult", "retrain_best", "retrain_runtime"], "retrain"),
    **dict.fromkeys(["CONFIG_PARAM", "SPEC_ATTR", "build_spec", "default_study_name", "study_name"], "space"),
    **dict.fromkeys(["best_params", "load_study", "n_finished", "prepare_study", "resolve_storage", "study_target"],
                    "study"),
    **dict.fromkeys(["plan_study", "resolve_workdir", "run_study", "run_worker", "split_trials"], "workers"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
