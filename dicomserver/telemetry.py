"""OpenTelemetry: one span per DICOMweb request, and nothing in it that identifies a patient or a study.

Where spans go (any combination; with none configured telemetry is off and costs one check a request):

* Application Insights, when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (the function app gets it
  from infra/modules/functionapp.bicep): through the Azure Monitor OpenTelemetry distro, with the app's
  managed identity (Entra auth; the resource has local auth off).  The distro is configured by the HTTP
  adapter (``functions/_http.py``), which hands :func:`tracer` a :data:`AzureMonitor` callable: only the
  adapters and ``wiring.py`` import the Azure SDK (tests/unit/test_layering.py).  The same pipeline
  carries the audit records (:mod:`dicomserver.audit`) to the ``AppTraces`` table.
* stdout, one JSON object a line, when ``DICOM_TELEMETRY_CONSOLE=1`` (OpenTelemetry's ``ConsoleSpanExporter``).
* a JSON-lines file when ``DICOM_TELEMETRY_FILE`` names one (:class:`JsonLinesSpanExporter`).

A span is named ``"<METHOD> <route shape>"`` (``GET /v2/studies/{study}/series/{series}/metadata``), is of
kind SERVER, and has exactly the attributes :func:`request_attributes` builds: method, route shape, status
code, action, correlation id, the storage round trips of :mod:`dicomserver.opcount` and the elapsed time.
Never a URL, a query string, a header value, a UID or anything read from a dataset: :func:`route_shape`
keeps only the literal segments of the DICOMweb routes.  The distro's automatic instrumentations (FastAPI,
httpx, requests, urllib, the Azure SDK) stay off because the URLs they record carry UIDs, blob names and
FHIR search values.

Set-up happens once per process, lazily (the first request, in a worker thread: the distro may probe its
environment), and safely: a failure is logged once, telemetry stays off, and requests go on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .opcount import Operations
from .settings import Settings

__all__ = [
    "AzureMonitor",
    "JsonLinesSpanExporter",
    "configure",
    "current_tracer",
    "finish_request_span",
    "request_attributes",
    "reset_for_tests",
    "route_shape",
    "tracer",
]

log = logging.getLogger(__name__)

#: Instrumentation scope of the request spans, and ``service.name`` of the local exporters.
TRACER_NAME = "dicomserver"

#: Configures the Azure Monitor distro for ``settings`` and adds ``span_processors`` (the local exporters)
#: to the tracer provider it installs as the global one.
AzureMonitor = Callable[[Settings, Sequence[SpanProcessor]], None]

# -- route shapes ------------------------------------------------------------------------------------

#: Path segments kept as they are: the literal parts of every DICOMweb route (functions/*.py).
ROUTE_LITERALS = frozenset(
    {
        "studies",
        "series",
        "instances",
        "metadata",
        "rendered",
        "thumbnail",
        "frames",
        "bulkdata",
        "changefeed",
        "latest",
        "partitions",
        "extendedquerytags",
        "errors",
        "operations",
    }
)
#: Last segments that name an action, not a value (``/studies/count``, ``/studies/$bulkUpdate``).
ROUTE_ACTIONS = frozenset({"count", "$bulkUpdate"})
#: The placeholder of the segment that follows each of these.
ROUTE_PARAMETERS = {
    "studies": "{study}",
    "series": "{series}",
    "instances": "{instance}",
    "frames": "{frames}",
    "partitions": "{partition}",
    "extendedquerytags": "{tag}",
    "operations": "{operation}",
}
_API_VERSION = re.compile(r"v\d{1,3}")


def route_shape(path: str) -> str:
    """The path with every value replaced by its route parameter: what logs, spans and audit records may name.

    ``/v2/studies/1.2.3/series/4.5/metadata`` → ``/v2/studies/{study}/series/{series}/metadata``;
    ``.../bulkdata/7FE00010/...`` → ``.../bulkdata/{path}``; a segment that is neither a route literal nor
    a route parameter becomes ``{other}``, so a path cannot smuggle a name into telemetry.
    """
    shaped: list[str] = []
    previous = ""
    for segment in path.split("/"):
        if previous == "bulkdata" and segment:
            shaped.append("{path}")
            break
        if segment in ROUTE_ACTIONS:
            shaped.append(segment)
        elif segment and previous in ROUTE_PARAMETERS:
            shaped.append(ROUTE_PARAMETERS[previous])
        elif not segment or segment in ROUTE_LITERALS or _API_VERSION.fullmatch(segment):
            shaped.append(segment)
        else:
            shaped.append("{other}")
        previous = segment
    return "/".join(shaped)


# -- exporters ---------------------------------------------------------------------------------------


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one JSON object a line (OpenTelemetry's span JSON, unindented).

    One ``write`` per span on an ``O_APPEND`` descriptor, so the worker processes of the local host can
    share the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(span.to_json(indent=None) + "\n" for span in spans).encode()
        try:
            append_line(self.path, data)
        except OSError as exc:
            log.warning("telemetry file %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def append_line(path: str, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` with one write, creating the file (mode 600) if needed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def local_processors(settings: Settings) -> list[SpanProcessor]:
    """The span processors of the local destinations that ``settings`` ask for (synchronous: tests read at once)."""
    processors: list[SpanProcessor] = []
    if settings.telemetry_console:
        console = ConsoleSpanExporter(out=sys.stdout, formatter=lambda s: s.to_json(indent=None) + "\n")
        processors.append(SimpleSpanProcessor(console))
    if settings.telemetry_file:
        processors.append(SimpleSpanProcessor(JsonLinesSpanExporter(settings.telemetry_file)))
    return processors


# -- set-up ------------------------------------------------------------------------------------------


def configure(settings: Settings, azure_monitor: AzureMonitor | None = None) -> Tracer | None:
    """The tracer for ``settings``, or None when they ask for no destination.

    With a connection string (and ``azure_monitor``) the distro installs the global tracer provider,
    the local exporters included; otherwise a provider of this module's own is used and the global one
    is left alone (tests configure several times in one process).

    Raises whatever the distro or the exporters raise; :func:`tracer` turns that into "off".
    """
    processors = local_processors(settings)
    if settings.appinsights_connection_string and azure_monitor is not None:
        azure_monitor(settings, processors)
        return trace.get_tracer(TRACER_NAME)
    if not processors:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": TRACER_NAME}))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider.get_tracer(TRACER_NAME)


_lock = threading.Lock()
_configured = False
_tracer: Tracer | None = None


def tracer(azure_monitor: AzureMonitor | None = None) -> Tracer | None:
    """The process's tracer, configured from the environment on first call; None when telemetry is off.

    Never raises: a failed set-up is logged once (exception type and message) and leaves telemetry off
    for the life of the process.
    """
    global _configured, _tracer
    if _configured:
        return _tracer
    with _lock:
        if not _configured:
            try:
                _tracer = configure(Settings.from_env(), azure_monitor)
            except Exception as exc:  # noqa: BLE001 - telemetry must never fail a request
                log.warning("telemetry is off: its set-up failed (%s: %s)", type(exc).__name__, exc)
                _tracer = None
            _configured = True
    return _tracer


def current_tracer() -> Tracer | None:
    """The tracer :func:`tracer` configured, without configuring (None before the first call)."""
    return _tracer


def reset_for_tests() -> None:
    """Forget the configured tracer (the next :func:`tracer` call configures again)."""
    global _configured, _tracer
    with _lock:
        _configured = False
        _tracer = None


# -- request spans -----------------------------------------------------------------------------------


def request_attributes(
    *,
    method: str,
    route: str,
    status: int,
    action: str,
    correlation_id: str,
    ops: Operations,
    elapsed_ms: float,
) -> dict[str, Any]:
    """The attributes of a request span: the whole list (no URL, query, header value or UID)."""
    return {
        "http.request.method": method,
        "http.route": route,
        "http.response.status_code": status,
        "dicom.action": action,
        "dicom.correlation_id": correlation_id,
        "dicom.storage.blob_ops": ops.blob,
        "dicom.storage.index_ops": ops.index,
        "dicom.storage.queue_ops": ops.queue,
        "dicom.storage.request_charge": round(ops.request_charge, 2),
        "dicom.elapsed_ms": round(elapsed_ms, 1),
    }


def finish_request_span(
    tracer_: Tracer,
    *,
    headers: Mapping[str, str],
    start_time_ns: int,
    attributes: Mapping[str, Any],
) -> Span:
    """Record one ended request span, started at ``start_time_ns``, child of the caller's ``traceparent``.

    Returns the span (ended) so that records logged right after can be put in its context.
    """
    parent = TraceContextTextMapPropagator().extract(carrier=headers)
    name = f"{attributes['http.request.method']} {attributes['http.route']}"
    span = tracer_.start_span(
        name, context=parent, kind=SpanKind.SERVER, start_time=start_time_ns, attributes=dict(attributes)
    )
    if int(attributes["http.response.status_code"]) >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=time.time_ns())
    return span


def span_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The spans a :class:`JsonLinesSpanExporter` wrote (tests)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
