"""STOW-RS: store instances (PS3.18 §10.5; Azure v2 "Store (STOW-RS)").

How it works: the Accept and Content-Type headers are negotiated
(:mod:`dicomserver.negotiation`); the request body streams through
:class:`MultipartReader`; each part is spooled to a temporary file (memory up
to 8 MiB, then disk) and, once complete, stored in a worker thread (up to
:data:`PARALLEL_PARTS` at a time) by :func:`dicomserver.ingest.store_instance`: parse and validate
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
import logging
import tempfile
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import IO, Any

from . import negotiation
from .dicomjson import keyword_key
from .errors import (
    DependencyFailed,
    DependencyUnavailable,
    DicomServerError,
    FailureReason,
    PayloadTooLarge,
)
from .identifiers import DEFAULT_PARTITION, StudyKey
from .ingest import Rejected, RequestCounts, store_instance
from .mediatypes import APPLICATION_DICOM
from .multipart import MultipartReader, PartData, PartEnd, PartStart
from .stores import BlobStore, IndexStore, SyncQueue
from .urls import DicomWebUrl

log = logging.getLogger(__name__)

_SPOOL_IN_MEMORY = 8 * 1024 * 1024
#: Parts of one request stored at the same time.
PARALLEL_PARTS = 4
#: A long request counts its instances into the aggregates at least this often.
AGGREGATE_EVERY = 100


@dataclass(slots=True)
class InstanceResult:
    """What happened to one part of a STOW request."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure: FailureReason | None = None
    message: str = ""
    retrieve_url: str | None = None
    study: StudyKey | None = None
    #: HTTP status of the dependency failure that caused it (0: the part itself was the cause).
    dependency_failed: int = 0
    warnings: tuple[str, ...] = ()
    #: Stored in Implicit VR Little Endian (warning 45063).
    implicit_vr: bool = False


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
    accept: str | None = None,
    study_instance_uid: str | None,
    base_url: str,
    max_instance_bytes: int,
    partition: str = DEFAULT_PARTITION,
    max_parts: int = 10_000,
    upsert: bool = False,
    expires_at: str | None = None,
) -> StoreResponse:
    """Store the instances in a STOW-RS request body (POST; with ``upsert``, PUT).

    Parameters
    ----------
    body:
        The request body, as it streams in.
    content_type:
        The request Content-Type: ``multipart/related; type="application/dicom"``
        or ``application/dicom``.
    accept:
        The Accept header: the response is DICOM JSON (406 when that is not acceptable).
    study_instance_uid:
        The study in ``POST /studies/{study}``, if any (instances of another study fail with 43265).
    base_url:
        The DICOMweb base URL (``.../v2``) used for RetrieveURL values.
    max_parts:
        Parts accepted in one request; the rest of the body is not read (413 when
        nothing was stored, else one FailedSOPSequence entry says so).
    upsert:
        PUT (Azure v2): an instance that is already stored is replaced (blob, metadata, index,
        FHIR, change feed) instead of failing with 45070.
    expires_at:
        The expiry the request's ``msdicom-expiry-*`` headers set for the studies it stores
        (:func:`dicomserver.expiry.parse_expiry`); None clears it (the last store decides).

    Returns
    -------
    StoreResponse
        200 all stored; 202 some stored and some failed; 409 none stored.

    Raises
    ------
    NotAcceptable
        When the Accept header excludes DICOM JSON.
    UnsupportedMediaType
        For any other Content-Type.
    BadRequest
        For a malformed multipart body (before any part was stored).
    PayloadTooLarge
        For more than ``max_parts`` parts when none was stored.
    DependencyUnavailable
        When nothing could be stored because Blob Storage or Cosmos DB failed.
    """
    negotiation.dicom_json(accept, "STOW-RS")
    request = negotiation.store_request(content_type)
    results: list[InstanceResult] = []
    context = _Context(
        blobs,
        index,
        sync_queue,
        study_instance_uid,
        base_url,
        partition,
        RequestCounts(index, sync_queue),
        upsert,
        expires_at,
    )

    if not request.multipart:
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
    else:
        reader = MultipartReader(request.boundary)
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

    return _response(results, study_instance_uid, base_url, partition)


async def upsert_instances(**arguments: Any) -> StoreResponse:
    """PUT /studies[/{study}] (Azure v2 upsert): :func:`store_instances`, replacing stored instances."""
    return await store_instances(**arguments, upsert=True)


async def _finish(tasks: list[asyncio.Task[InstanceResult]], context: _Context) -> list[InstanceResult]:
    results = list(await asyncio.gather(*tasks))
    await asyncio.to_thread(context.flush)
    return results


