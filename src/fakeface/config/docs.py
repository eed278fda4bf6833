"""The README's parameter table, rendered from the config models (their defaults and field
descriptions), so the documentation cannot drift from the code: a test compares the two, and
``fakeface params --markdown`` prints the table to paste.

Augmentations and robustness perturbations have tables of their own, rendered from their
registries; this one skips their keys.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from fakeface.config import Params
from fakeface.config.augment import list_augmentations

#: Keys documented elsewhere (their own generated tables, or the ablation section).
SKIPPED_PREFIXES = (
    *(f"augment.{name}." for name in list_augmentations()),
    "evaluate.robustness",
    "ablation.search_space",
)


def _rows(model: BaseModel, prefix: str = "") -> list[tuple[str, Any, str]]:
    rows: list[tuple[str, Any, str]] = []
    for name, field in type(model).model_fields.items():
        key, value = f"{prefix}{name}", getattr(model, name)
        if key.startswith(SKIPPED_PREFIXES) or f"{key}.".startswith(SKIPPED_PREFIXES):
            continue
        if isinstance(value, BaseModel):
            rows.extend(_rows(value, f"{key}."))
        else:
            rows.append((key, value, field.description or ""))
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`"


def params_table(params: Params | None = None) -> str:
    """A Markdown table: key, default, meaning; one row per parameter, in params.yaml order."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, value, meaning in _rows(params or Params()):
        lines.append(f"| `{key}` | {_shown(value)} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
