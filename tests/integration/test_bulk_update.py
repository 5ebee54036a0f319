"""Bulk update (Azure v2) through the operations machinery, against the emulators."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import bulk_update, changefeed, operations
from dicomserver.errors import BadRequest, Conflict, UnsupportedMediaType
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, StudyKey
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance
from tests.integration.test_upsert_expiry import put, study_attrs

BASE = "http://dicom.test/v2"
NEW_NAME = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Corrected^Name"}]}}


def start(services: Services, body: Any, content_type: str | None = "application/json") -> dict[str, str]:
    import json

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(
        bulk_update.bulk_update_studies(
            operations=services.operations, body=raw, content_type=content_type, base_url=BASE
        )
    )


def run(services: Services, operation_id: str, limit: int = 100) -> dict[str, Any]:
    for _ in range(limit):
        saved = operations.run_step(services.operations, operation_id, services)
        assert saved is not None
        if saved.status.done:
            break
    status, body = operations.get_operation(services.operations, operation_id, BASE)
    assert status == 200
    return body


def stored_study(services: Services, instances: int = 2) -> tuple[str, list[bytes]]:
    study = generate_uid()
    data = [
        make_instance(study=study, series=generate_uid(), patient_name="Wrong^Name", accession="OLD")
        for _ in range(instances)
    ]
    assert put(services, data, upsert=False).status == 200
    return study, data


def read_blob(blobs: Any, key: InstanceKey) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(b"".join(blobs.iter_instance(key))))


def test_bulk_update_changes_qido_metadata_files_and_keeps_the_originals(services: Services) -> None:
    studies = [stored_study(services) for _ in range(3)]
    change = {**NEW_NAME, "00080050": {"vr": "SH", "Value": ["NEW-ACC"]}}
    reference = start(services, {"studyInstanceUids": [s for s, _ in studies], "changeDataset": change})
    assert reference["href"] == f"{BASE}/operations/{reference['id']}"
    status, running = operations.get_operation(services.operations, reference["id"], BASE)
    assert status == 202 and running["status"] == "notStarted" and running["type"] == "update"

    result = run(services, reference["id"])

    assert result["status"] == "succeeded" and result["percentComplete"] == 100
    assert result["results"] == {"studyUpdated": 3, "studyFailed": 0, "instanceUpdated": 6, "errors": []}
    for study, originals in studies:
        attrs = study_attrs(services, study)
        assert attrs["00100010"]["Value"][0]["Alphabetic"] == "Corrected^Name"
        assert attrs["00080050"]["Value"] == ["NEW-ACC"]
        keys = services.index.list_instances(StudyKey(DEFAULT_PARTITION, study))
        versions = services.index.original_versions(StudyKey(DEFAULT_PARTITION, study))
        assert set(versions) == set(keys)
        by_sop = {pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID: d for d in originals}
        for key in keys:
            updated = read_blob(services.blobs, key)
            original = read_blob(services.blobs.with_versions(versions), key)
            assert str(updated.PatientName) == "Corrected^Name" and updated.AccessionNumber == "NEW-ACC"
            assert str(original.PatientName) == "Wrong^Name" and original.AccessionNumber == "OLD"
            assert updated.SOPInstanceUID == original.SOPInstanceUID == key.sop_instance_uid  # identity kept
            assert (
                updated.PixelData
                == original.PixelData
                == pydicom.dcmread(io.BytesIO(by_sop[key.sop_instance_uid])).PixelData
            )
            instance = services.index.get_instance(key)
            assert instance is not None and "Corrected^Name" in (instance.metadata_json or "")
    entries = asyncio.run(
        changefeed.read_change_feed(
            feed=services.changes, blobs=services.blobs, params=[("limit", "200")], base_url=BASE
        )
    )
    updates = [e for e in entries if e["Action"] == "update" and e["StudyInstanceUid"] in {s for s, _ in studies}]
    assert len(updates) == 6 and all(e["State"] == "current" for e in updates)


def test_a_second_update_keeps_the_first_original_and_a_rerun_step_changes_nothing(services: Services) -> None:
    study, _ = stored_study(services, 1)
    run(services, start(services, {"studyInstanceUids": [study], "changeDataset": NEW_NAME})["id"])
    second = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Third^Name"}]}}
    run(services, start(services, {"studyInstanceUids": [study], "changeDataset": second})["id"])
    key = services.index.list_instances(StudyKey(DEFAULT_PARTITION, study))[0]
    versions = services.index.original_versions(StudyKey(DEFAULT_PARTITION, study))
    assert str(read_blob(services.blobs.with_versions(versions), key).PatientName) == "Wrong^Name"
    assert str(read_blob(services.blobs, key).PatientName) == "Third^Name"
    # the same update applied again (a redelivered step) gives the same file
    before = b"".join(services.blobs.iter_instance(key))
    bulk_update.update_instance(services, key, bulk_update.validate_change(second))
    assert b"".join(services.blobs.iter_instance(key)) == before


def test_an_unknown_study_fails_alone(services: Services) -> None:
    study, _ = stored_study(services, 1)
    missing = generate_uid()
    result = run(services, start(services, {"studyInstanceUids": [study, missing], "changeDataset": NEW_NAME})["id"])
    assert result["status"] == "failed"
    assert result["results"]["studyUpdated"] == 1 and result["results"]["studyFailed"] == 1
    assert missing in result["results"]["errors"][0]
    assert study_attrs(services, study)["00100010"]["Value"][0]["Alphabetic"] == "Corrected^Name"


def test_one_update_at_a_time_per_study(services: Services) -> None:
    study, _ = stored_study(services, 1)
    first = start(services, {"studyInstanceUids": [study], "changeDataset": NEW_NAME})
    with pytest.raises(Conflict) as caught:
        start(services, {"studyInstanceUids": [study], "changeDataset": NEW_NAME})
    assert caught.value.status == 409 and first["id"] in caught.value.message
    run(services, first["id"])
    run(services, start(services, {"studyInstanceUids": [study], "changeDataset": NEW_NAME})["id"])  # free again


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        ([], "JSON object"),
        ({"changeDataset": NEW_NAME}, "studyInstanceUids is required"),
        ({"studyInstanceUids": ["1.2.3"]}, "changeDataset is required"),
        ({"studyInstanceUids": [f"1.2.{i}" for i in range(51)], "changeDataset": NEW_NAME}, "At most 50"),
        ({"studyInstanceUids": ["1.2.3", "1.2.3"], "changeDataset": NEW_NAME}, "more than once"),
        ({"studyInstanceUids": ["abc"], "changeDataset": NEW_NAME}, "not a valid UID"),
        (
            {"studyInstanceUids": ["1.2.3"], "changeDataset": {"0020000D": {"vr": "UI", "Value": ["1.2"]}}},
            "cannot be updated",
        ),
        (
            {"studyInstanceUids": ["1.2.3"], "changeDataset": {"00100010": {"vr": "LO", "Value": ["x"]}}},
            "must have VR PN",
        ),
        (
            {"studyInstanceUids": ["1.2.3"], "changeDataset": {"00100010": {"vr": "PN"}}},
            "cannot set an attribute to null",
        ),
        ({"studyInstanceUids": ["1.2.3"], "changeDataset": {"PatientName": {"vr": "PN", "Value": ["x"]}}}, "not a tag"),
    ],
)
def test_bad_requests_are_400_with_a_message(services: Services, body: Any, says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        start(services, body)
    assert caught.value.status == 400 and says in caught.value.message


def test_a_body_that_is_not_json_is_415(services: Services) -> None:
    with pytest.raises(UnsupportedMediaType):
        start(services, {"studyInstanceUids": ["1.2.3"], "changeDataset": NEW_NAME}, "application/dicom")


def test_unknown_operation_is_404_and_a_bad_id_400(services: Services) -> None:
    from dicomserver.errors import NotFound

    with pytest.raises(NotFound):
        operations.get_operation(services.operations, "0" * 32, BASE)
    with pytest.raises(BadRequest):
        operations.get_operation(services.operations, "not-an-id", BASE)
