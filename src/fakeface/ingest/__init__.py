"""The ingest stage: a data source -> a checked manifest plus a quarantine report.

The public API is :func:`ingest`, :class:`IngestReport`, :class:`IngestError` and
:func:`kaggle_credentials_found`, plus :func:`run`, the stage's entry point for
:mod:`fakeface.stages`. The stage is split by what changes for different reasons:

:mod:`~fakeface.ingest.sources`
    ``data.source`` text -> a folder on disk (synthetic, folder, zip, csv list, ``kaggle:``).
:mod:`~fakeface.ingest.archives`
    Zip extraction that refuses zip slip, nested archives and archive bombs (size caps enforced
    while streaming), each refused member recorded.
:mod:`~fakeface.ingest.layouts`
    The registry of data set layouts, one adapter module each (Kaggle 140k,
    ``{Train,Validation,Test}/{Real,Fake}``, ArtiFact, CIPLAB, a ``path,label[,split]`` CSV,
    ``real/`` + ``fake/``): how each is recognised and how its files are labelled.
:mod:`~fakeface.ingest.examine`, :mod:`~fakeface.ingest.decisions`
    The checks every data set gets: decode + hash, normalisation to RGB, duplicates, leakage
    across splits, label conflicts, the seeded split, cross-dataset testing, category exclusion.
:mod:`~fakeface.ingest.report`
    The manifest and the JSON report.
:mod:`~fakeface.ingest.stage`
    :func:`ingest`, which runs them in order.

``data.source`` may be a list: each source is resolved and recognised on its own and all of them
go into one manifest, deduplicated across sources (the same bytes in two sources are kept once, in
the earliest split), with the ``source`` column naming where each row came from.
``data.test_source`` names one of them for cross-dataset evaluation.
"""

from fakeface.ingest.entries import REASONS, IngestError
from fakeface.ingest.report import IngestReport
from fakeface.ingest.sources import kaggle_credentials_found
from fakeface.ingest.stage import ingest, run

__all__ = ["REASONS", "IngestError", "IngestReport", "ingest", "kaggle_credentials_found", "run"]
