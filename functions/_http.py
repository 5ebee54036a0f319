"""Shared HTTP plumbing: path UIDs, base URL, and the one error → response map."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from dicomserver import opcount
from dicomserver.auth import action_for_method
from dicomserver.errors import DicomServerError
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, parse_path_uid
from dicomserver.wado import Retrieved
from dicomserver.wiring import Services, authenticator, services

log = logging.getLogger(__name__)

API_VERSION = "v2"
_PATH_NAMES = {"studies": "study", "series": "series", "instances": "instance"}


#: What ``handle`` runs: a request handler given the process-wide services.
Handler = Callable[[Services], Awaitable[Response]]


def path_uids(req: Request) -> dict[str, str]:
    """The UIDs after ``studies``, ``series`` and ``instances`` in the request path (validated)."""
    segments = [s for s in req.url.path.split("/") if s]
    out: dict[str, str] = {}
    for i, segment in enumerate(segments[:-1]):
        name = _PATH_NAMES.get(segment)
        if name is not None and name not in out:
            out[name] = parse_path_uid(segments[i + 1], f"{name} instance UID")
    return out


def instance_key(req: Request) -> InstanceKey:
    uids = path_uids(req)
    return InstanceKey(DEFAULT_PARTITION, uids["study"], uids["series"], uids["instance"])


def base_url(req: Request, svc: Services) -> str:
    """The public DICOMweb base URL (``.../v2``) for RetrieveURL values."""
    root = svc.settings.public_base_url or f"{req.url.scheme}://{req.headers.get('host', req.url.netloc)}"
    return f"{root}/{API_VERSION}"


#: The message of every 500 body: what went wrong (exception text, setting names, paths) is logged only.
INTERNAL_ERROR_MESSAGE = "The service failed to handle the request; the details are in the service log."


def error_response(exc: DicomServerError) -> Response:
    """The one map from service errors to HTTP responses (a 500 says nothing about its cause)."""
    body = {"status": exc.status, "message": INTERNAL_ERROR_MESSAGE if exc.status == 500 else exc.message}
    if exc.reason is not None:
        body["reason"] = int(exc.reason)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return Response(json.dumps(body), status_code=exc.status, media_type="application/json", headers=headers)


async def handle(req: Request, call: Callable[[Services], Awaitable[Response]]) -> Response:
    """Authenticate and authorize the caller, then run a handler with the process-wide services.

    Errors become responses here and nowhere else.  The storage round trips
    the request made before its response starts are returned in the
    ``x-dicom-storage-ops`` header; the log line at its end has them all.
    """
    ops = opcount.start()
    started = time.perf_counter()
    try:
        # In a worker thread: authentication may fetch the JWKS (dicomserver/auth.py).
        await asyncio.to_thread(
            authenticator().authenticate, req.headers.get("authorization"), action_for_method(req.method)
        )
        response = await call(services())
    except DicomServerError as exc:
        if exc.status >= 500:
            log.warning("request failed status=%s: %s", exc.status, exc.message)
        response = error_response(exc)
    response.headers[opcount.HEADER] = ops.header_value()
    if isinstance(response, StreamingResponse):
        response.body_iterator = _logged(response.body_iterator, req, response.status_code, ops, started)
    else:
        _log_operations(req, response.status_code, ops, started)
    return response


def _log_operations(req: Request, status: int, ops: opcount.Operations, started: float) -> None:
    log.info(
        "request method=%s route=%s status=%d blob_ops=%d index_ops=%d queue_ops=%d request_charge=%.2f "
        "elapsed_ms=%.1f",
        req.method,
        _route_shape(req.url.path),
        status,
        ops.blob,
        ops.index,
        ops.queue,
        ops.request_charge,
        (time.perf_counter() - started) * 1000,
    )


async def _logged(
    body: AsyncIterator[bytes], req: Request, status: int, ops: opcount.Operations, started: float
) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        _log_operations(req, status, ops, started)


def _route_shape(path: str) -> str:
    """The path with UIDs replaced by ``{uid}`` (no identifiers in logs beyond what routes need)."""
    segments = path.split("/")
    return "/".join("{uid}" if s and s[0].isdigit() else s for s in segments)


def stream(retrieved: Retrieved) -> Response:
    """Turn a service result into a streamed response."""
    return StreamingResponse(
        retrieved.body, status_code=retrieved.status, media_type=retrieved.media_type, headers=retrieved.headers
    )
