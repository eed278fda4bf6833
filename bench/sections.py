"""The measurements. Each section runs in its own fresh process (``python -m bench.sections NAME
WORKDIR OUT.json``) so TensorFlow state, thread pools and memory peaks of one never affect another.

Data sets are made once by :func:`prepare` (not timed): synthetic.generate at 256 px (input
pipeline) and at 64 px with 1,000 and 10,000 images (inference, scale).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]
INPUT_IMAGES = 1000  # images of the input-pipeline set (500 per class)
SCALE_SIZES = (1000, 10000)


def _dataset_dir(work: Path, size: int, n: int) -> Path:
    return work / f"synthetic-{size}px-{n}"


def prepare(work: Path) -> dict[str, float]:
    """Generate the synthetic sets (skipped when already there); returns seconds per set."""
    from fakeface.config import SplitFractions, SyntheticConfig
    from fakeface.data.synthetic import generate

    took = {}
    for size, n in [(256, INPUT_IMAGES), *[(64, n) for n in SCALE_SIZES]]:
        out = _dataset_dir(work, size, n)
        if (out / "test.csv").is_file():
            continue
        start = time.perf_counter()
        generate(SyntheticConfig(images_per_class=n // 2, image_size=size), SplitFractions(), out, seed=0)
        took[f"{size}px_{n}"] = time.perf_counter() - start
    return took


def _jpegs(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))


# --------------------------------------------------------------------------- input pipeline


def section_input(work: Path) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf
    from concurrent.futures import ThreadPoolExecutor

    import keras
    from PIL import Image

    from fakeface.config import AugmentConfig, parse_params
    from fakeface.config.augment import list_augmentations
    from fakeface.data.pipeline import make_dataset
    from fakeface.stages.paths import AugmentPaths, IngestPaths
    from fakeface.stages import get_stage

    size, batch = 256, 64
    data = _dataset_dir(work, size, INPUT_IMAGES)
    stage = work / "input-stage"
    shutil.rmtree(stage, ignore_errors=True)
    params = parse_params({"data": {"source": str(data)}})
    ingested = IngestPaths.in_artifacts(stage)
    get_stage("ingest").run(params, ingested)
    get_stage("augment").run(params, AugmentPaths(manifest=ingested.manifest, shards=stage / "shards"))
    splits = ("train", "valid", "test")
    aug = AugmentConfig()  # the default: flip only

    # the same JPEGs in the class-folder layout image_dataset_from_directory wants (hard links)
    flat = stage / "flat"
    for path in _jpegs(data):
        target = flat / Path(path).parent.name / f"{Path(path).parent.parent.name}-{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    files = _jpegs(flat)
    n = len(files)

    full = AugmentConfig(**{name: {"enabled": True} for name in list_augmentations()})
    cache_dir = stage / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)

    def shards_ds(augment=aug, cache="none"):
        return make_dataset(stage / "shards", splits, size, batch, training=True, augment=augment, seed=0,
                            cache=cache, cache_dir=cache_dir)

    flip = keras.layers.RandomFlip("horizontal", seed=0)

    def idfd_ds():
        ds = keras.utils.image_dataset_from_directory(
            flat, labels="inferred", label_mode="binary", image_size=(size, size), batch_size=batch,
            shuffle=True, seed=0, verbose=False,
        )
        return ds.map(lambda x, y: (flip(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE
        )

    def decode_ds():
        def load(path):
            return tf.cast(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), tf.float32)

        ds = tf.data.Dataset.from_tensor_slices(files).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

    threads = os.cpu_count() or 2
    pool = ThreadPoolExecutor(threads)

    def pil_load(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)

    def pil_epoch() -> int:
        count = 0
        for start in range(0, n, batch):
            images = np.stack(list(pool.map(pil_load, files[start : start + batch])))
            count += len(images)
        return count

    datasets = {
        "shards": shards_ds(), "decode_limit": decode_ds(), "shards_full": shards_ds(full),
        "cache_memory": shards_ds(cache="memory"), "cache_disk": shards_ds(cache="disk"), "idfd": idfd_ds(),
    }

    def epoch(name: str) -> float:
        start = time.perf_counter()
        if name == "decode_limit_pil":
            count = pil_epoch()
        else:
            count = 0
            for item in datasets[name]:
                count += int(item[0].shape[0]) if isinstance(item, tuple) else int(item.shape[0])
        elapsed = time.perf_counter() - start
        assert count == n, (name, count, n)
        return count / elapsed

    names = [*datasets, "decode_limit_pil"]
    rates: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up epoch: tracing, file cache, the caches fill (so rounds are epochs 2+)
        epoch(name)
    rounds = 7
    for _ in range(rounds):  # round robin, so load changes on the shared machine hit every variant
        for name in names:
            rates[name].append(epoch(name))
    result: dict[str, Any] = {name: statistics.median(r) for name, r in rates.items()}
    result.update(images=n, size=size, batch=batch, threads=threads, rounds=rounds, all_rates=rates,
                  full_set=", ".join(full.enabled()))
    result["train_step"] = _train_step_with_input(stage / "shards", cache_dir)
    return result


def _train_step_with_input(shards: Path, cache_dir: Path) -> dict[str, float]:
    """Training images/s of the CPU train step fed by make_dataset, without and with the memory
    cache (smallcnn at 64 px: a model fast enough that the input shows)."""
    import keras

    from fakeface.config import parse_params
    from fakeface.data.pipeline import make_dataset
    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    from fakeface.data.shards import read_index

    images = sum(int(entry["n"]) for entry in read_index(shards).values())
    rates = {}
    for cache in ("none", "memory"):
        cfg = parse_params({"train": {"backbone": "smallcnn", "image_size": 64, "batch_size": 64}}).train
        model = build_classifier(cfg).model
        compile_model(model, cfg, cfg.learning_rate, steps=1000, xla=False)
        ds = make_dataset(shards, ["train", "valid", "test"], 64, 64, training=True, seed=0, cache=cache,
                          cache_dir=cache_dir)
        model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing, and the cache fills
        start = time.perf_counter()
        model.fit(ds, epochs=2, verbose=0)
        rates[cache] = 2 * images / (time.perf_counter() - start)
        keras.backend.clear_session()
    return rates


# --------------------------------------------------------------------------- training steps


def _train_rate(backbone: str, size: int, batch: int, warmup: int, steps: int, xla: bool = False) -> float:
    import keras

    from fakeface.config import parse_params
    from fakeface.model.classifier import build_classifier
    from fakeface.stages.train import compile_model

    cfg = parse_params({"train": {"backbone": backbone, "image_size": size, "weights": "none", "batch_size": batch}}).train
    model = build_classifier(cfg).model
    compile_model(model, cfg, cfg.learning_rate, steps=1000, xla=xla)
    rate = step_rate(model, size, batch, warmup, steps)
    keras.backend.clear_session()
    return rate


def step_rate(model, size: int, batch: int, warmup: int, steps: int) -> float:
    """Training images/s of a compiled ``model``, one step at a time on a fixed random batch."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 2, (batch, 1)).astype("float32")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def section_training(work: Path) -> dict[str, Any]:
    import tensorflow as tf

    batch, warmup, steps = 32, 3, 10
    result: dict[str, Any] = {"batch": batch, "warmup": warmup, "steps": steps}
    result["smallcnn_64"] = _train_rate("smallcnn", 64, batch, warmup, steps)
    result["mobilenetv2_128"] = _train_rate("mobilenetv2", 128, batch, warmup, steps)
    if tf.config.list_physical_devices("GPU"):
        import keras

        gpu = {}
        for mixed in (False, True):
            for xla in (False, True):
                keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
                gpu[f"mp={mixed},xla={xla}"] = _train_rate("xception", 299, 32, 3, 20, xla=xla)
        keras.mixed_precision.set_global_policy("float32")
        result["gpu"] = ", ".join(f"{k}: {v:.0f} img/s" for k, v in gpu.items())
        result["gpu_rates"] = gpu
    else:
        result["gpu"] = "skipped: no GPU"
    return result


