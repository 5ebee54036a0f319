"""The one place where storage round trips are counted (see :mod:`dicomserver.opcount`).

Each Azure SDK client of the service is built with its own
:class:`CountingTransport`, which wraps the SDK's default HTTP transport and
records every request it sends — retries included, since each is a round
trip — under the client's kind, with the Cosmos request charge.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from azure.core.pipeline.transport import RequestsTransport

from ... import opcount


class CountingTransport(RequestsTransport):  # type: ignore[misc]
    """``RequestsTransport`` that counts each request as one ``kind`` round trip."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        if kind not in opcount.KINDS:
            raise ValueError(f"unknown storage kind {kind!r}")
        if not urllib.request.getproxies():
            # With no proxy configured, stop requests from re-reading the whole environment for
            # proxy settings on every call (about a tenth of the CPU of a STOW, measured).
            kwargs.setdefault("use_env_settings", False)
        super().__init__(**kwargs)
        self.kind = kind

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        charge = 0.0
        try:
            charge = float(response.headers.get("x-ms-request-charge") or 0.0)
        except (TypeError, ValueError):
            pass
        opcount.record(self.kind, charge)
        return response
