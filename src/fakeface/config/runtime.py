"""Where a run keeps its scratch state: settings of the machine, not of the model.

Checkpoint folders, the ablation's per-trial work folder and the Optuna study storage say *where*
things run, not *what* is trained: two runs that differ only in them train the same model. So they
are not in ``params.yaml`` (whose values identify a model, its MLflow params and DVC's cache keys)
but come, in this order, from a command-line option, an environment variable, or the default here:

==================  ==============================  ===============================
setting             environment variable            default
==================  ==============================  ===============================
checkpoint_dir      ``FAKEFACE_CHECKPOINT_DIR``     ``checkpoints``
cache_dir           ``FAKEFACE_CACHE_DIR``          ``.cache/fakeface``
ablation_workdir    ``FAKEFACE_ABLATION_WORKDIR``   ``checkpoints/ablation``
ablation_storage    ``FAKEFACE_ABLATION_STORAGE``   ``sqlite:///ablation/optuna.db``
cpu_replicas        ``FAKEFACE_CPU_REPLICAS``       ``1``
==================  ==============================  ===============================

A storage URL with a password belongs in the environment (or a Kubernetes Secret), never on a
command line, where ``ps`` shows it to every user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from fakeface import FakefaceError

#: Environment variable of each setting.
ENV = {
    "checkpoint_dir": "FAKEFACE_CHECKPOINT_DIR",
    "cache_dir": "FAKEFACE_CACHE_DIR",
    "ablation_workdir": "FAKEFACE_ABLATION_WORKDIR",
    "ablation_storage": "FAKEFACE_ABLATION_STORAGE",
    "cpu_replicas": "FAKEFACE_CPU_REPLICAS",
}


@dataclass(frozen=True)
class Runtime:
    """Scratch locations of one process (see the module docstring)."""

    #: Per-epoch checkpoints of the train stage; a killed run resumes from them. Relative paths are
    #: relative to the working directory (a Kubeflow pod's scratch folder, or a mounted volume).
    checkpoint_dir: Path = Path("checkpoints")
    #: The decoded-image cache of ``train.cache: disk`` (one folder per data, splits and size).
    cache_dir: Path = Path(".cache/fakeface")
    #: Per-trial checkpoints and models of an ablation study, removed after each trial.
    ablation_workdir: Path = Path("checkpoints/ablation")
    #: Optuna storage URL shared by the study's workers (an RDB URL for several machines).
    ablation_storage: str = "sqlite:///ablation/optuna.db"
    #: Without a GPU: train under a MirroredStrategy over this many logical CPU devices (the
    #: multi-GPU code path, run on a CPU; :mod:`fakeface.model.devices`). Set before TensorFlow starts.
    cpu_replicas: int = 1

    @classmethod
    def from_env(cls, **options: str | Path | int | None) -> Runtime:
        """Defaults, overridden by the environment, overridden by non-empty ``options``."""
        runtime = cls()
        for field in fields(cls):
            value = options.get(field.name) or os.environ.get(ENV[field.name]) or None
            if value:
                runtime = replace(runtime, **{field.name: _typed(field.name, value)})
        return runtime


def _typed(name: str, value: str | Path | int) -> str | Path | int:
    if name == "cpu_replicas":
        try:
            replicas = int(value)
        except ValueError:
            replicas = 0
        if replicas < 1:
            raise FakefaceError(f"{ENV[name]} must be a whole number of at least 1, got {value!r}")
        return replicas
    return str(value) if name == "ablation_storage" else Path(value)
