"""DELETE: remove a study, a series or an instance (Azure v2 "Delete").

What is deleted is everything stored under the path, indexed or not: the
instances the index lists and the instance blobs a listing of the study's
(or series') blob prefix finds, so a blob whose STOW died before indexing,
or that a concurrent STOW has not indexed yet, is removed too instead of
surviving a 404.

Order: the study's FHIR sync is scheduled first (write-ahead, see
:mod:`dicomserver.stores.azure.queue`), then each instance blob is deleted, then
the metadata blobs of the rare instances that have one, then the index
documents (counted out of their series and study).  If a step fails the
request fails with 503 and the index still lists what is left, so repeating
the DELETE finishes the job; nothing deleted can be resurrected by the
blob-triggered repair, because the instance blob goes first.  A STOW that
commits an instance while its blob is being deleted leaves an index
document without a blob; the FHIR sync removes such orphans once the study
is quiet.  Deleting what is not stored is a 404.
"""

from __future__ import annotations

import asyncio
import logging

from .errors import NotFound
from .identifiers import InstanceKey, SeriesKey, StudyKey
from .stores import BlobStore, IndexStore, SyncQueue

log = logging.getLogger(__name__)


def _delete(
    blobs: BlobStore,
    index: IndexStore,
    sync_queue: SyncQueue,
    study: StudyKey,
    keys: list[InstanceKey],
    with_metadata_blob: set[InstanceKey],
) -> None:
    sync_queue.schedule_sync([study])
    for key in keys:
        blobs.delete_instance(key)
    for key in with_metadata_blob:
        blobs.delete_metadata(key)
    index.remove_instances(keys)


def _delete_all(
    blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, study: StudyKey, series_instance_uid: str | None
) -> bool:
    indexed = index.list_instance_details(study, series_instance_uid)
    stored = blobs.list_instances(study, series_instance_uid)
    keys = list(dict.fromkeys([i.key for i in indexed] + stored))
    if not keys:
        return False
    _delete(blobs, index, sync_queue, study, keys, {i.key for i in indexed if i.metadata_in_blob})
    return True


async def delete_study(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, study: StudyKey) -> None:
    """Delete every instance of a study.

    Raises
    ------
    NotFound
        If the study has no instance.
    """
    if not await asyncio.to_thread(_delete_all, blobs, index, sync_queue, study, None):
        raise NotFound(f"The study {study.study_instance_uid} was not found.")


async def delete_series(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, series: SeriesKey) -> None:
    """Delete every instance of a series.

    Raises
    ------
    NotFound
        If the series is not in the study.
    """
    if not await asyncio.to_thread(_delete_all, blobs, index, sync_queue, series.study, series.series_instance_uid):
        raise NotFound(f"The series {series.series_instance_uid} was not found in study {series.study_instance_uid}.")


def _delete_one(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, key: InstanceKey) -> bool:
    indexed = index.get_instance(key)
    if indexed is not None:
        _delete(blobs, index, sync_queue, key.study, [key], {key} if indexed.metadata_in_blob else set())
        return True
    # Not indexed: a blob may still exist (a STOW that died or is still running); delete it.
    if blobs.delete_instance(key):
        index.remove_instances([key])  # in case a STOW committed it meanwhile
        sync_queue.schedule_sync([key.study])
        return True
    return False


async def delete_instance(*, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, key: InstanceKey) -> None:
    """Delete one instance.

    Raises
    ------
    NotFound
        If the instance is not in the series.
    """
    if not await asyncio.to_thread(_delete_one, blobs, index, sync_queue, key):
        raise NotFound(
            f"The instance {key.sop_instance_uid} was not found in series {key.series_instance_uid} "
            f"of study {key.study_instance_uid}."
        )
