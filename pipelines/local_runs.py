"""What every pipeline shares once built: writing its YAML package, and a run under ``kfp.local``.

The training, ablation and batch pipelines differ in their tasks; compiling one and preparing a
local run of one (a pipeline root, MLflow where the steps find it, the experiment created first)
are the same, and are written once here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeface.pipelines.settings import KubeflowSettings


def write_package(pipeline: Any, out_path: str | os.PathLike[str]) -> Path:
    """Compile ``pipeline`` (a ``@dsl.pipeline`` function) to the YAML file ``out_path``."""
    from kfp import compiler

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out_path))
    return out_path


def ensure_experiment(uri: str, name: str) -> None:
    """Create the MLflow experiment from here, before any step does.

    With a local store (SQLite, a folder) MLflow puts a new experiment's artifacts under
    ``./mlruns`` of the process that creates it. The steps run in scratch folders, so the first
    one would put them in its own temporary folder; created here they go where ``dvc repro``'s
    go: ``mlruns/`` in the current directory. An existing experiment is left as it is.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name)


@dataclass(frozen=True)
class LocalRun:
    """Where a ``kfp.local`` run writes (``root``), and its settings (MLflow as the steps reach it)."""

    root: Path
    settings: KubeflowSettings

    def start(self, runner: Any = None, enable_caching: bool = False) -> None:
        """Point ``kfp.local`` at this run: ``runner`` (default: every step a process of this
        Python), outputs and, with ``enable_caching``, the cache under :attr:`root`."""
        from kfp import local

        local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=str(self.root),
                   enable_caching=enable_caching)


def prepare_local_run(
    experiment: str,
    workdir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    settings: KubeflowSettings | None = None,
    env: Mapping[str, str] | None = None,
    prefix: str = "fakeface-kfp-",
) -> LocalRun:
    """A local run's folder (``workdir``, or a new temporary one named ``prefix...``, absolute) and
    MLflow (``mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI`` / the project's SQLite store),
    with ``experiment`` created there first (:func:`ensure_experiment`)."""
    from fakeface import tracking

    root = (Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = mlflow_tracking_uri or tracking.tracking_uri()
    ensure_experiment(uri, experiment)
    return LocalRun(root, (settings or KubeflowSettings.from_env()).for_local(uri, env or {}))
