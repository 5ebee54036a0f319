"""The write path (issue: few round trips per instance, nothing lost when a request dies).

Storage round trips are counted by the SDK transports (dicomserver.opcount), so
their ceilings are asserted here: they are a design invariant, not a timing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydicom
import pytest
from azure.storage.queue import QueueClient
from pydicom.uid import generate_uid

from dicomserver import delete, opcount, wado
from dicomserver.errors import DependencyUnavailable, PayloadTooLarge
from dicomserver.fhir import mapping
from dicomserver.fhir.client import FhirClient
from dicomserver.fhir.sync import IndexIncomplete, SyncOutcome
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, StudyKey
from dicomserver.ingest import Outcome, commit_instance, ensure_indexed, index_entry, read_instance
from dicomserver.stores.layout import instance_blob_name
from dicomserver.stow import StoreResponse
from dicomserver.wiring import Services
from tests.dicomfiles import deeply_nested, make_instance, multipart_body, multipart_with_types
from tests.integration.test_fhir_sync import sync
from tests.integration.test_stow import failures, referenced, store
from tests.search import study_search

BASE = "https://dicom.example.org/v2"


def key_of(data: bytes) -> InstanceKey:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def study_record(services: Services, study: str) -> Any:
    items = services.index.search(study_search([("StudyInstanceUID", study)]).query).items
    return items[0] if items else None


def counted(call: Any) -> tuple[Any, opcount.Operations]:
    with opcount.counting() as ops:
        result = call()
    return result, ops


def sync_messages(services: Services, wait: float) -> list[dict[str, Any]]:
    """The fhir-sync messages that become visible within ``wait`` seconds (consumed)."""
    queue = QueueClient.from_connection_string(
        services.settings.storage_connection_string or "", services.settings.fhir_sync_queue
    )
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for message in queue.receive_messages(max_messages=32):
            found.append(json.loads(base64.b64decode(message.content)))
            queue.delete_message(message)
        time.sleep(0.2)
    return found


# -- round trips ----------------------------------------------------------------------------


def test_a_20_instance_stow_into_one_study_costs_one_blob_and_about_one_index_write_per_instance(
    services: Services,
) -> None:
    study, series = generate_uid(), generate_uid()
    parts = [make_instance(study=study, series=series, InstanceNumber=i) for i in range(20)]
    response, ops = counted(lambda: store(services, *multipart_body(parts)))
    assert response.status == 200
    # new study: 20 instance creates + (patch 404 + create) for the series and for the study
    # + the change feed: counter patch (404 + create for a new partition) + one log document
    # + one read of the declared extended query tags (a cold cache: at most once per process per 5 s,
    # however many parts are stored in parallel)
    assert ops.blob <= 20 and ops.index <= 28 and ops.queue <= 1, ops
    more = [make_instance(study=study, series=series, InstanceNumber=20 + i) for i in range(20)]
    response, ops = counted(lambda: store(services, *multipart_body(more)))
    assert response.status == 200
    # existing series: the cost does not grow with the study (20 creates + 1 series patch; the study
    # document is not written when its attributes did not change) + 2 for the change feed
    assert ops.blob <= 20 and ops.index <= 23 and ops.queue <= 1, ops
    record = study_record(services, study)
    assert record.number_of_study_instances == 40 and record.number_of_study_series == 1


def test_a_one_instance_stow_into_an_existing_series_costs_five_round_trips(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    assert store(services, *multipart_body([make_instance(study=study, series=series)])).status == 200
    response, ops = counted(lambda: store(services, make_instance(study=study, series=series), "application/dicom"))
    assert response.status == 200
    # blob write; index create + series patch (beside it); change feed counter + log document
    assert ops.blob == 1 and ops.index <= 4 and ops.queue <= 1, ops


def test_study_metadata_of_100_instances_is_two_index_reads_and_no_blob_read(services: Services) -> None:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    parts = [make_instance(study=study, series=series[i % 2], InstanceNumber=i) for i in range(100)]
    for start in range(0, 100, 25):
        assert store(services, *multipart_body(parts[start : start + 25])).status == 200

    async def read() -> tuple[wado.Retrieved, bytes]:
        result = await wado.retrieve_study_metadata(
            blobs=services.blobs,
            index=services.index,
            study=StudyKey(DEFAULT_PARTITION, study),
            accept=None,
            if_none_match=None,
            base_url=BASE,
        )
        return result, b"".join([chunk async for chunk in result.body])

    (result, body), ops = counted(lambda: asyncio.run(read()))
    assert len(json.loads(body)) == 100
    assert ops.blob == 0 and ops.index <= 2, ops
    etag = result.headers["ETag"]

    async def conditional() -> int:
        again = await wado.retrieve_study_metadata(
            blobs=services.blobs,
            index=services.index,
            study=StudyKey(DEFAULT_PARTITION, study),
            accept=None,
            if_none_match=etag,
            base_url=BASE,
        )
        return again.status

    status, ops = counted(lambda: asyncio.run(conditional()))
    assert status == 304 and ops.total == 1
    # any store into the study changes the ETag
    assert store(services, *multipart_body([make_instance(study=study, series=series[0])])).status == 200
    assert asyncio.run(conditional()) == 200


def test_parallel_one_instance_stows_into_one_study_keep_exact_counts(services: Services) -> None:
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    parts = [make_instance(study=study, series=series[i % 3], modality=("CT", "MR")[i % 2 and 1]) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda p: store(services, p, "application/dicom").status, parts))
    assert statuses == [200] * 24
    record = study_record(services, study)
    assert record.number_of_study_instances == 24 and record.number_of_study_series == 3
    assert set(record.modalities_in_study) <= {"CT", "MR"}


# -- each part's outcome is its own -----------------------------------------------------------


def test_a_part_with_a_bogus_content_type_fails_alone(services: Services) -> None:
    study = generate_uid()
    good = [make_instance(study=study), make_instance(study=study)]
    body, ctype = multipart_with_types(
        [("application/dicom", good[0]), ("bogus", b"xyz"), ("application/dicom", good[1])]
    )
    response = store(services, body, ctype)
    assert response.status == 202
    assert len(referenced(response)) == 2 and failures(response) == [272]


def test_deeply_nested_sequences_fail_that_part_only_and_the_study_is_synced(services: Services) -> None:
    study = generate_uid()
    parts = [make_instance(study=study), make_instance(study=study), deeply_nested(400, study=study)]
    parts.append(make_instance(study=study))
    response = store(services, *multipart_body(parts))
    assert response.status == 202
    assert len(referenced(response)) == 3 and len(failures(response)) == 1
    assert study_record(services, study).number_of_study_instances == 3
    assert {"partition": DEFAULT_PARTITION, "study": study} in sync_messages(services, wait=4)


def test_parts_beyond_the_cap_get_413_when_nothing_was_stored(services: Services) -> None:
    body, ctype = multipart_with_types([("application/dicom", b"")] * 5)
    with pytest.raises(PayloadTooLarge):
        store(services, body, ctype, max_parts=3)


def test_parts_beyond_the_cap_are_reported_after_the_stored_ones(services: Services) -> None:
    parts = [make_instance() for _ in range(4)]
    response = store(services, *multipart_body(parts), max_parts=3)
    assert response.status == 202 and len(referenced(response)) == 3 and failures(response) == [272]


# -- nothing lost when a request dies ---------------------------------------------------------


def test_a_client_that_disconnects_after_one_part_leaves_it_stored_counted_and_synced(services: Services) -> None:
    study = generate_uid()
    first, second = make_instance(study=study), make_instance(study=study)
    body, ctype = multipart_body([first, second])
    cut = body.index(b"--test-boundary-1234", len(first))  # the boundary after the first part's data
    cut = body.index(b"\r\n\r\n", cut) + 4  # ... and the second part's headers

    async def dying_body() -> AsyncIterator[bytes]:
        yield body[:cut]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store(services, dying_body(), ctype)
    assert services.index.get_instance(key_of(first)) is not None
    assert services.index.get_instance(key_of(second)) is None
    assert study_record(services, study).number_of_study_instances == 1
    assert {"partition": DEFAULT_PARTITION, "study": study} in sync_messages(services, wait=4)


def test_a_writer_that_died_before_counting_is_repaired_by_the_reconcile(services: Services) -> None:
    study = generate_uid()
    assert store(services, *multipart_body([make_instance(study=study)])).status == 200
    # A second instance committed (blob + index document) by a writer that died before its aggregate patch.
    data = make_instance(study=study)
    parsed = read_instance(io.BytesIO(data), len(data), None, DEFAULT_PARTITION)
    assert not isinstance(parsed, type(None)) and hasattr(parsed, "key")
    services.blobs.put_instance(parsed.key, io.BytesIO(data), len(data))  # type: ignore[union-attr]
    assert commit_instance(services.blobs, services.index, services.sync_queue, index_entry(parsed))  # type: ignore[arg-type]
    assert study_record(services, study).number_of_study_instances == 1  # short by one
    assert services.index.reconcile_study(StudyKey(DEFAULT_PARTITION, study), quiet_seconds=60) is False  # too fresh
    assert services.index.reconcile_study(StudyKey(DEFAULT_PARTITION, study), quiet_seconds=0) is True
    assert study_record(services, study).number_of_study_instances == 2


# -- races, forced interleavings --------------------------------------------------------------


class _Hooked:
    """A blob store whose ``instance_size`` (the repair's "is the blob still there?") runs a hook first."""

    def __init__(self, inner: Any, hook: Any) -> None:
        self._inner, self._hook = inner, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def instance_size(self, key: InstanceKey) -> int:
        self._hook()
        return int(self._inner.instance_size(key))


def test_an_undo_that_interleaves_with_the_repair_leaves_neither_blob_nor_index_entry(services: Services) -> None:
    data = make_instance()
    key = key_of(data)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))  # a STOW wrote its blob, then its commit failed

    def stow_undo() -> None:  # what stow._Context._undo does: the blob first, then any index document
        services.blobs.delete_instance(key)
        services.index.discard_instance(key)

    # The repair has read the blob and created the index document when the undo runs.
    hooked = _Hooked(services.blobs, stow_undo)
    outcome = ensure_indexed(hooked, services.index, services.sync_queue, instance_blob_name(key))  # type: ignore[arg-type]
    assert outcome is Outcome.GONE
    assert services.index.get_instance(key) is None
    assert services.blobs.list_instances(key.study) == []
    assert study_record(services, key.study_instance_uid) is None


