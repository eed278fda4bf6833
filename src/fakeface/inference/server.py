"""``fakeface serve``: the image-in model over HTTP, on MLflow's own scoring server.

The server is MLflow's scoring app (:func:`mlflow.pyfunc.scoring_server.init`, the FastAPI app that
``mlflow models serve`` runs under uvicorn): the same ``/invocations``, ``/ping``, ``/health`` and
``/version`` endpoints, the same input formats (``dataframe_split``, ``dataframe_records``,
``inputs``, ``instances``) and error answers. ``fakeface serve`` adds what MLflow's server cannot
be told:

* a request size limit. MLflow 3's scoring server reads any body whole (it only has a request
  timeout, ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``), and uvicorn has no body limit either.
  :class:`RequestGuard`, a plain ASGI wrapper, answers a body over ``--max-request-mb`` with 413
  (reading and dropping the rest, so that a client still sending gets the answer) and a body that
  is not a JSON object at all (raw JPEG bytes, a form) with 400, before MLflow parses it (MLflow's
  own answer to those quotes the whole body back);
* standard JSON out: MLflow's server writes the NaN of an image without a score (``p_fake``) as
  ``NaN``, which JavaScript's and most other JSON parsers reject; :class:`RequestGuard` rewrites
  such a value as ``null`` (what MLServer's v2 answer has too);
* 127.0.0.1 by default (``mlflow models serve`` binds 127.0.0.1 too; ``--host 0.0.0.0`` is a
  choice, with a warning: there is no authentication);
* a local detector file (``--model models/detector.keras``) served without a registry, wrapped in
  the same pyfunc on the fly.

Everything else (wrong field, empty list, too many images, undecodable images) is answered by the
pyfunc (:mod:`fakeface.inference.served_model`) and MLflow, so ``mlflow models serve -m
models:/fakeface-detector-serving@champion --env-manager local`` answers the same way except for
the guards above.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from fakeface import FakefaceError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_REQUEST_MB = 20.0
DEFAULT_TIMEOUT_S = 60
#: A body over the limit is read (and dropped) up to this many bytes so that the client, still
#: sending, reads the 413; past it the connection is closed.
DRAIN_LIMIT = 1024 * 1024 * 1024


def default_model_uri(model_name: str, alias: str) -> str:
    from fakeface.tracking.aliases import serving_model_name

    return f"models:/{serving_model_name(model_name)}@{alias}"


async def _answer(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def standard_json(body: bytes) -> bytes:
    """``body`` with every ``NaN``/``Infinity`` value (not inside a string) written as ``null``;
    as it is when it has none, or is not JSON."""
    if b"NaN" not in body and b"Infinity" not in body:
        return body
    try:
        return json.dumps(json.loads(body, parse_constant=lambda _: None)).encode()
    except ValueError:
        return body


class RequestGuard:
    """ASGI wrapper: a size limit on request bodies and a JSON-object check, before ``app``; its
    JSON answers in standard JSON (:func:`standard_json`)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        from fakeface.inference.served_model import REQUEST_HELP

        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        too_large = (f"request body over the limit of {self.max_bytes:,} bytes (fakeface serve --max-request-mb): "
                     f"send fewer or smaller images a request; {REQUEST_HELP}")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else the client waits: nothing to drain
                await self._drain(receive, 0)
            await _answer(send, 413, "REQUEST_TOO_LARGE", too_large)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                if more:
                    await self._drain(receive, len(body))
                await _answer(send, 413, "REQUEST_TOO_LARGE", too_large)
                return
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type == "application/json" and not bytes(body[:64]).lstrip().startswith(b"{"):
            await _answer(send, 400, "BAD_REQUEST", f"the body is not a JSON object: {REQUEST_HELP}")
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, _standard_json_answers(send))

    @staticmethod
    async def _drain(receive: Any, seen: int) -> None:
        while seen <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _standard_json_answers(send: Any) -> Any:
    """``send`` for an app whose JSON answers go through :func:`standard_json` (MLflow answers
    with one body message; the start is held until the body is known, for its length)."""
    start: dict[str, Any] | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict[str, Any]) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            if headers.get(b"content-type", b"").split(b";")[0].strip() != b"application/json":
                await send(message)
                return
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = standard_json(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def load_served_model(spec: str, workdir: Path, max_pixels: int = 40_000_000) -> Any:
    """The pyfunc to serve: an MLflow URI or model folder as it is; a ``.keras`` detector file
    wrapped in the image-in model (saved under ``workdir``)."""
    import mlflow

    from fakeface import tracking
    from fakeface.inference.served_model import save_serving_model

    path = Path(spec)
    if path.suffix == ".keras":
        if not path.is_file():
            raise FakefaceError(f"model file {spec} not found")
        spec = str(save_serving_model(path, workdir / "model", max_pixels))
    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(spec)
    except mlflow.exceptions.MlflowException as error:
        raise FakefaceError(f"cannot load model {spec}: {error.message}") from None
    except OSError as error:
        raise FakefaceError(f"cannot load model {spec}: {error}") from None
    if model.metadata.get_input_schema() is None or "image" not in model.metadata.get_input_schema().input_names():
        raise FakefaceError(f"{spec} is not the image-in model (its input is not an 'image' column): serve "
                            "models:/<name>-serving@<alias>, or a .keras detector file")
    return model


def apply_limits(model: Any, max_images: int | None = None, max_image_mb: float | None = None) -> Any:
    """``model`` with the image-in model's per-request image count and per-image size set (None:
    the model's own)."""
    image_model = model.unwrap_python_model()
    if max_images is not None:
        image_model.max_images = max_images
    if max_image_mb is not None:
        image_model.max_image_bytes = int(max_image_mb * 1024 * 1024)
    return model


def build_app(model: Any, max_request_bytes: int, prediction_log: Any = None) -> Any:
    """MLflow's scoring app for ``model`` behind :class:`RequestGuard`, with Prometheus metrics on
    ``/metrics`` and, when given, the prediction log (:mod:`fakeface.inference.observe`)."""
    from mlflow.pyfunc import scoring_server

    from fakeface.inference.observe import ImageObserver, MetricsApp, ServingMetrics

    metrics = ServingMetrics()
    image_model = model.unwrap_python_model()
    if isinstance(getattr(image_model, "observers", None), list):
        image_model.observers.append(ImageObserver(metrics, prediction_log))
        metrics.model.info({"name": image_model.model_name or "", "version": image_model.model_version or "",
                            "threshold": f"{image_model.loaded.threshold:.6f}"})
    else:  # an image-in model logged before models reported their images: request metrics only
        log.warning("%s does not report its images: /metrics counts requests only, and no prediction log is "
                    "written (register the model again with this version of fakeface)", type(image_model).__name__)
    return MetricsApp(RequestGuard(scoring_server.init(model), max_request_bytes), metrics)


def serve(spec: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_request_mb: float = DEFAULT_MAX_REQUEST_MB, timeout_s: int = DEFAULT_TIMEOUT_S,
          max_pixels: int = 40_000_000, prediction_log: str | None = None,
          prediction_log_max_mb: float = 512.0, max_images: int | None = None, max_image_mb: float | None = None,
          max_concurrency: int | None = None) -> None:
    """Serve ``spec`` until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    ``max_images`` and ``max_image_mb``: the most images a request may hold and the most encoded
    bytes one image may have (default: the model's, 64 and 8 MB); ``max_concurrency``: requests
    handled at once, the rest answered 503 at once (uvicorn's ``limit_concurrency``; default: no
    limit), so a crowd of slow clients cannot make the server hold an unbounded number of bodies.
    """
    import uvicorn

    from fakeface.inference.prediction_log import PredictionLog

    if not 0 < max_request_mb <= 1024:
        raise FakefaceError(f"--max-request-mb must be in (0, 1024], got {max_request_mb}")
    if not 0 <= port <= 65535:
        raise FakefaceError(f"--port must be 0..65535, got {port}")
    if max_images is not None and not 1 <= max_images <= 4096:
        raise FakefaceError(f"--max-images must be 1..4096, got {max_images}")
    if max_image_mb is not None and not 0 < max_image_mb <= max_request_mb:
        raise FakefaceError(f"--max-image-mb must be in (0, --max-request-mb={max_request_mb:g}], got {max_image_mb}")
    if max_concurrency is not None and max_concurrency < 1:
        raise FakefaceError(f"--max-concurrency must be at least 1, got {max_concurrency}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who reaches it can use the model (there is no authentication)", host)
    # MLflow's own request timeout (answered 504), read when its app is built
    os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(timeout_s)
    with tempfile.TemporaryDirectory(prefix="fakeface-serve-") as workdir:
        model = apply_limits(load_served_model(spec, Path(workdir), max_pixels), max_images, max_image_mb)
        log_writer = PredictionLog(prediction_log, int(prediction_log_max_mb * 1024 * 1024)) if prediction_log else None
        app = build_app(model, int(max_request_mb * 1024 * 1024), log_writer)
        if log_writer is not None:
            log.info("logging every scored image (p(fake), label, sha256, size; never the image) to %s", prediction_log)
        log.info("serving %s on http://%s:%d/invocations (limit %.0f MB a request)", spec, host, port, max_request_mb)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10,
                    limit_concurrency=max_concurrency)
