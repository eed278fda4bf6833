"""The project's import graph, read from the source, and the code dependencies of ``dvc.yaml``.

    python -m fakeface.stages.codedeps          # rewrite the code deps and params of dvc.yaml and ablation/dvc.yaml
    python -m fakeface.stages.codedeps --check  # exit 1, naming the stages, when either is stale

DVC reruns a stage when one of its deps changes, so a stage must depend on exactly the code it
runs: a missing module means a code change that DVC does not rerun, an extra one (a server the
stage never starts) means reruns for nothing. The deps are therefore not written by hand but
derived from each stage's import closure. Every ``import`` counts, also one inside a function: a
lazy import still makes the importer depend on the imported module's code. No module is imported
to find this out; it runs from a checkout, where ``src/``, ``components/`` and ``pipelines/`` are.
Each stage's ``params`` list is written from the stage registry in the same pass (a new
augmentation, a new section key read by a stage, lands in ``dvc.yaml`` without a hand edit).
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
#: The project's packages and the folders they live in (pyproject.toml's package-dir).
PACKAGES = {
    "fakeface": ROOT / "src" / "fakeface",
    "fakeface.components": ROOT / "components",
    "fakeface.pipelines": ROOT / "pipelines",
}


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if "compiled" in path.parts:
                continue
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to: itself, or the package that holds it."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imports_of(module: str) -> frozenset[str]:
    """Project modules ``module`` imports directly (``from a import b`` counts ``a.b`` if it is a
    module, else ``a``)."""
    path = modules()[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            resolved = _resolve(name)
            if resolved and resolved != module:
                found.add(resolved)
    return frozenset(found)


def closure(module: str) -> set[str]:
    """``module`` and every project module it imports, directly or not."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(imports_of(current))
    return seen


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in imports_of(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in modules():
        if name not in index:
            visit(name)
    return groups


def code_deps(module: str) -> list[str]:
    """The ``dvc.yaml`` deps of a stage running ``module``: the files of its import closure, a
    folder listed as one entry when the stage imports every module in it (``src/fakeface/config``)."""
    used = closure(module)
    by_folder: dict[Path, list[str]] = {}
    for name, path in modules().items():
        by_folder.setdefault(path.parent, []).append(name)
    deps: set[str] = set()
    for name in used:
        path = modules()[name]
        whole = path.parent != PACKAGES["fakeface"] and all(m in used for m in by_folder[path.parent])
        deps.add((path.parent if whole else path).relative_to(ROOT).as_posix())
    return sorted(deps)


def stage_modules() -> dict[str, dict[str, str]]:
    """Each DVC file's stages and the module each one runs."""
    from fakeface.stages import get_stage, list_stages

    return {
        "dvc.yaml": {name: get_stage(name).module for name in list_stages()},
        "ablation/dvc.yaml": {"ablate": "fakeface.cli.ablation", "retrain": "fakeface.cli.ablation"},
    }


def stage_params() -> dict[str, dict[str, tuple[str, ...]]]:
    """Each DVC file's stages and the params keys each one reads."""
    from fakeface.stages import AUGMENTATION_KEYS, get_stage, list_stages

    trained = ("seed", *AUGMENTATION_KEYS, "train")  # what a trial trains with (not the shard packing)
    return {
        "dvc.yaml": {name: get_stage(name).params for name in list_stages()},
        "ablation/dvc.yaml": {
            # the study: trials train and are measured on valid (the threshold, the batch size)
            "ablate": (*trained, "evaluate.threshold", "evaluate.batch_size", "tracking", "ablation"),
            # the retrain: the study's name (all of the above) and a full evaluate on test
            "retrain": (*trained, "evaluate", "tracking", "ablation"),
        },
    }


def rewrite(text: str, stages: dict[str, str], params: dict[str, tuple[str, ...]] | None = None) -> str:
    """``text`` (a dvc.yaml) with each listed stage's code deps (its ``src/`` entries) replaced by
    :func:`code_deps`, the other deps (data, params files) kept after them, and its ``params``
    list replaced by ``params[stage]``."""
    params = params or {}
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip("\n")
        if stripped.startswith("  ") and not stripped.startswith("   ") and stripped.endswith(":"):
            stage = stripped.strip()[:-1]
        out.append(line)
        i += 1
        if stripped == "    deps:" and stage in stages:
            others: list[str] = []
            while i < len(lines) and lines[i].startswith("      - "):
                if not lines[i].startswith("      - src/"):
                    others.append(lines[i])
                i += 1
            out.extend(f"      - {dep}\n" for dep in code_deps(stages[stage]))
            out.extend(others)
        elif stripped == "    params:" and stage in params:
            while i < len(lines) and lines[i].startswith("      - "):
                i += 1
            out.extend(f"      - {key}\n" for key in params[stage])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakeface.stages.codedeps", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    keys = stage_params()
    for name, stages in stage_modules().items():
        path = ROOT / name
        text = path.read_text()
        fresh = rewrite(text, stages, keys[name])
        if fresh != text:
            stale.append(name)
            if not args.check:
                path.write_text(fresh)
    if stale:
        print(("stale: " if args.check else "rewrote: ") + ", ".join(stale)
              + (" (run: python -m fakeface.stages.codedeps)" if args.check else ""))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