def test_delete_removes_an_instance_blob_that_is_not_indexed(services: Services) -> None:
    data = make_instance()
    key = key_of(data)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))  # a STOW between its blob write and its commit
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    asyncio.run(delete.delete_instance(**kw, key=key))  # 204, not 404
    assert services.blobs.list_instances(key.study) == []
    other = make_instance()
    services.blobs.put_instance(key_of(other), io.BytesIO(other), len(other))
    asyncio.run(delete.delete_study(**kw, study=key_of(other).study))
    assert services.blobs.list_instances(key_of(other).study) == []


@pytest.fixture
def fhir(fhir_url: str) -> Iterator[FhirClient]:
    client = FhirClient(fhir_url)
    yield client
    client.close()


def test_a_stow_that_commits_after_a_racing_delete_leaves_an_orphan_the_sync_removes(
    services: Services, fhir: FhirClient
) -> None:
    study = generate_uid()
    kept = make_instance(study=study)
    assert store(services, *multipart_body([kept])).status == 200
    data = make_instance(study=study)
    parsed = read_instance(io.BytesIO(data), len(data), None, DEFAULT_PARTITION)
    key = key_of(data)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))  # STOW: blob written
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    asyncio.run(delete.delete_instance(**kw, key=key))  # DELETE: finds the unindexed blob, removes it
    entry = index_entry(parsed)  # type: ignore[arg-type]
    assert commit_instance(services.blobs, services.index, services.sync_queue, entry)  # STOW: commits late
    services.index.update_aggregates([entry])
    assert services.index.get_instance(key) is not None  # an index entry whose blob is gone
    with pytest.raises(IndexIncomplete):
        sync(services, fhir, study)  # too fresh to call an orphan: the sync waits
    assert sync(services, fhir, study, quiet=0) is SyncOutcome.CREATED
    assert services.index.get_instance(key) is None
    assert study_record(services, study).number_of_study_instances == 1


