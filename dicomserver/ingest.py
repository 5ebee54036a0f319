"""The store sequence shared by STOW, the repair trigger and bulk import.

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

import hashlib
import json
import logging
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import IO, Any, TypeVar

import pydicom
from pydicom.errors import InvalidDicomError

from . import bulkdata
from .attributes import all_index_tags
from .bulkdata import LONG_VRS, BulkTable
from .dicomjson import dataset_to_json, select, tag_key
from .errors import DependencyUnavailable, DuplicateInstance, FailureReason, NotFound
from .frames import FrameTable, frame_table
from .identifiers import DEFAULT_PARTITION, InstanceKey, is_valid_uid
from .mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from .stores import BlobStore, ImportStore, IndexedInstance, IndexStore, SyncQueue
from .stores.layout import parse_instance_blob_name
from .stores.model import INLINE_METADATA_LIMIT
from .validation import find_invalid_attributes, first_text, instance_key, validate_dataset

__all__ = [
    "Outcome",
    "ParsedInstance",
    "Rejected",
    "commit_instance",
    "ensure_indexed",
    "import_instance",
    "index_entry",
    "index_instance",
    "parse_instance_blob_name",
    "read_instance",
    "riding_out_outages",
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
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"\x02\x00\x00\x00":
        return None
    meta_end = 132 + 12 + int.from_bytes(head[8:12], "little")
    if meta_end > size:
        return None  # the structure check reports it
    f.seek(132)
    if DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.encode() not in f.read(meta_end - 132):
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


def check_structure(f: IO[bytes], size: int, ds: pydicom.Dataset) -> str | None:
    """Walk every element header of a Part 10 file and check that each lies inside the file.

    pydicom reads leniently: a value cut short by the end of the file, or an
    element declaring more bytes than there are (deferred, so never read),
    parses without an error, and such a file would be stored under UIDs read
    from its damaged bytes and then hold them for good.  This walk, by seeking
    only, checks the file meta group length, and that every element, item and
    encapsulated fragment of the dataset (at any depth) ends inside the file.
    A deflated dataset is checked by pydicom's inflation instead.  Returns a
    message for the first problem, or None.
    """
    f.seek(128)
    if f.read(4) != b"DICM":
        return None  # pydicom refused anything else already
    meta_start = 132
    f.seek(meta_start)
    header = f.read(12)
    if len(header) < 12 or header[:4] != b"\x02\x00\x00\x00" or header[4:6] != b"UL":
        return "the file meta information has no group length"
    (declared,) = struct.unpack("<L", header[8:12])
    pos = meta_start + 12
    while pos < size:  # the group 0002 elements, always explicit VR little endian
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return "the file meta information is cut short"
        (group,) = struct.unpack("<H", head[:2])
        if group != 0x0002:
            break
        if head[4:6] in LONG_VRS:
            extra = f.read(4)
            if len(extra) < 4:
                return "the file meta information is cut short"
            (length,) = struct.unpack("<L", extra)
            pos += 12 + length
        else:
            (length,) = struct.unpack("<H", head[6:8])
            pos += 8 + length
        if pos > size:
            return "a file meta element runs past the end of the file"
    if pos - (meta_start + 12) != declared:
        return f"the file meta group length is {declared} but the group has {pos - (meta_start + 12)} bytes"
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return None
    endian = "<" if ds.is_little_endian in (True, None) else ">"
    implicit = bool(ds.is_implicit_VR)
    while pos < size:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return f"an element header at byte {pos} is cut short"
        group, element = struct.unpack(endian + "HH", head[:4])
        vr = head[4:6]
        if group == 0xFFFE or implicit or not (vr.isalpha() and vr.isupper()):
            # Items, delimiters, implicit VR (some files switch to it for Pixel Data; pydicom accepts that).
            (length,) = struct.unpack(endian + "L", head[4:8])
            start = pos + 8
        elif vr in LONG_VRS:
            extra = f.read(4)
            if len(extra) < 4:
                return f"the element ({group:04X},{element:04X}) header is cut short"
            (length,) = struct.unpack(endian + "L", extra)
            start = pos + 12
        else:
            (length,) = struct.unpack(endian + "H", head[6:8])
            start = pos + 8
        if length == 0xFFFFFFFF or (group == 0xFFFE and element in (0xE00D, 0xE0DD)):
            pos = start  # undefined length (sequence, item, encapsulated Pixel Data): its content follows
            continue
        if start + length > size:
            return (
                f"the element ({group:04X},{element:04X}) declares {length} bytes "
                f"but only {max(size - start, 0)} remain"
            )
        pos = start + length
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
    if entry.metadata_json is not None and len(entry.metadata_json) > INLINE_METADATA_LIMIT:
        blobs.put_metadata(entry.key, entry.metadata_json.encode())
    return index.create_instance(entry)


def index_instance(blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, parsed: ParsedInstance) -> bool:
    """Commit one instance and count it in at once (repair and import: one instance per invocation)."""
    entry = index_entry(parsed)
    created = commit_instance(blobs, index, sync_queue, entry)
    if created:
        index.update_aggregates([entry])
    return created


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

