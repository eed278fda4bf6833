"""One HTTP request through an ASGI app, as uvicorn hands it over, with no server and no HTTP
client library: what the fuzzers send ``fakeface serve``'s app (guard, metrics, MLflow's scoring
app) thousands of times a second."""

from __future__ import annotations

import asyncio


def post(app, body: bytes, path: str = "/invocations", content_type: str = "application/json") -> tuple[int, bytes]:
    """POST ``body`` to ``path``; the answer's status and body."""
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 8080),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
