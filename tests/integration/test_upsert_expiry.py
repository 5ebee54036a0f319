"""PUT upsert (Azure v2), 45071, and study expiry through the delete path, against the emulators."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from dicomserver import changefeed, expiry, opcount
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, StudyKey
from dicomserver.stores.layout import instance_blob_name
from dicomserver.stow import StoreResponse
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body, zero_preamble
from tests.integration.test_stow import failures, referenced, store
from tests.search import study_search

BASE = "http://dicom.test/v2"


def put(services: Services, data: list[bytes], *, upsert: bool = True, expires_at: str | None = None) -> StoreResponse:
    """A PUT (or, ``upsert=False``, a POST) of ``data`` as one multipart request."""
    return store(services, *multipart_body(data), upsert=upsert, expires_at=expires_at)


def blob_bytes(services: Services, key: InstanceKey) -> bytes:
    return b"".join(services.blobs.iter_instance(key))


def study_record(services: Services, study: str) -> Any:
    items = services.index.search(study_search([("StudyInstanceUID", study)]).query).items
    assert len(items) == 1
    return items[0]


def study_attrs(services: Services, study: str) -> dict[str, Any]:
    return dict(study_record(services, study).attrs)


def metadata(services: Services, key: InstanceKey) -> dict[str, Any]:
    instance = services.index.get_instance(key)
    assert instance is not None and instance.metadata_json is not None
    return dict(json.loads(instance.metadata_json))


def uids() -> tuple[str, str, str]:
    return generate_uid(), generate_uid(), generate_uid()


def test_put_replaces_the_blob_metadata_index_and_keeps_the_counts(services: Services) -> None:
    study, series, sop = uids()
    first = make_instance(study=study, series=series, sop=sop, patient_name="Wrong^Name", rows=8)
    assert put(services, [first], upsert=False).status == 200
    corrected = make_instance(study=study, series=series, sop=sop, patient_name="Right^Name", rows=16, columns=16)

    with opcount.counting() as ops:
        response = put(services, [corrected])

    assert response.status == 200 and not failures(response)
    assert [r["00081155"]["Value"][0] for r in referenced(response)] == [sop]
    key = InstanceKey(DEFAULT_PARTITION, study, series, sop)
    assert blob_bytes(services, key) == zero_preamble(corrected)  # the new bytes, preamble zeroed
    assert pydicom.dcmread(io.BytesIO(blob_bytes(services, key))).Rows == 16
    assert metadata(services, key)["00100010"]["Value"][0]["Alphabetic"] == "Right^Name"
    attrs = study_attrs(services, study)
    assert attrs["00100010"]["Value"][0]["Alphabetic"] == "Right^Name"
    assert study_record(services, study).number_of_study_instances == 1  # replaced, not counted twice
    # replace: 1 sync message; blob overwrite; index: read + upsert + series/study patches + change feed (2)
    assert ops.queue <= 1 and ops.blob <= 2 and ops.index <= 7, ops


def test_put_of_a_new_instance_creates_it_and_post_still_refuses_a_duplicate(services: Services) -> None:
    study, series, sop = uids()
    data = make_instance(study=study, series=series, sop=sop)
    assert put(services, [data]).status == 200
    assert study_record(services, study).number_of_study_instances == 1
    again = put(services, [data], upsert=False)
    assert again.status == 409 and failures(again) == [45070]
    assert put(services, [data]).status == 200  # PUT again: replaced


def test_change_feed_marks_the_replaced_version(services: Services) -> None:
    study, series, sop = uids()
    put(services, [make_instance(study=study, series=series, sop=sop, patient_name="A^A")], upsert=False)
    put(services, [make_instance(study=study, series=series, sop=sop, patient_name="B^B")])
    entries = [
        e
        for e in asyncio.run(
            changefeed.read_change_feed(
                feed=services.changes, blobs=services.blobs, params=[("limit", "200")], base_url=BASE
            )
        )
        if e["SopInstanceUid"] == sop
    ]
    assert [(e["Action"], e["State"]) for e in entries] == [("create", "replaced"), ("create", "current")]
    assert "Metadata" not in entries[0] or entries[0]["Metadata"] is None
    assert entries[1]["Metadata"]["00100010"]["Value"][0]["Alphabetic"] == "B^B"


def test_an_unindexable_blob_in_the_way_is_45071_not_45070(services: Services) -> None:
    study, series, sop = uids()
    key = InstanceKey(DEFAULT_PARTITION, study, series, sop)
    # a store that died after writing a blob nobody can index (here: not DICOM at all)
    services.blobs.put_instance(key, io.BytesIO(b"not dicom" * 20), 180)
    response = put(services, [make_instance(study=study, series=series, sop=sop)], upsert=False)
    assert response.status == 409 and failures(response) == [45071]
    assert instance_blob_name(key)  # the blob is left for the repair path, not overwritten by POST
    assert blob_bytes(services, key) == b"not dicom" * 20


def delete_expired(services: Services, now: datetime) -> list[StudyKey]:
    return asyncio.run(
        expiry.delete_expired_studies(
            blobs=services.blobs, index=services.index, sync_queue=services.sync_queue, now=now
        )
    )


def test_an_expired_study_goes_through_the_delete_path(services: Services) -> None:
    now = datetime.now(UTC)
    soon = expiry.parse_expiry({expiry.EXPIRY_TIME_HEADER: "1000"}.get, now)
    later = expiry.parse_expiry({expiry.EXPIRY_TIME_HEADER: "3600000"}.get, now)
    expiring, cancelled, kept = generate_uid(), generate_uid(), generate_uid()
    expiring_data = [make_instance(study=expiring, series=generate_uid()) for _ in range(2)]
    assert put(services, expiring_data, upsert=False, expires_at=soon).status == 200
    assert put(services, [make_instance(study=cancelled)], upsert=False, expires_at=soon).status == 200
    assert put(services, [make_instance(study=cancelled)], upsert=False).status == 200  # last store: no expiry
    assert put(services, [make_instance(study=kept)], upsert=False, expires_at=later).status == 200

    assert delete_expired(services, now) == []  # nothing has expired yet
    deleted = delete_expired(services, now + timedelta(seconds=5))

    assert deleted == [StudyKey(DEFAULT_PARTITION, expiring)]
    assert services.index.list_instances(StudyKey(DEFAULT_PARTITION, expiring)) == []
    assert services.blobs.list_instances(StudyKey(DEFAULT_PARTITION, expiring)) == []
    assert len(services.index.list_instances(StudyKey(DEFAULT_PARTITION, cancelled))) == 2
    assert len(services.index.list_instances(StudyKey(DEFAULT_PARTITION, kept))) == 1
    # the cancelled study's hint is cleared: the next run does not look at it again
    assert StudyKey(DEFAULT_PARTITION, cancelled) not in services.index.expired_studies(
        expiry.timestamp(now + timedelta(seconds=5)), 100
    )
    actions = [
        e["Action"]
        for e in asyncio.run(
            changefeed.read_change_feed(
                feed=services.changes, blobs=services.blobs, params=[("limit", "200")], base_url=BASE
            )
        )
        if e["StudyInstanceUid"] == expiring
    ]
    assert actions == ["create", "create", "delete", "delete"]


def implicit_vr(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def test_an_implicit_vr_file_is_stored_with_warning_45063_as_azure(services: Services) -> None:
    data = implicit_vr(make_instance())
    response = put(services, [data, make_instance()], upsert=False)
    assert response.status == 202 and not failures(response)
    items = referenced(response)
    assert items[0]["00081196"]["Value"] == [45063] and "00741048" not in items[0]
    assert "00081196" not in items[1]  # explicit VR: no warning
    sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    ds = pydicom.dcmread(io.BytesIO(data))
    key = InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, sop)
    assert blob_bytes(services, key) == zero_preamble(data)  # stored as sent
