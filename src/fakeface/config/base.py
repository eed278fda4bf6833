"""What every parameter section shares: strict keys, frozen values, one error type.

``extra="forbid"`` makes a misspelt key an error instead of a silently ignored default, and
``frozen`` makes a validated section safe to pass around: no stage can change what another reads.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fakeface import FakefaceError


class ConfigError(FakefaceError):
    """A parameter file that cannot be used; the message names each bad key."""


class Section(BaseModel):
    """Base of every parameter section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Toggle(Section):
    """An optional step switched by ``enabled`` (augmentations, robustness checks)."""

    enabled: bool = False
