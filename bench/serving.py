"""Load on the real local server: ``python -m bench.serving`` (``--out`` for the results).

Starts ``fakeface serve`` (MLflow's scoring app behind fakeface's request guard) as a subprocess on
a free loopback port, serving the image-in model of a smallcnn 64 px detector (untrained: the
scores do not matter here, the work per image does; the same model as the inference section), and
drives it with 1, 8 and 32 concurrent clients (threads, each with its own ``requests`` session)
posting real face JPEGs (``../shared/data/faces-sample`` when present, else synthetic ones): good
requests of 1, 4 or 8 images in turn, and every 10th request a bad payload (not JSON, a wrong field,
an empty list, too many images), which must get a 4xx. Reported per level: requests/s, images/s,
p50/p99 latency of the good requests, failed good requests (must be 0), bad payloads not answered
4xx (must be 0). The server's memory (RSS of its process tree, sampled every 0.2 s) is taken after
a warm-up at 32 clients and at the end: flat means it did not grow by more than 10%. The same
images through ``predict``'s batch path (:func:`fakeface.inference.predict.predict_files`, batch 64, in this
process, before the server starts) give the baseline: served images/s over batch images/s.
Every request loop is bounded in time; the server is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python bench/serving.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "faces-sample"
LEVELS = (1, 8, 32)
SECONDS = 20.0  # per level
WARMUP_SECONDS = 8.0
SIZES = (1, 4, 8)  # images per good request, in turn
BAD_EVERY = 10
SIZE = 64


def face_images(work: Path) -> tuple[list[bytes], str]:
    """Face JPEGs' bytes: the shared sample, else a synthetic set made here."""
    files = sorted(SAMPLE.rglob("*.jpg")) if SAMPLE.is_dir() else []
    source = f"{len(files)} real face JPEGs from ../shared/data/faces-sample"
    if not files:
        from fakeface.config import SplitFractions, SyntheticConfig
        from fakeface.data.synthetic import generate

        out = work / "synthetic"
        generate(SyntheticConfig(images_per_class=100, image_size=256), SplitFractions(), out, seed=0)
        files = sorted(out.rglob("*.jpg"))
        source = f"{len(files)} synthetic 256 px face JPEGs (../shared/data/faces-sample absent)"
    return [f.read_bytes() for f in files], source


def untrained_detector(work: Path) -> Path:
    import keras

    from fakeface.config import parse_params
    from fakeface.model.contract import make_contract, write_model_with_contract
    from fakeface.model.classifier import build_classifier

    cfg = parse_params({"train": {"backbone": "smallcnn", "image_size": SIZE}}).train
    raw = work / "smallcnn.keras"
    build_classifier(cfg).model.save(raw)
    keras.backend.clear_session()
    return write_model_with_contract(raw, work / "detector.keras", make_contract(SIZE, 0.5))


def _batch_baseline(detector: Path, images: list[bytes], work: Path) -> float:
    """Images/s of predict's batch path on the same images (as files), after a warm-up pass."""
    from fakeface.inference.predict import load_model, predict_files

    folder = work / "files"
    folder.mkdir(exist_ok=True)
    paths = []
    for index, data in enumerate(images):
        path = folder / f"{index:04d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    loaded = load_model(str(detector))
    predict_files(loaded, paths, 64)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        rows = predict_files(loaded, paths, 64)
        rates.append(len(rows) / (time.perf_counter() - start))
        assert all(not row.error for row in rows)
    return statistics.median(rates)


def bad_payloads(one: str) -> list[tuple[bytes, str]]:
    return [
        (base64.b64decode(one), "not JSON"),
        (json.dumps({"images": [one]}).encode(), "wrong field"),
        (json.dumps({"dataframe_split": {"columns": ["image"], "data": []}}).encode(), "empty list"),
        (json.dumps({"inputs": {"image": [one] * 65}}).encode(), "too many images"),
    ]


