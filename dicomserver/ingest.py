"""The store sequence shared by STOW, the repair trigger and bulk import.

:func:`store_instance` runs the whole sequence for one STOW part (STOW itself
only reads the request and writes the response, see :mod:`dicomserver.stow`);
:class:`RequestCounts` counts what one request created into its series and
studies; :func:`ensure_indexed` (repair) and :func:`import_instance` (bulk
import) run the same steps for a blob that is already, or about to be, stored.

One instance is stored in this order, by whichever path brings it:

1. :func:`read_instance` parses and validates the file without pixel data
   (never raises for bad content: a :class:`Rejected` with a reason code);
2. the instance blob is created with ``If-None-Match: *`` (409: it exists);
3. :func:`commit_instance` schedules the study's FHIR sync *before* touching
   the index (write-ahead: a queue message that becomes visible later, at
   most one per study every few seconds, see :mod:`dicomserver.stores.azure.queue`),
   writes the metadata blob only when the metadata is too large for the index
   document, and creates the instance's index document, which carries the
   DICOM JSON metadata: the commit point;
4. whoever created the document counts it into the series and study
   aggregates, once per request for all its instances
   (``IndexStore.update_aggregates``).

Cost per instance: one blob write and one index write, plus per request one
patch per touched series and study and at most one queue message per study.
A request that dies after step 3 leaves a committed, searchable instance
whose FHIR sync is already queued; its counts are repaired by the sync's
reconcile (see :mod:`dicomserver.stores.azure.index`).

:func:`ensure_indexed` is the repair path, run by the blob trigger on the
instance container (and by STOW when it meets an instance blob that is not
indexed): a blob that exists but is not in the index — because a STOW died
between the blob write and the index write — gets indexed.  It is
idempotent, never deletes or rewrites an instance blob, and re-checks that
the blob still exists after indexing so a concurrent undo or delete cannot
leave an index entry without its file.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import IO, Any, TypeVar

import pydicom
from pydicom.errors import InvalidDicomError

from . import bulkdata, part10
from .attributes import all_index_tags
from .bulkdata import BulkTable
from .dicomjson import dataset_to_json, select, tag_key
from .errors import DependencyUnavailable, DicomServerError, DuplicateInstance, FailureReason, NotFound
from .frames import FrameTable, frame_table
from .identifiers import DEFAULT_PARTITION, InstanceKey, is_valid_uid
from .mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from .stores import BlobStore, Change, ChangeAction, ImportStore, IndexedInstance, IndexStore, SyncQueue
from .stores.layout import instance_blob_name, parse_instance_blob_name
from .validation import find_invalid_attributes, first_text, instance_key, validate_dataset

#: Implicit VR Little Endian (PS3.5 §A.1): stored with warning 45063 as Azure v2 does.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"

__all__ = [
    "Outcome",
    "ParsedInstance",
    "Rejected",
    "RequestCounts",
    "Stored",
    "commit_instance",
    "ensure_indexed",
    "import_instance",
    "index_entry",
    "index_instance",
    "parse_instance_blob_name",
    "read_instance",
    "riding_out_outages",
    "store_instance",
    "zero_preamble",
]

T = TypeVar("T")

#: Waits between attempts of a trigger's work while a dependency is unavailable (see riding_out_outages).
OUTAGE_DELAYS = (5.0, 10.0, 20.0, 40.0)

log = logging.getLogger(__name__)

_SPOOL_IN_MEMORY = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """A validated instance file, ready to be stored and indexed."""

    key: InstanceKey
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    metadata: dict[str, Any]
    #: ErrorComment texts of attributes that failed VR validation (left out of metadata and index).
    warnings: tuple[str, ...] = ()
    #: Byte ranges of each frame in the file (None: no Pixel Data, or frames not locatable).
    frames: FrameTable | None = None
    #: Byte ranges of the binary attributes the metadata refers to by BulkDataURI (see :mod:`.bulkdata`).
    bulkdata: BulkTable | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a file cannot be stored: a failure reason and a message quoting the problem."""

    reason: FailureReason
    message: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    #: The cause was a dependency (storage, index, queue), not the file: the HTTP status it gives
    #: (503 unavailable, 424 refused our credentials); 0 when the file itself was the cause.
    dependency_failed: int = 0


