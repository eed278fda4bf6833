"""Name -> entry registries: the one implementation behind every family the project builds by name
(stages, data set layouts, backbones, augmentations, robustness checks), timm style: entries are
added in an order that means something (run, detect or apply order), looked up by name, listed,
and an unknown name is one :class:`UnknownNameError` listing the known ones.

For pluggable image operations (augmentations, robustness checks) each entry has two halves.

Why two halves: the *light* half (a name, its pydantic parameter class with defaults and docstring)
is what parameter validation, the CLI and the docs need, and it must import without TensorFlow
(``import fakeface.config`` stays fast). The *heavy* half (the function that does the work) lives
next to its TensorFlow / PIL code and is registered against the light entry with
:meth:`Implementations.register`, which checks the function's keyword parameters against the
entry's fields, so a parameter added to a config class but not to its function (or misspelt)
fails at import, not in the middle of a run.

The same entry renders the documentation (:func:`markdown_table`, :func:`parameters`) and is
checked against README.md and params.yaml by the tests, so the docs cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from fakeface import FakefaceError

F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E")


class UnknownNameError(FakefaceError):
    """A name no entry of a registry has (a typo in params, or a command-line argument)."""


@dataclass(frozen=True)
class Entry:
    """The light half of one registered operation: its name and its parameter class.

    ``fixed`` names the fields that select or switch the operation (``enabled``, ``kind``) and are
    not passed to its function; every other field is, by name (see :meth:`kwargs`).
    """

    name: str
    config: type[BaseModel]
    fixed: frozenset[str] = frozenset({"enabled"})

    @property
    def params(self) -> tuple[str, ...]:
        """The fields passed to the function, in declaration order."""
        return tuple(f for f in self.config.model_fields if f not in self.fixed)

    @property
    def doc(self) -> str:
        """What it does: the config class's docstring on one line, its RST double backticks made
        markdown's single ones (it feeds the docs' tables)."""
        return " ".join((self.config.__doc__ or "").split()).replace("``", "`")

    def kwargs(self, section: BaseModel) -> dict[str, Any]:
        """The function's keyword arguments for a validated section (plain Python values)."""
        return {name: getattr(section, name) for name in self.params}


class Registry(Generic[E]):
    """Entries by name, in registration order (which is meaningful: see each registry).

    An entry is anything with a ``name`` (a stage, a layout class, a backbone spec, an
    :class:`Entry`); with ``documented``, also a non-empty ``doc`` (or a docstring), which the
    generated docs show.
    """

    def __init__(self, what: str, documented: bool = True) -> None:
        self.what = what
        self.documented = documented
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
            raise ValueError(f"{self.what} name {name!r}: use lower-case letters, digits and '_'")
        doc = entry.doc if hasattr(entry, "doc") else entry.__doc__
        if self.documented and not doc:
            raise ValueError(f"{self.what} {name!r} needs a docstring (the docs use it)")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> E:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.what} {name!r}; expected one of {', '.join(self._entries)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class Implementations(Generic[F]):
    """The heavy half: one function per registered name, filled by :meth:`register` decorators.

    Each function is called as ``function(*leading, **entry.kwargs(section))``; ``leading`` names
    its positional arguments (``image, seed`` for augmentations), checked like the rest.
    """

    def __init__(self, registry: Registry[Any], leading: Sequence[str]) -> None:
        self.registry = registry
        self.leading = tuple(leading)
        self._functions: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        entry = self.registry.get(name)  # only a registered (documented, configured) name

        def decorator(function: F) -> F:
            if name in self._functions:
                raise ValueError(f"{self.registry.what} {name!r} has two implementations")
            got = tuple(inspect.signature(function).parameters)
            want = (*self.leading, *entry.params)
            if got != want:
                raise TypeError(
                    f"{self.registry.what} {name!r}: {function.__name__}{got} must take {want} "
                    f"(the leading arguments, then the fields of {entry.config.__name__} in order)"
                )
            self._functions[name] = function
            return function

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._functions[name]
        except KeyError:
            self.registry.get(name)  # an unknown name says so, listing the known ones
            raise LookupError(f"{self.registry.what} {name!r} has no implementation") from None

    def check_complete(self) -> None:
        """Every registered name has a function (call once all registrations have run)."""
        missing = [name for name in self.registry.names() if name not in self._functions]
        if missing:
            raise LookupError(f"{self.registry.what} without an implementation: {', '.join(missing)}")


# --------------------------------------------------------------------------- documentation


def _bounds(metadata: Sequence[Any]) -> str:
    """``in (0, 1]`` from a field's ``gt``/``ge``/``lt``/``le`` constraints; ``> 0`` when one-sided."""
    low = high = None
    for item in metadata:  # annotated_types.Gt(gt=0), Le(le=1)...: one bound each
        for attribute in ("gt", "ge", "lt", "le"):
            bound = getattr(item, attribute, None)
            if bound is not None and attribute in ("gt", "ge"):
                low = (attribute, bound)
            elif bound is not None:
                high = (attribute, bound)
    if low and high:
        return f"in {'(' if low[0] == 'gt' else '['}{low[1]:g}, {high[1]:g}{')' if high[0] == 'lt' else ']'}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    one = low or high
    return f"{symbols[one[0]]} {one[1]:g}" if one else ""


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as YAML spells it
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parameters(config: type[BaseModel], exclude: Sequence[str] = ()) -> list[str]:
    """One markdown item per field: name, default, allowed interval and description."""
    items = []
    for name, field in config.model_fields.items():
        if name in exclude:
            continue
        pieces = [f"`{name}` = {_value(field.default)}", _bounds(field.metadata), field.description or ""]
        items.append(", ".join(piece for piece in pieces if piece))
    return items


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; ``|`` in cells is escaped."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def spoken_list(names: Sequence[str]) -> str:
    """``a, b or c``: for error messages that list the choices."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def replace_block(text: str, marker: str, content: str) -> str:
    """``text`` with what lies between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` replaced."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"need exactly one {start} ... {end} block")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"


def read_block(text: str, marker: str) -> str:
    """What lies between the markers (stripped), as :func:`replace_block` writes it."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"need exactly one {start} ... {end} block")
    return text.split(start)[1].split(end)[0].strip()
