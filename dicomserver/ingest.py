"""The store sequence shared by STOW, the repair trigger and bulk import.

One instance is stored in this order, by whichever path brings it:

1. :func:`read_instance` parses and validates the file without pixel data
   (never raises for bad content: a :class:`Rejected` with a reason code);
2. the instance blob is created with ``If-None-Match: *`` (409: it exists);
3. :func:`commit_instance` schedules the study's FHIR sync *before* touching
   the index (write-ahead: a queue message that becomes visible later, at
   most one per study every few seconds, see :mod:`dicomserver.stores.queue`),
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
reconcile (see :mod:`dicomserver.stores.index`).

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import IO, Any

import pydicom
from pydicom.errors import InvalidDicomError

from . import bulkdata
from .attributes import all_index_tags
from .bulkdata import LONG_VRS, BulkTable
from .dicomjson import dataset_to_json, select, tag_key
from .errors import DuplicateInstance, FailureReason, NotFound
from .frames import FrameTable, frame_table
from .identifiers import DEFAULT_PARTITION, InstanceKey, is_valid_uid
from .mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from .stores import BlobStore, IndexedInstance, IndexStore, SyncQueue
from .stores.blob import AzureImportStore, parse_instance_blob_name
from .stores.model import INLINE_METADATA_LIMIT
from .validation import find_invalid_attributes, instance_key, validate_dataset

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
    "zero_preamble",
]

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
        ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=256 * 1024)
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
        pixel_data_position = f.tell()
        truncation = _check_remaining_elements(f, size, ds)
        if truncation:
            return Rejected(
                FailureReason.PROCESSING_FAILURE,
                f"The file is truncated or corrupt: {truncation}",
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


def _check_remaining_elements(f: IO[bytes], size: int, ds: pydicom.Dataset) -> str | None:
    """Walk the element headers after where pydicom stopped (Pixel Data and later).

    pydicom reads up to Pixel Data; this checks, by seeking only, that every
    later element (and each item of encapsulated Pixel Data) lies inside the
    file, so a truncated file is rejected rather than stored.  Returns a
    message for the first problem, or None.
    """
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return None  # the dataset is deflated as a whole; pydicom already inflated and read it
    endian = "<" if ds.is_little_endian in (True, None) else ">"
    implicit = bool(ds.is_implicit_VR)
    pos = f.tell()
    while pos < size:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return f"an element header at byte {pos} is cut short"
        group, element = struct.unpack(endian + "HH", header[:4])
        vr = header[4:6]
        if implicit or group == 0xFFFE or not vr.isalpha() or not vr.isupper():
            # Implicit VR (some files switch to it for Pixel Data; pydicom accepts that too).
            (length,) = struct.unpack(endian + "L", header[4:8])
            start = pos + 8
        else:
            if vr in LONG_VRS:
                extra = f.read(4)
                if len(extra) < 4:
                    return f"the element ({group:04X},{element:04X}) header is cut short"
                (length,) = struct.unpack(endian + "L", extra)
                start = pos + 12
            else:
                (length,) = struct.unpack(endian + "H", header[6:8])
                start = pos + 8
        if length == 0xFFFFFFFF:
            if (group, element) != (0x7FE0, 0x0010):
                return None  # undefined-length sequences after Pixel Data: trust pydicom's parse
            problem, pos = _walk_items(f, start, size, endian)
            if problem:
                return problem
            continue
        if start + length > size:
            return (
                f"the element ({group:04X},{element:04X}) declares {length} bytes "
                f"but only {max(size - start, 0)} remain"
            )
        pos = start + length
    return None


def _walk_items(f: IO[bytes], pos: int, size: int, endian: str) -> tuple[str | None, int]:
    """Check the items of encapsulated Pixel Data; return (problem, position after)."""
    while True:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return "the encapsulated Pixel Data ends without a sequence delimiter", pos
        group, element, length = struct.unpack(endian + "HHL", header)
        if (group, element) == (0xFFFE, 0xE0DD):
            return None, pos + 8
        if (group, element) != (0xFFFE, 0xE000):
            return f"unexpected element ({group:04X},{element:04X}) inside encapsulated Pixel Data", pos
        if pos + 8 + length > size:
            return f"a Pixel Data fragment declares {length} bytes but only {size - pos - 8} remain", pos
        pos += 8 + length


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
    blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, imports: AzureImportStore, name: str
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


def _reject(imports: AzureImportStore, name: str, f: IO[bytes], size: int, reason: FailureReason, message: str) -> None:
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