#: Exceptions pydicom raises for files it cannot parse.
PARSE_ERRORS = (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, NotImplementedError, IndexError)


def read_instance(f: IO[bytes], size: int, study_in_path: str | None, partition: str) -> ParsedInstance | Rejected:
    """Parse (without pixel data) and validate an instance file positioned anywhere.

    Returns
    -------
    ParsedInstance | Rejected
        Never raises for bad content: a bad file is a :class:`Rejected`.
    """
    f.seek(0)
    try:
        inflated = _deflated_size_problem(f, size)
        if inflated:
            return Rejected(FailureReason.PROCESSING_FAILURE, inflated)
        f.seek(0)
        ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=256 * 1024)
        pixel_data_position = f.tell()
        # The structure first: a damaged file is "truncated", not "has an invalid UID" read from its damage.
        truncation = check_structure(f, size, ds)
        if truncation:
            # for the FailedSOPSequence entry, when the damaged file still names them validly
            sop_class, sop_instance = (
                uid if (uid := first_text(ds, k)) and is_valid_uid(uid) else None
                for k in ("SOPClassUID", "SOPInstanceUID")
            )
            return Rejected(
                FailureReason.PROCESSING_FAILURE,
                f"The file is truncated or corrupt: {truncation}",
                sop_class,
                sop_instance,
            )
        check = validate_dataset(ds, study_in_path)
        if not check.ok:
            assert check.reason is not None
            return Rejected(check.reason, check.message, check.sop_class_uid, check.sop_instance_uid)
        transfer_syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        if not is_valid_uid(transfer_syntax):
            return Rejected(
                FailureReason.VALIDATION_FAILURE,
                f"The file meta information has no valid TransferSyntaxUID ('{transfer_syntax}').",
                check.sop_class_uid,
                check.sop_instance_uid,
            )
        invalid = find_invalid_attributes(ds)
        bulk = bulkdata.locate(f, size, transfer_syntax)
        metadata = dataset_to_json(ds, bulk=bulk)
    except PARSE_ERRORS as exc:
        return Rejected(FailureReason.PROCESSING_FAILURE, f"The file is not a readable DICOM file: {exc}")
    except RecursionError:
        return Rejected(FailureReason.PROCESSING_FAILURE, "The file nests sequences too deeply to be read.")
    except Exception as exc:  # noqa: BLE001 - any other parser failure is this file's problem, not the service's
        log.warning("unexpected parse failure: %s", type(exc).__name__)
        return Rejected(FailureReason.PROCESSING_FAILURE, f"The file could not be read ({type(exc).__name__}).")
    for tag in invalid:  # Azure v2: attributes that failed validation are neither returned nor indexed
        metadata.pop(tag_key(tag), None)
    for tag in sorted(bulkdata.PIXEL_TAGS):  # pydicom stopped before them
        entry = bulk.get(tag_key(tag))
        if entry is not None:
            metadata[tag_key(tag)] = dict(bulkdata.element(str(entry[2]), tag_key(tag)))
    used = set(bulkdata.referenced(metadata))
    bulk = {path: entry for path, entry in bulk.items() if path in used}
    frames = frame_table(f, size, ds, pixel_data_position) if pixel_data_position < size else None
    return ParsedInstance(
        instance_key(ds, partition),
        check.sop_class_uid or "",
        transfer_syntax,
        size,
        metadata,
        tuple(invalid.values()),
        frames,
        bulk or None,
    )


#: Largest inflated size of a Deflated Explicit VR Little Endian dataset accepted at store time.
MAX_INFLATED_BYTES = 1024**3


