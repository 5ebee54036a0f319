"""STOW-RS service against the emulators (no HTTP)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from pydicom.uid import generate_uid

from dicomserver.errors import BadRequest, UnsupportedMediaType
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.stow import StoreResponse, store_instances
from dicomserver.wiring import Services
from tests.dicomfiles import bundled, make_instance, multipart_body, zero_preamble
from tests.search import study_search


async def chunked(body: bytes, size: int = 7919) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def store(
    services: Services,
    body: bytes | AsyncIterator[bytes],
    content_type: str,
    study: str | None = None,
    cap: int = 10**9,
    *,
    index: Any = None,
    max_parts: int = 10_000,
    chunk_size: int = 7919,
    partition: str = DEFAULT_PARTITION,
    upsert: bool = False,
    expires_at: str | None = None,
) -> StoreResponse:
    """Run STOW-RS on ``body`` (bytes, sent in ``chunk_size`` pieces, or an async iterator as it comes);
    ``upsert`` is a PUT, ``expires_at`` what the expiry headers would give."""
    return asyncio.run(
        store_instances(
            blobs=services.blobs,
            index=index if index is not None else services.index,
            sync_queue=services.sync_queue,
            body=chunked(body, chunk_size) if isinstance(body, bytes) else body,
            content_type=content_type,
            study_instance_uid=study,
            base_url="http://dicom.test/v2",
            max_instance_bytes=cap,
            max_parts=max_parts,
            partition=partition,
            upsert=upsert,
            expires_at=expires_at,
        )
    )


def failures(response: StoreResponse) -> list[int]:
    return [item["00081197"]["Value"][0] for item in response.body.get("00081198", {}).get("Value", [])]


def referenced(response: StoreResponse) -> list[dict[str, Any]]:
    return list(response.body.get("00081199", {}).get("Value", []))


def test_multipart_store_writes_blob_metadata_index_and_sync_message(services: Services) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    body, ctype = multipart_body([data])
    response = store(services, body, ctype)
    assert response.status == 200
    (ref,) = referenced(response)
    sop = ref["00081155"]["Value"][0]
    url = ref["00081190"]["Value"][0]
    assert url.startswith("http://dicom.test/v2/studies/") and url.endswith(f"/instances/{sop}")
    study, series = url.split("/studies/")[1].split("/series/")
    series = series.split("/")[0]
    key = InstanceKey(DEFAULT_PARTITION, study, series, sop)
    assert b"".join(services.blobs.iter_instance(key)) == zero_preamble(data)
    indexed = services.index.get_instance(key)
    assert indexed is not None and indexed.metadata_json is not None  # the metadata lives in the index document
    metadata = json.loads(indexed.metadata_json)
    assert metadata["00080018"]["Value"] == [sop]
    # Stored with a placeholder; the URI is made absolute when served (dicomserver.bulkdata).
    assert metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "dicomserver-bulkdata:7FE00010"}
    queue = QueueClient.from_connection_string(
        services.settings.storage_connection_string or "", services.settings.fhir_sync_queue
    )
    # The sync message was sent before the index write, invisible until the write is surely done.
    assert list(queue.receive_messages()) == []
    deadline = time.monotonic() + services.settings.fhir_sync_delay_seconds + 5
    messages: list[Any] = []
    while not messages and time.monotonic() < deadline:
        time.sleep(0.2)
        messages = list(queue.receive_messages())
    (message,) = messages
    assert json.loads(base64.b64decode(message.content)) == {"partition": DEFAULT_PARTITION, "study": study}


def test_single_part_application_dicom(services: Services) -> None:
    response = store(services, make_instance(), "application/dicom")
    assert response.status == 200 and len(referenced(response)) == 1


def test_duplicate_instance_returns_409_with_45070(services: Services) -> None:
    data = make_instance()
    body, ctype = multipart_body([data])
    assert store(services, body, ctype).status == 200
    again = store(services, body, ctype)
    assert again.status == 409
    assert failures(again) == [45070]


def test_mixed_batch_returns_202_with_both_sequences(services: Services) -> None:
    good = make_instance()
    bad_uid = make_instance(sop="abc.123")
    body, ctype = multipart_body([good, bad_uid, b"", b"not dicom at all" * 20])
    response = store(services, body, ctype)
    assert response.status == 202
    assert len(referenced(response)) == 1
    assert failures(response) == [43264, 272, 272]
    assert response.body["00081198"]["Value"][0]["00081155"]["Value"] == ["abc.123"]


def test_study_in_url_mismatch_fails_with_43265(services: Services) -> None:
    study = generate_uid()
    body, ctype = multipart_body([make_instance(study=study), make_instance()])
    response = store(services, body, ctype, study=study)
    assert response.status == 202
    assert failures(response) == [43265]
    assert response.body["00081190"]["Value"] == [f"http://dicom.test/v2/studies/{study}"]


def test_nothing_stored_is_409(services: Services) -> None:
    body, ctype = multipart_body([make_instance(sop="1.2.03")])
    assert store(services, body, ctype).status == 409


def test_instance_over_the_size_cap_fails_and_others_are_stored(services: Services) -> None:
    small, large = make_instance(), make_instance(rows=64, columns=64)
    body, ctype = multipart_body([small, large])
    response = store(services, body, ctype, cap=len(small) + 10)
    assert response.status == 202 and failures(response) == [272]


@pytest.mark.parametrize("ctype", ["application/json", 'multipart/related; type="application/json"; boundary=x'])
def test_unsupported_content_type_is_415(services: Services, ctype: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        store(services, b"{}", ctype)


def test_truncated_multipart_body_is_400(services: Services) -> None:
    body, ctype = multipart_body([make_instance()])
    with pytest.raises(BadRequest):
        store(services, body[:-20], ctype)


def test_parallel_stores_of_one_instance_give_exactly_one_success(services: Services) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body, ctype = multipart_body([make_instance()])
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: store(services, body, ctype), range(8)))
    assert sorted(r.status for r in responses) == [200] + [409] * 7
    assert sorted(code for r in responses for code in failures(r)) == [45070] * 7


def test_parallel_stores_into_one_study_keep_exact_aggregates(services: Services) -> None:
    from concurrent.futures import ThreadPoolExecutor

    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    bodies = [multipart_body([make_instance(study=study, series=series[i % 2])]) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: store(services, b[0], b[1]).status, bodies))
    assert statuses == [200] * 8
    query = study_search([("StudyInstanceUID", study)]).query
    (record,) = services.index.search(query).items
    assert (record.number_of_study_instances, record.number_of_study_series) == (8, 2)
