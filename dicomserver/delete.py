"""DELETE: remove a study, a series or an instance (Azure v2 "Delete").

Order per instance: instance blob, metadata blob, then the index documents
(with the series and study aggregates refreshed once per batch).  If a step
fails the request fails with 503 and the index still lists what is left, so
repeating the DELETE finishes the job; nothing deleted can be resurrected by
the blob-triggered repair, because the instance blob goes first.  Deleting
what is not stored is a 404; deleting twice is therefore harmless (the second
call is a 404 and changes nothing).
"""

from __future__ import annotations

import asyncio
import logging

from .errors import DicomServerError, NotFound
from .identifiers import InstanceKey, SeriesKey, StudyKey
from .stores import BlobStore, IndexStore, SyncQueue

log = logging.getLogger(__name__)


def _delete(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, keys: list[InstanceKey]) -> None:
    for key in keys:
        blobs.delete_instance(key)
        blobs.delete_metadata(key)
    index.remove_instances(keys)
    try:
        sync_queue.enqueue_studies([key.study for key in keys])
    except DicomServerError as exc:
        log.error("fhir-sync enqueue failed after delete: %s", exc.message)


async def delete_study(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, study: StudyKey) -> None:
    """Delete every instance of a study.

    Raises
    ------
    NotFound
        If the study has no instance.
    """
    keys = await asyncio.to_thread(index.list_instances, study)
    if not keys:
        raise NotFound(f"The study {study.study_instance_uid} was not found.")
    await asyncio.to_thread(_delete, blobs, index, sync_queue, keys)


async def delete_series(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, series: SeriesKey) -> None:
    """Delete every instance of a series.

    Raises
    ------
    NotFound
        If the series is not in the study.
    """
    keys = await asyncio.to_thread(index.list_instances, series.study, series.series_instance_uid)
    if not keys:
        raise NotFound(f"The series {series.series_instance_uid} was not found in study {series.study_instance_uid}.")
    await asyncio.to_thread(_delete, blobs, index, sync_queue, keys)


async def delete_instance(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, key: InstanceKey) -> None:
    """Delete one instance.

    Raises
    ------
    NotFound
        If the instance is not in the series.
    """
    if await asyncio.to_thread(index.get_instance, key) is None:
        raise NotFound(
            f"The instance {key.sop_instance_uid} was not found in series {key.series_instance_uid} "
            f"of study {key.study_instance_uid}."
        )
    await asyncio.to_thread(_delete, blobs, index, sync_queue, [key])