def _deflated_size_problem(f: IO[bytes], size: int, limit: int = MAX_INFLATED_BYTES) -> str | None:
    """For a Deflated dataset: inflate it once, bounded, before pydicom inflates it whole in memory.

    A few kilobytes of deflated zeros can declare gigabytes; pydicom would inflate them in one
    piece.  Returns a message when the inflated dataset exceeds ``limit`` or is not valid deflate
    data; None for any other transfer syntax.
    """
    f.seek(128)
    if f.read(4) != b"DICM":
        return None
    meta_end = _file_meta_end(f, size)
    if meta_end is None:
        return None  # the structure check reports it
    f.seek(part10.PREAMBLE_END)
    if DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.encode() not in f.read(meta_end - part10.PREAMBLE_END):
        return None
    f.seek(meta_end)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := f.read(1024 * 1024):
            data = inflater.decompress(chunk, 64 * 1024 * 1024)
            while True:
                total += len(data)
                if total > limit:
                    return f"The deflated data set inflates to more than {limit} bytes."
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, 64 * 1024 * 1024)
    except zlib.error:
        return "The deflated data set is not valid deflate data."
    return None


def _file_meta_end(f: IO[bytes], size: int) -> int | None:
    """Where pydicom starts reading the data set: after the file meta group read element by element
    (whatever its group length says); by the group length when the group cannot be walked; else None."""
    meta = part10.file_meta(f, size)
    if meta.error is None:
        return meta.end
    f.seek(part10.PREAMBLE_END)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"\x02\x00\x00\x00":
        return None
    end = part10.PREAMBLE_END + 12 + int.from_bytes(head[8:12], "little")
    return end if end <= size else None


def check_structure(f: IO[bytes], size: int, ds: pydicom.Dataset) -> str | None:
    """Walk every element header of a Part 10 file and check that each lies inside the file.

    pydicom reads leniently: a value cut short by the end of the file, or an
    element declaring more bytes than there are (deferred, so never read),
    parses without an error, and such a file would be stored under UIDs read
    from its damaged bytes and then hold them for good.  This walk, by seeking
    only (a lenient :func:`.part10.walk`), checks the file meta group length,
    and that every element, item and encapsulated fragment of the dataset (at
    any depth) ends inside the file.  A deflated dataset is checked by
    pydicom's inflation instead.  Returns a message for the first problem, or
    None.
    """
    f.seek(128)
    if f.read(4) != b"DICM":
        return None  # pydicom refused anything else already
    meta = part10.file_meta(f, size)
    if meta.group_length is None:
        return "the file meta information has no group length"
    if isinstance(meta.error, part10.Truncated) and meta.error.in_header:
        return "the file meta information is cut short"
    if meta.error is not None:
        return "a file meta element runs past the end of the file"
    group_bytes = meta.end - (meta.start + 12)  # after the group length element itself
    if group_bytes != meta.group_length:
        return f"the file meta group length is {meta.group_length} but the group has {group_bytes} bytes"
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return None
    little = ds.is_little_endian in (True, None)
    elements = part10.walk(f, size, meta.end, little_endian=little, implicit=bool(ds.is_implicit_VR), strict=False)
    try:
        for _ in elements:
            pass
    except part10.Part10Error as exc:
        return str(exc)
    return None


def index_entry(parsed: ParsedInstance, stored_at: str = "") -> IndexedInstance:
    """The index document of a parsed instance, with its DICOM JSON metadata."""
    return IndexedInstance(
        key=parsed.key,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        size=parsed.size,
        attrs=select(parsed.metadata, all_index_tags()),
        stored_at=stored_at or datetime.now(UTC).isoformat(),
        frames=parsed.frames,
        bulkdata=parsed.bulkdata,
        metadata_json=json.dumps(parsed.metadata, separators=(",", ":")),
    )


def commit_instance(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, entry: IndexedInstance) -> bool:
    """Steps 3 of the store sequence for an instance whose blob is written (see the module docstring).

    Returns
    -------
    bool
        True when this call created the index document: the caller then owes
        ``index.update_aggregates([... entry ...])``.

    Raises
    ------
    DependencyUnavailable
        When the queue, storage or the index fails.
    """
    sync_queue.schedule_sync([entry.key.study])
    _put_large_metadata(blobs, entry)
    return index.create_instance(entry)


