"""DELETE against the emulators: blobs, index documents and aggregates go together."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import delete
from dicomserver.errors import NotFound
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, SeriesKey, StudyKey
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_stow import store
from tests.search import study_search


def stored(services: Services, **kwargs: object) -> InstanceKey:
    data = make_instance(**kwargs)  # type: ignore[arg-type]
    body, ctype = multipart_body([data])
    assert store(services, body, ctype).status == 200
    ds = pydicom.dcmread(io.BytesIO(data))
    return InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def study_record(services: Services, study: str):  # type: ignore[no-untyped-def]
    items = services.index.search(study_search([("StudyInstanceUID", study)]).query).items
    return items[0] if items else None


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_delete_instance_removes_blobs_and_index_and_updates_aggregates(services: Services) -> None:
    study, series = generate_uid(), generate_uid()
    a = stored(services, study=study, series=series)
    b = stored(services, study=study, series=series)
    c = stored(services, study=study, modality="MR")
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    run(delete.delete_instance(key=a, **kw))
    assert services.index.get_instance(a) is None
    with pytest.raises(NotFound):
        services.blobs.get_metadata(a)
    with pytest.raises(NotFound):
        b"".join(services.blobs.iter_instance(a))
    record = study_record(services, study)
    assert (record.number_of_study_instances, record.number_of_study_series) == (2, 2)
    run(delete.delete_series(series=b.series, **kw))
    record = study_record(services, study)
    assert (record.number_of_study_instances, record.modalities_in_study) == (1, ("MR",))
    run(delete.delete_study(study=c.study, **kw))
    assert study_record(services, study) is None


def test_unknown_targets_are_404_and_repeat_delete_is_harmless(services: Services) -> None:
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    key = stored(services)
    with pytest.raises(NotFound):
        run(delete.delete_study(study=StudyKey(DEFAULT_PARTITION, generate_uid()), **kw))
    with pytest.raises(NotFound):  # series not in this study
        run(delete.delete_series(series=SeriesKey(DEFAULT_PARTITION, key.study_instance_uid, generate_uid()), **kw))
    run(delete.delete_instance(key=key, **kw))
    with pytest.raises(NotFound):
        run(delete.delete_instance(key=key, **kw))


def test_instance_can_be_stored_again_after_delete(services: Services) -> None:
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    sop = generate_uid()
    key = stored(services, sop=sop)
    run(delete.delete_study(study=key.study, **kw))
    again = stored(services, sop=sop, study=key.study_instance_uid, series=key.series_instance_uid)
    assert services.index.get_instance(again) is not None


def test_delete_racing_stores_into_the_same_series_leaves_exact_aggregates(services: Services) -> None:
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    study, series = generate_uid(), generate_uid()
    first = [stored(services, study=study, series=series) for _ in range(4)]

    def store_one(_: int) -> InstanceKey:
        return stored(services, study=study, series=series)

    def delete_one(key: InstanceKey) -> None:
        run(delete.delete_instance(key=key, **kw))

    with ThreadPoolExecutor(8) as pool:
        added = pool.map(store_one, range(4))
        list(pool.map(delete_one, first))
        added_keys = list(added)
    record = study_record(services, study)
    assert record.number_of_study_instances == 4
    assert set(services.index.list_instances(StudyKey(DEFAULT_PARTITION, study))) == set(added_keys)
