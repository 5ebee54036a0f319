from __future__ import annotations

import io

import pytest

from dicomserver.errors import DuplicateInstance, NotFound
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.stores.layout import instance_blob_name
from dicomserver.wiring import Services

KEY = InstanceKey(DEFAULT_PARTITION, "1.2.3", "1.2.3.4", "1.2.3.4.5")


def test_instance_blob_is_created_once_and_read_back(services: Services) -> None:
    data = bytes(range(256)) * 100
    services.blobs.put_instance(KEY, io.BytesIO(data), len(data))
    with pytest.raises(DuplicateInstance):
        services.blobs.put_instance(KEY, io.BytesIO(b"other"), 5)
    assert b"".join(services.blobs.iter_instance(KEY)) == data
    assert services.blobs.instance_size(KEY) == len(data)


def test_ranged_read_returns_exact_bytes(services: Services) -> None:
    data = bytes(range(256)) * 40
    services.blobs.put_instance(KEY, io.BytesIO(data), len(data))
    assert b"".join(services.blobs.iter_instance(KEY, offset=1000, length=333)) == data[1000:1333]


def test_missing_instance_and_metadata_are_not_found(services: Services) -> None:
    with pytest.raises(NotFound):
        b"".join(services.blobs.iter_instance(KEY))
    with pytest.raises(NotFound):
        services.blobs.get_metadata(KEY)


def test_metadata_round_trip_with_etag(services: Services) -> None:
    services.blobs.put_metadata(KEY, b'{"a":1}')
    body, etag = services.blobs.get_metadata(KEY)
    assert body == b'{"a":1}'
    services.blobs.put_metadata(KEY, b'{"a":2}')
    assert services.blobs.get_metadata(KEY)[1] != etag


def test_delete_is_idempotent(services: Services) -> None:
    services.blobs.put_instance(KEY, io.BytesIO(b"x"), 1)
    services.blobs.delete_instance(KEY)
    services.blobs.delete_instance(KEY)
    services.blobs.put_instance(KEY, io.BytesIO(b"y"), 1)  # can be stored again


def test_blob_names_follow_partition_study_series_instance() -> None:
    assert instance_blob_name(KEY) == "Microsoft.Default/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