# --------------------------------------------------------------------------- inference


def section_inference(work: Path) -> dict[str, Any]:
    import keras

    from fakeface.config import parse_params
    from fakeface.data.images import pil_limits
    from fakeface.config.data import MAX_PIXELS
    from fakeface.model.classifier import build_classifier
    from fakeface.inference.predict import expand_inputs, load_input, load_model, predict_files

    size, batch_size, per_image_n = 64, 64, 100
    cfg = parse_params({"train": {"backbone": "smallcnn", "image_size": size}}).train
    model_path = work / "smallcnn-64-untrained.keras"
    build_classifier(cfg).model.save(model_path)
    keras.backend.clear_session()

    folder = _dataset_dir(work, size, 1000) / "real_vs_fake"
    paths = expand_inputs([str(folder)])
    loaded = load_model(str(model_path))
    predict_files(loaded, paths[:batch_size], batch_size)  # warm-up: tracing
    start = time.perf_counter()
    rows = predict_files(loaded, paths, batch_size)
    batch_rate = len(rows) / (time.perf_counter() - start)
    assert all(r.p_fake is not None for r in rows)

    with pil_limits(MAX_PIXELS):
        for path in paths[:3]:  # warm-up
            loaded.model.predict(load_input(path, size)[None], verbose=0)
        start = time.perf_counter()
        for path in paths[:per_image_n]:
            loaded.model.predict(load_input(path, size)[None], verbose=0)
        per_image_rate = per_image_n / (time.perf_counter() - start)
    return {
        "images": len(paths), "size": size, "batch_size": batch_size, "per_image_n": per_image_n,
        "batch": batch_rate, "per_image": per_image_rate,
    }