def overwrite_instance(blobs: BlobStore, index: IndexStore, f: IO[bytes], size: int, entry: IndexedInstance) -> bool:
    """Replace a stored instance by the file ``f`` (parsed into ``entry``): its blob, its metadata blob
    when the metadata is too large for the index, then its index document (PUT, bulk update).

    Returns
    -------
    bool
        True when there was no index document before (the caller counts the instance in).
    """
    f.seek(0)
    blobs.put_instance(entry.key, f, size, entry.transfer_syntax_uid, overwrite=True)
    _put_large_metadata(blobs, entry)
    return index.replace_instance(entry)


def _put_large_metadata(blobs: BlobStore, entry: IndexedInstance) -> None:
    large = entry.large_metadata
    if large is not None:
        blobs.put_metadata(entry.key, large)


def index_instance(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, parsed: ParsedInstance) -> bool:
    """Commit one instance and count it in at once (repair and import: one instance per invocation)."""
    entry = index_entry(parsed)
    created = commit_instance(blobs, index, sync_queue, entry)
    if created:
        index.update_aggregates([entry])
        index.log_changes([Change(entry.key, ChangeAction.CREATE)])
    return created


@dataclass(frozen=True, slots=True)
class Stored:
    """An instance this call stored (its blob written and its index document committed)."""

    key: InstanceKey
    sop_class_uid: str
    #: ErrorComment texts of attributes that failed VR validation (stored with warnings, as Azure v2).
    warnings: tuple[str, ...] = ()
    #: Stored in Implicit VR Little Endian: Azure v2 warns 45063 (the VRs could not be checked).
    implicit_vr: bool = False


class RequestCounts:
    """The instances one request created, counted into their series and studies once per request.

    :meth:`add` collects; :meth:`flush` writes one patch per touched series (and
    per new series or changed study); a request of one instance counts it
    *beside* its index create (:meth:`ahead`) and takes it back (:meth:`back`)
    if the create fails or finds the instance already indexed.  Thread-safe:
    the parts of one request are stored in parallel threads.
    """

    def __init__(self, index: IndexStore, sync_queue: SyncQueue) -> None:
        self._index = index
        self._sync_queue = sync_queue
        self._created: list[IndexedInstance] = []
        self._lock = threading.Lock()

    def add(self, entry: IndexedInstance) -> None:
        with self._lock:
            self._created.append(entry)

    def pending(self) -> int:
        with self._lock:
            return len(self._created)

    def flush(self) -> None:
        """Count the collected instances in (one patch per series and study) and log them to the change feed."""
        with self._lock:
            batch, self._created = self._created, []
        if batch:
            self._update(batch)
            self._index.log_changes([Change(e.key, ChangeAction.CREATE) for e in batch])

    def ahead(self, entry: IndexedInstance) -> Future[None]:
        """Count ``entry`` in while it is being committed, so the patch adds no latency of its own.

        The FHIR sync is scheduled first, so even this early write is covered.
        """
        self._sync_queue.schedule_sync([entry.key.study])
        return _AHEAD.submit(contextvars.copy_context().run, self._update, [entry])

    def back(self, ahead: Future[None], entry: IndexedInstance) -> None:
        """Take back what :meth:`ahead` counted (the create failed, or someone else indexed and counted it)."""
        ahead.result()
        try:
            self._index.count_out([entry.key])
        except Exception as exc:  # noqa: BLE001 - the reconcile repairs the counts
            log.error("aggregate correction failed sop=%s: %s", entry.key.sop_instance_uid, type(exc).__name__)

    def _update(self, batch: list[IndexedInstance]) -> None:
        try:
            self._index.update_aggregates(batch)
        except Exception as exc:  # noqa: BLE001 - committed instances: the reconcile repairs the counts
            message = exc.message if isinstance(exc, DicomServerError) else type(exc).__name__
            log.error("aggregate update failed after store instances=%d: %s", len(batch), message)


#: Threads that count a one-instance request's instance while it is being committed.
_AHEAD = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stow-count")


