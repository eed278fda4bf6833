"""What each recipe would run with on a GPU, and what that costs on this CPU: a baseline for the
next person with a GPU.

    python -m bench.devices [--out bench/results/devices.md] [--rounds 3]

Three measurements, each side by side in one run (ratios are what to read on a shared machine):

* per recipe, the settings ``auto`` resolves to on a GPU (:func:`fakeface.model.devices.resolve`) and
  where each of its augmentations would run (:func:`fakeface.data.pipeline.plan_augmentations`), and the
  training-step throughput of its network on this CPU with the plain CPU settings and with those
  GPU settings forced (at a small input size: random weights, a random batch);
* the same training step under a ``MirroredStrategy`` over 2 logical CPU devices against 1
  (each in its own process: TensorFlow fixes its devices when it starts);
* each Kaggle recipe's augmentation set, where it runs (the CPU input pipeline), against the
  decode limit of the same pipeline without augmentation, at the recipe's input size, on 256 px
  JPEG faces (``../shared/data/faces-sample`` when present, else generated images).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "faces-sample"
#: The input size each recipe's network is timed at here (the smallest its backbone takes; the
#: real sizes, 299 and 224 px, train a few images a second on 2 cores).
STEP_SIZES = {"quickstart": 64, "cpu-faces": 64, "kaggle-xception": 71, "kaggle-efficientnet": 32}
GPU_SETTINGS = {"mixed_precision": "on", "xla": "on", "deterministic": "off"}
BATCH, WARMUP, STEPS = 16, 3, 10


def _recipe_train(name: str, **overrides: Any):
    from fakeface.recipes import load_recipe

    params = load_recipe(name).params()
    train = params.train.model_copy(update={"weights": "none", "image_size": STEP_SIZES[name], "batch_size": BATCH})
    return params, train.model_copy(update=overrides)


def step_rate(name: str, gpu_settings: bool) -> float:
    """Training images/s of the recipe's network, one compiled step at a time."""
    import keras

    from bench.sections import step_rate as timed_steps
    from fakeface.model import devices
    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    params, cfg = _recipe_train(name, **(GPU_SETTINGS if gpu_settings else {}))
    settings = devices.resolve(cfg, gpus=0)
    strategy = devices.apply(settings, params.seed)
    with strategy.scope():
        model = build_classifier(cfg).model
        compile_model(model, cfg, cfg.learning_rate, 1000, settings.xla)
    rate = timed_steps(model, cfg.image_size, BATCH, WARMUP, STEPS)
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    return rate


