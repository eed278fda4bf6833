"""The training pipeline in the project image: Kubeflow for real, on one machine.

Every step runs as a container of the image built from this tree (``docker/base-image.sh``, then
``docker/build.sh`` on that registry-free Debian base), as the image's non-root user, under
``kfp.local.DockerRunner``, and tracks to a real MLflow server: the project's stack (SeaweedFS +
MLflow with its login, :mod:`fakeface.stack`) on random loopback ports, which the containers reach
on the host network. The engine is podman (its Docker API: ``podman system service`` on a socket
of a temporary folder, stopped afterwards) or docker; see :mod:`bench.containers`.

Checked: the test metrics equal those of the stage functions run in this process with the same
params and seed (the way ``dvc repro`` runs them), the champion is registered in the server, every
typed artifact (and the metadata kfp.local keeps in ``executor_output.json``) is there, the files
the steps wrote belong to uid 10001, and a second run with only ``train.dropout`` changed takes
ingest, eda, augment and preview from kfp.local's cache. kfp 2.17's DockerRunner calls a step
that podman removed before its exit code was read a success, so nothing here trusts the runner's
status: every check is on outputs.

Tolerance: the image installs the locked versions (docker/requirements.lock, the venv's: the same
tensorflow 2.21.0 and numpy wheels) and training is deterministic (seeded, op determinism), on the
same CPU; the container results were bit-identical to the in-process ones (shard digests, the
training history, every metric). The test allows 1e-6 absolute on the metrics and requires the
confusion matrix, the shards and the history to be equal.

Time on 2 shared cores, once the image is built (the engine keys layers on content: a code change
rebuilds only the project layer, ~15-20 s; a mere touch rebuilds nothing): 3-4.5 min (the first
pipeline run 1.5-2 min, the second ~1 min, the in-process reference ~40 s, the stack ~20 s). Cold
(CI: no image, no base) add 4-5 min: the Debian base 35-55 s, the image 2.5-3.5 min (mostly the
~700 MB of locked wheels from the package index), more when the index or the machine is slow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench import containers
from conftest import small_params
from kfp_helpers import run_stages_in_process
from stacks import LOGIN_ENV, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(2400)]

STEPS = ("ingest", "eda", "augment", "preview", "train", "evaluate", "register")
CACHED = ("ingest", "eda", "augment", "preview")
#: The image's user (Dockerfile: USER 10001:10001; the pods' runAsUser).
IMAGE_UID = 10001
PARAMS = {"register": {"min_test_auc": 0.0}}  # register whatever it learns
CHANGED = {**PARAMS, "train": {"dropout": 0.3}}  # only train.dropout differs (default 0.2)


# --------------------------------------------------------------------------- engine, image, stack


@pytest.fixture(scope="session")
def engine_ready():
    reason = containers.why_unusable()
    if reason:
        pytest.skip(f"no container engine can run here: {reason}")
    return containers.engine()


@pytest.fixture(scope="session")
def image(engine_ready, tmp_path_factory):
    """The project image built from this tree (kept in the engine's cache between sessions)."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    timings = containers.build_image(containers.IMAGE, containers.BASE_IMAGE, log=log)
    print(f"\nimage {containers.IMAGE}: base {timings['base_s']:.0f} s, build {timings['build_s']:.0f} s, "
          f"{containers.image_size(containers.IMAGE) / 1e9:.2f} GB")
    return containers.IMAGE


@pytest.fixture(scope="session")
def docker_host(engine_ready, tmp_path_factory):
    """DOCKER_HOST for the Docker SDK that DockerRunner uses (podman: a service of our own)."""
    with containers.docker_api(tmp_path_factory.mktemp("engine")) as url:
        yield url


@dataclass
class Tracking:
    uri: str
    login_env: dict[str, str] = field(repr=False)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """The project's stack on random loopback ports; the MLflow login in this process' environment
    (for run_local's experiment and the checks) while the module runs."""
    from fakeface import stack

    with running_stack(tmp_path_factory, "stack", unset=LOGIN_ENV) as (cfg, _, mp):
        login = stack.resolve_mlflow_login(cfg.root, create=False).env()
        for name, value in login.items():
            mp.setenv(name, value)
        yield Tracking(cfg.tracking_uri, login)


# --------------------------------------------------------------------------- the runs


@dataclass
class KfpRun:
    root: Path  # <workdir>/fakeface-training-<time>: one folder per task that ran
    seconds: float
    log: list[str]
    outputs: dict

    def task(self, name: str) -> Path:
        return self.root / name

    def executor_output(self, task: str) -> dict:
        return json.loads((self.root / task / "executor_output.json").read_text())

    def metadata(self, task: str, artifact: str) -> dict:
        return self.executor_output(task)["artifacts"][artifact]["artifacts"][0]["metadata"]


class _Messages(logging.Handler):
    """kfp.local reports cache hits with logging.info on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run_in_containers(params, workdir: Path, tracking: Tracking) -> KfpRun:
    from fakeface.pipelines.settings import KubeflowSettings
    from fakeface.pipelines.training import run_local

    before = set(workdir.iterdir())
    # The cluster's settings with the built image; no retries: a failing step fails at once
    # instead of after minutes of backoff (retries are not part of a step's cache key).
    settings = KubeflowSettings(image=containers.IMAGE, retries=0)
    handler, root_logger = _Messages(), logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        outputs = run_local(
            params, workdir=workdir, mlflow_tracking_uri=tracking.uri, settings=settings,
            runner=containers.docker_runner(), enable_caching=True,
            # the login the cluster's Secret gives the pods; here only in the local run's spec
            env=tracking.login_env,
        )
    finally:
        seconds = time.perf_counter() - started
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
    [root] = [p for p in set(workdir.iterdir()) - before if p.name.startswith("fakeface-training-")]
    return KfpRun(root=root, seconds=seconds, log=handler.messages, outputs=dict(outputs))


def _run_in_process(params, root: Path) -> dict:
    """The stage functions in this process, as ``dvc repro`` runs them, laid out as the steps lay
    out their artifacts; an MLflow store of its own, so the server sees the containers only."""
    with pytest.MonkeyPatch.context() as mp:
        for name in LOGIN_ENV:
            mp.delenv(name, raising=False)
        result, index = run_stages_in_process(params, root, mp, root / "evaluation")
    return {"evaluate": result, "index": index, "history": (root / "model" / "history.csv").read_text()}


@dataclass
class Runs:
    first: KfpRun
    second: KfpRun
    reference: dict
    tracking: Tracking


@pytest.fixture(scope="module")
def runs(image, docker_host, tracking, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kfp")
    # DockerRunner mounts the pipeline root at the same path; the steps (uid 10001) write there
    workdir.chmod(0o777)
    first = _run_in_containers(small_params(**PARAMS), workdir, tracking)
    second = _run_in_containers(small_params(**CHANGED), workdir, tracking)
    reference = _run_in_process(small_params(**PARAMS), tmp_path_factory.mktemp("in-process"))
    print(f"\nDockerRunner: first run {first.seconds:.0f} s, second (train.dropout changed) {second.seconds:.0f} s")
    return Runs(first, second, reference, tracking)


# --------------------------------------------------------------------------- checks


def test_image_runs_the_cli_as_its_non_root_user(image):
    engine = containers.engine()
    user = subprocess.run([engine, "image", "inspect", "--format", "{{.Config.User}}", image],
                          env=containers.engine_env(), capture_output=True, text=True, timeout=60, check=True)
    assert user.stdout.strip() == f"{IMAGE_UID}:{IMAGE_UID}"
    done = subprocess.run([engine, "run", "--rm", image, "sh", "-c", "id -u && fakeface --help"],
                          env=containers.engine_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == str(IMAGE_UID)
    assert "usage: fakeface" in done.stdout


def _owner_of_image_user(image: str, folder: Path) -> int:
    """The owner, as this machine sees it, of a file the image's user writes to a bind mount:
    10001 with a rootful engine, a subordinate uid with rootless podman."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    done = subprocess.run([containers.engine(), "run", "--rm", "-v", f"{folder}:{folder}", image,
                           "touch", str(folder / "probe")],
                          env=containers.engine_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return (folder / "probe").stat().st_uid


