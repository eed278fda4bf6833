"""The registered image-in model under the server KServe runs for it: MLServer's MLflow runtime.

``fakeface deploy kserve`` asks for ``modelFormat: mlflow`` and protocol v2, which KServe serves
with MLServer and ``mlserver_mlflow.MLflowRuntime`` in an image that installs the model's own
``requirements.txt``. Here that image is a virtualenv built from the registered serving model's
``requirements.txt`` and :data:`fakeface.inference.kserve.MLSERVER_PACKAGES` alone (no fakeface, none of
this project's pins: the project's FastAPI cannot live beside MLServer's), kept in a cache folder
keyed by a hash of those requirements (``FAKEFACE_MLSERVER_ENV_CACHE``, default
``~/.cache/fakeface/mlserver-envs``): CI, from a fresh clone, builds it once. MLServer runs from it
on free loopback ports with its default parallel worker (as in a pod), metrics on the port the
manifest sets (``MLSERVER_METRICS_PORT``, a free one here); real v2 requests
(``POST /v2/models/<name>/infer``, ``image`` as BYTES) must get ``fakeface predict``'s p(fake)
for the same files, and a per-image error for each bad one, in a 200.

The fast test derives what the model's code imports from a real load and predict and requires
the model's declared requirements to be exactly those distributions, so that a new import fails
here in seconds rather than in an image.

Time on 2 shared cores (load average 2-3.5): the virtualenv 60-100 s to build, the 572 MB
TensorFlow wheel fetched from the index each time (2.9 GB installed, TensorFlow 1.9 GB of it),
nothing when cached; MLServer ready in 9-11 s and the requests ~1 s, so the slow test takes
~13 s cached and ~100-115 s cold; the fast test ~5-7 s; both share the tiny model (~15-20 s to
train, evaluate and register) with the session.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import SHARED_SAMPLE, port_free, register_tiny_model, write_scoring_images
from servers import ServerProcess

pytestmark = pytest.mark.usefixtures("drop_cli_log_handler")

MODEL_NAME = "fakeface-mlserver-test"
SERVING_URI = f"models:/{MODEL_NAME}-serving@champion"
#: The InferenceService (and so MLServer's model) name.
ISVC = "fakeface-detector"
GOOD = ["a_fake.jpg", "b_real.jpg", "c.png", "d_grey.jpg"]
BAD_FILES = {"f_corrupt.jpg": "corrupt", "h_notes.txt": "not_an_image"}
START_TIMEOUT_S = 300


def _cache_root() -> Path:
    configured = os.environ.get("FAKEFACE_MLSERVER_ENV_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "fakeface" / "mlserver-envs"


@pytest.fixture(scope="module")
def registered(tracked_model):
    """Evaluate + register the tiny model in this module's store; returns (root, tracking URI, shards)."""
    root, uri, shards, _, result = register_tiny_model(tracked_model, MODEL_NAME)
    assert result.serving_uri == SERVING_URI
    return root, uri, shards


@pytest.fixture(scope="module")
def served_model(registered):
    """The registered serving model's files, downloaded as a KServe storage initializer would."""
    import mlflow

    root, uri, _ = registered
    mlflow.set_tracking_uri(uri)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        path = Path(mlflow.artifacts.download_artifacts(SERVING_URI, dst_path=str(root / "downloaded")))
    assert (path / "MLmodel").is_file() and (path / "requirements.txt").is_file()
    return path


