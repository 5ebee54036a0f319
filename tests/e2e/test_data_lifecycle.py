"""PUT upsert, bulk update (with the original kept) and study expiry over HTTP through the local host."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver.fhir import mapping
from tests.dicomfiles import make_instance, multipart_body, zero_preamble
from tests.e2e.conftest import local_host
from tests.e2e.test_pipelines import eventually
from tests.stowhttp import stored

ANY_SYNTAX = {"Accept": "application/dicom; transfer-syntax=*"}


def put(base_url: str, parts: list[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    body, ctype = multipart_body(parts)
    return httpx.put(
        f"{base_url}/studies", content=body, headers={**(headers or {}), "Content-Type": ctype}, timeout=60
    )


def imaging_study(fhir_url: str, study: str) -> dict | None:  # type: ignore[type-arg]
    bundle = httpx.get(f"{fhir_url}/ImagingStudy", params={"identifier": mapping.study_identifier(study)}).json()
    entries = bundle.get("entry", [])
    return entries[0]["resource"] if entries else None


def test_put_replaces_an_instance_and_fhir_follows(base_url: str, fhir_url: str) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_instance(study=study, series=series, sop=sop, StudyDescription="Before")
    stored(base_url, [first])
    eventually(lambda: (imaging_study(fhir_url, study) or {}).get("description") == "Before")
    corrected = make_instance(study=study, series=series, sop=sop, StudyDescription="After", rows=16, columns=16)

    response = put(base_url, [corrected])

    assert response.status_code == 200, response.text
    url = f"{base_url}/studies/{study}/series/{series}/instances/{sop}"
    got = httpx.get(url, headers=ANY_SYNTAX)
    assert got.status_code == 200 and zero_preamble(corrected) in got.content
    metadata = httpx.get(url + "/metadata").json()[0]
    assert metadata["00081030"]["Value"] == ["After"] and metadata["00280010"]["Value"] == [16]
    resource = eventually(
        lambda: (
            imaging_study(fhir_url, study)
            if (imaging_study(fhir_url, study) or {}).get("description") == "After"
            else None
        )
    )
    assert resource["numberOfInstances"] == 1
    again = httpx.post(
        f"{base_url}/studies",
        content=multipart_body([corrected])[0],
        headers={"Content-Type": multipart_body([corrected])[1]},
    )
    assert again.status_code == 409  # POST still never replaces


def test_bulk_update_over_http_with_the_original_kept(base_url: str, fhir_url: str) -> None:
    study, patient = generate_uid(), f"BULK-{generate_uid()[-8:]}"
    parts = [
        make_instance(study=study, patient_id=patient, patient_name="Wrong^Name", StudyDescription="Old")
        for _ in range(2)
    ]
    stored(base_url, parts)
    sop = pydicom.dcmread(io.BytesIO(parts[0])).SOPInstanceUID
    series = pydicom.dcmread(io.BytesIO(parts[0])).SeriesInstanceUID
    change = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Right^Name"}]},
        "00081030": {"vr": "LO", "Value": ["New"]},
    }

    started = httpx.post(
        f"{base_url}/studies/$bulkUpdate", json={"studyInstanceUids": [study], "changeDataset": change}
    )

    assert started.status_code == 202, started.text
    href = started.json()["href"]
    assert href.endswith(f"/operations/{started.json()['id']}")
    done = eventually(lambda: (r := httpx.get(href)).status_code == 200 and r.json())
    assert done["status"] == "succeeded" and done["results"]["instanceUpdated"] == 2
    found = httpx.get(f"{base_url}/studies", params={"StudyInstanceUID": study}).json()
    assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Right^Name"
    url = f"{base_url}/studies/{study}/series/{series}/instances/{sop}"
    updated = pydicom.dcmread(
        io.BytesIO(httpx.get(url, headers=ANY_SYNTAX).content.split(b"\r\n\r\n", 1)[-1]), force=True
    )
    assert str(updated.PatientName) == "Right^Name"
    original_response = httpx.get(url, headers={**ANY_SYNTAX, "msdicom-request-original": "true"})
    assert original_response.status_code == 200
    assert zero_preamble(parts[0]) in original_response.content  # the original bytes, as stored
    eventually(lambda: (imaging_study(fhir_url, study) or {}).get("description") == "New")

    def patient_name() -> str | None:
        bundle = httpx.get(f"{fhir_url}/Patient", params={"identifier": f"urn:dicomserver:patient-id|{patient}"}).json()
        names = [e["resource"].get("name", [{}])[0] for e in bundle.get("entry", [])]
        return names[0].get("family") if names else None

    eventually(lambda: patient_name() == "Right")  # Right^Name: the Patient follows the update
    (resource,) = [
        e["resource"]
        for e in httpx.get(
            f"{fhir_url}/Patient", params={"identifier": f"urn:dicomserver:patient-id|{patient}"}
        ).json()["entry"]
    ]
    assert resource["name"][0]["given"] == ["Name"]
    bad = httpx.post(
        f"{base_url}/studies/$bulkUpdate",
        json={"studyInstanceUids": [study], "changeDataset": {"0020000D": {"vr": "UI", "Value": ["1.2"]}}},
    )
    assert bad.status_code == 400 and "cannot be updated" in bad.json()["message"]


@pytest.fixture(scope="module")
def expiring_host(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host whose expiry timer runs every second, on containers and queues of its own."""
    env = {
        **stack_env,
        "DICOM_AUTH_MODE": "none",
        "DICOM_EXPIRY_SCHEDULE": "*/1 * * * * *",
        "DICOM_INSTANCE_CONTAINER": "expiry-dicom",
        "DICOM_METADATA_CONTAINER": "expiry-dicom-metadata",
        "DICOM_IMPORT_CONTAINER": "expiry-dicom-import",
        "DICOM_IMPORT_ERRORS_CONTAINER": "expiry-dicom-import-errors",
        "DICOM_FHIR_SYNC_QUEUE": "expiry-fhir-sync",
        "DICOM_OPERATIONS_QUEUE": "expiry-operations",
        "DICOM_EVENTS_QUEUE": "expiry-events",
    }
    with local_host(env, Path(tmp_path_factory.mktemp("expiry-host"))) as url:
        yield url


