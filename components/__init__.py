"""Kubeflow Pipelines components for the fakeface stages (issue 3); see :mod:`components.stages`.

The components are loaded lazily: inside a running step (``_KFP_RUNTIME=true``) ``kfp.dsl`` has no
``component`` decorator, and the steps import only :mod:`components._runtime` from this package.
"""

__all__ = ["DEFAULT_IMAGE", "IMAGE", "STAGES", "augment", "eda", "evaluate", "ingest", "register", "train"]


def __getattr__(name: str):
    if name in __all__:
        from components import stages

        return getattr(stages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
