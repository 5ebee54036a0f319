"""The repair path: an instance blob that is not indexed gets indexed, idempotently."""

from __future__ import annotations

import io

import pydicom

from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.ingest import Outcome, ensure_indexed
from dicomserver.stores.layout import instance_blob_name
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_stow import failures, store
from tests.search import study_search


def orphan_blob(services: Services, data: bytes) -> InstanceKey:
    """What a STOW that died right after its blob write leaves behind."""
    ds = pydicom.dcmread(io.BytesIO(data))
    key = InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))
    return key


def visible(services: Services, key: InstanceKey) -> bool:
    query = study_search([("StudyInstanceUID", key.study_instance_uid)]).query
    return bool(services.index.search(query).items)


def test_orphan_blob_is_indexed_once(services: Services) -> None:
    key = orphan_blob(services, make_instance())
    assert not visible(services, key)
    name = instance_blob_name(key)
    assert ensure_indexed(services.blobs, services.index, services.sync_queue, name) is Outcome.INDEXED
    assert visible(services, key)
    indexed = services.index.get_instance(key)
    assert indexed is not None and (indexed.metadata_json or "").startswith("{")
    assert ensure_indexed(services.blobs, services.index, services.sync_queue, name) is Outcome.ALREADY_INDEXED


def test_stow_of_an_orphaned_instance_repairs_it_and_reports_45070(services: Services) -> None:
    data = make_instance()
    key = orphan_blob(services, data)
    body, ctype = multipart_body([data])
    response = store(services, body, ctype)
    assert response.status == 409 and failures(response) == [45070]
    assert visible(services, key)


def test_non_canonical_or_mismatched_blobs_are_left_alone(services: Services) -> None:
    sync = services.sync_queue
    assert ensure_indexed(services.blobs, services.index, sync, "../etc/passwd") is Outcome.IGNORED
    assert ensure_indexed(services.blobs, services.index, sync, "p/1.2/1.3/abc.dcm") is Outcome.IGNORED
    data = make_instance()
    wrong = InstanceKey(DEFAULT_PARTITION, "1.2.3", "1.2.3.4", "1.2.3.4.5")
    services.blobs.put_instance(wrong, io.BytesIO(data), len(data))
    assert ensure_indexed(services.blobs, services.index, sync, instance_blob_name(wrong)) is Outcome.REJECTED
    assert b"".join(services.blobs.iter_instance(wrong)) == data  # never deleted
    gone = InstanceKey(DEFAULT_PARTITION, "1.2.3", "1.2.3.4", "1.2.3.4.6")
    assert ensure_indexed(services.blobs, services.index, sync, instance_blob_name(gone)) is Outcome.GONE
