"""The one HTTP adapter: every DICOMweb function is a one-line body under :func:`dicomweb`.

:func:`dicomweb` turns a core call into an Azure Functions HTTP function: it
authenticates the caller and authorizes the transaction's :class:`Action`
(declared once per function, :func:`dicomserver.auth.authorize`), parses the
path into a :class:`~dicomserver.urls.DicomWebUrl` (400 for a bad UID), hands
the handler a :class:`DicomWebRequest`, turns what the core returns into a
response (:func:`respond`) and every :class:`DicomServerError` into a
DICOM-style error body (:func:`error_response`, the only place that does).
The storage round trips a request made are returned in ``x-dicom-storage-ops``
and logged when its body ends.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from dicomserver import opcount
from dicomserver.auth import Action
from dicomserver.errors import DicomServerError
from dicomserver.mediatypes import APPLICATION_DICOM_JSON
from dicomserver.stow import StoreResponse
from dicomserver.transcode import DecodeBudget
from dicomserver.urls import DicomWebUrl
from dicomserver.wado import Retrieved, decode_budget
from dicomserver.wiring import Services, authenticator, services

log = logging.getLogger(__name__)

API_VERSION = "v2"


def base_url(req: Request, svc: Services) -> str:
    """The public DICOMweb base URL (``.../v2``) for RetrieveURL and BulkDataURI values."""
    root = svc.settings.public_base_url or f"{req.url.scheme}://{req.headers.get('host', req.url.netloc)}"
    return f"{root}/{API_VERSION}"


@dataclass(frozen=True, slots=True)
class DicomWebRequest:
    """What a DICOMweb handler reads: the request, the process-wide services and the parsed path."""

    req: Request
    svc: Services
    url: DicomWebUrl

    @property
    def accept(self) -> str | None:
        """What the client accepts: PS3.18 §8.3.3.1's ``accept`` query parameter, else the Accept header.

        The parameter (one or more comma-separated media types, possibly repeated) takes priority over
        the header (§8.7.8.1), so a browser link or an ``<img src>`` can ask for e.g. ``image/png``.
        """
        values = [v for k, v in self.req.query_params.multi_items() if k.lower() == "accept" and v.strip()]
        if values:
            return ", ".join(values)
        return self.req.headers.get("accept")

    def header(self, name: str) -> str | None:
        return self.req.headers.get(name)

    @property
    def params(self) -> list[tuple[str, str]]:
        """The query parameters, repeated ones included, in order."""
        return self.req.query_params.multi_items()

    def param(self, name: str) -> str | None:
        return self.req.query_params.get(name)

    @property
    def body(self) -> AsyncIterator[bytes]:
        return self.req.stream()

    @property
    def budget(self) -> DecodeBudget:
        return decode_budget(self.svc.settings)


#: What a handler may return; :func:`respond` turns each into a response.
Result = Response | Retrieved | StoreResponse | list[dict[str, Any]] | None
Handler = Callable[[DicomWebRequest], Awaitable[Result]]


def respond(result: Result) -> Response:
    """A core result as a response: streamed body, STOW JSON, QIDO JSON (204 when empty), or 204."""
    if isinstance(result, Response):
        return result
    if isinstance(result, Retrieved):
        return StreamingResponse(
            result.body, status_code=result.status, media_type=result.media_type, headers=result.headers
        )
    if isinstance(result, StoreResponse):
        return Response(json.dumps(result.body), status_code=result.status, media_type=APPLICATION_DICOM_JSON)
    if result is None or not result:
        return Response(status_code=204)
    return Response(json.dumps(result), media_type=APPLICATION_DICOM_JSON)


def plain_json(value: object) -> Response:
    """A JSON body as ``application/json`` (the change feed; an empty list stays ``[]``)."""
    return Response(json.dumps(value), media_type="application/json")


def dicomweb(action: Action) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Make ``handler`` an HTTP function that needs ``action`` (see the module docstring).

    The returned function has the ``req: Request`` signature the Functions
    worker binds, and the handler's name (the function's name in Azure).
    """

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def function(req: Request) -> Response:
            async def call(svc: Services) -> Response:
                url = DicomWebUrl.parse(req.url.path, base_url(req, svc))
                return respond(await handler(DicomWebRequest(req, svc, url)))

            return await handle(req, call, action)

        function.__name__ = handler.__name__
        function.__qualname__ = handler.__qualname__
        function.__doc__ = handler.__doc__
        function.__module__ = handler.__module__
        function.action = action  # type: ignore[attr-defined]
        return function

    return decorate


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


async def handle(req: Request, call: Callable[[Services], Awaitable[Response]], action: Action) -> Response:
    """Authenticate the caller and authorize ``action``, then run ``call`` with the process-wide services.

    Errors become responses here and nowhere else.  The storage round trips
    the request made before its response starts are returned in the
    ``x-dicom-storage-ops`` header; the log line at its end has them all.
    """
    ops = opcount.start()
    started = time.perf_counter()
    try:
        # In a worker thread: authentication may fetch the JWKS (dicomserver/auth.py).
        await asyncio.to_thread(authenticator().authenticate, req.headers.get("authorization"), action)
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
