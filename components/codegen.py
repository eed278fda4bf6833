"""Writes :mod:`fakeface.components.stages` and :mod:`fakeface.components.ablation`: the
Kubeflow components.

A KFP lightweight component is a Python function whose signature is its interface (typed
parameters, input and output artifacts) and whose source is shipped to the pod. The interface we
want is derived: each step takes, as typed parameters, the params leaves it reads
(:mod:`fakeface.components.parameters`), and those follow the config models. So the component modules are
generated from the registries, committed (readable, reviewable, importable as any module), and a
test fails when they differ from what this module writes. After changing a param or a stage:

    fakeface pipeline components      # rewrites components/stages.py and components/ablation.py

Each generated function is a signature and one call: the step's logic is in
:mod:`fakeface.components.steps` / :mod:`~fakeface.components.ablation_steps` (artifacts <-> paths)
and the library (the stage functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakeface.components.parameters import STEP_KEYS, step_parameters

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Step:
    """One component: its name, extra (non-params) inputs, artifacts, return type and docstring.
    The body calls ``<module>.<name>_step(params, **inputs)``."""

    name: str
    doc: str
    artifacts: tuple[tuple[str, str], ...]
    extra: tuple[tuple[str, str], ...] = ()
    returns: str | None = None
    module: str = "steps"  # the module of fakeface.components holding <name>_step


TRAINING_STEPS = (
    Step("ingest", "Ingest data.source into a self-contained data set: manifest.csv, report, images.",
         (("data", "Output[Dataset]"),)),
    Step("eda", "Counts, sizes, pixel statistics, sample grids and Fourier spectra; an MLflow side run.",
         (("data", "Input[Dataset]"), ("report", "Output[HTML]"))),
    Step("augment", "Pack the splits into TFRecord shards (index.json); augmentations run in training.",
         (("data", "Input[Dataset]"), ("shards", "Output[Dataset]"))),
    Step("preview", "A grid of training images under each enabled augmentation, as an HTML page.",
         (("data", "Input[Dataset]"), ("preview", "Output[HTML]"))),
    Step("train", "Fine-tune the backbone on the shards (two phases), tracked in a new MLflow run.",
         (("shards", "Input[Dataset]"), ("model", "Output[Model]"), ("train_metrics", "Output[Metrics]"))),
    Step("evaluate", "Test metrics at the chosen threshold, curves, calibration, robustness, slices, IG.",
         (("model", "Input[Model]"), ("shards", "Input[Dataset]"), ("evaluation", "Output[Artifact]"),
          ("metrics", "Output[Metrics]"), ("classification", "Output[ClassificationMetrics]"),
          ("report", "Output[Markdown]"))),
    Step("register", "Log the model to the training run; register it if test AUC passes the gate; champion "
         "if not worse than the current one on the same test images, else challenger.",
         (("model", "Input[Model]"), ("evaluation", "Input[Artifact]"), ("shards", "Input[Dataset]"),
          ("registration", "Output[Artifact]"), ("card", "Output[Markdown]"))),
)

ABLATION_STEPS = (
    Step("ablation_prepare", "Create (or reopen) the Optuna study and its MLflow parent run; split the trials.",
         (("shards", "Input[Dataset]"), ("plan", "Output[Artifact]")),
         extra=(("storage", "str"), ("workers", "int")), returns="str", module="ablation_steps"),
    Step("ablation_worker", "Run this worker's share of the study's trials (each a nested MLflow run).",
         (("plan", "Input[Artifact]"), ("shards", "Input[Dataset]")),
         extra=(("storage", "str"), ("worker_index", "int")), returns="int", module="ablation_steps"),
    Step("ablation_finalize", "The study's report, best params and importances, also on the MLflow parent run.",
         (("study", "Output[Artifact]"), ("report", "Output[Markdown]"), ("study_metrics", "Output[Metrics]")),
         extra=(("storage", "str"), ("study_name", "str")), module="ablation_steps"),
    Step("retrain_best", "The best trial's config trained on train + valid (all epochs), evaluated on test.",
         (("shards", "Input[Dataset]"), ("model", "Output[Model]"), ("evaluation", "Output[Artifact]"),
          ("metrics", "Output[Metrics]"), ("classification", "Output[ClassificationMetrics]"),
          ("report", "Output[Markdown]")),
         extra=(("storage", "str"), ("study_name", "str")), module="ablation_steps"),
)

BATCH_STEPS = (
    Step("batch_plan", "List the source (a folder or an S3 prefix) and split its files into the workers' shares.",
         (("plan", "Output[Artifact]"),), extra=(("source", "str"), ("workers", "int")), returns="int",
         module="batch_steps"),
    Step("batch_score", "Score this worker's share with the model; a file that cannot be read gets its error.",
         (("plan", "Input[Artifact]"), ("scores", "Output[Dataset]")),
         extra=(("model_uri", "str"), ("worker_index", "int")), module="batch_steps"),
    Step("batch_merge", "One results table and a summary from the shares, every planned file once; to MLflow too.",
         (("plan", "Input[Artifact]"), ("scores", "Input[List[Dataset]]"), ("results", "Output[Dataset]"),
          ("summary", "Output[Metrics]"), ("report", "Output[Markdown]")),
         extra=(("model_uri", "str"),), module="batch_steps"),
)

HEADER = '''"""{title}

