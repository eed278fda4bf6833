"""Credentials in URLs: one place that finds them and one that hides them.

Tracking URIs, study storage URLs and S3 endpoints may carry ``user:password@``. Every log line,
status table, error message and compiled pipeline that shows such a URL goes through
:func:`redact`; every place that must refuse one (a pipeline parameter, which Kubeflow stores in
the run's spec) asks :func:`has_credentials`. Keeping the pattern here means a URL that one check
lets through is not caught, or missed, by another.
"""

from __future__ import annotations

import re

#: ``//userinfo@`` in a URL: ``user@``, ``user:password@`` or ``:password@``.
USERINFO = re.compile(r"//[^/@\s]+@")


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user (and maybe a password) before its host."""
    return bool(USERINFO.search(url or ""))


def redact(url: str) -> str:
    """``url`` fit for logs: the ``user:password@`` part replaced by ``***@``."""
    return USERINFO.sub("//***@", url)


def strip_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part (for a request that needs none, e.g. /health)."""
    return USERINFO.sub("//", url)
