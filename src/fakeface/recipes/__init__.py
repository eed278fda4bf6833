"""Named, validated parameter profiles shipped with the project: one command from the synthetic
quick start to the real data set.

Moving from the quick start to the Kaggle set with the seed project's setup means knowing and
typing a dozen overrides (backbone, weights, input size, phases, robust augmentation, ...). A
recipe (``src/fakeface/recipes/<name>.yaml``) holds them, with what it is for and what it costs:

    fakeface recipe list                       # the recipes, what each is for and costs
    fakeface recipe show kaggle-xception       # its overrides, and the params they give
    fakeface recipe use kaggle-xception        # writes params.yaml: the defaults + the recipe
    fakeface recipe use cpu-faces --source ~/faces   # a recipe with another data source
    dvc repro                                  # then run it as usual

A recipe holds overrides of the defaults (:class:`fakeface.config.Params`), so a recipe can never
name a key that does not exist or a value that is not allowed: every recipe is validated when
listed, and tests validate them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fakeface import FakefaceError
from fakeface.config import Params, parse_params

FOLDER = Path(__file__).parent  # the recipes' YAML files live beside this module


class RecipeError(FakefaceError):
    """An unknown recipe, or one that does not validate."""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    purpose: str
    cost: str
    overrides: dict[str, Any]

    def params(self, source: str | None = None) -> Params:
        """The defaults with this recipe's overrides (and ``source`` as ``data.source``), validated."""
        tree = _merge(Params().model_dump(mode="json"), self.overrides)
        if source:
            tree["data"]["source"] = source
        return parse_params(tree, f"recipe {self.name}")


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        # a mapping merges into a section; dict-valued params (ablation.fixed, evaluate.external)
        # whose override is empty are replaced, so a recipe can clear them
        if isinstance(value, dict) and value and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def list_recipes() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    path = FOLDER / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name!r}; choose one of {', '.join(list_recipes())}")
    raw = yaml.safe_load(path.read_text())
    recipe = Recipe(name, raw["description"], raw["for"], raw["cost"], raw.get("params") or {})
    recipe.params()  # validates: a recipe that no longer fits the params is an error here
    return recipe


def write_params(recipe: Recipe, out: Path, source: str | None = None) -> Params:
    """``out`` (params.yaml) = the defaults + the recipe, with a header saying where it came from."""
    params = recipe.params(source)
    header = (
        f"# Recipe {recipe.name}: {recipe.description}\n# For: {recipe.purpose}\n# Cost: {recipe.cost}\n"
        f"# Written by `fakeface recipe use {recipe.name}`; every key at its value (the defaults and "
        "the recipe's overrides).\n# The commented defaults: `git checkout params.yaml`.\n"
    )
    Path(out).write_text(header + yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return params


def describe(recipe: Recipe) -> str:
    """The recipe for a terminal: what it is for, what it costs, its overrides."""
    body = yaml.safe_dump(recipe.overrides, sort_keys=False).strip() if recipe.overrides else "(the defaults)"
    return (f"{recipe.name}: {recipe.description}\n  for: {recipe.purpose}\n  cost: {recipe.cost}\n"
            f"  overrides:\n" + "\n".join(f"    {line}" for line in body.splitlines()) + "\n")
