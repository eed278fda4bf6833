"""Data and storage: image checks, the manifest, shards, decoding, the training input pipeline and its augmentations."""