def _requirements(model: Path) -> list[str]:
    lines = (model / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --------------------------------------------------------------------------- declared requirements

#: Run in a fresh interpreter: load the model folder argv[1] with MLflow, score good and bad
#: images, print the top-level modules that import statements in fakeface's modules asked for.
IMPORTS_SCRIPT = r"""
import base64, builtins, io, json, sys
asked = set()
real_import = builtins.__import__

def recording(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and importer.split(".")[0] == "fakeface":
        asked.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording
import mlflow.pyfunc
import pandas as pd
from PIL import Image

model = mlflow.pyfunc.load_model(sys.argv[1])

def encoded(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()

rgb = Image.new("RGB", (40, 30), (10, 200, 30))
cells = [encoded(rgb, "JPEG"), encoded(rgb, "PNG"), encoded(rgb.convert("L"), "JPEG"), encoded(rgb, "WEBP"),
         base64.b64encode(b"\xff\xd8\xff\xe0 not a jpeg").decode(), base64.b64encode(b"text").decode(), "", "%%"]
out = model.predict(pd.DataFrame({"image": cells}))
import fakeface
print(json.dumps({"modules": sorted(asked), "fakeface": fakeface.__file__, "scored": int(out["p_fake"].notna().sum())}))
"""


def test_declared_requirements_are_what_the_model_code_imports(served_model, tmp_path):
    """Every distribution the model's code imports while it loads and scores (good and bad
    images) is in its requirements.txt, pinned to this environment, and nothing else is."""
    from importlib.metadata import packages_distributions, version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    script = tmp_path / "imports.py"
    script.write_text(IMPORTS_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script), str(served_model)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # the model's own copy of fakeface ran, not this checkout's
    assert Path(found["fakeface"]).is_relative_to(served_model), found["fakeface"]
    assert found["scored"] == 4
    owners = packages_distributions()
    third_party = set(found["modules"]) - set(sys.stdlib_module_names) - {"fakeface", "__future__"}
    unknown = sorted(m for m in third_party if m not in owners)
    assert not unknown, f"imported modules of no installed distribution: {unknown}"
    # a module may ship in several distributions (mlflow's in mlflow, mlflow-skinny, mlflow-tracing)
    providers = {m: {canonicalize_name(d) for d in owners[m]} for m in third_party}
    declared = {canonicalize_name(Requirement(r).name): r for r in _requirements(served_model)}
    missing = sorted(m for m, names in providers.items() if not names & set(declared))
    unused = sorted(name for name in declared if not any(name in names for names in providers.values()))
    assert not missing and not unused, f"imported, not declared: {missing}; declared, never imported: {unused}"
    assert {"tensorflow", "keras", "pillow", "mlflow"} <= set(declared)
    for name, line in declared.items():
        assert Requirement(line).specifier == Requirement(f"{name}=={version(name)}").specifier, line


# --------------------------------------------------------------------------- the MLServer environment


def mlserver_env(requirements: list[str]) -> Path:
    """A virtualenv with exactly ``requirements`` and MLServer's packages, built once per set."""
    from fakeface.inference.kserve import MLSERVER_PACKAGES

    wanted = [*requirements, *MLSERVER_PACKAGES]
    key_text = "\n".join([f"python {sys.version_info.major}.{sys.version_info.minor}", *wanted])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache = _cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    env = cache / f"mlserver-{key}"
    with open(cache / f"mlserver-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a second waits and reuses it
        complete = env / "fakeface-requirements.txt"
        if complete.is_file() and complete.read_text() == key_text:
            return env
        shutil.rmtree(env, ignore_errors=True)  # a build that did not finish
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
        (env / "requirements.txt").write_text("\n".join(wanted) + "\n")
        log = env / "pip.log"
        with open(log, "w") as handle:
            done = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                                   "--no-input", "-r", str(env / "requirements.txt")],
                                  stdout=handle, stderr=subprocess.STDOUT, timeout=1800)
        assert done.returncode == 0, f"pip install failed:\n{log.read_text()[-3000:]}"
        complete.write_text(key_text)
        print(f"\nMLServer environment {env.name}: built in {time.monotonic() - started:.0f} s")
    for other in cache.glob("mlserver-*"):  # one environment of ~3 GB at a time
        if other.is_dir() and other != env:
            shutil.rmtree(other, ignore_errors=True)
    return env


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in ports and port_free(port):
            ports.append(port)
    return ports


class MLServer(ServerProcess):
    """``mlserver start`` of one model folder, on free loopback ports; stopped by its pid."""

    def __init__(self, env: Path, model: Path, folder: Path, manifest_env: dict[str, str]) -> None:
        http, grpc, metrics = _free_ports(3)
        self.url = f"http://127.0.0.1:{http}"
        self.metrics_url = f"http://127.0.0.1:{metrics}"
        folder.mkdir(parents=True, exist_ok=True)
        # the server as the pod's environment sets it, on this machine's free ports
        (folder / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": http,
                                                          "grpc_port": grpc, "debug": False}))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": ISVC, "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": str(model)}}))
        environment = {"PATH": f"{env / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
                       "TF_CPP_MIN_LOG_LEVEL": "2", **manifest_env, "MLSERVER_METRICS_PORT": str(metrics)}
        super().__init__([str(env / "bin" / "mlserver"), "start", str(folder)], environment, folder,
                         folder / "mlserver.log", f"{self.url}/v2/models/{ISVC}/ready", START_TIMEOUT_S, "MLServer")

    def infer(self, values: list[str]) -> requests.Response:
        body = {"inputs": [{"name": "image", "shape": [len(values)], "datatype": "BYTES", "data": values}]}
        return requests.post(f"{self.url}/v2/models/{ISVC}/infer", json=body, timeout=120)


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def images(registered, shared_sample_or_none):
    """Data-set JPEGs (a fake and a real one), a PNG, a greyscale JPEG, real FFHQ and StyleGAN2
    faces of ../shared where present, and two bad files."""
    root, _, shards = registered
    folder = root / "incoming"
    write_scoring_images(shards, folder)
    good = list(GOOD)
    if shared_sample_or_none is not None:
        for name in ("real/r0000.jpg", "real/r0001.jpg", "fake/f0000.jpg"):
            target = f"shared_{name.replace('/', '_')}"
            shutil.copyfile(shared_sample_or_none / name, folder / target)
            good.append(target)
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (folder / "h_notes.txt").write_text("not an image\n")
    return folder, good


@pytest.fixture(scope="module")
def shared_sample_or_none():
    return SHARED_SAMPLE if (SHARED_SAMPLE / "real" / "r0000.jpg").is_file() else None


