"""Kubeflow Pipelines components for the fakeface stages; see :mod:`components.stages`.

Nothing is imported here: inside a running step (``_KFP_RUNTIME=true``) ``kfp.dsl`` has no
``component`` decorator, and the steps import only :mod:`components.runtime` from this package.
"""