class Memory(threading.Thread):
    """RSS of a process and its children, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.samples: list[float] = []
        self.done = threading.Event()

    def rss_mb(self) -> float:
        import psutil

        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.samples.append(self.rss_mb())


def drive(url: str, clients: int, seconds: float, goods: list[tuple[bytes, int]],
           bads: list[tuple[bytes, str]]) -> dict[str, Any]:
    import requests

    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"good": 0, "images": 0, "bad": 0, "failed_good": 0, "bad_not_4xx": 0, "errors": []}
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        session = requests.Session()
        turn = number
        while time.monotonic() < deadline:
            turn += 1
            bad = turn % BAD_EVERY == 0
            body, n = (bads[turn % len(bads)][0], 0) if bad else goods[turn % len(goods)]
            # a payload labelled "hostile: ..." may also be answered 200 (rows carrying their errors)
            hostile = bad and bads[turn % len(bads)][1].startswith("hostile")
            start = time.perf_counter()
            try:
                answer = session.post(f"{url}/invocations", data=body, timeout=60,
                                      headers={"Content-Type": "application/json"})
                status, text = answer.status_code, answer.text
            except requests.RequestException as error:
                status, text = 0, str(error)
            took = time.perf_counter() - start
            with lock:
                if bad:
                    counts["bad"] += 1
                    if not (400 <= status < 500 or (hostile and status == 200)):
                        counts["bad_not_4xx"] += 1
                        counts["errors"].append(f"bad payload got {status}: {text[:120]}")
                    continue
                predictions = json.loads(text)["predictions"] if status == 200 else []
                if len(predictions) == n and all(row["error"] == "" for row in predictions):
                    counts["good"] += 1
                    counts["images"] += n
                    latencies.append(took)
                else:
                    counts["failed_good"] += 1
                    counts["errors"].append(f"good request got {status}: {text[:120]}")
        session.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 90)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float | None:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    counts["errors"] = counts["errors"][:5]
    return {"clients": clients, "seconds": elapsed, "requests_per_s": counts["good"] / elapsed,
            "images_per_s": counts["images"] / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99), **counts}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(detector: Path, work: Path, *options: str) -> Iterator[tuple[subprocess.Popen, str, float]]:
    """``fakeface serve`` of ``detector`` (with ``options``) on a free loopback port: the process,
    its URL and its start-up seconds; stopped by its pid at the end, whatever happens."""
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "fakeface", "--params", "no-such-params.yaml", "serve",
                               "--model", str(detector), "--port", str(port), *options], env=env, cwd=work,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 180:
            if server.poll() is not None:
                raise RuntimeError(f"server exited {server.returncode}: {(work / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        yield server, url, time.monotonic() - started
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


def run(work: Path) -> dict[str, Any]:
    from fakeface.inference.served_model import request_body

    images, source = face_images(work)
    detector = untrained_detector(work)
    batch_rate = _batch_baseline(detector, images, work)
    goods = [  # requests of 1, 4 and 8 images in turn, cycling over the set
        (json.dumps(request_body(images[(index + k) % len(images)] for k in range(n))).encode(), n)
        for index in range(0, len(images), 8) for n in SIZES
    ]
    one = base64.b64encode(images[0]).decode()
    with served(detector, work) as (server, url, startup_s):
        memory = Memory(server.pid)
        memory.start()
        rss_start = memory.rss_mb()
        warmup = drive(url, 32, WARMUP_SECONDS, goods, bad_payloads(one))
        rss_warm = memory.rss_mb()
        levels = [drive(url, clients, SECONDS, goods, bad_payloads(one)) for clients in LEVELS]
        rss_end = memory.rss_mb()
        memory.done.set()
        memory.join(2)
    for level in levels:
        level["vs_batch"] = level["images_per_s"] / batch_rate
    return {
        "images": source, "model": f"smallcnn {SIZE} px (untrained)", "sizes": SIZES, "bad_every": BAD_EVERY,
        "seconds_per_level": SECONDS, "startup_s": startup_s, "batch_images_per_s": batch_rate,
        "warmup": {k: warmup[k] for k in ("requests_per_s", "images_per_s", "failed_good", "bad_not_4xx")},
        "levels": levels, "rss_mb": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end,
                                     "max": max(memory.samples, default=rss_end)},
        "rss_growth": rss_end / rss_warm, "cpus": os.cpu_count(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows (the shape of :func:`bench.report.rows`'): one per level, the memory, the ratio."""
    out = []
    for level in result["levels"]:
        ok = level["failed_good"] == 0 and level["bad_not_4xx"] == 0
        out.append({
            "benchmark": f"serve: {level['clients']} client(s)",
            "measured": (f"{level['requests_per_s']:.1f} req/s, {level['images_per_s']:.1f} img/s, "
                         f"p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms"),
            "target": "0 failed good, bad -> 4xx", "verdict": "PASS" if ok else "MISS",
            "notes": (f"{level['good']} good + {level['bad']} bad requests in {level['seconds']:.0f} s; "
                      f"{level['failed_good']} good failed; {level['vs_batch']:.2f}x predict's batch path "
                      f"({result['batch_images_per_s']:.0f} img/s)"),
        })
    rss = result["rss_mb"]
    out.append({
        "benchmark": "serve: server RSS after warm-up -> end",
        "measured": f"{rss['after_warmup']:.0f} -> {rss['end']:.0f} MB (max {rss['max']:.0f})",
        "target": "flat: <= 1.10x", "verdict": "PASS" if result["rss_growth"] <= 1.10 else "MISS",
        "notes": f"{result['rss_growth']:.3f}x; process tree; start {rss['start']:.0f} MB",
    })
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Serving load ({result['images']}; {result['model']}; requests of {'/'.join(map(str, result['sizes']))} "
             f"images, every {result['bad_every']}th a bad payload; {result['seconds_per_level']:.0f} s a level; "
             f"{result['cpus']} CPU cores, load {result['load']}).", "",
             "| Benchmark | Measured | Target | Verdict | Notes |", "|---|---|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['measured']} | {r['target']} | {r['verdict']} | {r['notes']} |"
              for r in rows(result)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for serving.json and serving.md")
    parser.add_argument("--workdir", help="keep the generated files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fakeface-bench-serving-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    write_results(Path(args.out), "serving", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
