"""The project's import graph, read from the source (no module is imported): the architecture
tests use the one implementation that derives dvc.yaml's code deps (:mod:`fakeface.stages.codedeps`)."""

from __future__ import annotations

from fakeface.stages.codedeps import PACKAGES, ROOT, closure, cycles, imports_of, modules

__all__ = ["PACKAGES", "ROOT", "closure", "cycles", "imports_of", "modules"]