GENERATED by ``fakeface pipeline components`` (components/codegen.py) from the stage registry and
the config models: do not edit; change those and regenerate (a test compares).

Each component takes, as typed parameters, the params leaves its step reads (see
:mod:`fakeface.components.parameters`), and calls its step (:mod:`fakeface.components.steps`,
:mod:`~fakeface.components.ablation_steps` or :mod:`~fakeface.components.batch_steps`) with them
validated and with its artifacts.
No ``from __future__ import annotations`` here: KFP reads the annotations as types.
"""

import os
{typing}
from kfp import dsl
from kfp.dsl import {types}

from fakeface import __version__

DEFAULT_IMAGE = f"ghcr.io/fakeface/fakeface:{{__version__}}"
#: The project image every component runs in; ``FAKEFACE_IMAGE`` overrides it at compile time.
IMAGE = os.environ.get("FAKEFACE_IMAGE") or DEFAULT_IMAGE
'''


def render_step(step: Step) -> str:
    parameters = step_parameters(step.name)
    lines = ["", "", "@dsl.component(base_image=IMAGE, install_kfp_package=False)", f"def {step.name}("]
    lines += [f"    {p.name}: {p.type.__name__}," for p in parameters]
    lines += [f"    {name}: {annotation}," for name, annotation in (*step.extra, *step.artifacts)]
    returns = f" -> {step.returns}" if step.returns else ""
    lines.append(f"){returns}:")
    lines.append(f'    """{step.doc}"""')
    lines.append(f"    from fakeface.components import {', '.join(sorted((step.module, 'runtime')))}")
    lines.append("")
    lines.append(f'    params = runtime.step_params("{step.name}", locals())')
    call = f"{step.module}.{step.name}_step(params, " + ", ".join(
        f"{name}={name}" for name, _ in (*step.extra, *step.artifacts)
    ) + ")"
    lines.append(f"    {'return ' if step.returns else ''}{call}")
    return "\n".join(lines) + "\n"


def render(title: str, steps: tuple[Step, ...]) -> str:
    names = ", ".join(step.name for step in steps)
    used = {part for step in steps for _, annotation in step.artifacts for part in annotation.replace("]", "").split("[")}
    typing = "from typing import List\n" if "List" in used else ""  # a fan-in: Input[List[Dataset]]
    types = ", ".join(sorted(used - {"List"}, key=lambda name: (not name.isupper(), name)))
    return HEADER.format(title=title, types=types, typing=typing) + "".join(render_step(s) for s in steps) + f"\n\nCOMPONENTS = ({names},)\n"


def targets() -> dict[Path, str]:
    """Each generated module and the text it must hold."""
    for step in (*TRAINING_STEPS, *ABLATION_STEPS, *BATCH_STEPS):
        assert step.name in STEP_KEYS, step.name
    return {
        HERE / "stages.py": render("One Kubeflow Pipelines (v2) component per stage of the training pipeline.",
                                   TRAINING_STEPS),
        HERE / "ablation.py": render("The Kubeflow components of the ablation pipeline.", ABLATION_STEPS),
        HERE / "batch.py": render("The Kubeflow components of the batch-scoring pipeline.", BATCH_STEPS),
    }


def write() -> list[Path]:
    """(Re)write the generated modules; returns those that changed."""
    changed = []
    for path, text in targets().items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