# --------------------------------------------------------------------------- scale


def scale_one(work: Path, n: int) -> dict[str, Any]:
    """ingest + augment of the n-image 64 px set, in this (fresh) process."""
    from fakeface.config import parse_params
    from fakeface.stages.paths import AugmentPaths, IngestPaths, PreviewPaths
    from fakeface.stages import get_stage

    stage = work / f"scale-{n}"
    shutil.rmtree(stage, ignore_errors=True)
    params = parse_params({"data": {"source": str(_dataset_dir(work, 64, n))}})
    ingested = IngestPaths.in_artifacts(stage)
    start = time.perf_counter()
    get_stage("ingest").run(params, ingested)
    mid = time.perf_counter()
    get_stage("augment").run(params, AugmentPaths(manifest=ingested.manifest, shards=stage / "shards"))
    get_stage("preview").run(params, PreviewPaths(manifest=ingested.manifest, preview=stage / "preview.png"))
    end = time.perf_counter()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {"n": n, "wall_s": end - start, "ingest_s": mid - start, "augment_s": end - mid, "rss_mb": rss_kb / 1024}


def section_scale(work: Path) -> dict[str, Any]:
    runs = {}
    for key, n in zip(("small", "large"), SCALE_SIZES):
        out = work / f"scale-{n}.json"
        start = time.perf_counter()
        _child(["scale_one", str(work), str(n), str(out)])
        runs[key] = json.loads(out.read_text())
        runs[key]["process_s"] = time.perf_counter() - start
    return runs


# --------------------------------------------------------------------------- pipeline overhead

