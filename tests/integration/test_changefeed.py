"""The change feed and the events published from it, against the emulators (Cosmos stand-in, Azurite)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
import pytest
from azure.storage.queue import QueueClient
from pydicom.uid import generate_uid

from dicomserver import changefeed, delete, opcount
from dicomserver.changefeed import process_study
from dicomserver.errors import DependencyUnavailable
from dicomserver.fhir.sync import handle_sync_message
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey
from dicomserver.ingest import commit_instance, index_entry, read_instance
from dicomserver.stores import Change, ChangeAction
from dicomserver.stores.azure.changefeed import GAP_SETTLE_SECONDS, CosmosChangeFeed, timestamp
from dicomserver.stores.layout import sync_message
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_delete import stored
from tests.integration.test_stow import store

BASE = "http://dicom.test/v2"


def feed(services: Services, **params: object) -> list[dict[str, Any]]:
    return asyncio.run(
        changefeed.read_change_feed(
            feed=services.changes,
            blobs=services.blobs,
            params=[(k, str(v)) for k, v in params.items()],
            base_url=BASE,
        )
    )


def events(services: Services) -> list[dict[str, Any]]:
    """Every event waiting on the test's events queue (removed as read)."""
    queue = QueueClient.from_connection_string(
        services.settings.storage_connection_string or "", services.settings.events_queue
    )
    found = []
    while batch := list(queue.receive_messages(max_messages=32, visibility_timeout=30)):
        for message in batch:
            found.append(json.loads(base64.b64decode(message.content)))
            queue.delete_message(message)
    return found


def run_trigger(services: Services, study: str) -> None:
    """What the queue trigger does with the study's (write-ahead) message, FHIR not configured."""
    handle_sync_message(
        body=sync_message(StudyKey(DEFAULT_PARTITION, study)),
        index=services.index,
        blobs=services.blobs,
        fhir=None,
        queue=services.sync_queue,
        dicomweb_base_url=BASE,
        patient_identifier_system="urn:test",
        changes=services.changes,
        events=services.events,
        service_host="dicom.test",
    )


def test_store_delete_store_again_gives_create_delete_create_with_the_states_of_now(services: Services) -> None:
    key = stored(services)
    run(delete.delete_instance(blobs=services.blobs, index=services.index, sync_queue=services.sync_queue, key=key))
    body, ctype = multipart_body(
        [make_instance(study=key.study_instance_uid, series=key.series_instance_uid, sop=key.sop_instance_uid)]
    )
    assert store(services, body, ctype).status == 200
    entries = [e for e in feed(services) if e["SopInstanceUid"] == key.sop_instance_uid]
    assert [e["Action"] for e in entries] == ["create", "delete", "create"]
    assert [e["State"] for e in entries] == ["deleted", "deleted", "current"]
    assert entries[0]["Sequence"] < entries[1]["Sequence"] < entries[2]["Sequence"]
    assert entries[2]["Metadata"]["00080018"]["Value"] == [key.sop_instance_uid]  # the current metadata
    assert "Metadata" not in entries[0] and "Metadata" not in entries[1]  # versions that no longer exist
    assert all("Metadata" not in e for e in feed(services, includemetadata="false"))
    latest = asyncio.run(
        changefeed.read_latest_change(feed=services.changes, blobs=services.blobs, params=[], base_url=BASE)
    )
    assert latest is not None and latest["Sequence"] == entries[2]["Sequence"] and latest["State"] == "current"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_paging_by_offset_and_limit_inside_a_time_window_never_repeats_or_skips(services: Services) -> None:
    stored(services)  # before the window
    time.sleep(0.01)
    start = timestamp()
    study = generate_uid()
    parts = [make_instance(study=study, InstanceNumber=i) for i in range(23)]
    assert store(services, *multipart_body(parts)).status == 200
    end = timestamp()
    time.sleep(0.01)
    stored(services)  # after the window
    whole = feed(services, startTime=start, endTime=end, limit=200)
    assert len(whole) == 23 and {e["StudyInstanceUid"] for e in whole} == {study}
    sequences = [e["Sequence"] for e in whole]
    assert sequences == sorted(sequences) and len(set(sequences)) == 23
    paged: list[int] = []
    offset = 0
    while page := feed(services, startTime=start, endTime=end, offset=offset, limit=7):
        paged += [e["Sequence"] for e in page]
        offset += len(page)
    assert paged == sequences


def test_eight_parallel_stows_into_one_study_get_eight_distinct_increasing_sequences(services: Services) -> None:
    study = generate_uid()
    parts = [make_instance(study=study) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: store(services, p, "application/dicom"), parts))
    assert [r.status for r in results] == [200] * 8
    entries = [e for e in feed(services, limit=200) if e["StudyInstanceUid"] == study]
    sequences = [e["Sequence"] for e in entries]
    assert len(entries) == 8 and len(set(sequences)) == 8 and sequences == sorted(sequences)
    assert {e["Action"] for e in entries} == {"create"}


