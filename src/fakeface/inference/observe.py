"""What ``fakeface serve`` tells about itself: Prometheus metrics on ``/metrics``, and the
prediction log (:mod:`fakeface.inference.prediction_log`).

Metrics are the well-kept ``prometheus_client``'s, in a registry of the server's own (so a
process serving two apps, or a test, never mixes them):

======================================  ==========================================================
``fakeface_requests_total``             HTTP requests, by ``path`` and ``status``
``fakeface_request_errors_total``       failed requests by ``kind``: bad_request, too_large,
                                        timeout, server_error, client_error
``fakeface_request_seconds``            request latency (histogram), by ``path``
``fakeface_images_total``               images by ``outcome``: real, fake, or the error kind of an
                                        image without a score (not_base64, not_image, too_large, ...)
``fakeface_p_fake``                     p(fake) of scored images (histogram, 20 bins of 0.05)
``fakeface_fake_share``                 share of the scored images labelled fake, since start
``fakeface_model_info``                 the served model: name, version, threshold
``fakeface_prediction_log_dropped_total``  records the prediction log dropped at its cap
======================================  ==========================================================

:class:`MetricsApp` wraps the ASGI app: it answers ``GET /metrics`` and times every other request.
The per-image numbers come from the image-in model itself (:class:`ImageObserver`, attached to
:class:`fakeface.inference.served_model.ImageModel`), which is where the scores are.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from fakeface.inference.prediction_log import PredictionLog, now_text

STATUS_KINDS = {400: "bad_request", 413: "too_large", 504: "timeout"}
P_FAKE_BUCKETS = tuple(round(0.05 * k, 2) for k in range(1, 21))
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def error_kind(status: int) -> str | None:
    if status < 400:
        return None
    return STATUS_KINDS.get(status, "server_error" if status >= 500 else "client_error")


class ServingMetrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fakeface_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)
        self.errors = Counter("fakeface_request_errors", "failed requests by kind", ["kind"], registry=self.registry)
        self.latency = Histogram("fakeface_request_seconds", "request latency", ["path"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.images = Counter("fakeface_images", "images by outcome (real, fake, or the error kind)", ["outcome"],
                              registry=self.registry)
        self.p_fake = Histogram("fakeface_p_fake", "p(fake) of scored images", buckets=P_FAKE_BUCKETS,
                                registry=self.registry)
        self.fake_share = Gauge("fakeface_fake_share", "share of scored images labelled fake since start",
                                registry=self.registry)
        self.model = Info("fakeface_model", "the served model", registry=self.registry)
        self.log_dropped = Counter("fakeface_prediction_log_dropped", "prediction-log records dropped at its cap",
                                   registry=self.registry)
        self.scored = 0
        self.fakes = 0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ImageObserver:
    """Called by the image-in model with one record per image of a request."""

    def __init__(self, metrics: ServingMetrics, prediction_log: PredictionLog | None = None) -> None:
        self.metrics = metrics
        self.prediction_log = prediction_log
        #: Whether the image-in model should hash each image for it (only the log keeps digests).
        self.wants_digest = prediction_log is not None

    def __call__(self, records: list[dict[str, Any]]) -> None:
        m = self.metrics
        stamp = now_text()
        for record in records:
            record["time"] = stamp
            if record["error"]:
                m.images.labels(record["error"]).inc()
                continue
            m.images.labels(record["label"]).inc()
            m.p_fake.observe(record["p_fake"])
            m.scored += 1
            m.fakes += record["label"] == "fake"
        if m.scored:
            m.fake_share.set(m.fakes / m.scored)
        if self.prediction_log is not None:
            kept = self.prediction_log.write(records)
            if kept < len(records):
                m.log_dropped.inc(len(records) - kept)


class MetricsApp:
    """ASGI wrapper: ``GET /metrics`` answers the exposition; every other request is counted and timed."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/metrics" and scope.get("method") == "GET":
            body = self.metrics.exposition()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status = 500
        started = time.perf_counter()

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            # only the server's own paths as label values: a scanner's random paths would grow the series
            label = path if path in ("/invocations", "/ping", "/health", "/version") else "other"
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
            kind = error_kind(status)
            if kind:
                self.metrics.errors.labels(kind).inc()
