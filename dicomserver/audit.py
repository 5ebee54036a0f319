"""Audit records: one per DICOMweb request, refused ones included: who did what to which resource, and how it ended.

A record (:class:`AuditRecord`, one JSON object) names the caller by the token's object id (``oid``) and
client app id (``azp``, or ``appid`` in v1 tokens) — ``anonymous`` with ``DICOM_AUTH_MODE=none``, no id
for a token refused with 401 —, the action (read, write, delete), the transaction (method and route
shape, :func:`dicomserver.telemetry.route_shape`), the study, series and SOP instance UIDs of the path
(validated UIDs only), the HTTP status, the time the request arrived (UTC) and a correlation id (the
``x-correlation-id`` response header).  Never a query string, a header value or anything read from a
dataset: audit records hold no patient data.

Where they go:

* the ``dicomserver.audit`` logger (:data:`LOGGER_NAME`), message = the JSON object.  In Azure the HTTP
  adapter points the Azure Monitor distro's log exporter at this logger, so every record reaches
  Application Insights unsampled as an ``AppTraces`` row with ``Properties.logger_name ==
  "dicomserver.audit"``; the Log Analytics function ``DicomAuditLogs`` (infra/modules/monitoring.bicep)
  turns those rows into columns, as the Azure DICOM service's ``AuditLogs`` category does.  Without the
  exporter the records go wherever the process's logging goes (the local host's console).
* a JSON-lines file when ``DICOM_AUDIT_FILE`` names one (local runs and tests), one ``write`` a record.

Writing a record never fails a request: errors are logged (without the record) and dropped.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from .auth import Action, Principal
from .errors import BadRequest
from .settings import Settings
from .telemetry import append_line, route_shape
from .urls import DicomWebUrl

__all__ = [
    "ANONYMOUS",
    "CORRELATION_HEADER",
    "LOGGER_NAME",
    "UNKNOWN",
    "AuditRecord",
    "Caller",
    "build",
    "caller_of",
    "correlation_id",
    "emit",
    "reset_for_tests",
]

#: The logger (category) of the audit records.
LOGGER_NAME = "dicomserver.audit"
#: The response header that returns a request's correlation id.
CORRELATION_HEADER = "x-correlation-id"

log = logging.getLogger(LOGGER_NAME)
log.setLevel(logging.INFO)
_errors = logging.getLogger(__name__ + ".errors")

#: Request headers whose value is taken as the correlation id, in this order (then ``traceparent``).
CORRELATION_REQUEST_HEADERS = ("x-ms-request-id", CORRELATION_HEADER)
#: What a correlation id or caller id taken from a request may look like (anything else is not used).
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, as far as its token tells."""

    #: The token's ``oid``; ``"anonymous"`` without authentication; None when the token was refused (401).
    object_id: str | None
    #: The client application: ``azp`` or ``appid``.
    app_id: str | None
    #: Whether the token was valid (401s and ``DICOM_AUTH_MODE=none`` are not).
    authenticated: bool


#: The caller when ``DICOM_AUTH_MODE=none``.
ANONYMOUS = Caller("anonymous", None, False)
#: The caller of a request whose token was refused before anyone was identified (401).
UNKNOWN = Caller(None, None, False)


def _safe(value: object) -> str | None:
    return value if isinstance(value, str) and _SAFE_ID.fullmatch(value) else None


def caller_of(principal: Principal | None, status: int, authorization: str | None) -> Caller:
    """The caller of a request: from the authenticated ``principal``, else from what the status tells.

    A 403 comes only after the token passed every check (signature, lifetime, issuer, audience,
    dicomserver/auth.py) and lacked the role, so its ``oid`` and ``azp``/``appid`` are read from it; a 401's
    token proved nothing and names no one.
    """
    if principal is not None:
        if principal.object_id is None and principal.subject == ANONYMOUS.object_id and not principal.roles:
            return ANONYMOUS  # NoAuthentication's principal (a token's principal always has a role)
        return Caller(_safe(principal.object_id or principal.subject), _safe(principal.app_id), True)
    if status == 403 and authorization:
        claims = _verified_elsewhere_claims(authorization)
        return Caller(
            _safe(claims.get("oid") or claims.get("sub")), _safe(claims.get("azp") or claims.get("appid")), True
        )
    return UNKNOWN


def _verified_elsewhere_claims(authorization: str) -> dict[str, Any]:
    """The claims of a bearer token that the authenticator verified before refusing it with 403."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def correlation_id(headers: Mapping[str, str]) -> str:
    """The request's correlation id: ``x-ms-request-id``, ``x-correlation-id``, the trace id of
    ``traceparent``, the first of them that is present and well formed, else a new random one."""
    for name in CORRELATION_REQUEST_HEADERS:
        value = _safe((headers.get(name) or "").strip())
        if value:
            return value
    parent = _TRACEPARENT.fullmatch((headers.get("traceparent") or "").strip().lower())
    if parent and parent.group(1) != "0" * 32:
        return parent.group(1)
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record; :meth:`to_json` is what is logged and written."""

    #: When the request arrived, ISO 8601 UTC (``2024-01-15T10:00:00.000000Z``).
    time: str
    correlation_id: str
    #: read, write or delete: what the transaction needs (its app role).
    action: str
    #: Method and route shape: ``GET /v2/studies/{study}/series/{series}/metadata``.
    transaction: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    status: int
    #: ``success`` (< 400), ``refused`` (401, 403) or ``failure``.
    outcome: str
    caller_object_id: str | None
    caller_app_id: str | None
    #: Whether the caller presented a valid token.
    authenticated: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "refused"
    return "failure"


def build(
    *,
    method: str,
    path: str,
    action: Action,
    status: int,
    caller: Caller,
    correlation: str,
    received: datetime,
) -> AuditRecord:
    """The record of one request; UIDs come from the path, and only when the path's UIDs are valid."""
    try:
        url = DicomWebUrl.parse(path)
    except BadRequest:
        url = DicomWebUrl()
    return AuditRecord(
        time=received.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        correlation_id=correlation,
        action=action.value,
        transaction=f"{method.upper()} {route_shape(path)}",
        study_instance_uid=url.study,
        series_instance_uid=url.series,
        sop_instance_uid=url.instance,
        status=status,
        outcome=outcome_of(status),
        caller_object_id=caller.object_id,
        caller_app_id=caller.app_id,
        authenticated=caller.authenticated,
    )


_lock = threading.Lock()
_file: str | None = None
_file_read = False


def _audit_file() -> str | None:
    """``DICOM_AUDIT_FILE``, read once per process."""
    global _file, _file_read
    if not _file_read:
        with _lock:
            if not _file_read:
                try:
                    _file = Settings.from_env().audit_file
                except ValueError as exc:
                    _errors.warning("audit file off: the settings do not parse (%s)", exc)
                    _file = None
                _file_read = True
    return _file


def emit(record: AuditRecord) -> None:
    """Log ``record`` on the audit logger and append it to ``DICOM_AUDIT_FILE``; never raises."""
    try:
        text = record.to_json()
        log.info(text)
        path = _audit_file()
        if path:
            append_line(path, (text + "\n").encode())
    except Exception as exc:  # noqa: BLE001 - auditing must never fail the request it records
        _errors.warning("an audit record was not written (%s: %s)", type(exc).__name__, exc)


def reset_for_tests() -> None:
    """Read ``DICOM_AUDIT_FILE`` again on the next record."""
    global _file, _file_read
    with _lock:
        _file, _file_read = None, False


def records(path: str) -> list[dict[str, Any]]:
    """The records of a ``DICOM_AUDIT_FILE`` (tests and tools)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