def store_instance(
    blobs: BlobStore,
    index: IndexStore,
    sync_queue: SyncQueue,
    f: IO[bytes],
    size: int,
    *,
    counts: RequestCounts,
    study_in_path: str | None = None,
    partition: str = DEFAULT_PARTITION,
    alone: bool = False,
    upsert: bool = False,
    expires_at: str | None = None,
) -> Stored | Rejected:
    """The whole store sequence for one instance file (STOW's parts; see the module docstring).

    Parse and validate, zero the preamble, create the blob (``If-None-Match: *``),
    commit (write-ahead sync, index document), and leave the count to
    ``counts`` (or count beside the commit when the instance is its request's
    only one, ``alone``).  A failure after the blob write undoes it: the blob
    first, then the index document.  An instance whose blob exists but is not
    indexed (a store that died half-way) is repaired before answering 45070, so
    what the client is told exists is visible (45070; 45071 when it is still
    being stored by another request).  With ``upsert`` (PUT) an existing
    instance is replaced instead (:func:`_replace`).  ``expires_at`` is the
    expiry the request's ``msdicom-expiry-*`` headers give the study.

    Returns
    -------
    Stored | Rejected
        ``Rejected.dependency_failed`` says the cause was an unavailable dependency (503 if all fail).
    """
    parsed = read_instance(f, size, study_in_path, partition)
    if isinstance(parsed, Rejected):
        return parsed
    key = parsed.key
    zero_preamble(f)
    f.seek(0)
    entry = index_entry(parsed)
    if expires_at is not None:
        entry = replace(entry, expires_at=expires_at)
    try:
        blobs.put_instance(key, f, size, parsed.transfer_syntax_uid)
    except DuplicateInstance as exc:
        if upsert:
            return _replace(blobs, index, sync_queue, f, size, parsed, entry)
        try:
            outcome = ensure_indexed(blobs, index, sync_queue, instance_blob_name(key))
        except DicomServerError as repair_error:
            log.warning("inline repair failed sop=%s: %s", key.sop_instance_uid, repair_error.message)
            outcome = None
        if outcome not in (Outcome.ALREADY_INDEXED, Outcome.INDEXED):
            # The blob is there but not (yet) indexed: another request is storing it, or a store died
            # half-way and its blob could not be indexed now (Azure's 45071).
            message = (
                f"The instance {key.sop_instance_uid} is being created by another request, or an earlier "
                "attempt to store it has not been cleaned up yet; retry later."
            )
            reason = FailureReason.SOP_INSTANCE_BEING_CREATED
            return Rejected(reason, message, parsed.sop_class_uid, key.sop_instance_uid)
        reason = FailureReason.SOP_INSTANCE_ALREADY_EXISTS
        return Rejected(reason, exc.message, parsed.sop_class_uid, key.sop_instance_uid)
    except DependencyUnavailable as exc:
        return Rejected(
            FailureReason.PROCESSING_FAILURE, exc.message, parsed.sop_class_uid, key.sop_instance_uid, exc.status
        )
    ahead = counts.ahead(entry) if alone else None
    # Alone, its change feed number is reserved beside the commit too (a failed commit leaves a gap,
    # which readers pass once it is old); its log document follows the commit.
    number = _AHEAD.submit(contextvars.copy_context().run, index.reserve_changes, key.partition, 1) if alone else None
    try:
        created = commit_instance(blobs, index, sync_queue, entry)
    except Exception as exc:  # noqa: BLE001 - undo, then report this instance as failed
        message = exc.message if isinstance(exc, DicomServerError) else "The instance could not be indexed."
        log.warning("store failed after the blob write; undoing sop=%s: %s", key.sop_instance_uid, message)
        _undo(blobs, index, entry)
        if ahead is not None:
            counts.back(ahead, entry)
        return Rejected(
            FailureReason.PROCESSING_FAILURE,
            message,
            parsed.sop_class_uid,
            key.sop_instance_uid,
            exc.status if isinstance(exc, DependencyUnavailable) else 0,
        )
    if ahead is not None:
        if created:
            ahead.result()
            index.log_changes([Change(key, ChangeAction.CREATE)], _reserved(number))
        else:  # the repair trigger indexed our blob meanwhile and counted it itself
            counts.back(ahead, entry)
    elif created:
        counts.add(entry)
    return _stored(parsed)