def test_every_step_ran_in_the_image_as_the_non_root_user(runs, image, tmp_path):
    first = runs.first
    assert sorted(p.name for p in first.root.iterdir()) == sorted(STEPS)
    written = [first.root, *first.root.rglob("*")]
    assert len(written) > 50
    owner = _owner_of_image_user(image, tmp_path / "probe")
    if os.geteuid() == 0:
        assert owner == IMAGE_UID  # a rootful engine maps no ids
    assert owner != os.geteuid()
    owners = {path.lstat().st_uid for path in written}
    assert owners == {owner}, f"files of the steps owned by {owners}, not only the image's user ({owner})"


def test_metrics_equal_the_in_process_run(runs):
    first, reference = runs.first, runs.reference
    index = json.loads((first.task("augment") / "shards" / "index.json").read_text())
    for split in ("train", "valid", "test"):
        assert index[split]["digest"] == reference["index"][split]["digest"], split
    history = (first.task("train") / "model" / "history.csv").read_text()
    assert history == reference["history"], f"container:\n{history}\nin-process:\n{reference['history']}"
    result = json.loads((Path(first.outputs["evaluation"].path) / "evaluate.json").read_text())
    expected = reference["evaluate"]
    compared = {k: (result[k], expected[k]) for k in ("n", "confusion", "accuracy", "auc", "average_precision")}
    assert result["n"] == expected["n"] == 12
    assert result["confusion"] == expected["confusion"], compared
    for key in ("accuracy", "auc", "average_precision", "threshold"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), compared