def test_the_sync_never_shrinks_or_deletes_a_study_whose_blobs_are_not_all_indexed(
    services: Services, fhir: FhirClient
) -> None:
    study = generate_uid()
    assert store(services, *multipart_body([make_instance(study=study) for _ in range(2)])).status == 200
    assert sync(services, fhir, study) is SyncOutcome.CREATED
    # The index loses the study (as a restart re-indexing from storage did); the blobs are all there.
    keys = services.index.list_instances(StudyKey(DEFAULT_PARTITION, study))
    services.index.remove_instances(keys)
    with pytest.raises(IndexIncomplete):
        sync(services, fhir, study)
    # Once the index has them again the sync goes ahead; once the blobs are gone it deletes.
    for key in keys:
        assert ensure_indexed(services.blobs, services.index, services.sync_queue, instance_blob_name(key)) in (
            Outcome.INDEXED,
        )
    assert sync(services, fhir, study) in (SyncOutcome.UNCHANGED, SyncOutcome.UPDATED)
    (resource,) = fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)})
    assert resource["numberOfInstances"] == 2
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    asyncio.run(delete.delete_study(**kw, study=StudyKey(DEFAULT_PARTITION, study)))
    assert sync(services, fhir, study) is SyncOutcome.DELETED


def test_schedule_sync_sends_one_delayed_message_per_study_per_half_delay(services: Services) -> None:
    from dicomserver.stores.azure.queue import AzureSyncQueue

    now = [1000.0]
    queue = AzureSyncQueue(services.sync_queue._queue, services.sync_queue._poison, 2, clock=lambda: now[0])
    a, b = StudyKey(DEFAULT_PARTITION, generate_uid()), StudyKey(DEFAULT_PARTITION, generate_uid())
    with ThreadPoolExecutor(8) as pool:  # parallel parts of one study share one message
        list(pool.map(lambda _: queue.schedule_sync([a]), range(40)))
    with opcount.counting() as ops:
        queue.schedule_sync([a, b])
        now[0] += 0.9  # still covered: the pending message is visible 1.1 s from now, more than the margin
        queue.schedule_sync([a])
        now[0] += 0.2  # 0.9 s left, less than half the delay: a new message
        queue.schedule_sync([a])
    assert ops.queue == 2  # b, then a again
    messages = sync_messages(services, wait=4)
    assert sorted(m["study"] for m in messages) == sorted(
        [a.study_instance_uid, b.study_instance_uid, a.study_instance_uid]
    )