class _FailingCreate:
    """The index, with instance creates failing as in an outage (every other call passes through)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_instance(self, instance: Any) -> bool:
        raise DependencyUnavailable("The index is unavailable (index instance).")


def test_a_store_that_failed_or_was_refused_has_no_entry(services: Services) -> None:
    study = generate_uid()
    with pytest.raises(DependencyUnavailable):  # 503: the index failed at the commit point; undone
        store(services, *multipart_body([make_instance(study=study)]), index=_FailingCreate(services.index))
    key = stored(services, study=study)
    again, ctype = multipart_body(
        [make_instance(study=study, series=key.series_instance_uid, sop=key.sop_instance_uid)]
    )
    assert store(services, again, ctype).status == 409  # a duplicate: refused, no second entry
    time.sleep(GAP_SETTLE_SECONDS + 0.5)  # the failed store's reserved number is a gap readers pass once old
    entries = [e for e in feed(services, limit=200) if e["StudyInstanceUid"] == study]
    assert [(e["SopInstanceUid"], e["Action"]) for e in entries] == [(key.sop_instance_uid, "create")]


def test_events_are_published_by_the_trigger_at_least_once_even_after_the_request_died(services: Services) -> None:
    # The request commits and dies before any event: only the write-ahead message is left.
    key = stored(services)
    assert events(services) == []  # nothing is published from the HTTP request
    run_trigger(services, key.study_instance_uid)  # the host restarts; the message becomes visible
    (created,) = events(services)
    assert created["eventType"] == "Microsoft.HealthcareApis.DicomImageCreated"
    assert created["subject"] == (
        f"dicom.test/v2/studies/{key.study_instance_uid}/series/{key.series_instance_uid}"
        f"/instances/{key.sop_instance_uid}"
    )
    assert created["data"] == {
        "partitionName": "Microsoft.Default",
        "imageStudyInstanceUid": key.study_instance_uid,
        "imageSeriesInstanceUid": key.series_instance_uid,
        "imageSopInstanceUid": key.sop_instance_uid,
        "serviceHostName": "dicom.test",
        "sequenceNumber": feed(services, limit=200)[-1]["Sequence"],
    }
    assert created["dataVersion"] == "1" and created["metadataVersion"] == "1" and created["eventTime"]
    run_trigger(services, key.study_instance_uid)
    assert events(services) == []  # published once the entry is marked
    run(delete.delete_instance(blobs=services.blobs, index=services.index, sync_queue=services.sync_queue, key=key))
    run_trigger(services, key.study_instance_uid)
    (deleted,) = events(services)
    assert deleted["eventType"] == "Microsoft.HealthcareApis.DicomImageDeleted"
    assert deleted["data"]["sequenceNumber"] > created["data"]["sequenceNumber"]
    assert deleted["id"] != created["id"]


def test_a_commit_whose_entry_was_never_written_is_logged_by_the_sync(services: Services) -> None:
    """A writer that died between its index create and its entry: the sync logs the instance later."""
    import io

    from dicomserver.stores.azure.index import CosmosIndexStore
    from dicomserver.wiring import build_services

    study = generate_uid()
    data = make_instance(study=study)
    parsed = read_instance(io.BytesIO(data), len(data), None, DEFAULT_PARTITION)
    unlogged = build_services(services.settings)
    assert isinstance(unlogged.index, CosmosIndexStore)
    unlogged.index._changes = None  # the process dies right after the commit
    services.blobs.put_instance(parsed.key, io.BytesIO(data), len(data))  # type: ignore[union-attr]
    assert commit_instance(services.blobs, unlogged.index, services.sync_queue, index_entry(parsed))  # type: ignore[arg-type]
    assert [e for e in feed(services, limit=200) if e["StudyInstanceUid"] == study] == []
    published = process_study(
        feed=services.changes,
        index=services.index,
        publisher=services.events,
        study=StudyKey(DEFAULT_PARTITION, study),
        service_host="dicom.test",
        quiet_seconds=0,
    )
    assert published == 1
    (entry,) = [e for e in feed(services, limit=200) if e["StudyInstanceUid"] == study]
    assert entry["Action"] == "create" and entry["State"] == "current"
    assert [e["eventType"] for e in events(services)] == ["Microsoft.HealthcareApis.DicomImageCreated"]


def test_a_gap_that_may_still_close_holds_the_reader_back(services: Services) -> None:
    changes = services.changes
    assert isinstance(changes, CosmosChangeFeed)
    first = stored(services)
    changes.reserve(DEFAULT_PARTITION, 1)  # a writer got a number and has not written its entry yet
    second = stored(services)
    sops = [e["SopInstanceUid"] for e in feed(services, limit=200)]
    assert first.sop_instance_uid in sops and second.sop_instance_uid not in sops  # held back, not skipped
    time.sleep(GAP_SETTLE_SECONDS + 0.5)  # the writer died: the number will never appear
    assert second.sop_instance_uid in [e["SopInstanceUid"] for e in feed(services, limit=200)]


def test_logging_a_change_costs_two_index_round_trips(services: Services) -> None:
    key = stored(services)
    with opcount.counting() as ops:
        services.changes.record([Change(key, ChangeAction.CREATE)])
    assert ops.index == 2 and ops.blob == 0, ops


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"offset": -1}, {"startTime": "yesterday"}])
def test_bad_parameters_are_400(services: Services, params: dict[str, object]) -> None:
    from dicomserver.errors import BadRequest

    with pytest.raises(BadRequest):
        feed(services, **params)


def test_one_feed_lists_every_partition_in_one_sequence_with_its_partition_name(services: Services) -> None:
    data = make_instance()  # the same UIDs in two partitions
    for partition in ("site-a", DEFAULT_PARTITION):
        assert store(services, *multipart_body([data]), partition=partition).status == 200
    sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    entries = [e for e in feed(services, limit=200) if e["SopInstanceUid"] == sop]
    assert [e["PartitionName"] for e in entries] == ["site-a", DEFAULT_PARTITION]
    assert entries[0]["Sequence"] < entries[1]["Sequence"]
    assert all(e["State"] == "current" and e["Metadata"] for e in entries)
    sequences = [e["Sequence"] for e in feed(services, limit=200)]
    assert sequences == sorted(set(sequences))  # one sequence: no number twice