def test_every_typed_artifact_is_there(runs):
    first = runs.first
    data = first.task("ingest") / "data"
    assert (data / "manifest.csv").is_file() and (data / "ingest_report.json").is_file()
    assert (first.task("augment") / "shards" / "index.json").is_file()
    for task, name in (("eda", "report"), ("preview", "preview")):
        html = (first.task(task) / name).read_text()
        assert html.lstrip().lower().startswith("<!doctype html>") and "data:image/png;base64," in html, task
    model = first.task("train") / "model"
    for name in ("model.keras", "history.csv", "run.json", "train.json"):
        assert (model / name).is_file(), name
    evaluation = Path(first.outputs["evaluation"].path)
    assert evaluation == first.task("evaluate") / "evaluation"
    for name in ("evaluate.json", "robustness.json", "slices.json", "plots/roc.csv", "reports/roc.png",
                 "reports/classification_report.md"):
        assert (evaluation / name).is_file(), f"{name} is not in the evaluation artifact"
    assert "| real |" in (first.task("evaluate") / "report").read_text()
    registration = json.loads(Path(first.outputs["registration"].path).read_text())
    assert registration["registered"] is True

    # the metadata the KFP UI shows: kfp.local keeps it in each task's executor_output.json
    result = json.loads((evaluation / "evaluate.json").read_text())
    metrics = first.metadata("evaluate", "metrics")
    for key in ("accuracy", "auc", "average_precision"):
        assert metrics[key] == pytest.approx(result[key], abs=1e-12), key
    classification = first.metadata("evaluate", "classification")
    c = result["confusion"]
    assert [row["row"] for row in classification["confusionMatrix"]["rows"]] == [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    assert [s["displayName"] for s in classification["confusionMatrix"]["annotationSpecs"]] == ["real", "fake"]
    assert len(classification["confidenceMetrics"]) >= 2
    assert {"best_val_auc", "epochs"} <= set(first.metadata("train", "train_metrics"))
    assert first.metadata("train", "model")["mlflow_run_id"]
    assert first.metadata("ingest", "data") and first.metadata("augment", "shards")


def result_n(run) -> int:
    return json.loads((Path(run.outputs["evaluation"].path) / "evaluate.json").read_text())["n"]


def test_champion_is_registered_in_the_stack_server(runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=runs.tracking.uri)
    first, second = runs.first, runs.second
    run_ids = [r.metadata("train", "model")["mlflow_run_id"] for r in (first, second)]
    registrations = [json.loads(Path(r.outputs["registration"].path).read_text()) for r in (first, second)]
    name = registrations[0]["model_name"]
    for run_id, registration in zip(run_ids, registrations):
        assert registration["registered"] is True
        assert client.get_model_version(name, registration["version"]).run_id == run_id
    # the second run was compared with the first on the same test images: it took @champion only if
    # it was not worse (same data, same seed: the same scores, so it should be)
    comparison = registrations[1]["comparison"]
    assert comparison["n_real"] + comparison["n_fake"] == result_n(first)
    holder = registrations[1] if registrations[1]["promoted"] else registrations[0]
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == holder["version"] and champion.run_id == run_ids[registrations.index(holder)]
    assert registrations[1]["alias"] == ("champion" if registrations[1]["promoted"] else "challenger")
    # the training runs, logged from the containers, hold the test metrics and their params
    result = json.loads((Path(first.outputs["evaluation"].path) / "evaluate.json").read_text())
    run = client.get_run(run_ids[0])
    assert run.data.metrics["test_auc"] == pytest.approx(result["auc"], abs=1e-9)
    assert run.data.params["train.backbone"] == "smallcnn"
    assert float(run.data.params["train.dropout"]) == 0.2
    assert float(client.get_run(run_ids[1]).data.params["train.dropout"]) == 0.3
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # through the server, no S3 keys in pods


def test_second_run_takes_the_data_steps_from_the_cache(runs):
    second = runs.second
    # kfp.local makes no task folder for a task it takes from its cache
    assert sorted(p.name for p in second.root.iterdir()) == ["evaluate", "register", "train"]
    hits = {m.split()[1] for m in second.log if "cache hit" in m}
    assert hits == set(CACHED), second.log
    evaluation = json.loads((Path(second.outputs["evaluation"].path) / "evaluate.json").read_text())
    assert evaluation["n"] == 12
    print(f"\ncached second run: {second.seconds:.0f} s vs {runs.first.seconds:.0f} s for the first")
