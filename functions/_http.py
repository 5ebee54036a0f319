"""The one HTTP adapter: every DICOMweb function is a one-line body under :func:`dicomweb`.

:func:`dicomweb` turns a core call into an Azure Functions HTTP function: it
authenticates the caller and authorizes the transaction's :class:`Action`
(declared once per function, :func:`dicomserver.auth.authorize`), parses the
path into a :class:`~dicomserver.urls.DicomWebUrl` (400 for a bad UID), hands
the handler a :class:`DicomWebRequest`, turns what the core returns into a
response (:func:`respond`) and every :class:`DicomServerError` into a
DICOM-style error body (:func:`error_response`, the only place that does).
The storage round trips a request made are returned in ``x-dicom-storage-ops``
and logged when its body ends, with the request's span (dicomserver/telemetry.py)
and audit record (dicomserver/audit.py); ``x-correlation-id`` names the request.

Data partitions (:mod:`dicomserver.partitions`): every function at a DICOMweb
resource route (``v2/studies...``, ``v2/series...``, ``v2/instances...``) has a twin at
``v2/partitions/{partition}/...`` named ``<name>_in_partition`` (:func:`in_partitions`
builds them, ``function_app.py`` registers them: Functions routes are fixed templates,
one trigger per function).  :func:`dicomweb` takes the partition from the path, applies
the enabled/disabled rules, records the partition before its first store, and gives
the handler a :class:`~dicomserver.urls.DicomWebUrl` in that partition and an index
whose searches run only there.
"""

import asyncio
import functools
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import SpanProcessor

from dicomserver import audit, opcount, telemetry
from dicomserver.auth import Action, Principal
from dicomserver.errors import DicomServerError
from dicomserver.identifiers import DEFAULT_PARTITION
from dicomserver.mediatypes import APPLICATION_DICOM_JSON
from dicomserver.partitions import partition_of_path, prepare_partition
from dicomserver.settings import Settings
from dicomserver.stow import StoreResponse
from dicomserver.transcode import DecodeBudget
from dicomserver.urls import DicomWebUrl
from dicomserver.wado import Retrieved, decode_budget
from dicomserver.wiring import Services, authenticator, services

log = logging.getLogger(__name__)

