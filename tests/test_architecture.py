"""The structure the next people rely on: one set of defaults, a dvc.yaml that cannot drift from
the code, no import cycles, no private names across modules, small modules, clean errors."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

import imports
from fakeface import FakefaceError
from fakeface.config import Params, flatten, load_params
from fakeface.stage_paths import INPUT, OUTPUT
from fakeface.stages import get_stage, list_stages

ROOT = imports.ROOT
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
MAX_LINES = 500


# --------------------------------------------------------------------------- defaults


def test_params_yaml_spells_out_exactly_the_code_defaults():
    """One source of truth: params.yaml and the config models hold the same values, key for key
    (a pipeline compiled from Python, or predict outside a project, then behaves as dvc repro)."""
    from_file = load_params(ROOT / "params.yaml").flat()
    from_code = Params().flat()
    raw = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    differing = {k: (from_file[k], from_code[k]) for k in from_code if from_file.get(k) != from_code[k]}
    assert not differing, f"params.yaml vs fakeface.config defaults (file, code): {differing}"
    robustness = {k for k in raw if k.startswith("evaluate.robustness.")}
    missing = sorted(k for k in from_code if k not in raw and not k.startswith("evaluate.robustness."))
    assert not missing, f"params.yaml does not spell out: {missing}"
    assert robustness, "params.yaml lists the robustness perturbations"


def test_runtime_settings_are_not_params():
    flat = Params().flat()
    for key in ("train.checkpoint_dir", "ablation.storage", "ablation.workdir"):
        assert key not in flat, f"{key} is a runtime setting (fakeface.runtime), not a model param"


# --------------------------------------------------------------------------- dvc.yaml


def _dep_covers(deps: list[str], path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", list_stages())
def test_dvc_stage_depends_on_every_module_it_imports(name):
    stage = get_stage(name)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in DVC[name]["deps"]]
    used = imports.closure(stage.module)
    missing = sorted(m for m in used if not _dep_covers(deps, imports.modules()[m]))
    assert not missing, f"dvc.yaml stage {name} misses deps on the modules it imports: {missing}"


@pytest.mark.parametrize("name", list_stages())
def test_dvc_stage_lists_exactly_the_params_it_reads(name):
    assert DVC[name]["params"] == list(get_stage(name).params)


@pytest.mark.parametrize("name", list_stages())
def test_dvc_stage_paths_are_the_stage_paths(name):
    stage = get_stage(name)
    spec = DVC[name]
    words = spec["cmd"].split()
    assert words[:2] == ["fakeface", name]
    given = dict(zip(words[2::2], words[3::2]))
    defaults = stage.paths()
    assert given == {stage.paths.option(k): str(v) for k, v in defaults.as_dict().items()}
    entries = [next(iter(e)) if isinstance(e, dict) else e for key in ("outs", "metrics", "plots") for e in spec.get(key, [])]
    outputs = {str(getattr(defaults, k)) for k in stage.paths.roles(OUTPUT)}
    listed = {e for e in entries if not e.startswith("plots/evaluate/")} | (
        {"plots/evaluate"} if any(e.startswith("plots/evaluate/") for e in entries) else set()
    )
    assert listed == outputs
    inputs = {str(getattr(defaults, k)) for k in stage.paths.roles(INPUT)}
    deps = {d for d in spec["deps"] if not d.startswith("src/")}
    assert inputs <= deps


def test_toggling_an_augmentation_does_not_repack_the_shards():
    """Switching augment.crop reruns preview and train (and what follows), never the packing."""
    readers = [name for name in list_stages() if any(
        key == "augment" or key == "augment.crop" for key in get_stage(name).params)]
    assert readers == ["preview", "train"]


# --------------------------------------------------------------------------- imports and size


def test_no_import_cycles():
    assert imports.cycles() == []


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
            "fakeface", "tests", "bench", "conftest", "imports"
        ):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    return found


def test_no_private_names_imported_across_modules():
    files = [*imports.modules().values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
    offenders = {str(p.relative_to(ROOT)): names for p in files if (names := _private_imports(p))}
    assert not offenders, offenders


def test_modules_stay_small():
    big = {name: n for name, path in imports.modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


# --------------------------------------------------------------------------- errors


def test_every_error_class_of_the_project_is_a_fakeface_error():
    """An expected failure prints one line and exits 2 only if the CLI recognises it."""
    loose = []
    for name in imports.modules():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, Exception) and not issubclass(cls, FakefaceError):
                loose.append(f"{name}.{cls.__name__}")
    assert not loose, f"not FakefaceErrors: {loose}"


def test_readme_parameter_table_is_generated_from_the_config():
    from fakeface.config.docs import params_table
    from fakeface.config.registry import read_block

    shown = read_block((ROOT / "README.md").read_text(), "params")
    assert shown == params_table().strip(), "README's parameter table is stale: paste `fakeface params --markdown`"


def test_every_package_is_installed_and_nothing_uses_the_bare_names():
    """components/ and pipelines/ install as fakeface.components and fakeface.pipelines: every
    package folder is listed in pyproject.toml, and no code imports the bare top-level names
    (which would work in a checkout by accident and fail where the package is installed)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in imports.modules().items() if path.name == "__init__.py"}
    assert found == listed
    bare = []
    for path in [*imports.modules().values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bare += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("components", "pipelines")]
    assert not bare, bare


def test_generated_components_and_compiled_pipelines_are_up_to_date():
    """components/{stages,ablation}.py follow the registry and the config; pipelines/compiled/*.yaml
    are what a cluster runs. Regenerate both with `fakeface pipeline golden` and review the diff."""
    from fakeface.components import codegen
    from fakeface.pipelines import golden

    for path, text in codegen.targets().items():
        assert path.read_text() == text, f"{path.name} is stale: run `fakeface pipeline golden`"
    params = load_params(ROOT / "params.yaml")
    for pipeline, path in golden.GOLDEN.items():
        assert path.read_text() == golden.render(pipeline, params), f"{path} is stale: run `fakeface pipeline golden`"