def _replace(
    blobs: BlobStore,
    index: IndexStore,
    sync_queue: SyncQueue,
    f: IO[bytes],
    size: int,
    parsed: ParsedInstance,
    entry: IndexedInstance,
) -> Stored | Rejected:
    """PUT of a stored instance: overwrite its blob, then replace its index document.

    The study's sync is scheduled first (write-ahead, as for a store), so FHIR and the change
    feed's events follow even if the request dies after the blob write.  The change feed logs the
    new version (``create``); earlier entries of the instance then read as ``replaced``.
    """
    key = parsed.key
    try:
        sync_queue.schedule_sync([key.study])
        created = overwrite_instance(blobs, index, f, size, entry)
        index.update_aggregates([entry], count=created)
    except DicomServerError as exc:
        log.warning("replace failed sop=%s: %s", key.sop_instance_uid, exc.message)
        return Rejected(
            FailureReason.PROCESSING_FAILURE,
            exc.message,
            parsed.sop_class_uid,
            key.sop_instance_uid,
            exc.status if isinstance(exc, DependencyUnavailable) else 0,
        )
    index.log_changes([Change(key, ChangeAction.CREATE)])
    return _stored(parsed)


def _stored(parsed: ParsedInstance) -> Stored:
    """What a store of ``parsed`` tells its caller (warning 45063 for Implicit VR Little Endian)."""
    implicit_vr = parsed.transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    return Stored(parsed.key, parsed.sop_class_uid, parsed.warnings, implicit_vr)


def _reserved(number: Future[int | None] | None) -> int | None:
    """The number reserved ahead, or None (then :meth:`IndexStore.log_changes` reserves one itself)."""
    if number is None:
        return None
    try:
        return number.result()
    except Exception as exc:  # noqa: BLE001 - reserving again when logging is the fallback
        log.warning("change feed number not reserved ahead: %s", exc)
        return None


def _undo(blobs: BlobStore, index: IndexStore, entry: IndexedInstance) -> None:
    """Take back an instance whose commit failed: the blob first, then any index document.

    In this order the repair trigger either finds no blob, or indexes it and
    then sees it gone and discards its own entry (see :func:`ensure_indexed`).
    """
    key = entry.key
    steps: list[Callable[[InstanceKey], object]] = [blobs.delete_instance, index.discard_instance]
    if entry.large_metadata is not None:
        steps.append(blobs.delete_metadata)
    for step in steps:
        try:
            step(key)
        except DicomServerError as exc:
            log.error("undo step failed sop=%s: %s", key.sop_instance_uid, exc.message)


def zero_preamble(f: IO[bytes]) -> None:
    """Zero the 128-byte preamble of a Part 10 file (Azure stores it zeroed; PS3.10 §7.1)."""
    f.seek(128)
    if f.read(4) == b"DICM":
        f.seek(0)
        f.write(b"\x00" * 128)


class Outcome(Enum):
    """What :func:`ensure_indexed` did."""

    ALREADY_INDEXED = "already-indexed"
    INDEXED = "indexed"
    IGNORED = "ignored"  # not a canonical instance blob name
    REJECTED = "rejected"  # content invalid or not matching its name; left in place, logged
    GONE = "gone"  # the blob disappeared (deleted or undone) meanwhile


def ensure_indexed(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, blob_name: str) -> Outcome:
    """Make sure the instance blob ``blob_name`` is in the index (idempotent).

    Raises
    ------
    DependencyUnavailable
        When storage or the index fails; the trigger retries.
    """
    key = parse_instance_blob_name(blob_name)
    if key is None:
        log.warning("ensure_indexed ignores a non-canonical blob name=%s", blob_name)
        return Outcome.IGNORED
    if index.get_instance(key) is not None:
        return Outcome.ALREADY_INDEXED
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as f:
        size = 0
        try:
            for chunk in blobs.iter_instance(key):
                f.write(chunk)
                size += len(chunk)
        except NotFound:
            return Outcome.GONE
        parsed = read_instance(f, size, None, key.partition)
    if isinstance(parsed, Rejected):
        log.error("instance blob cannot be indexed name=%s reason=%s: %s", blob_name, parsed.reason, parsed.message)
        return Outcome.REJECTED
    if parsed.key != key:
        log.error("instance blob content does not match its name name=%s", blob_name)
        return Outcome.REJECTED
    entry = index_entry(parsed)
    if not commit_instance(blobs, index, sync_queue, entry):
        return Outcome.ALREADY_INDEXED  # a STOW committed it meanwhile; it counts it in
    try:
        blobs.instance_size(key)
    except NotFound:
        # Deleted or undone while we indexed it (undo and DELETE remove the blob first, then
        # the document): take our uncounted entry back out.
        index.discard_instance(key)
        blobs.delete_metadata(key)
        return Outcome.GONE
    index.update_aggregates([entry])
    index.log_changes([Change(key, ChangeAction.CREATE)])
    log.info("repaired index for instance blob study=%s sop=%s", key.study_instance_uid, key.sop_instance_uid)
    return Outcome.INDEXED


