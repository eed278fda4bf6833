"""Download the ImageNet weights of chosen backbones into the image (``$KERAS_HOME/models``).

Run at image build time with a comma-separated list of backbone names (the ``BAKE_WEIGHTS``
build argument; empty: nothing). Clusters often cannot reach the internet, and without this every
train pod of a ``weights: imagenet`` run downloads the same files again. It reads the backbone
registry straight from ``backbones.py`` (which imports nothing of the package), so this layer is
rebuilt only when that file or the list changes, not on every code change.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main(names: str, registry_file: str) -> int:
    wanted = [name.strip().lower() for name in names.split(",") if name.strip()]
    if not wanted:
        print("bake_weights: no backbones asked for; pods download weights on first use")
        return 0
    spec = importlib.util.spec_from_file_location("backbones", registry_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["backbones"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    for name in wanted:
        backbone = module.get_backbone(name)  # an unknown name fails the build, listing the known
        if not backbone.has_imagenet:
            raise SystemExit(f"bake_weights: backbone {name!r} has no ImageNet weights")
        backbone.build(backbone.default_size, "imagenet")
        print(f"bake_weights: {name} ({backbone.default_size} px) cached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "", str(Path(__file__).with_name("backbones.py"))))