def _predict(folder: Path, names: list[str], tracking_uri: str, out: Path) -> tuple[dict[str, dict], float]:
    """``fakeface predict`` of the Keras champion on the files: its JSON rows by file name, and
    the threshold it cut at."""
    from fakeface.cli.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        code = main(["--params", "no-such-params.yaml", "predict", *[str(folder / n) for n in names],
                     "--model", f"models:/{MODEL_NAME}@champion", "--out", str(out)])
    assert code == 0
    saved = json.loads(out.read_text())
    return {Path(row["path"]).name: row for row in saved["results"]}, saved["threshold"]


def _columns(answer: dict) -> dict[str, list]:
    return {output["name"]: output["data"] for output in answer["outputs"]}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_mlserver_answers_v2_requests_with_predicts_scores(registered, served_model, images, tmp_path):
    from fakeface.inference.kserve import METRICS_PATH, Champion, manifest

    root, tracking_uri, _ = registered
    folder, good = images
    env = mlserver_env(_requirements(served_model))
    # the image's Python has MLServer and the model's requirements, not fakeface (the model brings it)
    probe = subprocess.run([str(env / "bin" / "python"), "-c", "import fakeface"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'fakeface'" in probe.stderr

    service = manifest(Champion(f"{MODEL_NAME}-serving", "1", "s3://b/m"), "s3://b/m", name=ISVC)[1]
    model_spec = service["spec"]["predictor"]["model"]
    pod_env = {item["name"]: item["value"] for item in model_spec["env"]}
    annotations = service["metadata"]["annotations"]
    assert pod_env["MLSERVER_METRICS_PORT"] == annotations["prometheus.kserve.io/port"]
    assert pod_env["MLSERVER_METRICS_ENDPOINT"] == annotations["prometheus.kserve.io/path"] == METRICS_PATH

    server = MLServer(env, served_model, tmp_path / "mlserver", pod_env)
    try:
        expected, threshold = _predict(folder, [*good, *BAD_FILES], tracking_uri, tmp_path / "predict.json")
        values = [base64.b64encode((folder / name).read_bytes()).decode() for name in [*good, *BAD_FILES]]
        values += ["", "%% not base64 %%"]
        answer = server.infer(values)
        assert answer.status_code == 200, f"{answer.status_code} {answer.text[:2000]}\n{server.tail()}"
        assert answer.headers["content-type"].startswith("application/json")
        columns = _columns(answer.json())
        assert list(columns) == ["p_fake", "label", "threshold", "model_name", "model_version", "error"]
        names = [*good, *BAD_FILES, "<empty string>", "<not base64>"]
        rows = {name: {column: data[i] for column, data in columns.items()} for i, name in enumerate(names)}
        for name in good:
            row, want = rows[name], expected[name]
            assert row["error"] == "" and want["error"] == "", (name, row, want)
            assert row["p_fake"] == pytest.approx(want["p_fake"], abs=1e-6), name
            assert row["label"] == want["label"] == ("fake" if row["p_fake"] >= threshold else "real")
            assert row["threshold"] == pytest.approx(threshold) and threshold != 0.5
            assert (row["model_name"], row["model_version"]) == (MODEL_NAME, "1")
        for name, reason in BAD_FILES.items():
            row = rows[name]
            assert row["p_fake"] is None and row["label"] == "" and row["error"].startswith(reason), row
            assert expected[name]["error"].startswith(reason) and expected[name]["p_fake"] is None
        assert rows["<empty string>"]["error"] == "empty: zero bytes" and rows["<empty string>"]["p_fake"] is None
        assert rows["<not base64>"]["error"].startswith("not_base64") and rows["<not base64>"]["p_fake"] is None

        # MLServer's MLflow endpoint, MLflow's JSON (a missing score is NaN there): the same scores
        legacy = requests.post(f"{server.url}/invocations", json={"inputs": {"image": values[:2]}}, timeout=120)
        assert legacy.status_code == 200, legacy.text[:1000]
        assert [r["p_fake"] for r in legacy.json()["predictions"]] == pytest.approx(columns["p_fake"][:2], abs=1e-9)
        # a request that cannot be answered at all: MLServer's status for a model's exception, and
        # the model's message saying what to send
        too_many = server.infer(["x"] * 65)
        message = too_many.json()["error"]
        assert too_many.status_code != 200 and "65 images in one request, at most 64" in message, message
        assert '"datatype": "BYTES"' in message and "Traceback" not in message
        assert server.infer(values[:1]).status_code == 200  # still serving

        # Prometheus reads the port and path the manifest annotates (set in the pod's environment)
        metrics = requests.get(f"{server.metrics_url}{annotations['prometheus.kserve.io/path']}", timeout=10)
        assert metrics.status_code == 200
        counted = [line for line in metrics.text.splitlines()
                   if line.startswith("model_infer_request_success_total") and f'model="{ISVC}"' in line]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) == 2.0, counted
        elapsed = time.monotonic() - server.started
        print(f"\nMLServer ready in {server.startup_s:.0f} s; {elapsed:.0f} s with the requests")
    finally:
        left = server.stop()
    assert left == [] and server.process.returncode is not None

