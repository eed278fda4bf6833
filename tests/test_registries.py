"""The augmentation and perturbation registries: light to import, and the docs and params.yaml
cannot drift from them.

README.md's two tables are rendered from the registries; when one is stale this test says so, and
``FAKEFACE_UPDATE_DOCS=1 pytest tests/test_registries.py`` rewrites them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args

import pytest
import yaml
from pydantic import Field

from fakeface.config import parse_params
from fakeface.config import augment as augment_config
from fakeface.config import robustness as robustness_config
from fakeface.config.augment import (
    AUGMENTATIONS,
    AugmentConfig,
    AugmentSection,
    get_augmentation,
    list_augmentations,
)
from fakeface.config.base import Toggle
from fakeface.config.registry import Entry, Implementations, Registry, parameters, read_block, replace_block
from fakeface.config.robustness import (
    Perturbation,
    PerturbationConfig,
    default_robustness,
    list_perturbations,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PARAMS = ROOT / "params.yaml"
UPDATE = "FAKEFACE_UPDATE_DOCS=1 pytest tests/test_registries.py"

#: README block -> (heading and intro, the registry's table).
BLOCKS = {
    "augmentations": (
        "### Augmentations (`augment.<name>`)\n\n"
        "Applied on the fly to training images only, in this order, each with its own seed (switching "
        "one on or off leaves the others' draws alone); each keeps the shape and clips to 0..255. "
        "Rendered from the registry in `fakeface.config.augment` (`" + UPDATE + "` rewrites it).",
        augment_config.markdown_table,
    ),
    "perturbations": (
        "### Robustness perturbations (`evaluate.robustness.<name>: {kind: ..., enabled}`)\n\n"
        "Each `evaluate.robustness` entry names a kind and its settings; it is applied to the original "
        "decoded test images, which are then fed to the model as in training. "
        "Rendered from the registry in `fakeface.config.robustness` (`" + UPDATE + "` rewrites it).",
        robustness_config.markdown_table,
    ),
}


def _rendered(marker: str) -> str:
    intro, table = BLOCKS[marker]
    return f"{intro}\n\n{table()}"


# --------------------------------------------------------------------------- docs and params.yaml


def test_readme_tables_are_rendered_from_the_registries():
    text = README.read_text()
    if os.environ.get("FAKEFACE_UPDATE_DOCS"):
        for marker in BLOCKS:
            text = replace_block(text, marker, _rendered(marker))
        README.write_text(text)
    stale = [marker for marker in BLOCKS if read_block(text, marker) != _rendered(marker)]
    assert not stale, f"README.md's {stale} table(s) differ from the registry: run {UPDATE}"


def test_params_yaml_spells_out_every_augmentation_in_order():
    raw = yaml.safe_load(PARAMS.read_text())["augment"]
    listed = [key for key in raw if key not in AugmentSection.model_fields]
    assert listed == list_augmentations(), "params.yaml's augment: needs every registered one, in order"
    for name in listed:
        assert set(raw[name]) == set(get_augmentation(name).config.model_fields), f"augment.{name}"
    assert AugmentConfig.model_validate(raw) == AugmentConfig()  # the defaults, spelled out


def test_params_yaml_robustness_entries_are_the_default_set_and_name_every_kind():
    text = PARAMS.read_text()
    assert parse_params({"evaluate": yaml.safe_load(text)["evaluate"]}).evaluate.robustness == default_robustness()
    assert "{kind: " + " | ".join(list_perturbations()) + "," in text, "params.yaml's robustness comment"


# --------------------------------------------------------------------------- light to import


def test_importing_the_config_does_not_import_tensorflow():
    """Validating params.yaml (the CLI, every Kubeflow component) must not pay TF's start-up."""
    code = (
        "import sys, fakeface.config, fakeface.config.augment, fakeface.config.robustness\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'PIL', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# --------------------------------------------------------------------------- the registries


def test_augment_config_has_one_field_per_registered_augmentation():
    fields = AugmentConfig.model_fields
    assert list(fields) == [*AugmentSection.model_fields, *list_augmentations()]
    for spec in AUGMENTATIONS:
        assert fields[spec.name].annotation is spec.config
        assert fields[spec.name].default == spec.config()
        assert issubclass(spec.config, Toggle) and spec.doc


def test_seed_indices_are_forever():
    """The index of each augmentation's seed; a new one takes the next free index, wherever it is
    applied. Changing one changes what a seed draws for it."""
    pinned = {
        "flip": 0, "crop": 1, "zoom": 2, "rotate": 3, "brightness": 4, "contrast": 5, "stretch": 6,
        "channel_shift": 7, "sharpness": 8, "blur": 9, "downscale": 10, "jpeg": 11,
    }
    indices = {spec.name: spec.seed_index for spec in AUGMENTATIONS}
    assert {name: indices.get(name) for name in pinned} == pinned
    assert sorted(indices.values()) == list(range(len(indices)))


def test_a_second_entry_with_a_taken_seed_index_is_refused():
    with pytest.raises(ValueError, match="seed index 3 is 'rotate'"):
        augment_config.register("sepia", seed_index=3)(type("SepiaConfig", (Toggle,), {"__doc__": "Sepia."}))
    assert "sepia" not in list_augmentations()


def test_perturbation_union_and_kinds_come_from_the_registry():
    union = get_args(get_args(Perturbation)[0])
    assert [get_args(cls.model_fields["kind"].annotation)[0] for cls in union] == list_perturbations()
    assert all(issubclass(cls, PerturbationConfig) for cls in union)


class _Thing(Toggle):
    """Does a thing."""

    amount: float = Field(1.0, gt=0, le=2, description="how much")
    label: Literal["a", "b"] = "a"


def test_implementations_are_checked_against_the_entry():
    things: Registry[Entry] = Registry("thing")
    things.add(Entry("thing", _Thing))
    functions: Implementations = Implementations(things, leading=("image",))
    with pytest.raises(LookupError, match="thing without an implementation: thing"):
        functions.check_complete()
    with pytest.raises(TypeError, match=r"must take \('image', 'amount', 'label'\)"):
        functions.register("thing")(lambda image, amount: image)
    with pytest.raises(ValueError, match="unknown thing 'other'; expected one of thing"):
        functions.register("other")

    @functions.register("thing")
    def thing(image, amount, label):
        return (image, amount, label)

    functions.check_complete()
    assert functions.get("thing")(0, **things.get("thing").kwargs(_Thing(amount=1.5))) == (0, 1.5, "a")
    with pytest.raises(ValueError, match="two implementations"):
        functions.register("thing")(thing)


def test_registry_refuses_duplicates_and_undocumented_entries():
    things: Registry[Entry] = Registry("thing")
    things.add(Entry("thing", _Thing))
    with pytest.raises(ValueError, match="registered twice"):
        things.add(Entry("thing", _Thing))
    with pytest.raises(ValueError, match="needs a docstring"):
        things.add(Entry("bare", type("Bare", (Toggle,), {})))
    with pytest.raises(ValueError, match="lower-case"):
        things.add(Entry("Bad-Name", _Thing))


def test_markdown_lists_defaults_bounds_and_descriptions():
    assert parameters(_Thing) == ["`enabled` = false", "`amount` = 1, in (0, 2], how much", "`label` = a"]
    table = augment_config.markdown_table()
    assert "| 3 | `augment.crop` | `enabled` = false; `min_fraction` = 0.8, in (0, 1] | Random crop" in table
    assert "`downscale_half` (factor=0.5)" in robustness_config.markdown_table()


def test_an_unknown_name_is_the_same_error_in_every_registry():
    """Stages, layouts, augmentations and perturbations share one registry implementation: an
    unknown name is one UnknownNameError (a FakefaceError: one line, exit 2) listing the known."""
    from fakeface.config.augment import get_augmentation
    from fakeface.config.registry import UnknownNameError
    from fakeface.config.robustness import get_perturbation
    from fakeface.ingest.layouts import get_layout
    from fakeface.stages import get_stage

    for get in (get_stage, get_layout, get_augmentation, get_perturbation):
        with pytest.raises(UnknownNameError, match=r"unknown \w+ 'nope'; expected one of \w"):
            get("nope")
