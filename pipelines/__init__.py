"""The fakeface Kubeflow pipeline (issue 3): build, compile, run locally, submit.

``training_pipeline`` is the pipeline for the settings in the environment (see
:mod:`pipelines.settings`) with the pydantic defaults as params; the CLI
(``fakeface pipeline compile``) compiles it with the project's ``params.yaml`` instead.
"""

from pipelines.settings import KubeflowSettings, Resources, SettingsError, Toleration
from pipelines.training import (
    DEFAULT_PACKAGE,
    PIPELINE_NAME,
    build_pipeline,
    compile_pipeline,
    params_json,
    run_local,
    submit,
)

__all__ = [
    "DEFAULT_PACKAGE",
    "PIPELINE_NAME",
    "KubeflowSettings",
    "Resources",
    "SettingsError",
    "Toleration",
    "build_pipeline",
    "compile_pipeline",
    "params_json",
    "run_local",
    "submit",
    "training_pipeline",
]


def __getattr__(name: str):
    # Built on first use, not at import: it reads FAKEFACE_* from the environment.
    if name == "training_pipeline":
        return build_pipeline()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
