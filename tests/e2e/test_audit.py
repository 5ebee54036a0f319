"""Audit records and request spans end to end: a local-mode host writing ``DICOM_AUDIT_FILE`` and
``DICOM_TELEMETRY_FILE``; each DICOMweb request, refused ones included, is read back by its correlation id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from dicomserver import audit, telemetry
from dicomserver.settings import Settings
from scripts.token import mint
from tests.dicomfiles import make_instance, multipart_body
from tests.e2e.conftest import local_host

OWNER_OID, READER_OID, APP = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(scope="module")
def audited(
    stack_env: dict[str, str], auth_key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """``(base URL, audit file, span file)`` of a host in ``DICOM_AUTH_MODE=local`` with both files set."""
    log_dir = tmp_path_factory.mktemp("audit-host")
    audit_file, span_file = log_dir / "audit.jsonl", log_dir / "spans.jsonl"
    env = {
        **stack_env,
        "DICOM_AUTH_MODE": "local",
        "DICOM_AUTH_LOCAL_KEY_DIR": str(auth_key_dir),
        "DICOM_AUDIT_FILE": str(audit_file),
        "DICOM_TELEMETRY_FILE": str(span_file),
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
        "DICOM_INSTANCE_CONTAINER": "audit-dicom",
        "DICOM_METADATA_CONTAINER": "audit-dicom-metadata",
        "DICOM_IMPORT_CONTAINER": "audit-dicom-import",
        "DICOM_IMPORT_ERRORS_CONTAINER": "audit-dicom-import-errors",
        "DICOM_FHIR_SYNC_QUEUE": "audit-fhir-sync",
        "DICOM_EVENTS_QUEUE": "audit-dicom-events",
    }
    with local_host(env, log_dir, "--no-triggers") as url:
        yield url, audit_file, span_file


def bearer(key_dir: Path, roles: list[str], oid: str) -> dict[str, str]:
    settings = Settings(auth_mode="local", auth_local_key_dir=str(key_dir))
    return {"Authorization": f"Bearer {mint(settings, roles, extra={'oid': oid, 'azp': APP})}"}


def read_back(path: Path, correlation_ids: list[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The lines of ``path`` whose correlation id is one of ``correlation_ids``, by correlation id."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in audit.records(str(path)) if path.name.startswith("audit") else telemetry.span_lines(path):
                key = line.get("correlation_id") or line.get("attributes", {}).get("dicom.correlation_id")
                if key in correlation_ids:
                    found[key] = line
        if len(found) == len(correlation_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_store_search_retrieve_refusals_and_delete_are_audited(
    audited: tuple[str, Path, Path], auth_key_dir: Path
) -> None:
    base, audit_file, span_file = audited
    owner = bearer(auth_key_dir, ["DICOM.Data.Owner"], OWNER_OID)
    reader = bearer(auth_key_dir, ["DICOM.Data.Reader"], READER_OID)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient_name, patient_id = f"Audit^{uuid.uuid4().hex[:12]}", f"PID-{uuid.uuid4().hex[:12]}"
    body, content_type = multipart_body(
        [make_instance(study=study, series=series, sop=sop, patient_name=patient_name, patient_id=patient_id)]
    )
    instance = f"{base}/studies/{study}/series/{series}/instances/{sop}"
    with httpx.Client(timeout=60) as client:
        stored = client.post(
            f"{base}/studies/{study}",
            content=body,
            headers={**owner, "Content-Type": content_type, "x-correlation-id": "client-chosen-1"},
        )
        searched = client.get(f"{base}/studies", params={"PatientID": patient_id}, headers=reader)
        retrieved = client.get(instance, headers={**reader, "Accept": 'multipart/related; type="application/dicom"'})
        no_token = client.get(f"{base}/studies/{study}/metadata")
        forbidden = client.delete(f"{base}/studies/{study}", headers=reader)
        deleted = client.delete(f"{base}/studies/{study}", headers=owner)
    assert stored.status_code == 200, stored.text
    assert searched.status_code == 200 and len(searched.json()) == 1
    assert retrieved.status_code == 200 and len(retrieved.content) > 0
    assert (no_token.status_code, forbidden.status_code) == (401, 403)
    assert deleted.status_code in (200, 202, 204), deleted.text
    responses = [stored, searched, retrieved, no_token, forbidden, deleted]
    ids = [r.headers["x-correlation-id"] for r in responses]
    assert ids[0] == "client-chosen-1" and len(set(ids)) == len(ids)

    records = read_back(audit_file, ids)
    assert set(records) == set(ids), f"records missing for {set(ids) - set(records)}"
    expected = [
        # (action, transaction, status, caller oid, authenticated, (study, series, sop))
        ("write", "POST /v2/studies/{study}", 200, OWNER_OID, True, (study, None, None)),
        ("read", "GET /v2/studies", 200, READER_OID, True, (None, None, None)),
        (
            "read",
            "GET /v2/studies/{study}/series/{series}/instances/{instance}",
            200,
            READER_OID,
            True,
            (study, series, sop),
        ),
        ("read", "GET /v2/studies/{study}/metadata", 401, None, False, (study, None, None)),
        ("delete", "DELETE /v2/studies/{study}", 403, READER_OID, True, (study, None, None)),
        ("delete", "DELETE /v2/studies/{study}", deleted.status_code, OWNER_OID, True, (study, None, None)),
    ]
    for correlation, (action, transaction, status, oid, authenticated, uids) in zip(ids, expected, strict=True):
        record = records[correlation]
        assert record["action"] == action and record["transaction"] == transaction, record
        assert record["status"] == status and record["caller_object_id"] == oid, record
        assert record["authenticated"] is authenticated, record
        assert record["caller_app_id"] == (APP if oid else None), record
        assert (record["study_instance_uid"], record["series_instance_uid"], record["sop_instance_uid"]) == uids
        assert record["time"].endswith("Z")
    assert records[ids[3]]["outcome"] == records[ids[4]]["outcome"] == "refused"

    spans = read_back(span_file, ids)
    assert set(spans) == set(ids)
    assert spans[ids[2]]["name"] == "GET /v2/studies/{study}/series/{series}/instances/{instance}"
    assert spans[ids[2]]["attributes"]["dicom.storage.blob_ops"] >= 1
    assert [spans[i]["attributes"]["http.response.status_code"] for i in ids] == [r.status_code for r in responses]

    audit_text, span_text = audit_file.read_text(), span_file.read_text()
    for value in (patient_name, patient_id, patient_name.split("^")[1]):
        assert value not in audit_text and value not in span_text  # no patient value, not even the search's
    for uid in (study, series, sop):
        assert uid not in span_text  # spans carry route shapes only
