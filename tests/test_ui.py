"""``fakeface ui``: the MLflow UI opened on the experiment's training runs, looked at in a real
(headless) browser."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import port_free

BROWSERS = ("chromium", "chromium-browser")


def test_the_url_opens_the_training_runs_view():
    from fakeface.cli.ui import training_runs_url

    assert training_runs_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")
    assert training_runs_url("http://127.0.0.1:5000", None) == "http://127.0.0.1:5000/#/experiments"


def _free_port() -> int:
    port = 5600
    while not port_free(port):
        port += 1
    return port


def _dom(browser: str, url: str, profile) -> str:
    """The page's DOM after its scripts ran (a fresh profile: no remembered view)."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_ui_lists_the_training_runs_in_a_browser(tmp_path):
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # A run as the train stage makes it: the experiment configured by fakeface, a named run.
    code = ("import mlflow; from fakeface import tracking; tracking.configure('fakeface'); "
            "run = mlflow.start_run(run_name='smallcnn-adam-sigmoid'); mlflow.log_metric('test_auc', 0.97); "
            "mlflow.end_run()")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, cwd=tmp_path)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "fakeface", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        printed = server.stdout.readline()
        url = printed.rsplit(" ", 1)[-1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and "workflowType=machine_learning" in url
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        assert "smallcnn-adam-sigmoid" in _dom(browser, url, tmp_path / "profile-a"), "the runs table lists the run"
        plain = url.split("/runs?")[0]
        assert "smallcnn-adam-sigmoid" not in _dom(browser, plain, tmp_path / "profile-b"), (
            "without the view in its URL the UI opens elsewhere (then this test no longer shows anything)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
