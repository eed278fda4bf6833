"""What every parameter section shares: strict keys, frozen values, one error type.

``extra="forbid"`` makes a misspelt key an error instead of a silently ignored default, and
``frozen`` makes a validated section safe to pass around: no stage can change what another reads.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from fakeface import FakefaceError


class ConfigError(FakefaceError):
    """A parameter file that cannot be used; the message names each bad key."""


class Section(BaseModel):
    """Base of every parameter section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Toggle(Section):
    """An optional step switched by ``enabled`` (augmentations, robustness checks)."""

    enabled: bool = False


def refusing(value: Any, why: str) -> AfterValidator:
    """A field's validator that refuses one value with ``why``: ``Annotated[int, refusing(1, ...)]``
    (pydantic's constraints bound a range; they cannot leave a hole in it)."""

    def check(given: Any) -> Any:
        if given == value:
            raise ValueError(why)
        return given

    return AfterValidator(check)