class _IndexHook:
    """The real index, with a hook run before ``create_instance`` (to force an interleaving)."""

    def __init__(self, inner: Any, before_create: Any) -> None:
        self._inner, self._before_create = inner, before_create

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_instance(self, instance: Any) -> bool:
        self._before_create(instance)
        return bool(self._inner.create_instance(instance))


def _store_one(services: Services, index: Any, data: bytes) -> StoreResponse:
    """A one-instance STOW whose body arrives in one piece (so the part is known to be alone)."""
    body, ctype = multipart_body([data])
    return store(services, body, ctype, index=index, chunk_size=len(body))


def test_a_one_instance_stow_counted_ahead_is_not_counted_twice_when_the_repair_indexed_it_first(
    services: Services,
) -> None:
    study = generate_uid()
    data = make_instance(study=study)
    key = key_of(data)

    def repair_first(instance: Any) -> None:  # the blob trigger indexes our blob before our commit
        ensure_indexed(services.blobs, services.index, services.sync_queue, instance_blob_name(key))

    response = _store_one(services, _IndexHook(services.index, repair_first), data)
    assert response.status == 200
    record = study_record(services, study)
    assert record.number_of_study_instances == 1 and record.number_of_study_series == 1


def test_a_one_instance_stow_whose_commit_fails_leaves_no_count_behind(services: Services) -> None:
    study = generate_uid()
    data = make_instance(study=study)

    counted_ahead = []

    def fail(instance: Any) -> None:
        deadline = time.monotonic() + 5
        while not counted_ahead and time.monotonic() < deadline:  # the count runs beside the commit
            counted_ahead.extend([study_record(services, study)] if study_record(services, study) else [])
            time.sleep(0.01)
        raise DependencyUnavailable("The index is unavailable (index instance).")

    with pytest.raises(DependencyUnavailable):
        _store_one(services, _IndexHook(services.index, fail), data)
    assert counted_ahead and counted_ahead[0].number_of_study_instances == 1
    assert study_record(services, study) is None  # the series and study counted ahead are gone again
    assert services.blobs.list_instances(key_of(data).study) == []
    assert _store_one(services, services.index, data).status == 200  # and a retry succeeds
    assert study_record(services, study).number_of_study_instances == 1