TINY_PARAMS = {
    "data": {"synthetic": {"images_per_class": 60, "image_size": 32}},
    "augment": {"shard_size": 40},
    "train": {
        "backbone": "smallcnn", "image_size": 32, "batch_size": 16, "optimizer": "adam",
        "learning_rate": 0.002, "fine_tune_learning_rate": 0.002, "head_epochs": 1, "fine_tune_epochs": 1,
    },
    "evaluate": {"explain": {"enabled": False}},
    "register": {"min_test_auc": 0.0},
}
TINY_NOTE = (
    "tiny params: 120 synthetic 32 px images, smallcnn 32 px, batch 16, 1+1 epochs, "
    "explain off, register gate 0"
)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def section_pipeline(work: Path) -> dict[str, Any]:
    import yaml

    from fakeface.config import parse_params

    proj = work / "project"
    shutil.rmtree(proj, ignore_errors=True)
    proj.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / name, proj / name)
    for name in (".dvc", "src", "data/sources", "pipelines", "components"):
        shutil.copytree(
            ROOT / name, proj / name,
            ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__", "config.local", "*.egg-info"),
        )
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY_PARAMS)
    parse_params(params)  # fail here, not halfway through a stage
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)

    def run(args, cwd=proj, extra_env=None):
        start = time.perf_counter()
        done = subprocess.run(args, cwd=cwd, env={**env, **(extra_env or {})}, capture_output=True, text=True)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{args} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        return took, done.stdout + done.stderr

    run(["git", "init", "-q"])
    run(["git", "add", "-A"])
    run(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"])
    dvc_s, out = run(["dvc", "repro"])
    stages = out.count("Running stage")
    noop = [run(["dvc", "repro"])[0] for _ in range(2)]

    kfp_dir = work / "kfp"
    shutil.rmtree(kfp_dir, ignore_errors=True)
    code = (
        "import json, sys; from fakeface.config import parse_params; "
        "from fakeface.pipelines.training import run_local; "
        f"run_local(parse_params(json.loads(sys.argv[1])), workdir={str(kfp_dir)!r}, "
        f"mlflow_tracking_uri={'sqlite:///' + str(work / 'kfp-mlflow.db')!r})"
    )
    kfp_s, _ = run([sys.executable, "-c", code, json.dumps(params)], cwd=proj)
    return {
        "dvc_repro_s": dvc_s, "stages_run": stages, "noop_repro_s": statistics.median(noop), "noop_all": noop,
        "kfp_local_s": kfp_s, "params_note": TINY_NOTE,
    }


# --------------------------------------------------------------------------- containers

#: What docker/build.sh sends to the build (the Dockerfile's COPYs and the scripts).
IMAGE_CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "docker", "src", "components",
                 "pipelines")