def test_an_expired_study_disappears_through_the_delete_path(expiring_host: str) -> None:
    expiring, cancelled = generate_uid(), generate_uid()
    headers = {
        "msdicom-expiry-time-milliseconds": "1500",
        "msdicom-expiry-option": "RelativeToNow",
        "msdicom-expiry-level": "Study",
    }
    stored(expiring_host, [make_instance(study=expiring)], headers=headers)
    stored(expiring_host, [make_instance(study=cancelled)], headers=headers)
    assert put(expiring_host, [make_instance(study=cancelled)]).status_code == 200  # last store, no expiry
    assert httpx.get(f"{expiring_host}/studies", params={"StudyInstanceUID": expiring}).status_code == 200

    eventually(lambda: httpx.get(f"{expiring_host}/studies", params={"StudyInstanceUID": expiring}).status_code == 204)
    study_accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    assert httpx.get(f"{expiring_host}/studies/{expiring}", headers=study_accept).status_code == 404
    deleted = [
        e
        for e in httpx.get(f"{expiring_host}/changefeed", params={"limit": 200, "includemetadata": "false"}).json()
        if e["StudyInstanceUid"] == expiring
    ]
    assert [e["Action"] for e in deleted] == ["create", "delete"]
    time.sleep(2)
    found = httpx.get(f"{expiring_host}/studies", params={"StudyInstanceUID": cancelled}).json()
    assert found[0]["00201208"]["Value"] == [2]


def test_bad_expiry_headers_are_400(expiring_host: str) -> None:
    body, ctype = multipart_body([make_instance()])
    response = httpx.post(
        f"{expiring_host}/studies",
        content=body,
        headers={"Content-Type": ctype, "msdicom-expiry-time-milliseconds": "-1"},
    )
    assert response.status_code == 400 and "msdicom-expiry-time-milliseconds" in response.json()["message"]