def _sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _file_chunks(f: IO[bytes]) -> Iterator[bytes]:
    f.seek(0)
    while chunk := f.read(1024 * 1024):
        yield chunk


def import_instance(
    blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, imports: ImportStore, name: str
) -> Outcome:
    """Bulk import: validate ``name`` from the import container, store it canonically, index it.

    Any file name is accepted.  A file that cannot be stored is moved to the
    errors container with ``{name}.error.json`` giving the failure reason code
    and message.  Idempotent: a retry after a crash at any step finishes the
    job (an instance already stored with identical bytes counts as imported).

    Raises
    ------
    DependencyUnavailable
        When storage or the index fails; the trigger retries.
    """
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as f:
        size = 0
        try:
            for chunk in imports.iter_import(name):
                f.write(chunk)
                size += len(chunk)
        except NotFound:
            return Outcome.GONE
        parsed = read_instance(f, size, None, DEFAULT_PARTITION)
        if isinstance(parsed, Rejected):
            _reject(imports, name, f, size, parsed.reason, parsed.message)
            return Outcome.REJECTED
        zero_preamble(f)
        f.seek(0)
        try:
            blobs.put_instance(parsed.key, f, size, parsed.transfer_syntax_uid)
        except DuplicateInstance as exc:
            if _sha256(blobs.iter_instance(parsed.key)) != _sha256(_file_chunks(f)):
                _reject(imports, name, f, size, FailureReason.SOP_INSTANCE_ALREADY_EXISTS, exc.message)
                return Outcome.REJECTED
            # Same bytes: an earlier attempt stored it; finish indexing below.
        index_instance(blobs, index, sync_queue, parsed)
    imports.delete_import(name)
    log.info("imported blob study=%s sop=%s", parsed.key.study_instance_uid, parsed.key.sop_instance_uid)
    return Outcome.INDEXED


def _reject(imports: ImportStore, name: str, f: IO[bytes], size: int, reason: FailureReason, message: str) -> None:
    log.warning("import rejected blob=%s reason=%d: %s", name, int(reason), message)
    imports.reject_import(
        name,
        f,
        size,
        {
            "blob": name,
            "failureReason": int(reason),
            "failureReasonName": reason.name,
            "message": message,
            "rejectedAt": datetime.now(UTC).isoformat(),
        },
    )


def riding_out_outages(
    work: Callable[[], T], delays: Sequence[float] = OUTAGE_DELAYS, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Run a trigger's ``work``; while storage or the index is unavailable, wait and try again.

    The host retries a failed trigger only ``maxDequeueCount`` times, ``visibilityTimeout``
    apart (host.json), and then parks the blob in ``webjobs-blobtrigger-poison``: without this
    a one-minute Cosmos DB outage poisoned every blob that arrived during it.  With the
    delays (75 s in all) inside each of the host's attempts, an outage of about a quarter of
    an hour is absorbed; what is poisoned after that is replayed with
    ``python -m dicomserver.cli replay-blob-poison``.

    Raises
    ------
    DependencyUnavailable
        When the dependency is still unavailable after the last delay (the host retries).
    """
    for delay in delays:
        try:
            return work()
        except DependencyUnavailable as exc:
            log.warning("dependency unavailable, retrying in %.0f s: %s", delay, exc.message)
            sleep(delay)
    return work()
