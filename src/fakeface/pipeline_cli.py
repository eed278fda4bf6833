"""``fakeface pipeline ...``: compile, submit and run the Kubeflow pipeline (see issue 3)."""

from __future__ import annotations

import argparse


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Register the ``pipeline`` subcommand group (filled in by the Kubeflow work)."""