def replica_rate(replicas: int) -> float:
    """Training images/s of ``model.fit`` on the small CNN (64 px, global batch 32) under the
    strategy ``--cpu-replicas`` gives, in this (fresh) process."""
    import numpy as np
    import tensorflow as tf

    from fakeface.model import devices
    from fakeface.config import parse_params
    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    cfg = parse_params({"train": {"backbone": "smallcnn", "image_size": 64, "batch_size": 32}}).train
    strategy = devices.apply(devices.resolve(cfg, gpus=0, cpu_replicas=replicas), 0)
    with strategy.scope():
        model = build_classifier(cfg).model
        compile_model(model, cfg, cfg.learning_rate, 1000, False)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (512, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 2, (512, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).cache()
    model.fit(dataset, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=3, verbose=0)
    return 3 * len(x) / (time.perf_counter() - start)


def _faces(work: Path) -> list[str]:
    if (SAMPLE / "real").is_dir():
        return sorted(str(p) for p in SAMPLE.glob("*/*.jpg"))
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(200):
        noise = rng.normal(size=(32, 32, 3)).cumsum(0).cumsum(1)
        pixels = ((noise - noise.min()) / np.ptp(noise) * 255).astype("uint8")
        path = work / f"face{i:03d}.jpg"
        Image.fromarray(pixels).resize((256, 256), Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


def augmentation_rates(files: list[str], rounds: int) -> dict[str, Any]:
    """Images/s of the CPU input pipeline at each Kaggle recipe's input size: decode only, and
    decode plus the recipe's augmentations as they run (the uint8 flip, the rest in float32)."""
    import tensorflow as tf

    from fakeface.data.augmentations import augmentation_seeds, build_augmenter, OPS
    from fakeface.data.pipeline import plan_augmentations
    from fakeface.data.decode import decode_uint8
    from fakeface.model.classifier import resolve_image_size

    files = files * max(1, 1000 // len(files))
    out: dict[str, Any] = {"images": len(files)}
    for name in ("kaggle-xception", "kaggle-efficientnet"):
        from fakeface.recipes import load_recipe

        params = load_recipe(name).params()
        size = resolve_image_size(params.train)
        plan = plan_augmentations(params.augment, on_device=True)

        def dataset(augment: bool) -> tf.data.Dataset:
            ds = tf.data.Dataset.from_tensor_slices(files).map(tf.io.read_file)
            ds = ds.map(lambda data: decode_uint8(data, size), num_parallel_calls=tf.data.AUTOTUNE)
            if augment:
                host = build_augmenter(plan.host)
                seeds = tf.data.Dataset.random(seed=0).batch(2)

                def one(image, pair):
                    for uint8_name in plan.uint8.enabled():
                        image = OPS.get(uint8_name)(image, augmentation_seeds(pair)[uint8_name])
                    return host(tf.cast(image, tf.float32), pair)

                ds = tf.data.Dataset.zip((ds, seeds)).map(one, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.batch(64).map(lambda b: tf.cast(b, tf.float32)).prefetch(tf.data.AUTOTUNE)

        def rate(ds: tf.data.Dataset) -> float:
            start, n = time.perf_counter(), 0
            for batch in ds:
                n += int(batch.shape[0])
            return n / (time.perf_counter() - start)

        plain, augmented = dataset(False), dataset(True)
        rate(plain), rate(augmented)  # warm-up: tracing, file cache
        pairs = [(rate(plain), rate(augmented)) for _ in range(rounds)]
        out[name] = {
            "size": size, "placement": plan.describe(),
            "decode_limit": statistics.median(p for p, _ in pairs),
            "augmented": statistics.median(a for _, a in pairs),
            "paired_ratios": sorted(a / p for p, a in pairs),
        }
    return out


def measure(rounds: int) -> dict[str, Any]:
    import tensorflow as tf

    from fakeface.model import devices
    from fakeface.data.pipeline import plan_augmentations
    from fakeface.recipes import list_recipes

    result: dict[str, Any] = {"load_before": os.getloadavg(), "tensorflow": tf.__version__, "recipes": {}}
    for name in sorted(list_recipes()):
        params, cfg = _recipe_train(name)
        on_gpu = devices.resolve(params.train, gpus=1)
        cpu_rates, gpu_rates = [], []
        for _ in range(rounds):
            cpu_rates.append(step_rate(name, False))
            gpu_rates.append(step_rate(name, True))
        result["recipes"][name] = {
            "backbone": cfg.backbone, "size": cfg.image_size,
            "on_a_gpu": {"mixed_precision": on_gpu.mixed_precision, "xla": on_gpu.xla,
                         "deterministic": on_gpu.deterministic,
                         "augmentations": plan_augmentations(params.augment, on_gpu.augment_on_device).describe()},
            "cpu_settings": statistics.median(cpu_rates), "gpu_settings": statistics.median(gpu_rates),
        }
    replica = {1: [], 2: []}
    for _ in range(rounds):
        for n in (1, 2):
            done = subprocess.run([sys.executable, "-m", "bench.devices", "--replica-child", str(n)], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            replica[n].append(float(done.stdout.strip().splitlines()[-1]))
    result["replicas"] = {"one": statistics.median(replica[1]), "two": statistics.median(replica[2]),
                          "paired_ratios": sorted(b / a for a, b in zip(replica[1], replica[2]))}
    with tempfile.TemporaryDirectory() as work:
        result["augmentation"] = augmentation_rates(_faces(Path(work)), rounds)
    result["load_after"] = os.getloadavg()
    return result


def markdown(result: dict[str, Any]) -> str:
    def load(values) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    lines = [f"Run on {os.cpu_count()} CPU cores, TensorFlow {result['tensorflow']}, no GPU "
             f"(load average {load(result['load_before'])} before, {load(result['load_after'])} after).", "",
             "| recipe | network (timed at) | on a GPU: mixed precision, XLA, deterministic ops | on a GPU: where each "
             "augmentation runs | train step, CPU settings | train step, GPU settings forced | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name, row in result["recipes"].items():
        gpu = row["on_a_gpu"]
        flags = ", ".join("on" if gpu[k] else "off" for k in ("mixed_precision", "xla", "deterministic"))
        lines.append(f"| `{name}` | {row['backbone']} ({row['size']} px) | {flags} | {gpu['augmentations']} | "
                     f"{row['cpu_settings']:.1f} img/s | {row['gpu_settings']:.1f} img/s | "
                     f"{row['gpu_settings'] / row['cpu_settings']:.2f}x |")
    rep = result["replicas"]
    lines += ["", f"MirroredStrategy over 2 logical CPU devices vs 1 (smallcnn 64 px, global batch 32, model.fit): "
              f"{rep['two']:.0f} vs {rep['one']:.0f} img/s = **{rep['two'] / rep['one']:.2f}x** (paired rounds "
              f"{', '.join(f'{r:.2f}' for r in rep['paired_ratios'])}): the same cores split in two, so this is "
              "the cost of the strategy's bookkeeping, not a speed-up.", "",
              "| Kaggle recipe's augmentations | input size | where they run | decode limit | with the augmentations |"
              " ratio (paired rounds) |", "|---|---|---|---|---|---|"]
    aug = result["augmentation"]
    for name in ("kaggle-xception", "kaggle-efficientnet"):
        row = aug[name]
        ratios = ", ".join(f"{r:.2f}" for r in row["paired_ratios"])
        lines.append(f"| `{name}` | {row['size']} px | {row['placement']} | {row['decode_limit']:.0f} img/s | "
                     f"{row['augmented']:.0f} img/s | **{row['augmented'] / row['decode_limit']:.2f}x** ({ratios}) |")
    lines.append(f"\n{aug['images']} JPEG reads per measurement (256 px faces), batch 64, tf.data AUTOTUNE.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devices", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "devices.md"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replica-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.replica_child:
        print(replica_rate(args.replica_child))
        return 0
    result = measure(args.rounds)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    out.write_text(markdown(result))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
