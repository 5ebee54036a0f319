"""Audit records (dicomserver/audit.py): built from the request and the caller only, one per request through
``functions/_http.py::handle``, refused ones included, and never a patient value."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from dicomserver import audit, telemetry
from dicomserver.auth import Action, JwtAuthenticator, Principal, StaticKeys, local_jwks_path
from dicomserver.errors import Forbidden, NotFound, Unauthorized
from dicomserver.settings import Settings
from functions import _http
from scripts.token import mint

STUDY, SERIES, SOP = "1.2.840.113619.2.55.3", "1.2.840.113619.2.55.3.4", "1.2.840.113619.2.55.3.4.5"
OID, APP = "6f1c2d3e-0000-4000-8000-00000000abcd", "0a1b2c3d-1111-4111-8111-000000000042"
OWNER = Principal(OID, frozenset({"DICOM.Data.Owner"}), object_id=OID, app_id=APP)
RECEIVED = datetime(2024, 1, 15, 10, 0, 0, 123456, tzinfo=UTC)
#: Values of the test instance that must never reach a record or a span.
PHI = ("Doe^John", "PAT-1", "19700101")


def record(**overrides: Any) -> audit.AuditRecord:
    arguments: dict[str, Any] = {
        "method": "GET",
        "path": f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata",
        "action": Action.READ,
        "status": 200,
        "caller": audit.caller_of(OWNER, 200, None),
        "correlation": "corr-1",
        "received": RECEIVED,
    }
    return audit.build(**{**arguments, **overrides})


# -- building records ------------------------------------------------------------------------------------


def test_a_record_names_caller_action_transaction_uids_status_time_and_correlation() -> None:
    assert json.loads(record().to_json()) == {
        "time": "2024-01-15T10:00:00.123456Z",
        "correlation_id": "corr-1",
        "action": "read",
        "transaction": "GET /v2/studies/{study}/series/{series}/instances/{instance}/metadata",
        "study_instance_uid": STUDY,
        "series_instance_uid": SERIES,
        "sop_instance_uid": SOP,
        "status": 200,
        "outcome": "success",
        "caller_object_id": OID,
        "caller_app_id": APP,
        "authenticated": True,
    }


def test_uids_come_from_the_path_levels_it_names() -> None:
    study = record(method="DELETE", path=f"/v2/studies/{STUDY}", action=Action.DELETE, status=204)
    assert (study.study_instance_uid, study.series_instance_uid, study.sop_instance_uid) == (STUDY, None, None)
    assert study.transaction == "DELETE /v2/studies/{study}" and study.action == "delete"
    search = record(path="/v2/studies")
    assert (search.study_instance_uid, search.series_instance_uid, search.sop_instance_uid) == (None, None, None)
    frames = record(path=f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1,2")
    assert frames.sop_instance_uid == SOP and frames.transaction.endswith("/frames/{frames}")


def test_a_path_with_an_invalid_uid_names_no_uid_and_no_path_text() -> None:
    bad = record(path="/v2/studies/Doe^John/series", status=400)
    assert bad.study_instance_uid is None and bad.outcome == "failure"
    assert "Doe" not in bad.to_json()


@pytest.mark.parametrize(("status", "outcome"), [(200, "success"), (204, "success"), (206, "success"),
                                                 (401, "refused"), (403, "refused"), (404, "failure"),
                                                 (503, "failure")])  # fmt: skip
def test_outcomes(status: int, outcome: str) -> None:
    assert record(status=status).outcome == outcome


def test_callers_anonymous_unknown_and_refused_with_a_valid_token() -> None:
    # DICOM_AUTH_MODE=none
    anonymous = audit.caller_of(Principal("anonymous", frozenset()), 200, None)
    assert anonymous == audit.ANONYMOUS == audit.Caller("anonymous", None, False)
    # 401: the token proved nothing, so it names no one (even if it claims an oid)
    claimed = jwt.encode({"oid": OID, "azp": APP}, "k" * 32, algorithm="HS256")
    assert audit.caller_of(None, 401, f"Bearer {claimed}") == audit.UNKNOWN == audit.Caller(None, None, False)
    assert audit.caller_of(None, 401, None) == audit.UNKNOWN
    # 403 comes after every check of the token: its oid and azp (or v1 appid) are the caller
    assert audit.caller_of(None, 403, f"Bearer {claimed}") == audit.Caller(OID, APP, True)
    v1 = jwt.encode({"oid": OID, "appid": APP}, "k" * 32, algorithm="HS256")
    assert audit.caller_of(None, 403, f"Bearer {v1}") == audit.Caller(OID, APP, True)
    assert audit.caller_of(None, 403, "Bearer not-a-jwt") == audit.Caller(None, None, True)
    # an id that is no identifier (a name, markup) is not recorded
    odd = jwt.encode({"oid": "Doe^John <script>", "azp": APP}, "k" * 32, algorithm="HS256")
    assert audit.caller_of(None, 403, f"Bearer {odd}").object_id is None


def test_a_token_gives_the_principal_its_object_and_app_ids(tmp_path: Path) -> None:
    settings = Settings(auth_mode="local", auth_local_key_dir=str(tmp_path))
    mint(settings, [])  # creates the key
    authenticator = JwtAuthenticator(
        keys=StaticKeys(json.loads(local_jwks_path(settings).read_text())),
        issuers=["urn:dicomserver:local"],
        audiences=settings.auth_audiences,
        owner_roles=["DICOM.Data.Owner"],
        reader_roles=[],
    )
    v2 = mint(settings, ["DICOM.Data.Owner"], extra={"oid": OID, "azp": APP})
    principal = authenticator.authenticate(f"Bearer {v2}", Action.WRITE)
    assert (principal.subject, principal.object_id, principal.app_id) == (OID, OID, APP)
    v1 = mint(settings, ["DICOM.Data.Owner"], extra={"oid": OID, "appid": APP})
    assert authenticator.authenticate(f"Bearer {v1}", Action.READ).app_id == APP
    no_oid = mint(settings, ["DICOM.Data.Owner"], extra={"oid": None})
    principal = authenticator.authenticate(f"Bearer {no_oid}", Action.READ)
    assert (principal.subject, principal.object_id, principal.app_id) == ("local-developer", None, None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ms-request-id": "req-123"}, "req-123"),
        ({"x-correlation-id": "mine-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
         "mine-1"),
        ({"x-ms-request-id": "a", "x-correlation-id": "b"}, "a"),
        ({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
         "0af7651916cd43dd8448eb211c80319c"),
    ],
)  # fmt: skip
def test_correlation_id_comes_from_the_request_headers(headers: dict[str, str], expected: str) -> None:
    assert audit.correlation_id(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-correlation-id": "Doe John\n{}"}, {"x-ms-request-id": "x" * 200}, {"traceparent": "garbage"},
     {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"}],
)  # fmt: skip
def test_without_a_usable_header_the_correlation_id_is_new(headers: dict[str, str]) -> None:
    first, second = audit.correlation_id(headers), audit.correlation_id(headers)
    assert first != second and len(first) == 32 and int(first, 16) >= 0


def test_records_go_to_the_audit_logger_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("DICOM_AUDIT_FILE", str(path))
    audit.reset_for_tests()
    try:
        with caplog.at_level(logging.INFO, logger=audit.LOGGER_NAME):
            audit.emit(record())
            audit.emit(record(status=404))
    finally:
        audit.reset_for_tests()
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == audit.LOGGER_NAME]
    assert [r["status"] for r in logged] == [200, 404]
    assert audit.records(str(path)) == logged
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_record_that_cannot_be_written_is_dropped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DICOM_AUDIT_FILE", str(tmp_path / "missing-folder" / "audit.jsonl"))
    audit.reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING):
            audit.emit(record())  # does not raise
    finally:
        audit.reset_for_tests()
    assert any("audit record was not written (FileNotFoundError" in r.getMessage() for r in caplog.records)


def test_record_fields_hold_no_dataset_values() -> None:
    # the record type has no field a dataset value could go in: what it names comes from the path and the token
    assert {f.name for f in fields(audit.AuditRecord)} == {
        "time", "correlation_id", "action", "transaction", "study_instance_uid", "series_instance_uid",
        "sop_instance_uid", "status", "outcome", "caller_object_id", "caller_app_id", "authenticated",
    }  # fmt: skip


# -- through handle(): one record (and one span) per request --------------------------------------------


class _Authenticator:
    def __init__(self, outcome: Principal | Exception) -> None:
        self.outcome = outcome

    def authenticate(self, authorization: str | None, action: Action) -> Principal:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """``(audit file, span file)`` of the requests the test sends through handle()."""
    audit_file, span_file = tmp_path / "audit.jsonl", tmp_path / "spans.jsonl"
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("DICOM_TELEMETRY_CONSOLE", raising=False)
    monkeypatch.setenv("DICOM_AUDIT_FILE", str(audit_file))
    monkeypatch.setenv("DICOM_TELEMETRY_FILE", str(span_file))
    monkeypatch.setattr(_http, "services", lambda: None)
    audit.reset_for_tests()
    telemetry.reset_for_tests()
    yield audit_file, span_file
    audit.reset_for_tests()
    telemetry.reset_for_tests()


def request(method: str, path: str, query: str = "", **headers: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "scheme": "http",
        "server": ("testserver", 80),
    }
    return Request(scope)


def send(
    monkeypatch: pytest.MonkeyPatch,
    req: Request,
    action: Action,
    outcome: Principal | Exception = OWNER,
    result: Response | Exception | None = None,
) -> Response:
    monkeypatch.setattr(_http, "authenticator", lambda: _Authenticator(outcome))

    async def call(svc: Any) -> Response:
        if isinstance(result, Exception):
            raise result
        return result if result is not None else Response(status_code=204)

    return asyncio.run(_http.handle(req, call, action))


def test_a_request_gets_one_record_one_span_and_its_correlation_header(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file, span_file = files
    req = request(
        "GET", f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}/metadata", "PatientName=Doe%5EJohn&PatientID=PAT-1"
    )
    response = send(monkeypatch, req, Action.READ, result=Response(b"[]", status_code=200))
    (written,) = audit.records(str(audit_file))
    assert response.headers["x-correlation-id"] == written["correlation_id"]
    assert response.headers["x-dicom-storage-ops"] == "blob=0;index=0;queue=0;ru=0.00"
    assert written["transaction"] == "GET /v2/studies/{study}/series/{series}/instances/{instance}/metadata"
    assert (written["status"], written["action"], written["caller_object_id"], written["caller_app_id"]) == (
        200,
        "read",
        OID,
        APP,
    )
    assert written["sop_instance_uid"] == SOP
    (span,) = telemetry.span_lines(span_file)
    assert span["name"] == "GET /v2/studies/{study}/series/{series}/instances/{instance}/metadata"
    assert span["attributes"]["dicom.correlation_id"] == written["correlation_id"]
    assert span["attributes"]["http.response.status_code"] == 200
    for text in (audit_file.read_text(), span_file.read_text()):
        assert not any(value in text for value in PHI)  # the query's search values are nowhere
    assert STUDY not in span_file.read_text()  # spans carry route shapes only


def test_refused_requests_are_recorded_with_what_is_known_of_the_caller(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file, span_file = files
    token = jwt.encode({"oid": OID, "azp": APP}, "k" * 32, algorithm="HS256")
    unauthorized = send(monkeypatch, request("GET", "/v2/studies"), Action.READ, Unauthorized("no token"))
    forbidden = send(
        monkeypatch,
        request("DELETE", f"/v2/studies/{STUDY}", authorization=f"Bearer {token}"),
        Action.DELETE,
        Forbidden("reader"),
    )
    assert (unauthorized.status_code, forbidden.status_code) == (401, 403)
    first, second = audit.records(str(audit_file))
    assert (first["status"], first["outcome"], first["caller_object_id"], first["authenticated"]) == (
        401,
        "refused",
        None,
        False,
    )
    assert (second["status"], second["action"], second["caller_object_id"], second["caller_app_id"]) == (
        403,
        "delete",
        OID,
        APP,
    )
    assert second["study_instance_uid"] == STUDY
    assert [s["attributes"]["http.response.status_code"] for s in telemetry.span_lines(span_file)] == [401, 403]


def test_anonymous_callers_and_errors_of_the_handler(files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    audit_file, _ = files
    anonymous = Principal("anonymous", frozenset())
    missing = send(monkeypatch, request("GET", f"/v2/studies/{STUDY}"), Action.READ, anonymous, NotFound("no study"))
    assert missing.status_code == 404
    with pytest.raises(RuntimeError):
        send(monkeypatch, request("POST", "/v2/studies"), Action.WRITE, anonymous, RuntimeError("bug"))
    first, second = audit.records(str(audit_file))
    assert (first["status"], first["caller_object_id"], first["authenticated"]) == (404, "anonymous", False)
    assert (second["status"], second["action"], second["transaction"]) == (500, "write", "POST /v2/studies")


def test_a_streamed_response_is_recorded_when_its_body_ends(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file, _ = files

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async def run() -> tuple[int, bool, bool]:
        monkeypatch.setattr(_http, "authenticator", lambda: _Authenticator(OWNER))

        async def call(svc: Any) -> Response:
            return StreamingResponse(body(), status_code=200)

        response = await _http.handle(request("GET", f"/v2/studies/{STUDY}"), call, Action.READ)
        assert isinstance(response, StreamingResponse)
        before = audit_file.exists()
        chunks = [c async for c in response.body_iterator]
        return len(chunks), before, audit_file.exists()

    assert asyncio.run(run()) == (2, False, True)
    assert len(audit.records(str(audit_file))) == 1


def test_telemetry_or_audit_failures_never_fail_the_request(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter down")

    monkeypatch.setattr(telemetry, "finish_request_span", broken)
    monkeypatch.setattr(audit, "append_line", broken)
    response = send(monkeypatch, request("GET", "/v2/studies"), Action.READ)
    assert response.status_code == 204
