"""Health checks over HTTP: is a tracking server there, does one of our servers answer.

Standard library only: :func:`check_tracking_server` is cheap to call from
``fakeface.tracking.configure``, and the stack (:mod:`fakeface.stack`) uses the same checks on its
own servers. It lives with tracking, not with the stack, so the stages that track runs do not
depend on the stack's code.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

from fakeface import FakefaceError
from fakeface.tracking.redact import redact, strip_credentials

class TrackingServerError(FakefaceError):
    """A tracking server that is not there, not healthy, or refuses the client's login."""


#: Where MLflow clients take the tracking URI from (see ``fakeface.tracking.tracking_uri``).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def check_tracking_server(uri: str | None = None, timeout: float = 3.0) -> None:
    """Fail fast, with a clear message, when an http(s) tracking URI has no server behind it.

    The MLflow client retries HTTP for minutes by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``); one ``GET <uri>/health`` with a short timeout, no retries,
    turns "the pipeline hangs" into an error within seconds. Other URIs (sqlite, file,
    databricks) are left alone. The URI is shown without any ``user:password@``.

    ``uri`` defaults to ``$MLFLOW_TRACKING_URI``; unset, the tracking store is the embedded SQLite
    file (``fakeface.tracking.tracking_uri``), which has no server to check.
    """
    if uri is None:
        uri = os.environ.get(TRACKING_URI_ENV) or ""
    if not uri.lower().startswith(("http://", "https://")):
        return
    shown = redact(uri)
    health = uri.rstrip("/") + "/health"
    try:
        # Credentials in the URI are for the REST API; /health needs none, so strip them.
        request = urllib.request.Request(strip_credentials(health), method="GET")
        with opener(context=tls_context()).open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # the server answered: reachable
        status = error.code
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingServerError(
            f"MLflow tracking server at {shown} is not reachable: {reason}; start it with "
            "`fakeface stack up` or unset MLFLOW_TRACKING_URI (to use the local mlflow.db)"
        ) from None
    if status >= 500:
        raise TrackingServerError(
            f"MLflow tracking server at {shown} is not healthy: HTTP {status} from /health; see "
            "`fakeface stack status` (and .stack/logs/mlflow.log) or unset MLFLOW_TRACKING_URI"
        )
    check_login(uri, timeout)


#: A cheap authenticated read: what a server with a login answers 401 (or 403) to.
LOGIN_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def check_login(uri: str, timeout: float = 3.0) -> None:
    """Fail fast when the server asks for a login the client does not have (or rejects it).

    The client's login is what the MLflow client would send: ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``, else a ``user:password@`` in the URI. A server without
    authentication answers 200, and any other answer is left for the client to report.
    """
    import base64
    import urllib.parse

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    parts = urllib.parse.urlsplit(uri)
    if not (user and password) and parts.username:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    headers = {}
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    status = http_status(strip_credentials(uri).rstrip("/") + LOGIN_PROBE, timeout, headers, local=False)
    if status not in (401, 403):
        return
    shown = redact(uri)
    if not headers:
        raise TrackingServerError(
            f"MLflow tracking server at {shown} requires a login: set MLFLOW_TRACKING_USERNAME and "
            'MLFLOW_TRACKING_PASSWORD (for the stack: eval "$(fakeface stack env)")'
        )
    raise TrackingServerError(
        f"MLflow tracking server at {shown} rejected the login of user {user!r} (HTTP {status}); "
        'for the stack, take its login from `fakeface stack env` (eval "$(fakeface stack env)")'
    )


def opener(local: bool = False, context: Any = None) -> urllib.request.OpenerDirector:
    """For a tracking URI, honour http(s)_proxy / no_proxy as the MLflow client (requests) does;
    for the stack's own servers on 127.0.0.1, never go through a proxy."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})] if local else []
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def tls_context() -> Any:
    """The TLS settings the MLflow client would use (MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH), so the check does not fail where the client would not."""
    import ssl

    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def http_status(url: str, timeout: float = 1.0, headers: dict[str, str] | None = None,
                local: bool = True) -> int | None:
    """The HTTP status of a GET to one of our servers (any answer counts as "listening"), or None
    when nothing answers. ``local=False``: a tracking URI's server (proxy and TLS settings as the
    MLflow client's)."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        handler = opener(local=True) if local else opener(context=tls_context())
        with handler.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None