API_VERSION = "v2"
#: The path segment before a partition name: ``/v2/partitions/{partition}/studies/...``.
PARTITIONS_SEGMENT = "partitions"
#: The resources that live in a data partition (STOW, WADO, QIDO, DELETE); the rest stays at the base.
PARTITIONED_RESOURCES = frozenset({"studies", "series", "instances"})
#: What a partitioned twin's function name ends with (:func:`in_partitions`).
PARTITION_FUNCTION_SUFFIX = "_in_partition"


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

    async def read_body(self, limit: int, too_large: Callable[[str], DicomServerError]) -> bytes:
        """The whole (small) request body; ``too_large(message)`` is raised once it passes ``limit`` bytes."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.body:
            size += len(chunk)
            if size > limit:
                raise too_large(f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    @property
    def body(self) -> AsyncIterator[bytes]:
        return self.req.stream()

    @property
    def budget(self) -> DecodeBudget:
        return decode_budget(self.svc.settings)


#: What a handler may return; :func:`respond` turns each into a response.
Result = Response | Retrieved | StoreResponse | list[dict[str, Any]] | dict[str, Any] | None
Handler = Callable[[DicomWebRequest], Awaitable[Result]]


def respond(result: Result) -> Response:
    """A core result as a response: streamed body, STOW JSON, QIDO JSON (204 when empty), or 204."""
    if isinstance(result, Response):
        return result
    if isinstance(result, Retrieved):
        return StreamingResponse(
            result.body, status_code=result.status, media_type=result.media_type, headers=result.headers
        )
    if isinstance(result, dict):  # e.g. a QIDO count: plain JSON
        return plain_json(result)
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
                partition, path = await request_partition(req.url.path, svc, action)
                url = DicomWebUrl.parse(path, base_url(req, svc), partition)
                return respond(await handler(DicomWebRequest(req, svc, url)))

            return await handle(req, call, action)

        function.__name__ = handler.__name__
        function.__qualname__ = handler.__qualname__
        function.__doc__ = handler.__doc__
        function.__module__ = handler.__module__
        function.action = action  # type: ignore[attr-defined]
        return function

    return decorate


# -- data partitions ------------------------------------------------------------------------------


def split_partition(path: str) -> tuple[str | None, str]:
    """``/v2/partitions/{name}/rest`` → ``(name, "/v2/rest")``; any other path → ``(None, path)``."""
    segments = path.split("/")
    while segments and not segments[0]:
        segments.pop(0)
    if len(segments) >= 4 and segments[0] == API_VERSION and segments[1].lower() == PARTITIONS_SEGMENT:
        return segments[2], "/" + "/".join([segments[0], *segments[3:]])
    return None, path


def _resource(path: str) -> list[str]:
    """The segments after the API version (``/v2/studies/1.2`` → ``["studies", "1.2"]``)."""
    segments = [s for s in path.split("/") if s]
    return segments[1:] if segments and segments[0] == API_VERSION else segments


def creates_partition(path: str, action: Action) -> bool:
    """Whether a request stores instances (POST or PUT ``/studies[/{study}]``), so creates its partition."""
    resource = _resource(path)
    return (
        action is Action.WRITE
        and 1 <= len(resource) <= 2
        and resource[0].lower() == "studies"
        and not resource[-1].startswith("$")  # studies/$bulkUpdate changes what exists
    )


async def request_partition(path: str, svc: Services, action: Action) -> tuple[str, str]:
    """The data partition a request addresses and its path without ``/partitions/{name}``.

    DICOMweb resources (:data:`PARTITIONED_RESOURCES`) follow :func:`dicomserver.partitions.partition_of_path`
    and, with partitions on, must exist (a store creates its partition); anything else is at the base path.

    Raises
    ------
    BadRequest
        For a path that breaks the partition rules, or a read or delete in a partition that does not exist.
    """
    name, rest = split_partition(path)
    resource = _resource(rest)
    if not resource or resource[0].lower() not in PARTITIONED_RESOURCES:
        return DEFAULT_PARTITION, rest
    enabled = svc.settings.data_partitions_enabled
    partition = partition_of_path(name, enabled=enabled)
    if enabled:
        await prepare_partition(svc.partitions, partition, creates=creates_partition(rest, action))
    return partition, rest


def partitioned_route(route: str) -> str | None:
    """The partitioned twin of a DICOMweb resource route (``v2/studies/{study}`` →
    ``v2/partitions/{partition}/studies/{study}``); None for a route that stays at the base."""
    parts = [p for p in route.split("/") if p]
    if len(parts) < 2 or parts[0] != API_VERSION or parts[1].lower() not in PARTITIONED_RESOURCES:
        return None
    return "/".join([API_VERSION, PARTITIONS_SEGMENT, "{partition}", *parts[1:]])


def in_partitions(*blueprints: func.Blueprint) -> func.Blueprint:
    """A blueprint with the partitioned twin of every DICOMweb resource function of ``blueprints``.

    Each twin calls the same function at :func:`partitioned_route` of its route, with the same
    methods and auth level, and is named ``<name>_in_partition``.  Register it next to the
    blueprints (``function_app.py``).
    """
    scratch = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)  # to read the functions, not run them
    for blueprint in blueprints:
        scratch.register_functions(blueprint)
    twins = func.Blueprint()
    for function in scratch.get_functions():
        trigger = function.get_trigger()
        route = getattr(trigger, "route", None)
        methods = getattr(trigger, "methods", None)
        twin_route = partitioned_route(route) if isinstance(route, str) and methods is not None else None
        if twin_route is None:
            continue
        twin = _twin(function.get_user_function(), function.get_function_name() + PARTITION_FUNCTION_SUFFIX)
        twins.route(route=twin_route, methods=methods, auth_level=getattr(trigger, "auth_level", None))(twin)
    return twins


def _twin(user: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``user`` under another function name (same parameters, annotations and ``action``)."""
    if not inspect.iscoroutinefunction(user):
        raise TypeError(f"{user.__name__}: a DICOMweb function must be async (@dicomweb)")

    @functools.wraps(user)
    async def twin(req: Request) -> Response:
        response: Response = await user(req)
        return response

    twin.__name__ = twin.__qualname__ = name
    return twin


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
    ``x-dicom-storage-ops`` header, its correlation id in ``x-correlation-id``.
    When the response ends (a streamed body: when its last chunk is sent) the
    request gets its log line with every round trip, its span
    (:mod:`dicomserver.telemetry`) and its audit record (:mod:`dicomserver.audit`).
    """
    exchange = _Exchange(req, action)
    try:
        # In a worker thread: authentication may fetch the JWKS (dicomserver/auth.py), and the first
        # request of the process sets telemetry up.
        exchange.principal = await asyncio.to_thread(_authenticate, req.headers.get("authorization"), action)
        response = await call(services())
    except DicomServerError as exc:
        if exc.status >= 500:
            log.warning("request failed status=%s: %s", exc.status, exc.message)
        response = error_response(exc)
    except Exception:
        exchange.finish(500)  # the worker answers 500; the request is still logged, traced and audited
        raise
    response.headers[opcount.HEADER] = exchange.ops.header_value()
    response.headers[audit.CORRELATION_HEADER] = exchange.correlation_id
    if isinstance(response, StreamingResponse):
        response.body_iterator = _finished_after(response.body_iterator, exchange, response.status_code)
    else:
        exchange.finish(response.status_code)
    return response


def _authenticate(authorization: str | None, action: Action) -> Principal:
    telemetry.tracer(_configure_azure_monitor)  # once per process; never raises
    return authenticator().authenticate(authorization, action)


class _Exchange:
    """One request on its way through :func:`handle`: what its log line, span and audit record need."""

    def __init__(self, req: Request, action: Action) -> None:
        self.req = req
        self.action = action
        self.ops = opcount.start()
        self.started = time.perf_counter()
        self.start_time_ns = time.time_ns()
        self.received = datetime.now(UTC)
        self.correlation_id = audit.correlation_id(req.headers)
        self.principal: Principal | None = None
        self._finished = False

    def finish(self, status: int) -> None:
        """Log, trace and audit the request (once; each step on its own, none can raise)."""
        if self._finished:
            return
        self._finished = True
        req = self.req
        route = telemetry.route_shape(req.url.path)
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        log.info(
            "request method=%s route=%s status=%d blob_ops=%d index_ops=%d queue_ops=%d request_charge=%.2f "
            "elapsed_ms=%.1f correlation_id=%s",
            req.method,
            route,
            status,
            self.ops.blob,
            self.ops.index,
            self.ops.queue,
            self.ops.request_charge,
            elapsed_ms,
            self.correlation_id,
        )
        span = None
        try:
            tracer = telemetry.current_tracer()
            if tracer is not None:
                attributes = telemetry.request_attributes(
                    method=req.method,
                    route=route,
                    status=status,
                    action=self.action.value,
                    correlation_id=self.correlation_id,
                    ops=self.ops,
                    elapsed_ms=elapsed_ms,
                )
                span = telemetry.finish_request_span(
                    tracer, headers=req.headers, start_time_ns=self.start_time_ns, attributes=attributes
                )
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail a request
            log.warning("request span not recorded (%s: %s)", type(exc).__name__, exc)
        try:
            authorization = req.headers.get("authorization")
            record = audit.build(
                method=req.method,
                path=req.url.path,
                action=self.action,
                status=status,
                caller=audit.caller_of(self.principal, status, authorization),
                correlation=self.correlation_id,
                received=self.received,
            )
        except Exception as exc:  # noqa: BLE001 - auditing must never fail a request
            log.warning("audit record not built (%s: %s)", type(exc).__name__, exc)
            return
        if span is None:
            audit.emit(record)
        else:
            with otel_trace.use_span(span, end_on_exit=False):  # the record gets the span's operation id
                audit.emit(record)


async def _finished_after(body: AsyncIterator[bytes], exchange: _Exchange, status: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        exchange.finish(status)


#: The Azure Monitor distro's automatic instrumentations, all kept off: the URLs they record carry UIDs,
#: blob names and FHIR search values (azure-monitor-opentelemetry 1.8's list; tests/unit/test_telemetry.py
#: fails when a new version adds one).
AZURE_MONITOR_INSTRUMENTATIONS = (
    "azure_sdk",
    "django",
    "fastapi",
    "flask",
    "httpx",
    "httpx2",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)


def _configure_azure_monitor(settings: Settings, span_processors: Sequence[SpanProcessor]) -> None:
    """Send request spans and audit records to Application Insights (:data:`telemetry.AzureMonitor`).

    In Azure the managed identity (``AZURE_CLIENT_ID``) authenticates the exporter: the Application
    Insights resource accepts Entra tokens only.  Only the ``dicomserver.audit`` logger is exported (the
    worker already forwards the other logs to the Functions host); those records stop propagating to the
    root logger so that the host does not send them a second time, sampled.
    """
    from azure.monitor.opentelemetry import configure_azure_monitor

    options: dict[str, Any] = {}
    if settings.running_in_azure:
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    # Without a credential the exporter reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING, as the host does.
    configure_azure_monitor(
        connection_string=settings.appinsights_connection_string,
        logger_name=audit.LOGGER_NAME,
        instrumentation_options={name: {"enabled": False} for name in AZURE_MONITOR_INSTRUMENTATIONS},
        span_processors=list(span_processors),
        enable_live_metrics=False,
        enable_performance_counters=False,
        browser_sdk_loader_config={"enabled": False},
        **options,
    )
    logging.getLogger(audit.LOGGER_NAME).propagate = False
