"""``fakeface stack up|status|down`` and ``fakeface runs`` (see issue 4)."""

from __future__ import annotations

import argparse


def add_stack_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Register the ``stack`` and ``runs`` subcommands (filled in by the tracking-stack work)."""
