"""``fakeface registry``: where the detector's aliases point, how they got there, and moving them.

    fakeface registry history [--alias champion]     every recorded move, oldest first
    fakeface registry promote VERSION [--reason ...] point @champion at VERSION (and its served model)
    fakeface registry rollback [--reason ...]        point @champion back at the version it held before

The model name and alias default to ``register.model_name`` and ``register.alias``; the tracking
server is ``MLFLOW_TRACKING_URI``'s, as for every stage.
"""

from __future__ import annotations

import argparse
import sys

from fakeface.config import Params


def _client() -> object:
    import mlflow
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    return MlflowClient()


def _history(args: argparse.Namespace, params: Params) -> None:
    from fakeface.tracking.aliases import current_version, history

    name = args.name or params.register.model_name
    client = _client()
    moves = history(client, name, args.alias)
    for move in moves:
        sys.stdout.write(move.line() + "\n")
    alias = args.alias or params.register.alias
    sys.stdout.write(f"{name}@{alias} is v{current_version(client, name, alias) or ' (none)'}; "
                     f"{len(moves)} recorded move(s)\n")


def _promote(args: argparse.Namespace, params: Params) -> None:
    from fakeface.tracking.aliases import promote

    move = promote(_client(), args.name or params.register.model_name, args.version,
                   args.alias or params.register.alias, args.reason)
    sys.stdout.write(move.line() + "\n")


def _rollback(args: argparse.Namespace, params: Params) -> None:
    from fakeface.tracking.aliases import rollback

    move = rollback(_client(), args.name or params.register.model_name, args.alias or params.register.alias,
                    args.reason)
    sys.stdout.write(move.line() + "\n")


def add_registry_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    text = "the registered detector's aliases: their history, promote a version, roll back"
    p = sub.add_parser("registry", help=text, description=text)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.set_defaults(handler=handler, params_optional=True)
        a.add_argument("--name", default=None, help="registered model (default: register.model_name)")
        a.add_argument("--alias", default=None, help="default: register.alias")
        return a

    action("history", _history, "every recorded alias move: when, from which version to which, by whom, why")
    a = action("promote", _promote, "point the alias (and the served model's) at VERSION, recorded as a promotion")
    a.add_argument("version", metavar="VERSION", help="the registered version number")
    a.add_argument("--reason", default="", help="why (kept in the history)")
    a = action("rollback", _rollback, "point the alias back at the version it held before its latest move")
    a.add_argument("--reason", default="", help="why (kept in the history)")
