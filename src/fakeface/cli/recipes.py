"""``fakeface recipe list|show|use``: the named parameter profiles of :mod:`fakeface.recipes`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fakeface import recipes
from fakeface.config import Params


def add_recipe_commands(sub: Any) -> None:
    """``fakeface recipe list|show|use``."""
    def run_list(args: Any, params: Params) -> None:
        for name in recipes.list_recipes():
            recipe = recipes.load_recipe(name)
            sys.stdout.write(f"{name:20s} {recipe.description}\n{'':20s} cost: {recipe.cost}\n")

    def run_show(args: Any, params: Params) -> None:
        sys.stdout.write(recipes.describe(recipes.load_recipe(args.name)))

    def run_use(args: Any, params: Params) -> None:
        recipe = recipes.load_recipe(args.name)
        written = recipes.write_params(recipe, Path(args.out), args.source)
        sys.stdout.write(f"{args.out}: recipe {recipe.name} (data.source {written.data.source}); "
                         "run it with `dvc repro`\n")

    group = sub.add_parser("recipe", help="named parameter profiles: list, show, use",
                           description=recipes.__doc__.split("\n\n")[0])
    actions = group.add_subparsers(dest="recipe_action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="the recipes, what each is for and costs")
    p.set_defaults(handler=run_list, params_optional=True)
    p = actions.add_parser("show", help="a recipe's overrides")
    p.add_argument("name")
    p.set_defaults(handler=run_show, params_optional=True)
    p = actions.add_parser("use", help="write params.yaml from a recipe")
    p.add_argument("name")
    p.add_argument("--source", default=None, help="data.source for this recipe (a folder, a zip, kaggle:...)")
    p.add_argument("--out", default="params.yaml", help="the params file to write (default: %(default)s)")
    p.set_defaults(handler=run_use, params_optional=True)
