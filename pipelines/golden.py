"""The compiled pipelines, committed: what a cluster runs, reviewable line by line.

``pipelines/compiled/{training,ablation,batch}.yaml`` are the pipelines compiled with the project's
``params.yaml`` and the default cluster settings (no ``FAKEFACE_*`` environment taken into
account). A test compiles them again and fails on any difference, so a change to a stage, a param
or a setting shows up in review as a change of these files. One command regenerates them, with the
generated components they are built from:

    fakeface pipeline golden          # or: make pipelines
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fakeface.config import Params, load_params
from fakeface.pipelines.settings import KubeflowSettings

HERE = Path(__file__).resolve().parent
GOLDEN = {"training": HERE / "compiled" / "training.yaml", "ablation": HERE / "compiled" / "ablation.yaml",
          "batch": HERE / "compiled" / "batch.yaml"}


def default_settings() -> KubeflowSettings:
    """The cluster settings' defaults, whatever the environment says."""
    from fakeface.components.stages import DEFAULT_IMAGE

    return KubeflowSettings(image=DEFAULT_IMAGE)


def render(pipeline: str, params: Params) -> str:
    """The compiled YAML of ``pipeline`` ("training", "ablation" or "batch") for ``params``."""
    from fakeface.pipelines.ablation import compile_ablation_pipeline
    from fakeface.pipelines.batch import compile_batch_pipeline
    from fakeface.pipelines.training import compile_pipeline

    compile_fn = {"ablation": compile_ablation_pipeline, "batch": compile_batch_pipeline}.get(pipeline, compile_pipeline)
    with tempfile.TemporaryDirectory(prefix="fakeface-golden-") as scratch:
        out = compile_fn(Path(scratch) / f"{pipeline}.yaml", params, default_settings())
        return out.read_text()


def write(params_file: Path = HERE.parent / "params.yaml") -> list[Path]:
    """Regenerate the components and the compiled pipelines; returns the files that changed."""
    from fakeface.components import codegen

    changed = codegen.write()
    params = load_params(params_file)
    for pipeline, path in GOLDEN.items():
        text = render(pipeline, params)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed
