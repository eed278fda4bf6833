"""Serving the champion: register logs the image-in pyfunc beside the Keras model; the
real server (``fakeface serve``, MLflow's scoring app) on a free loopback port answers images
posted with a real HTTP client with predict's scores, malformed requests with a 4xx that says what
to send; ``mlflow models serve`` answers the same model; the KServe manifest validates against
KServe's InferenceService schema."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from conftest import register_tiny_model, write_scoring_images
from servers import ServerProcess

pytestmark = pytest.mark.usefixtures("drop_cli_log_handler")

MODEL_NAME = "fakeface-serve-test"
SERVING_URI = f"models:/{MODEL_NAME}-serving@champion"
SCHEMA = Path(__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.json"
GOOD = ("a_fake.jpg", "b_real.jpg", "c.png", "d_grey.jpg", "e.webp")
BAD = {"f_corrupt.jpg": "corrupt", "g_truncated.jpg": "corrupt", "h_notes.txt": "not_an_image"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def registered(tracked_model, tmp_path_factory):
    """Evaluate + register the tiny model in a module store; returns (root, env, threshold)."""
    root, uri, shards, evaluation, result = register_tiny_model(tracked_model, MODEL_NAME)
    assert result.serving_uri == SERVING_URI
    # the venv's bin first, as in an activated venv: `mlflow models serve` starts `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return root, env, evaluation["threshold"], shards


@pytest.fixture(scope="module")
def images(registered):
    """Real and fake JPEGs of the data set, a PNG, a greyscale JPEG, a WebP, and three bad files."""
    root, _, _, shards = registered
    folder = root / "incoming"
    records = write_scoring_images(shards, folder)
    with Image.open(folder / "a_fake.jpg") as image:
        image.save(folder / "e.webp", quality=90)
    (folder / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (folder / "g_truncated.jpg").write_bytes(records[1]["image"][:300])
    (folder / "h_notes.txt").write_text("not an image\n")
    return folder


class Server(ServerProcess):
    """``fakeface serve`` on a free loopback port; stopped (and its log kept) at the end."""

    def __init__(self, argv: list[str], port: int, env: dict, cwd: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(argv, env, cwd, log, f"{self.url}/ping", 120)

    def post(self, body, **kwargs) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return requests.post(f"{self.url}/invocations", data=data, headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def server(registered):
    """``fakeface serve`` of the registered champion, 4 MB request limit."""
    root, env, _, _ = registered
    port = _free_port()
    argv = [sys.executable, "-m", "fakeface", "--params", "no-such-params.yaml", "serve", "--model", SERVING_URI,
            "--port", str(port), "--max-request-mb", "4", "--prediction-log", str(root / "predictions")]
    started = Server(argv, port, env, root, root / "serve.log")
    yield started
    started.stop()
    assert started.process.returncode is not None


def _strict_json(text: str):
    """``text`` parsed as standard JSON: NaN or Infinity fail."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} in a JSON answer: {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def _body(folder: Path, names) -> dict:
    from fakeface.inference.served_model import request_body

    return request_body((folder / name).read_bytes() for name in names)


def test_served_scores_are_predicts_scores(registered, images, server, monkeypatch):
    """One request with good and bad images: every good one scored as `predict` scores its file,
    labelled at the stored threshold; each bad one has its error and no score; nothing fails."""
    from fakeface.inference.predict import load_model, predict_files

    root, env, threshold, _ = registered
    names = [*GOOD, *BAD]
    answer = server.post(_body(images, names))
    assert answer.status_code == 200, answer.text
    rows = dict(zip(names, _strict_json(answer.text)["predictions"]))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    expected = {Path(r.path).name: r for r in predict_files(
        load_model(f"models:/{MODEL_NAME}@champion"), [str(images / n) for n in names])}
    for name in GOOD:
        row = rows[name]
        assert row["error"] == "" and expected[name].error == "", row
        assert row["p_fake"] == pytest.approx(expected[name].p_fake, rel=1e-5, abs=1e-6)
        assert row["label"] == expected[name].label == ("fake" if row["p_fake"] >= threshold else "real")
        assert row["threshold"] == pytest.approx(threshold) and threshold != 0.5
        assert (row["model_name"], row["model_version"]) == (MODEL_NAME, "1")
    for name, reason in BAD.items():
        row = rows[name]
        # no score: null (standard JSON, not MLflow's NaN), the strings empty, as predict writes them
        assert row["p_fake"] is None and row["label"] == "" and row["error"].startswith(reason), row
        assert expected[name].error.startswith(reason) and expected[name].p_fake is None and expected[name].label == ""
    # another format MLflow takes, one image a request: the same score
    single = server.post({"inputs": {"image": [base64.b64encode((images / "c.png").read_bytes()).decode()]}})
    assert single.json()["predictions"][0]["p_fake"] == pytest.approx(rows["c.png"]["p_fake"], rel=1e-5, abs=1e-6)


def test_malformed_requests_get_a_4xx_saying_what_to_send(images, server):
    jpeg = (images / "a_fake.jpg").read_bytes()
    one = base64.b64encode(jpeg).decode()
    cases = {
        "not JSON (the JPEG itself)": (server.post(jpeg), 400, "dataframe_split"),
        "wrong field": (server.post({"images": [one]}), 400, "dataframe_split"),
        "wrong column": (server.post({"dataframe_split": {"columns": ["img"], "data": [[one]]}}), 400, "'image'"),
        "empty list": (server.post({"dataframe_split": {"columns": ["image"], "data": []}}), 400, "no images"),
        "empty inputs": (server.post({"inputs": {"image": []}}), 400, "no images"),
        "too many images": (server.post({"inputs": {"image": ["x"] * 65}}), 400, "at most 64"),
        "100 MB body": (server.post(b"{" + b"a" * (100 * 1024 * 1024)), 413, "dataframe_split"),
        "wrong content type": (server.post("x", headers={"Content-Type": "text/plain"}), 415, "application/json"),
    }
    for case, (answer, status, hint) in cases.items():
        assert answer.status_code == status, (case, answer.status_code, answer.text[:300])
        assert hint in answer.text and "Traceback" not in answer.text, (case, answer.text[:500])
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200  # still serving
    assert server.post({"inputs": {"image": [one]}}).status_code == 200


def _scrape(server) -> dict[tuple[str, tuple], float]:
    """``/metrics`` parsed by prometheus_client's own parser: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = requests.get(f"{server.url}/metrics", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_metrics_and_the_prediction_log_count_what_was_sent(registered, images, server, tmp_path, monkeypatch):
    import hashlib

    from fakeface.cli.main import main

    root, env, threshold, _ = registered
    before = _scrape(server)
    names = ["a_fake.jpg", "b_real.jpg", "c.png", "h_notes.txt"]
    answer = server.post(_body(images, names))
    assert answer.status_code == 200
    rows = _strict_json(answer.text)["predictions"]
    assert server.post({"dataframe_split": {"columns": ["nope"], "data": [["x"]]}}).status_code == 400
    after = _scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    fakes = sum(row["label"] == "fake" for row in rows)
    assert delta("fakeface_images_total", outcome="fake") == fakes
    assert delta("fakeface_images_total", outcome="real") == 3 - fakes
    assert delta("fakeface_images_total", outcome="not_an_image") == 1
    assert delta("fakeface_p_fake_count") == 3
    assert delta("fakeface_p_fake_sum") == pytest.approx(sum(r["p_fake"] for r in rows[:3]), abs=1e-6)
    first = min(r["p_fake"] for r in rows[:3])
    le = next(b for b in ("0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45", "0.5", "0.55", "0.6",
                          "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95", "1.0") if first <= float(b))
    assert delta("fakeface_p_fake_bucket", le=le) >= 1
    assert delta("fakeface_requests_total", path="/invocations", status="200") == 1
    assert delta("fakeface_requests_total", path="/invocations", status="400") == 1
    assert delta("fakeface_request_errors_total", kind="bad_request") == 1
    assert delta("fakeface_request_seconds_count", path="/invocations") == 2
    assert after[("fakeface_model_info", (("name", MODEL_NAME), ("threshold", f"{threshold:.6f}"),
                                          ("version", "1")))] == 1
    assert 0 <= after[("fakeface_fake_share", ())] <= 1

    # the prediction log: one record an image, the image's digest and size, never its bytes
    lines = [json.loads(line) for path in sorted((root / "predictions").glob("predictions-*.jsonl"))
             for line in path.read_text().splitlines()]
    sent = {hashlib.sha256((images / name).read_bytes()).hexdigest(): name for name in names}
    mine = [record for record in lines if record["sha256"] in sent]
    assert len(mine) >= 4 and {sent[r["sha256"]] for r in mine} == set(names)
    assert all(set(r) == {"time", "model_name", "model_version", "p_fake", "label", "error", "sha256", "bytes"}
               for r in lines)
    notes = next(r for r in mine if sent[r["sha256"]] == "h_notes.txt")
    assert notes["p_fake"] is None and notes["error"] == "not_an_image" and notes["model_version"] == "1"
    assert max(len(line) for line in (root / "predictions").glob("*.jsonl").__next__().read_text().splitlines()) < 400

    # the monitor reads the same log for the served model's version (too few images for a verdict)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    out = tmp_path / "monitor"
    assert main(["--params", "none.yaml", "monitor", "--log", str(root / "predictions"), "--model", SERVING_URI,
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "insufficient" and report["model_version"] == "1"
    assert report["window"]["records"] == sum(r["p_fake"] is not None for r in lines)


def test_mlflow_models_serve_answers_the_registered_model(registered, images, server):
    """The issue's command, no conda or virtualenv: MLflow's own CLI serves the same answers."""
    root, env, _, _ = registered
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow_cli), "models", "serve", "-m", SERVING_URI, "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port)]
    started = Server(argv, port, env, root, root / "mlflow-serve.log")
    try:
        body = _body(images, ["a_fake.jpg", "h_notes.txt"])
        answer = started.post(body)
        assert answer.status_code == 200, answer.text
        # MLflow writes the missing score as NaN (not JSON); fakeface serve as null, otherwise the same
        assert '"p_fake": NaN' in answer.text
        assert json.loads(answer.text, parse_constant=lambda _: None) == _strict_json(server.post(body).text)
    finally:
        started.stop()


def test_the_keras_champion_is_unchanged(registered, monkeypatch):
    import mlflow

    root, env, _, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.keras.load_model(f"models:/{MODEL_NAME}@champion").input_shape == (None, 32, 32, 3)
    info = mlflow.models.get_model_info(SERVING_URI)
    assert info.signature.inputs.input_names() == ["image"]
    assert info.metadata["fakeface"]["threshold"] == pytest.approx(registered[2])
    assert json.loads((root / "registered" / "registry.json").read_text())["serving_uri"] == SERVING_URI


def _kserve_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_kserve_manifest_validates_against_the_schema(registered, tmp_path, monkeypatch, caplog):
    from fakeface.cli.main import main
    from fakeface.inference.kserve import storage_uri

    root, env, _, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    out = tmp_path / "isvc.yaml"
    argv = ["--params", "no-such.yaml", "deploy", "kserve", "--model", SERVING_URI, "--out", str(out)]
    # the test store keeps files on local disk: nothing a cluster can read, said in one line
    assert main(argv) == 2 and "cannot read" in caplog.text and not out.exists()
    assert main([*argv, "--storage-uri", "s3://fakeface/mlartifacts/1/models/m-abc/artifacts",
                 "--namespace", "faces", "--secret", "faces-s3-keys"]) == 0
    account, service = list(yaml.safe_load_all(out.read_text()))
    validator = _kserve_validator()
    errors = [e.message for e in validator.iter_errors(service)]
    assert not errors, errors
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://fakeface/mlartifacts/1/models/m-abc/artifacts"
    assert model["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert service["metadata"]["annotations"] == {"fakeface/registered-model": f"{MODEL_NAME}-serving v1",
                                                  "fakeface/keras-model": f"{MODEL_NAME} v1",
                                                  "prometheus.kserve.io/port": "8082",
                                                  "prometheus.kserve.io/path": "/metrics"}
    # MLServer's metrics are on a port of their own: the annotated one, set in the container
    assert model["env"] == [{"name": "MLSERVER_METRICS_PORT", "value": "8082"},
                            {"name": "MLSERVER_METRICS_ENDPOINT", "value": "/metrics"}]
    assert account["kind"] == "ServiceAccount" and account["secrets"] == [{"name": "faces-s3-keys"}]
    assert service["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert "AWS" not in out.read_text()  # the Secret by name only
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]
    # a canary: the same InferenceService, a share of the traffic to this model
    canary_out = tmp_path / "canary.yaml"
    assert main([*argv[:-1], str(canary_out), "--storage-uri", "s3://fakeface/mlartifacts/1/models/m-new/artifacts",
                 "--canary", "10"]) == 0
    canary = list(yaml.safe_load_all(canary_out.read_text()))[1]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert canary["metadata"]["name"] == service["metadata"]["name"]
    assert not [e.message for e in validator.iter_errors(canary)]
    assert main([*argv, "--storage-uri", "s3://b/x", "--canary", "150"]) == 2 and "--canary 150" in caplog.text
    # the schema is strict: a field the CRD does not have, or a wrong type, fails
    model["storageURI"] = model.pop("storageUri")
    service["spec"]["predictor"]["minReplicas"] = "one"
    assert len(list(validator.iter_errors(service))) == 2
    # a proxied MLflow location maps onto the server's S3 artifacts destination
    assert storage_uri("mlflow-artifacts:/1/models/m-1/artifacts", "s3://b/mlartifacts/") == \
        "s3://b/mlartifacts/1/models/m-1/artifacts"
    assert storage_uri("s3://b/x/artifacts", "s3://other") == "s3://b/x/artifacts"


def test_serve_and_deploy_argument_errors_exit_2(tmp_path, caplog):
    from fakeface.cli.main import main

    assert main(["--params", "none.yaml", "serve", "--model", str(tmp_path / "nope.keras")]) == 2
    assert main(["--params", "none.yaml", "deploy", "kserve", "--model", "runs:/abc/model"]) == 2
    assert "models:/<name>@<alias>" in caplog.text

    for option, value, words in (("--max-images", "0", "--max-images must be 1..4096"),
                                 ("--max-image-mb", "50", "--max-image-mb must be in (0, --max-request-mb=20]"),
                                 ("--max-concurrency", "0", "--max-concurrency must be at least 1")):
        assert main(["--params", "none.yaml", "serve", "--model", str(tmp_path / "nope.keras"), option, value]) == 2
        assert words in caplog.text
