"""Request spans (dicomserver/telemetry.py): off without settings, to stdout or a JSON-lines file when asked,
Azure Monitor's distro wired with the app identity and no automatic instrumentation, and never a UID."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from dicomserver import telemetry
from dicomserver.opcount import Operations
from dicomserver.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STUDY, SERIES, SOP = "1.2.840.113619.2.55.3", "1.2.840.113619.2.55.3.4", "1.2.840.113619.2.55.3.4.5"


@pytest.fixture(autouse=True)
def _fresh_telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "DICOM_TELEMETRY_CONSOLE", "DICOM_TELEMETRY_FILE"):
        monkeypatch.delenv(name, raising=False)
    telemetry.reset_for_tests()
    yield
    telemetry.reset_for_tests()


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v2/studies", "/v2/studies"),
        (f"/v2/studies/{STUDY}", "/v2/studies/{study}"),
        (f"/v2/studies/{STUDY}/series/{SERIES}/metadata", "/v2/studies/{study}/series/{series}/metadata"),
        (
            f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1,2/rendered",
            "/v2/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        ),
        (
            f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}/bulkdata/00282000/1/7FE00010",
            "/v2/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}",
        ),
        ("/v2/series", "/v2/series"),
        (f"/v2/studies/{STUDY}/instances", "/v2/studies/{study}/instances"),
        ("/v2/changefeed/latest", "/v2/changefeed/latest"),
        (f"/v2/partitions/site-a/studies/{STUDY}/metadata", "/v2/partitions/{partition}/studies/{study}/metadata"),
        ("/v2/studies/count", "/v2/studies/count"),
        ("/v2/studies/$bulkUpdate", "/v2/studies/$bulkUpdate"),
        ("/v2/operations/9a4f0c", "/v2/operations/{operation}"),
        ("/v2/extendedquerytags/PatientAge/errors", "/v2/extendedquerytags/{tag}/errors"),
        # whatever a client puts in a path that no route has never reaches telemetry
        ("/v2/studies/Doe^John/series", "/v2/studies/{study}/series"),
        ("/v2/Doe^John/studies", "/v2/{other}/studies"),
        ("/v2/studies/1.2/whatever/Doe", "/v2/studies/{study}/{other}/{other}"),
    ],
)
def test_route_shapes_keep_route_literals_only(path: str, shape: str) -> None:
    assert telemetry.route_shape(path) == shape


def test_no_settings_no_telemetry() -> None:
    before = trace.get_tracer_provider()
    assert telemetry.configure(Settings()) is None
    assert telemetry.tracer() is None and telemetry.current_tracer() is None
    # an Application Insights connection string without the Azure Monitor wiring configures nothing either
    assert telemetry.configure(Settings(appinsights_connection_string="InstrumentationKey=x")) is None
    assert trace.get_tracer_provider() is before  # the global provider is left alone


def test_local_destinations_are_what_the_settings_ask_for(tmp_path: Path) -> None:
    assert telemetry.local_processors(Settings()) == []
    both = telemetry.local_processors(Settings(telemetry_console=True, telemetry_file=str(tmp_path / "s.jsonl")))
    exporters = [p.span_exporter for p in both if isinstance(p, SimpleSpanProcessor)]
    assert len(exporters) == 2
    assert isinstance(exporters[0], ConsoleSpanExporter)
    assert isinstance(exporters[1], telemetry.JsonLinesSpanExporter) and exporters[1].path == str(tmp_path / "s.jsonl")


def _span(tracer: trace.Tracer, status: int = 200, **headers: str) -> None:
    ops = Operations(blob=2, index=3, queue=1, request_charge=7.456)
    attributes = telemetry.request_attributes(
        method="GET",
        route=telemetry.route_shape(f"/v2/studies/{STUDY}/series/{SERIES}/metadata"),
        status=status,
        action="read",
        correlation_id="corr-1",
        ops=ops,
        elapsed_ms=12.345,
    )
    telemetry.finish_request_span(tracer, headers=headers, start_time_ns=1_000_000_000, attributes=attributes)


EXPECTED_ATTRIBUTES = {
    "http.request.method": "GET",
    "http.route": "/v2/studies/{study}/series/{series}/metadata",
    "http.response.status_code": 200,
    "dicom.action": "read",
    "dicom.correlation_id": "corr-1",
    "dicom.storage.blob_ops": 2,
    "dicom.storage.index_ops": 3,
    "dicom.storage.queue_ops": 1,
    "dicom.storage.request_charge": 7.46,
    "dicom.elapsed_ms": 12.3,
}


def test_file_exporter_writes_one_json_line_per_span_with_the_request_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("DICOM_TELEMETRY_FILE", str(path))
    tracer = telemetry.tracer()
    assert tracer is not None and telemetry.tracer() is tracer  # configured once
    _span(tracer)
    _span(tracer, status=503, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    first, second = telemetry.span_lines(path)
    assert first["name"] == "GET /v2/studies/{study}/series/{series}/metadata"
    assert first["kind"] == "SpanKind.SERVER"
    assert first["attributes"] == EXPECTED_ATTRIBUTES
    assert first["resource"]["attributes"]["service.name"] == "dicomserver"
    assert first["status"]["status_code"] == "UNSET" and second["status"]["status_code"] == "ERROR"
    # a caller's traceparent makes the span part of the caller's trace
    assert second["context"]["trace_id"] == "0x0af7651916cd43dd8448eb211c80319c"
    assert second["parent_id"] == "0xb7ad6b7169203331"
    text = path.read_text()
    assert STUDY not in text and SERIES not in text  # no UID anywhere in a span


def test_console_exporter_prints_one_json_line_per_span(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOM_TELEMETRY_CONSOLE", "1")
    tracer = telemetry.tracer()
    assert tracer is not None
    _span(tracer)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    assert json.loads(lines[0])["attributes"] == EXPECTED_ATTRIBUTES


def test_a_failed_set_up_leaves_telemetry_off_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def broken(settings: Settings, processors: list[SpanProcessor]) -> None:
        calls.append(settings)
        raise RuntimeError("no ingestion endpoint")

    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=0000")
    with caplog.at_level(logging.WARNING, logger="dicomserver.telemetry"):
        assert telemetry.tracer(broken) is None
        assert telemetry.tracer(broken) is None
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "telemetry is off: its set-up failed (RuntimeError: no ingestion endpoint)"
    ]


def test_settings_that_do_not_parse_leave_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_MAX_DECODED_BYTES", "lots")
    assert telemetry.tracer() is None


def test_with_a_connection_string_the_azure_monitor_wiring_gets_the_local_processors_too(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def azure_monitor(settings: Settings, processors: list[SpanProcessor]) -> None:
        seen["settings"], seen["processors"] = settings, processors

    settings = Settings(appinsights_connection_string="InstrumentationKey=x", telemetry_file=str(tmp_path / "s"))
    assert telemetry.configure(settings, azure_monitor) is not None
    assert seen["settings"] is settings
    assert [type(p.span_exporter) for p in seen["processors"]] == [telemetry.JsonLinesSpanExporter]


def test_the_http_adapter_turns_off_every_automatic_instrumentation_of_the_distro() -> None:
    from azure.monitor.opentelemetry._constants import _ALL_SUPPORTED_INSTRUMENTED_LIBRARIES

    from functions._http import AZURE_MONITOR_INSTRUMENTATIONS

    # a new distro version that adds one must be looked at: its URLs could carry UIDs or search values
    assert set(_ALL_SUPPORTED_INSTRUMENTED_LIBRARIES) <= set(AZURE_MONITOR_INSTRUMENTATIONS)


AZURE_MONITOR_PROBE = textwrap.dedent(
    """
    import json, logging, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from dicomserver import audit, telemetry
    from functions import _http

    tracer = telemetry.tracer(_http._configure_azure_monitor)
    audit_logger = logging.getLogger(audit.LOGGER_NAME)
    import httpx
    from azure.core.settings import settings as azure_settings
    print(json.dumps({
        "tracer": tracer is not None,
        "sdk_provider": isinstance(trace.get_tracer_provider(), TracerProvider),
        "audit_handlers": [type(h).__name__ for h in audit_logger.handlers],
        "audit_propagates": audit_logger.propagate,
        "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
        "httpx_instrumented": hasattr(httpx.Client.send, "__wrapped__"),
        "azure_sdk_tracing": azure_settings.tracing_implementation() is not None,
    }))
    """
)


def test_the_real_distro_exports_spans_and_the_audit_logger_only() -> None:
    """``_configure_azure_monitor`` with azure-monitor-opentelemetry itself, in a child process (global state),
    pointed at a closed local port, with the SDK's calls home (statsbeat, OneSettings) off."""
    env = {
        **os.environ,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
        ),
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
    }
    for name in ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "DICOM_TELEMETRY_FILE", "DICOM_TELEMETRY_CONSOLE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", AZURE_MONITOR_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["tracer"] and probe["sdk_provider"]
    assert probe["audit_handlers"] == ["LoggingHandler"] and probe["audit_propagates"] is False
    assert "LoggingHandler" not in probe["root_handlers"]  # other logs go the worker's way, not exported twice
    assert not probe["httpx_instrumented"] and not probe["azure_sdk_tracing"]