def _timed(args: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("a") as sink:
        done = subprocess.run(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def _image_builds(work: Path) -> dict[str, Any]:
    """Build times on a copy of the build context (so a touched source is the copy's): the base
    image from Debian's packages, the image with no layer cache (dependencies from the index),
    a rebuild after a code-only change, a rebuild with no change; the image's size."""
    from bench import containers

    ctx = work / "image-context"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    for name in IMAGE_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, ctx / name)
    log = work / "image-builds.log"
    env = containers.engine_env()
    base, tag = "localhost/fakeface-base:bench", "localhost/fakeface:bench"
    build = [str(ctx / "docker" / "build.sh"), tag]
    out: dict[str, Any] = {}
    try:
        containers.remove_image(base)
        out["base_s"] = _timed([str(ctx / "docker" / "base-image.sh"), base], env, log)
        env = {**env, "BASE_IMAGE": base}
        out["cold_build_s"] = _timed(build, {**env, "NO_CACHE": "1"}, log)
        out["image_bytes"] = containers.image_size(tag)
        # a code change (the engine keys COPY layers on content: a mere touch rebuilds nothing)
        with (ctx / "src" / "fakeface" / "__init__.py").open("a") as source:
            source.write(f"# bench: a code-only change {time.time()}\n")
        out["code_rebuild_s"] = _timed(build, env, log)
        out["nochange_rebuild_s"] = _timed(build, env, log)
    finally:
        containers.remove_image(tag)
        containers.remove_image(base)
    return out


#: Rounds of (SubprocessRunner run, DockerRunner run) in the containers section.
ROUNDS = 2


def section_containers(work: Path) -> dict[str, Any]:
    """The image (size, builds) and the training pipeline under kfp.local's DockerRunner (every
    step a container of the image) against SubprocessRunner (every step a process of this Python),
    with the same tiny params and the same MLflow server (the project's stack), best of ROUNDS
    interleaved rounds; then a DockerRunner run with only train.dropout changed (ingest, eda,
    augment, preview from the cache of the last DockerRunner run).

    Opt-in (``python -m bench --only containers``): it needs podman or docker, builds the image
    twice (one cold build: ~700 MB from the package index) and takes 10-20 min on 2 cores."""
    import random
    import socket

    from bench import containers
    from fakeface import stack
    from fakeface.config import parse_params
    from fakeface.pipelines.settings import KubeflowSettings
    from fakeface.pipelines.training import run_local

    reason = containers.why_unusable()
    if reason:
        return {"skipped": reason}
    out: dict[str, Any] = _image_builds(work)
    # the image the pipeline runs in: this tree's, built the ordinary (cached) way
    containers.build_image(containers.IMAGE, containers.BASE_IMAGE, log=work / "image-builds.log")

    def free_port() -> int:
        while True:
            port = random.randrange(10000, 30000)
            with socket.socket() as a, socket.socket() as b:
                try:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + stack.GRPC_OFFSET))
                    return port
                except OSError:
                    continue

    names = ("s3_port", "master_port", "volume_port", "filer_port", "admin_port", "mlflow_port")
    ports = {}
    for name in names:
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    for name in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", stack.DIR_ENV):
        os.environ.pop(name, None)
    cfg = stack.load_config(work / "containers-stack", **ports)
    params = parse_params(TINY_PARAMS)
    changed = parse_params(_merge(TINY_PARAMS, {"train": {"dropout": 0.3}}))
    # The same graph for both runners; checkpoints in each step's scratch folder (not /checkpoints
    # on this machine for the subprocess run); no retries.
    settings = KubeflowSettings(image=containers.IMAGE, retries=0, checkpoint_pvc=None)
    try:
        stack.up(cfg)
        login = stack.resolve_mlflow_login(cfg.root, create=False).env()
        os.environ.update(login)

        def run(name: str, p, runner=None, workdir: Path | None = None) -> float:
            root = workdir or work / f"kfp-{name}"
            if workdir is None:
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                root.chmod(0o777)  # the steps of the image run as uid 10001
            start = time.perf_counter()
            outputs = run_local(p, workdir=root, mlflow_tracking_uri=cfg.tracking_uri, settings=settings,
                                runner=runner, enable_caching=True, env=login)
            took = time.perf_counter() - start
            if not (Path(outputs["evaluation"].path) / "evaluate.json").is_file():
                raise RuntimeError(f"{name}: no evaluate.json (a step failed; DockerRunner may still say SUCCESS)")
            return took

        # interleaved rounds, best of each: on a shared machine the load of the moment (and a cold
        # page cache for a freshly built image) otherwise decides which runner looks faster
        subprocess_runs, docker_runs = [], []
        with containers.docker_api(work / "engine"):
            for _ in range(ROUNDS):
                subprocess_runs.append(run("subprocess", params))
                docker_runs.append(run("docker", params, containers.docker_runner()))
            out["docker_cached_s"] = run("docker-cached", changed, containers.docker_runner(), work / "kfp-docker")
        out.update(subprocess_s=min(subprocess_runs), docker_s=min(docker_runs),
                   subprocess_all=subprocess_runs, docker_all=docker_runs)
    finally:
        stack.down(cfg)
    out["params_note"] = TINY_NOTE
    return out


# --------------------------------------------------------------------------- plumbing

SECTIONS = {
    "input": section_input,
    "training": section_training,
    "inference": section_inference,
    "scale": section_scale,
    "pipeline": section_pipeline,
    "containers": section_containers,
}


def _child(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "bench.sections", *args], cwd=ROOT, check=True)


def main(argv: list[str]) -> None:
    name, work = argv[0], Path(argv[1])
    if name == "scale_one":
        result = scale_one(work, int(argv[2]))
        out = Path(argv[3])
    else:
        result = SECTIONS[name](work)
        out = Path(argv[2])
    out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
