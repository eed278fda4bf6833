"""The augment stage: pack the manifest into TFRecord shards for the input pipeline.

Augmentations are *not* materialised here: they run on the fly in the training input pipeline
(:mod:`fakeface.data.augmentations`), with a fresh seeded draw per image and epoch, and the preview
stage (:mod:`fakeface.stages.preview`) shows them. This stage writes the shards they read
(:func:`fakeface.data.shards.write_shards`) and reads only ``augment.shard_size``, so switching an
augmentation never repacks the data.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fakeface.config import Params
from fakeface.data.manifest import read_manifest
from fakeface.data.shards import write_shards
from fakeface.stages.paths import AugmentPaths

log = logging.getLogger(__name__)


def run(params: Params, paths: AugmentPaths) -> dict:
    """Write the shards and ``index.json`` under ``paths.shards``; returns the index.

    The folder is replaced only when complete (:func:`fakeface.data.shards.write_shards`): a killed or
    failed run, a full disk included, leaves the previous shards or none, never part of a set.
    """
    shard_size = params.augment.shard_size
    index = write_shards(read_manifest(paths.manifest), Path(paths.shards), shard_size)
    splits = [f"{split} {entry['n']} ({len(entry['shards'])} shards)" for split, entry in index.items()]
    log.info("augment: %s in %s; shard_size %d", ", ".join(splits), paths.shards, shard_size)
    return index
