"""STOW-RS: store instances (PS3.18 §10.5; Azure v2 "Store (STOW-RS)").

How it works: the request body streams through :class:`MultipartReader`; each
part is spooled to a temporary file (memory up to 8 MiB, then disk) and, once
complete, stored in a worker thread (up to :data:`PARALLEL_PARTS` at a time)
by the store sequence of :mod:`dicomserver.ingest`: parse and validate
without pixel data, create the instance blob with ``If-None-Match: *`` (the
preamble zeroed, everything else as sent), schedule the study's FHIR sync
(write-ahead), create the index document with the metadata in it.  The
instances the request created are counted into their series and studies
once per request (every :data:`AGGREGATE_EVERY` instances for long ones, and
whenever the body ends, also when it breaks off).  A request of one instance
(what most modalities send) counts it beside its index create rather than
after it, and takes the count back if the create fails or finds the instance
already indexed; so its storage cost is one blob write, one index create and
one series patch, and its latency that of the blob write plus one index write.

If a step after the blob write fails, the blob is deleted first and then the
index document, so a failed instance is never half visible, the repair
trigger cannot resurrect it, and a retry can succeed.  Each part's outcome is
its own: any exception while handling a part becomes that part's
FailedSOPSequence entry (272), so one bad part never aborts the batch, and
nothing that was stored is reported as failed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import tempfile
import threading
from collections.abc import AsyncIterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import (
    DependencyUnavailable,
    DicomServerError,
    DuplicateInstance,
    FailureReason,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .identifiers import DEFAULT_PARTITION, StudyKey
from .ingest import Rejected, commit_instance, ensure_indexed, index_entry, read_instance, zero_preamble
from .mediatypes import APPLICATION_DICOM, MULTIPART_RELATED, parse_media_type
from .multipart import MultipartReader, PartData, PartEnd, PartStart
from .stores import BlobStore, IndexedInstance, IndexStore, SyncQueue
from .stores.layout import instance_blob_name
from .stores.model import INLINE_METADATA_LIMIT

log = logging.getLogger(__name__)

_SPOOL_IN_MEMORY = 8 * 1024 * 1024
#: Parts of one request stored at the same time.
PARALLEL_PARTS = 4
#: A long request counts its instances into the aggregates at least this often.
AGGREGATE_EVERY = 100
#: Threads that count a one-instance request's instance while it is being committed (see ``_count_ahead``).
_AHEAD = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stow-count")


@dataclass(slots=True)
class InstanceResult:
    """What happened to one part of a STOW request."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure: FailureReason | None = None
    message: str = ""
    retrieve_url: str | None = None
    study: StudyKey | None = None
    dependency_failed: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class StoreResponse:
    """HTTP status and DICOM JSON body of a STOW response."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


class _Part:
    """A part being spooled, with its size counted against the cap."""

    def __init__(self, content_type: str | None, cap: int) -> None:
        self.content_type = content_type
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        self.size = 0
        self.cap = cap
        self.too_large = False
        #: The request's only part (known when its end and the closing delimiter arrived together).
        self.alone = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            self.too_large = True
            return
        self.file.write(data)


async def store_instances(
    *,
    blobs: BlobStore,
    index: IndexStore,
    sync_queue: SyncQueue,
    body: AsyncIterable[bytes],
    content_type: str | None,
    study_instance_uid: str | None,
    base_url: str,
    max_instance_bytes: int,
    partition: str = DEFAULT_PARTITION,
    max_parts: int = 10_000,
) -> StoreResponse:
    """Store the instances in a STOW-RS request body.

    Parameters
    ----------
    body:
        The request body, as it streams in.
    content_type:
        The request Content-Type: ``multipart/related; type="application/dicom"``
        or ``application/dicom``.
    study_instance_uid:
        The study in ``POST /studies/{study}``, if any (instances of another study fail with 43265).
    base_url:
        The DICOMweb base URL (``.../v2``) used for RetrieveURL values.
    max_parts:
        Parts accepted in one request; the rest of the body is not read (413 when
        nothing was stored, else one FailedSOPSequence entry says so).

    Returns
    -------
    StoreResponse
        200 all stored; 202 some stored and some failed; 409 none stored.

    Raises
    ------
    UnsupportedMediaType
        For any other Content-Type.
    BadRequest
        For a malformed multipart body (before any part was stored).
    PayloadTooLarge
        For more than ``max_parts`` parts when none was stored.
    DependencyUnavailable
        When nothing could be stored because Blob Storage or Cosmos DB failed.
    """
    if not content_type:
        raise UnsupportedMediaType('The request has no Content-Type; use multipart/related; type="application/dicom".')
    media = parse_media_type(content_type)
    results: list[InstanceResult] = []
    context = _Context(blobs, index, sync_queue, study_instance_uid, base_url, partition)

    if media.type == APPLICATION_DICOM:
        part = _Part(APPLICATION_DICOM, max_instance_bytes)
        part.alone = True
        try:
            async for chunk in body:
                part.write(chunk)
        except BaseException:
            part.file.close()
            raise
        try:
            results.append(await asyncio.to_thread(context.process, part))
        finally:
            await asyncio.to_thread(context.flush)
    elif media.type == MULTIPART_RELATED:
        declared = (media.param("type") or APPLICATION_DICOM).lower()
        if declared != APPLICATION_DICOM:
            raise UnsupportedMediaType(
                f"The multipart type '{declared}' is not supported; use type=\"application/dicom\"."
            )
        boundary = media.param("boundary")
        if not boundary:
            raise UnsupportedMediaType("The multipart/related Content-Type has no boundary parameter.")
        reader = MultipartReader(boundary)
        current: _Part | None = None
        # Parts are stored concurrently (at most PARALLEL_PARTS at a time, each spooled to its own
        # file) while the body keeps streaming in; results keep the order of the parts.
        slots = asyncio.Semaphore(PARALLEL_PARTS)
        tasks: list[asyncio.Task[InstanceResult]] = []

        async def store_part(part: _Part) -> InstanceResult:
            try:
                result = await asyncio.to_thread(context.process, part)
                if context.pending() >= AGGREGATE_EVERY:
                    await asyncio.to_thread(context.flush)
                return result
            finally:
                slots.release()

        too_many = False
        body_error: BaseException | None = None
        count = 0
        try:
            async for chunk in body:
                events = reader.feed(chunk)
                final = max((i for i, e in enumerate(events) if isinstance(e, PartEnd)), default=-1)
                for position, event in enumerate(events):
                    if isinstance(event, PartStart):
                        count += 1
                        if count > max_parts:
                            too_many = True
                            break
                        current = _Part(event.headers.get("content-type"), max_instance_bytes)
                    elif isinstance(event, PartData) and current is not None:
                        current.write(event.data)
                    elif isinstance(event, PartEnd) and current is not None:
                        part, current = current, None
                        part.alone = reader.finished and position == final and reader.parts_seen == 1
                        await slots.acquire()
                        tasks.append(asyncio.create_task(store_part(part)))
                if too_many:
                    break
            if not too_many:
                reader.close()
        except DicomServerError as exc:
            body_error = exc  # a malformed body: the parts before the damage keep their outcome
        finally:
            if current is not None:  # the body ended or failed inside a part
                current.file.close()
            # Parts already handed over finish (or fail) on their own terms, even on a bad body;
            # whatever they created is counted in even if the client went away (shielded from
            # the request's cancellation).
            results.extend(await asyncio.shield(asyncio.ensure_future(_finish(tasks, context))))
        stored_any = any(r.failure is None for r in results)
        if too_many:
            if not stored_any:
                raise PayloadTooLarge(f"The request has more than {max_parts} parts (the limit per request).")
            results.append(
                InstanceResult(
                    None,
                    None,
                    FailureReason.PROCESSING_FAILURE,
                    f"Parts after the first {max_parts} were not read (the limit per request).",
                )
            )
        if body_error is not None:
            if not stored_any:
                raise body_error
            assert isinstance(body_error, DicomServerError)
            results.append(InstanceResult(None, None, FailureReason.PROCESSING_FAILURE, body_error.message))
    else:
        raise UnsupportedMediaType(
            f"The Content-Type '{media.type}' is not supported; use multipart/related; type=\"application/dicom\"."
        )

    return _response(results, study_instance_uid, base_url)


async def _finish(tasks: list[asyncio.Task[InstanceResult]], context: _Context) -> list[InstanceResult]:
    results = list(await asyncio.gather(*tasks))
    await asyncio.to_thread(context.flush)
    return results


@dataclass(slots=True)
class _Context:
    blobs: BlobStore
    index: IndexStore
    sync_queue: SyncQueue
    study_in_path: str | None
    base_url: str
    partition: str
    #: Instances this request created and has not yet counted into the aggregates.
    created: list[IndexedInstance] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pending(self) -> int:
        with self.lock:
            return len(self.created)

    def flush(self) -> None:
        """Count the created instances into their series and studies (one patch per series and study)."""
        with self.lock:
            batch, self.created = self.created, []
        if not batch:
            return
        self._update_aggregates(batch)

    def process(self, part: _Part) -> InstanceResult:
        try:
            return self._process(part)
        except Exception:  # noqa: BLE001 - a part's failure is that part's outcome, never the request's
            log.exception("unexpected failure while storing a part")
            return InstanceResult(None, None, FailureReason.PROCESSING_FAILURE, "The part could not be processed.")
        finally:
            part.file.close()

    def _process(self, part: _Part) -> InstanceResult:
        if part.content_type is not None and parse_media_type(part.content_type).type != APPLICATION_DICOM:
            return InstanceResult(
                None,
                None,
                FailureReason.PROCESSING_FAILURE,
                f"The part type '{part.content_type}' is not application/dicom.",
            )
        if part.too_large:
            exc = PayloadTooLarge(f"The instance is larger than the {part.cap}-byte limit.")
            return InstanceResult(None, None, FailureReason.PROCESSING_FAILURE, exc.message)
        if part.size == 0:
            return InstanceResult(None, None, FailureReason.PROCESSING_FAILURE, "The part is empty.")
        f = part.file
        parsed = read_instance(f, part.size, self.study_in_path, self.partition)
        if isinstance(parsed, Rejected):
            return InstanceResult(parsed.sop_class_uid, parsed.sop_instance_uid, parsed.reason, parsed.message)
        key = parsed.key
        result = InstanceResult(parsed.sop_class_uid, key.sop_instance_uid, study=key.study, warnings=parsed.warnings)

        zero_preamble(f)
        f.seek(0)
        try:
            self.blobs.put_instance(key, f, part.size, parsed.transfer_syntax_uid)
        except DuplicateInstance as exc:
            # A blob left by a STOW that died before indexing is repaired here, so the
            # instance the client is told exists really is visible.
            try:
                ensure_indexed(self.blobs, self.index, self.sync_queue, instance_blob_name(key))
            except DicomServerError as repair_error:
                log.warning("inline repair failed sop=%s: %s", key.sop_instance_uid, repair_error.message)
            result.failure, result.message = FailureReason.SOP_INSTANCE_ALREADY_EXISTS, exc.message
            return result
        except DependencyUnavailable as exc:
            result.failure, result.message, result.dependency_failed = (
                FailureReason.PROCESSING_FAILURE,
                exc.message,
                True,
            )
            return result
        entry = index_entry(parsed)
        ahead = self._count_ahead(entry) if part.alone else None
        try:
            created = commit_instance(self.blobs, self.index, self.sync_queue, entry)
        except Exception as exc:  # noqa: BLE001 - undo, then report this part as failed
            message = exc.message if isinstance(exc, DicomServerError) else "The instance could not be indexed."
            log.warning("store failed after the blob write; undoing sop=%s: %s", key.sop_instance_uid, message)
            self._undo(entry)
            if ahead is not None:
                self._count_back(ahead, entry)
            result.failure, result.message = FailureReason.PROCESSING_FAILURE, message
            result.dependency_failed = isinstance(exc, DependencyUnavailable)
            return result
        if ahead is not None:
            if not created:  # the repair trigger indexed our blob meanwhile and counted it itself
                self._count_back(ahead, entry)
            else:
                ahead.result()
        elif created:
            with self.lock:
                self.created.append(entry)
        # else: the repair trigger indexed our blob between the blob write and here, and counted it.
        result.retrieve_url = (
            f"{self.base_url}/studies/{key.study_instance_uid}/series/{key.series_instance_uid}"
            f"/instances/{key.sop_instance_uid}"
        )
        return result

    def _count_ahead(self, entry: IndexedInstance) -> Future[None]:
        """Count a one-instance request's instance while it is being committed.

        The aggregate patch then costs no latency of its own (one instance per request is what
        most modalities send): it runs beside the index create instead of after it.  If the create fails or finds
        the instance already indexed (and counted by whoever indexed it), :meth:`_count_back`
        takes it out again.  The FHIR sync is scheduled first, so even this early write is covered.
        """
        self.sync_queue.schedule_sync([entry.key.study])
        return _AHEAD.submit(contextvars.copy_context().run, self._update_aggregates, [entry])

    def _update_aggregates(self, batch: list[IndexedInstance]) -> None:
        try:
            self.index.update_aggregates(batch)
        except Exception as exc:  # noqa: BLE001 - committed instances: the reconcile repairs the counts
            message = exc.message if isinstance(exc, DicomServerError) else type(exc).__name__
            log.error("aggregate update failed after store instances=%d: %s", len(batch), message)

    def _count_back(self, ahead: Future[None], entry: IndexedInstance) -> None:
        ahead.result()
        try:
            self.index.count_out([entry.key])
        except Exception as exc:  # noqa: BLE001 - the reconcile repairs the counts
            log.error("aggregate correction failed sop=%s: %s", entry.key.sop_instance_uid, type(exc).__name__)

    def _undo(self, entry: IndexedInstance) -> None:
        """Take back an instance whose commit failed: the blob first, then any index document.

        In this order the repair trigger either finds no blob, or indexes it and
        then sees it gone and discards its own entry (see ``ensure_indexed``).
        """
        key = entry.key
        steps: list[Any] = [self.blobs.delete_instance, self.index.discard_instance]
        if entry.metadata_json is not None and len(entry.metadata_json) > INLINE_METADATA_LIMIT:
            steps.append(self.blobs.delete_metadata)
        for step in steps:
            try:
                step(key)
            except DicomServerError as exc:
                log.error("undo step %s failed sop=%s: %s", step.__name__, key.sop_instance_uid, exc.message)


def _uid(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _warning_attributes(result: InstanceResult) -> dict[str, Any]:
    """WarningReason 1 and FailedAttributesSequence for an instance stored with invalid attributes (v2)."""
    if not result.warnings:
        return {}
    return {
        "00081196": {"vr": "US", "Value": [int(FailureReason.DATASET_HAS_VALIDATION_WARNINGS)]},
        "00741048": {"vr": "SQ", "Value": [{"00000902": {"vr": "LO", "Value": [text]}} for text in result.warnings]},
    }


def _response(results: list[InstanceResult], study_in_path: str | None, base_url: str) -> StoreResponse:
    stored = [r for r in results if r.failure is None]
    failed = [r for r in results if r.failure is not None]
    body: dict[str, Any] = {}
    if study_in_path and stored:
        body["00081190"] = {"vr": "UR", "Value": [f"{base_url}/studies/{study_in_path}"]}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _uid(r.sop_class_uid),
                    "00081155": _uid(r.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [int(r.failure or 0)]},
                    **({"00000902": {"vr": "LO", "Value": [r.message]}} if r.message else {}),
                }
                for r in failed
            ],
        }
    body["00081199"] = {
        "vr": "SQ",
        "Value": [
            {
                "00081150": _uid(r.sop_class_uid),
                "00081155": _uid(r.sop_instance_uid),
                "00081190": {"vr": "UR", "Value": [r.retrieve_url]},
                **_warning_attributes(r),
            }
            for r in stored
        ],
    }
    if not stored:
        del body["00081199"]
    if stored and not failed and not any(r.warnings for r in stored):
        status = 200
    elif stored:
        status = 202
    else:
        if failed and all(r.dependency_failed for r in failed):
            raise DependencyUnavailable("No instance could be stored: a storage dependency is unavailable.")
        status = 409
    return StoreResponse(status, body)
