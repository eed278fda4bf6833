"""``fakeface serve`` under long load: ``python -m bench.longload [--minutes 10] [--out DIR]``.

The server (the same untrained 64 px detector as :mod:`bench.serving`, with ``--max-concurrency``)
gets, for the whole run, a steady stream from several clients: good requests of 1, 4 or 8 face
JPEGs, every 10th a bad payload (not JSON, a wrong field, no images, too many images) and, in turn,
the hostile ones a client can send under the size cap: one image as a 15 MB base64 string of
non-image bytes, and 64 images in one request. Beside them, slow clients upload 1 MB bodies a
kilobyte every 20 ms and start again when answered. Reported per minute: requests, p50/p99 latency
of the good ones, failures; at the end: every good request answered correctly (its rows, no error),
every bad one a 4xx, every hostile one rows with their errors or a 4xx, never a 5xx; the server's
RSS at the start of the load and at the end (flat: at most 1.10x).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python bench/longload.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import write_results  # noqa: E402
from bench.serving import Memory, bad_payloads, drive, face_images, served, untrained_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 4
SLOW_CLIENTS = 16
MAX_CONCURRENCY = 64
SLOW_BODY = 1 << 20
SLOW_CHUNK = 1024
SLOW_PAUSE_S = 0.02


def hostile_payloads(images: list[bytes]) -> list[tuple[bytes, str]]:
    """What a client may send under the 20 MB cap: answered with rows (their errors) or a 4xx."""
    from fakeface.inference.served_model import request_body

    huge = base64.b64encode(os.urandom(11 << 20)).decode()  # 15 MB of base64, not an image
    return [
        (json.dumps({"dataframe_split": {"columns": ["image"], "data": [[huge]]}}).encode(), "hostile: 15 MB base64 string"),
        (json.dumps(request_body(images[k % len(images)] for k in range(64))).encode(), "hostile: 64 images"),
    ]


def slow_client(port: int, stop: threading.Event, counts: dict[str, int], lock: threading.Lock) -> None:
    """Uploads 1 MB JSON bodies a kilobyte at a time, again and again, until ``stop``."""
    body = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * (SLOW_BODY - 60) + b'"]]}}'
    head = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(head)
                for start in range(0, len(body), SLOW_CHUNK):
                    if stop.is_set():
                        return
                    sock.sendall(body[start:start + SLOW_CHUNK])
                    time.sleep(SLOW_PAUSE_S)
                status = int(sock.recv(64).split(b" ")[1])
        except (OSError, ValueError, IndexError):
            status = 0
        with lock:
            counts["slow_uploads"] += 1
            counts["slow_5xx_or_dropped"] += int(status == 0 or status >= 500)


def run(work: Path, minutes: int) -> dict[str, Any]:
    from fakeface.inference.served_model import request_body

    images, source = face_images(work)
    detector = untrained_detector(work)
    goods = [(json.dumps(request_body(images[(index + k) % len(images)] for k in range(n))).encode(), n)
             for index in range(0, len(images), 8) for n in (1, 4, 8)]
    one = base64.b64encode(images[0]).decode()
    hostile = hostile_payloads(images)
    with served(detector, work, "--max-concurrency", str(MAX_CONCURRENCY)) as (server, url, _):
        port = int(url.rsplit(":", 1)[1])
        memory = Memory(server.pid)
        memory.start()
        drive(url, CLIENTS, 20, goods, bad_payloads(one))  # warm-up: the model traced, the pools filled
        rss_start = memory.rss_mb()
        stop, lock = threading.Event(), threading.Lock()
        slow_counts = {"slow_uploads": 0, "slow_5xx_or_dropped": 0}
        slow = [threading.Thread(target=slow_client, args=(port, stop, slow_counts, lock), daemon=True)
                for _ in range(SLOW_CLIENTS)]
        for thread in slow:
            thread.start()
        windows = []
        for minute in range(minutes):
            # the hostile payloads ride with the bad ones: answered rows-with-errors or 4xx, never 5xx
            window = drive(url, CLIENTS, 60, goods, bad_payloads(one) + hostile)
            window.update(minute=minute + 1, rss_mb=memory.rss_mb())
            windows.append(window)
        stop.set()
        for thread in slow:
            thread.join(130)
        rss_end = memory.rss_mb()
        memory.done.set()
        memory.join(2)
    return {
        "images": source, "minutes": minutes, "clients": CLIENTS, "slow_clients": SLOW_CLIENTS,
        "max_concurrency": MAX_CONCURRENCY, "windows": windows, **slow_counts,
        "rss_mb": {"start": rss_start, "end": rss_end, "max": max(memory.samples, default=rss_end)},
        "rss_growth": rss_end / rss_start, "cpus": os.cpu_count(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def markdown(result: dict[str, Any]) -> str:
    good = sum(w["good"] for w in result["windows"])
    failed = sum(w["failed_good"] for w in result["windows"])
    bad = sum(w["bad"] for w in result["windows"])
    not_4xx = sum(w["bad_not_4xx"] for w in result["windows"])
    lines = [f"`fakeface serve` for {result['minutes']} min ({result['images']}): {result['clients']} clients "
             f"(good requests of 1/4/8 images; every 10th a bad or hostile payload), {result['slow_clients']} slow "
             f"clients uploading 1 MB a kilobyte every 20 ms, `--max-concurrency {result['max_concurrency']}`; "
             f"{result['cpus']} CPU cores, load {result['load']} at the end.", "",
             "| minute | good requests | p50 ms | p99 ms | good failed | bad/hostile | not answered 4xx/rows | RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in result["windows"]:
        lines.append(f"| {w['minute']} | {w['good']} | {w['p50_ms']:.0f} | {w['p99_ms']:.0f} | {w['failed_good']} | "
                     f"{w['bad']} | {w['bad_not_4xx']} | {w['rss_mb']:.0f} |")
    rss = result["rss_mb"]
    lines += ["", f"In all: {good} good requests, {failed} failed; {bad} bad or hostile, {not_4xx} answered otherwise "
              f"than 4xx; {result['slow_uploads']} slow uploads, {result['slow_5xx_or_dropped']} dropped or 5xx. "
              f"RSS {rss['start']:.0f} -> {rss['end']:.0f} MB ({result['rss_growth']:.3f}x, max {rss['max']:.0f})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.longload", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for longload.json and .md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(tempfile.mkdtemp(prefix="fakeface-bench-longload-")).resolve()
    try:
        result = run(work, args.minutes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(Path(args.out), "longload", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
