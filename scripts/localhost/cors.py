"""CORS as the Functions host and App Service answer it, for browser viewers on another origin.

In Azure the platform answers CORS from the Function App's CORS settings (``infra/``:
``corsAllowedOrigins``, ``deploy.sh --cors-origin``) before any function runs; under
``func start`` from ``Host.CORS`` / ``Host.CORSCredentials`` in local.settings.json.  The
local host reads the same ``Host`` section (or ``DICOM_CORS_ORIGINS``, comma-separated,
``*`` for any) and behaves alike:

* a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin gets 204 with the allowed methods, the requested headers (Authorization
  included) and a max age; from any other origin 204 without them (the browser refuses);
* every response to an allowed origin carries ``Access-Control-Allow-Origin`` (the origin,
  or ``*`` when any origin is allowed without credentials) and ``Vary: Origin``, and exposes
  the headers DICOMweb clients read (ETag, Content-Location, Content-Range, Warning, the
  storage-operation header).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ORIGINS_SETTING = "DICOM_CORS_ORIGINS"
CREDENTIALS_SETTING = "DICOM_CORS_CREDENTIALS"
ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
EXPOSED_HEADERS = (
    "ETag, Content-Location, Content-Range, Content-Length, Warning, x-dicom-storage-ops, x-correlation-id"
)
MAX_AGE = "3600"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]
    credentials: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CorsPolicy | None:
        origins = frozenset(o.strip().rstrip("/") for o in environ.get(ORIGINS_SETTING, "").split(",") if o.strip())
        if not origins:
            return None
        credentials = environ.get(CREDENTIALS_SETTING, "").strip().lower() in ("1", "true", "yes")
        return cls(origins, credentials)

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/") in self.origins

    def allow_origin(self, origin: str) -> str:
        return "*" if "*" in self.origins and not self.credentials else origin

    def response_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"access-control-allow-origin", self.allow_origin(origin).encode("latin-1")),
            (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
            (b"vary", b"Origin"),
        ]
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def preflight_headers(self, origin: str, requested_headers: str) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"access-control-allow-origin", self.allow_origin(origin).encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", (requested_headers or "Authorization, Content-Type, Accept").encode()),
            (b"access-control-max-age", MAX_AGE.encode()),
            (b"vary", b"Origin"),
        ]
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def answer_preflight(policy: CorsPolicy, scope: dict[str, Any], send: Any) -> None:
    """204 to a preflight: with the CORS headers when the origin is allowed, without them otherwise."""
    origin = header(scope, b"origin")
    headers: list[tuple[bytes, bytes]] = [(b"content-length", b"0")]
    if policy.allows(origin):
        headers += policy.preflight_headers(origin, header(scope, b"access-control-request-headers"))
    else:
        headers.append((b"vary", b"Origin"))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def with_cors_headers(policy: CorsPolicy, scope: dict[str, Any], send: Any) -> Any:
    """``send`` that adds the CORS response headers for an allowed origin."""
    origin = header(scope, b"origin")
    if not origin or not policy.allows(origin):
        return send

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers") or []}
            extra = [(k, v) for k, v in policy.response_headers(origin) if k not in names]
            message = {**message, "headers": [*(message.get("headers") or []), *extra]}
        await send(message)

    return sending


def is_preflight(scope: dict[str, Any]) -> bool:
    return scope["method"] == "OPTIONS" and bool(header(scope, b"origin")) and bool(
        header(scope, b"access-control-request-method")
    )
