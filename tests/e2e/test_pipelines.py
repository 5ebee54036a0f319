"""Triggers through the local host: repair, bulk import, FHIR sync, DELETE, QIDO levels."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import pydicom
from azure.storage.blob import BlobServiceClient
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from dicomserver.fhir import mapping
from tests.dicomfiles import make_instance, multipart_body
from tests.stowhttp import stored

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy (the triggers are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.3)


def blobs(stack_env: dict[str, str]) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(stack_env["DICOM_STORAGE"])


def studies(base_url: str, **params: str) -> list[dict]:  # type: ignore[type-arg]
    response = httpx.get(f"{base_url}/studies", params=params)
    return response.json() if response.status_code == 200 else []


def test_blob_written_without_index_is_repaired_by_the_trigger(base_url: str, stack_env: dict[str, str]) -> None:
    """A STOW that died after the blob write: the blob trigger indexes the instance."""
    data = make_instance(patient_id=f"ORPHAN-{generate_uid()[-6:]}")
    ds = pydicom.dcmread(io.BytesIO(data))
    name = f"Microsoft.Default/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    blobs(stack_env).get_container_client("dicom").upload_blob(name, data)
    eventually(lambda: studies(base_url, PatientID=str(ds.PatientID)))


def test_bulk_import_stores_valid_files_and_moves_rejects(base_url: str, stack_env: dict[str, str]) -> None:
    patient = f"IMPORT-{generate_uid()[-6:]}"
    service = blobs(stack_env)
    drop = service.get_container_client("dicom-import")
    drop.upload_blob(f"batch {patient}/good.dcm", make_instance(patient_id=patient))
    drop.upload_blob(f"batch {patient}/bad.dcm", b"not dicom")
    eventually(lambda: studies(base_url, PatientID=patient))
    errors = service.get_container_client("dicom-import-errors")
    reason = eventually(lambda: _read(errors, f"batch {patient}/bad.dcm.error.json"))
    assert b'"failureReason": 272' in reason
    eventually(lambda: not list(drop.list_blobs(name_starts_with=f"batch {patient}/")))


def _read(container, name: str) -> bytes | None:  # type: ignore[no-untyped-def]
    blob = container.get_blob_client(name)
    return blob.download_blob().readall() if blob.exists() else None


def test_stored_study_reaches_fhir_and_leaves_it_on_delete(base_url: str, fhir_url: str) -> None:
    study, patient = generate_uid(), f"FHIR-{generate_uid()[-6:]}"
    stored(base_url, [make_instance(study=study, patient_id=patient) for _ in range(2)])
    token = mapping.study_identifier(study)

    def imaging_studies() -> list[dict]:  # type: ignore[type-arg]
        bundle = httpx.get(f"{fhir_url}/ImagingStudy", params={"identifier": token}).json()
        return [e["resource"] for e in bundle.get("entry", [])]

    (resource,) = eventually(imaging_studies)
    assert resource["numberOfInstances"] == 2
    assert resource["endpoint"] and resource["subject"]["reference"].startswith("Patient/")
    assert httpx.delete(f"{base_url}/studies/{study}").status_code == 204
    eventually(lambda: imaging_studies() == [])
    assert httpx.delete(f"{base_url}/studies/{study}").status_code == 404


def test_delete_levels_over_http(base_url: str) -> None:
    study, series = generate_uid(), generate_uid()
    parts = [make_instance(study=study, series=series), make_instance(study=study, series=series)]
    datasets = [pydicom.dcmread(io.BytesIO(p)) for p in parts]
    stored(base_url, parts)
    first = f"{base_url}/studies/{study}/series/{series}/instances/{datasets[0].SOPInstanceUID}"
    assert httpx.delete(first).status_code == 204
    assert httpx.get(first, headers={"Accept": "application/dicom; transfer-syntax=*"}).status_code == 404
    assert httpx.delete(first).status_code == 404
    assert httpx.delete(f"{base_url}/studies/{study}/series/{generate_uid()}").status_code == 404
    assert httpx.delete(f"{base_url}/studies/{study}/series/{series}").status_code == 204
    assert httpx.delete(f"{base_url}/studies/{study}").status_code == 404


def test_search_series_and_instances_with_dicomweb_client(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, patient = generate_uid(), f"LEVELS-{generate_uid()[-6:]}"
    parts = [make_instance(study=study, patient_id=patient, modality=m) for m in ("CT", "CT", "MR")]
    client.store_instances([pydicom.dcmread(io.BytesIO(p)) for p in parts])
    series = client.search_for_series(search_filters={"PatientID": patient, "Modality": "MR"})
    assert len(series) == 1 and series[0]["00100020"]["Value"] == [patient]
    assert len(client.search_for_series(study_instance_uid=study)) == 3
    instances = client.search_for_instances(search_filters={"PatientID": patient})
    assert len(instances) == 3
    mr_series = series[0]["0020000E"]["Value"][0]
    scoped = client.search_for_instances(study_instance_uid=study, series_instance_uid=mr_series)
    assert len(scoped) == 1
    assert httpx.get(f"{base_url}/series", params={"SOPInstanceUID": "1.2"}).status_code == 400


def test_bad_input_over_http_is_never_a_500_and_the_service_keeps_serving(base_url: str) -> None:
    from tests.badinput import malformed_parts, malformed_requests

    statuses: dict[str, int] = {}
    for name, data in malformed_parts():
        body, ctype = multipart_body([data])
        statuses[name] = httpx.post(f"{base_url}/studies", content=body, headers={"Content-Type": ctype}).status_code
    for name, body, ctype in malformed_requests():
        headers = {"Content-Type": ctype} if ctype else {}
        statuses[name] = httpx.post(f"{base_url}/studies", content=body, headers=headers).status_code
    assert all(status < 500 for status in statuses.values()), statuses
    assert all(status in (200, 202, 400, 409, 415) for status in statuses.values()), statuses
    good, ctype = multipart_body([make_instance()])
    assert httpx.post(f"{base_url}/studies", content=good, headers={"Content-Type": ctype}).status_code == 200
