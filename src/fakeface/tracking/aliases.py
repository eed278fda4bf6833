"""Who moved an alias of the registered detector, when, from which version, and why; and moving it.

Programs load the detector as ``models:/fakeface-detector@champion``: moving that alias is a
deployment. MLflow keeps only where an alias points now, so every move made through fakeface (the
register stage, ``fakeface registry promote``, ``fakeface registry rollback``) is recorded as a tag
on the registered model, ``fakeface.alias_move.000001`` and up, holding one JSON record::

    {"alias", "version", "previous", "action", "reason", "actor", "time"}

The tags live in the registry itself, so the history is wherever the model is (any tracking
server, any backend store) and shows on the model's page in the MLflow UI. ``actor`` is
``$FAKEFACE_ACTOR`` when set (a CI job or a pipeline names itself), else the local user and host.

The image-in model (``<name>-serving``, what ``fakeface serve`` and KServe run) follows: each of
its versions carries the detector version it wraps (tag ``detector_version``), and every move of
the detector's alias moves the serving model's alias of the same name to that version.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from fakeface import FakefaceError

log = logging.getLogger(__name__)

MOVE_TAG_PREFIX = "fakeface.alias_move."
#: The tag on a serving version naming the detector version it wraps.
DETECTOR_VERSION_TAG = "detector_version"
ACTOR_ENV = "FAKEFACE_ACTOR"


class RegistryError(FakefaceError):
    """A registry request that cannot be carried out (no such version, nothing to roll back to)."""


def serving_model_name(model_name: str) -> str:
    """The registered name of the image-in model beside the Keras model ``model_name``."""
    return f"{model_name}-serving"


@dataclass(frozen=True)
class AliasMove:
    sequence: int
    alias: str
    version: str
    previous: str | None
    action: str
    reason: str
    actor: str
    time: str

    def line(self) -> str:
        came_from = f"v{self.previous}" if self.previous else "nothing"
        return (f"#{self.sequence} {self.time} @{self.alias}: {came_from} -> v{self.version} "
                f"({self.action} by {self.actor}): {self.reason}")


def actor() -> str:
    """Who is moving the alias: ``$FAKEFACE_ACTOR``, else user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = str(os.getuid())
    return os.environ.get(ACTOR_ENV) or f"{user}@{socket.gethostname()}"


def current_version(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None (no such alias, or no such model yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def history(client: Any, name: str, alias: str | None = None) -> list[AliasMove]:
    """Every recorded move of ``name``'s aliases (of ``alias`` only, when given), oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as error:
        raise RegistryError(f"no registered model {name!r} ({error.error_code})") from None
    moves = [AliasMove(**json.loads(value)) for key, value in tags.items() if key.startswith(MOVE_TAG_PREFIX)]
    moves.sort(key=lambda move: move.sequence)
    return [move for move in moves if alias is None or move.alias == alias]


def serving_version(client: Any, model_name: str, version: str) -> str | None:
    """The serving model's version that wraps detector ``version``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{serving_model_name(model_name)}'")
    except MlflowException:
        return None
    matches = [int(v.version) for v in versions if v.tags.get(DETECTOR_VERSION_TAG) == str(version)]
    return str(max(matches)) if matches else None


def move_alias(client: Any, name: str, alias: str, version: str, *, action: str, reason: str) -> AliasMove:
    """Point ``name@alias`` (and the serving model's alias) at ``version`` and record the move."""
    from mlflow.exceptions import MlflowException

    version = str(version)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"{name} has no version {version}") from None
    previous = current_version(client, name, alias)
    client.set_registered_model_alias(name, alias, version)
    wrapped = serving_version(client, name, version)
    if wrapped is not None:
        client.set_registered_model_alias(serving_model_name(name), alias, wrapped)
    else:
        log.warning("%s v%s has no image-in model (%s): its @%s alias was not moved", name, version,
                    serving_model_name(name), alias)
    sequence = max((move.sequence for move in history(client, name)), default=0) + 1
    move = AliasMove(sequence=sequence, alias=alias, version=version, previous=previous, action=action,
                     reason=reason, actor=actor(), time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    client.set_registered_model_tag(name, f"{MOVE_TAG_PREFIX}{sequence:06d}", json.dumps(asdict(move)))
    log.info("%s: %s", name, move.line())
    return move


def promote(client: Any, name: str, version: str, alias: str = "champion", reason: str = "") -> AliasMove:
    """``fakeface registry promote``: a person's decision, recorded as such."""
    return move_alias(client, name, alias, version, action="promote", reason=reason or "promoted by hand")


def rollback(client: Any, name: str, alias: str = "champion", reason: str = "") -> AliasMove:
    """Point ``alias`` back at the version it held before its latest move."""
    moves = history(client, name, alias)
    if not moves or moves[-1].previous is None:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to "
                            f"({len(moves)} recorded move(s); see fakeface registry history)")
    latest = moves[-1]
    return move_alias(client, name, alias, latest.previous, action="rollback",
                      reason=reason or f"rolled back from v{latest.version}")
