"""Pipelines whose parameters are the typed params leaves their steps read.

KFP builds a pipeline's interface from its function's signature. Ours is derived, not written:
the union of the steps' typed parameters (:mod:`fakeface.components.parameters`), with the run's
params (``params.yaml``, ``-S`` overrides) as defaults. :func:`typed_pipeline` makes such a function
and hands each step exactly its own parameters, so a change of ``train.dropout`` reaches train,
evaluate and register and changes no cacheable step's cache key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from kfp import dsl

from fakeface.components.parameters import Parameter, arguments, pipeline_parameters, step_parameters
from fakeface.config import Params


class StepArguments:
    """The pipeline's parameter channels, handed out per step."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __call__(self, step: str) -> dict[str, Any]:
        return {p.name: self.values[p.name] for p in step_parameters(step)}


def typed_pipeline(
    name: str,
    description: str,
    steps: list[str],
    params: Params,
    body: Callable[[StepArguments], Any],
    outputs: type,
    extra: tuple[tuple[str, type, Any], ...] = (),
):
    """A ``@dsl.pipeline`` named ``name`` whose parameters are the ``steps``' typed parameters
    (defaults: ``params``) plus ``extra`` (name, type, default); ``body`` builds the graph from a
    :class:`StepArguments` (extra parameters under their names)."""
    parameters: list[Parameter] = pipeline_parameters(steps)
    defaults = arguments(params, parameters)
    names = [p.name for p in parameters] + [n for n, _, _ in extra]

    def pipeline_function(*values):
        return body(StepArguments(dict(zip(names, values))))

    pipeline_function.__name__ = name.replace("-", "_")
    pipeline_function.__doc__ = description
    signature = [
        inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[p.name], annotation=p.type)
        for p in parameters
    ] + [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
        for n, kind, default in extra
    ]
    pipeline_function.__signature__ = inspect.Signature(signature, return_annotation=outputs)
    return dsl.pipeline(name=name, description=description)(pipeline_function)


def run_arguments(params: Params, steps: list[str]) -> dict[str, Any]:
    """A run's arguments for ``params``: every typed parameter of the steps."""
    return arguments(params, pipeline_parameters(steps))