@dataclass(slots=True)
class _Context:
    """What every part of one request shares: the stores, the study in the path, the request's counts."""

    blobs: BlobStore
    index: IndexStore
    sync_queue: SyncQueue
    study_in_path: str | None
    base_url: str
    partition: str
    counts: RequestCounts
    upsert: bool = False
    expires_at: str | None = None

    def pending(self) -> int:
        return self.counts.pending()

    def flush(self) -> None:
        self.counts.flush()

    def process(self, part: _Part) -> InstanceResult:
        """Store one spooled part; whatever happens becomes this part's outcome."""
        try:
            return self._process(part)
        except Exception:  # noqa: BLE001 - a part's failure is that part's outcome, never the request's
            log.exception("unexpected failure while storing a part")
            return InstanceResult(None, None, FailureReason.PROCESSING_FAILURE, "The part could not be processed.")
        finally:
            part.file.close()

    def _process(self, part: _Part) -> InstanceResult:
        if not negotiation.is_dicom_part(part.content_type):
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
        outcome = store_instance(
            self.blobs,
            self.index,
            self.sync_queue,
            part.file,
            part.size,
            counts=self.counts,
            study_in_path=self.study_in_path,
            partition=self.partition,
            alone=part.alone,
            upsert=self.upsert,
            expires_at=self.expires_at,
        )
        if isinstance(outcome, Rejected):
            return InstanceResult(
                outcome.sop_class_uid,
                outcome.sop_instance_uid,
                outcome.reason,
                outcome.message,
                dependency_failed=outcome.dependency_failed,
            )
        return InstanceResult(
            outcome.sop_class_uid,
            outcome.key.sop_instance_uid,
            retrieve_url=DicomWebUrl.of_instance(self.base_url, outcome.key).url,
            study=outcome.key.study,
            warnings=outcome.warnings,
            implicit_vr=outcome.implicit_vr,
        )


def _uid(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


#: The DICOM JSON keys of the response's attributes (PS3.18 Table 10.5.3-1).
_RETRIEVE_URL = keyword_key("RetrieveURL")
_FAILED_SOP_SEQUENCE = keyword_key("FailedSOPSequence")
_REFERENCED_SOP_SEQUENCE = keyword_key("ReferencedSOPSequence")
_REFERENCED_SOP_CLASS_UID = keyword_key("ReferencedSOPClassUID")
_REFERENCED_SOP_INSTANCE_UID = keyword_key("ReferencedSOPInstanceUID")
_FAILURE_REASON = keyword_key("FailureReason")
_WARNING_REASON = keyword_key("WarningReason")
_FAILED_ATTRIBUTES_SEQUENCE = keyword_key("FailedAttributesSequence")
_ERROR_COMMENT = keyword_key("ErrorComment")


def _comment(text: str) -> dict[str, Any]:
    return {_ERROR_COMMENT: {"vr": "LO", "Value": [text]}}


def _warning_attributes(result: InstanceResult) -> dict[str, Any]:
    """WarningReason and FailedAttributesSequence of an instance stored with warnings (v2).

    45063 (0xB007, "data set does not match SOP class") for an Implicit VR Little Endian file, whose
    VRs could not be checked, as Azure v2; else 1 when attributes failed validation.  The
    FailedAttributesSequence lists those attributes either way.
    """
    if not result.warnings and not result.implicit_vr:
        return {}
    reason = (
        FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS
        if result.implicit_vr
        else (FailureReason.DATASET_HAS_VALIDATION_WARNINGS)
    )
    out: dict[str, Any] = {_WARNING_REASON: {"vr": "US", "Value": [int(reason)]}}
    if result.warnings:
        out[_FAILED_ATTRIBUTES_SEQUENCE] = {"vr": "SQ", "Value": [_comment(text) for text in result.warnings]}
    return out


def _response(
    results: list[InstanceResult], study_in_path: str | None, base_url: str, partition: str = DEFAULT_PARTITION
) -> StoreResponse:
    """The STOW response (PS3.18 §10.5.3, Azure v2 "Store response payload body") and its status.

    200 all stored without warnings; 202 some failed or some stored with warnings;
    409 none stored; 503 none stored because a dependency was unavailable for all.
    """
    stored = [r for r in results if r.failure is None]
    failed = [r for r in results if r.failure is not None]
    body: dict[str, Any] = {}
    if study_in_path and stored:
        study_url = DicomWebUrl.of_study(base_url, StudyKey(partition, study_in_path)).url
        body[_RETRIEVE_URL] = {"vr": "UR", "Value": [study_url]}
    if failed:
        body[_FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {
                    _REFERENCED_SOP_CLASS_UID: _uid(r.sop_class_uid),
                    _REFERENCED_SOP_INSTANCE_UID: _uid(r.sop_instance_uid),
                    _FAILURE_REASON: {"vr": "US", "Value": [int(r.failure or 0)]},
                    **(_comment(r.message) if r.message else {}),
                }
                for r in failed
            ],
        }
    if stored:
        body[_REFERENCED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {
                    _REFERENCED_SOP_CLASS_UID: _uid(r.sop_class_uid),
                    _REFERENCED_SOP_INSTANCE_UID: _uid(r.sop_instance_uid),
                    _RETRIEVE_URL: {"vr": "UR", "Value": [r.retrieve_url]},
                    **_warning_attributes(r),
                }
                for r in stored
            ],
        }
    if stored and not failed and not any(r.warnings or r.implicit_vr for r in stored):
        status = 200
    elif stored:
        status = 202
    else:
        if failed and all(r.dependency_failed for r in failed):
            if any(r.dependency_failed == DependencyFailed.status for r in failed):
                raise DependencyFailed("No instance could be stored: a storage dependency refused the request.")
            raise DependencyUnavailable("No instance could be stored: a storage dependency is unavailable.")
        status = 409
    return StoreResponse(status, body)
