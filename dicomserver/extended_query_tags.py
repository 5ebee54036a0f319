"""Extended query tags (Azure v2 "Extended query tags"): declare a tag, reindex, then search on it.

Management API (all JSON; ``{tagPath}`` is an 8-hex tag such as ``00101010`` or a keyword):

* ``POST /extendedquerytags`` with ``[{"path", "vr"?, "privateCreator"?, "level"}]`` stores the tags
  with status ``Adding`` and starts one ``reindex`` operation over every stored instance
  (:mod:`dicomserver.operations`); it answers 202 with the operation reference.  400 for an invalid
  entry (unknown keyword, unsupported or mismatched VR, sequence, private tag without private
  creator, repeated tag, more than :data:`MAX_TAGS` in all), 409 for a core searchable attribute
  ("already supported"), a tag already declared, or while another reindex is running (one at a time,
  as Azure);
* ``GET /extendedquerytags`` (``limit`` 1-200, default 100, ``offset``), ``GET|DELETE|PATCH
  /extendedquerytags/{tagPath}`` (PATCH body ``{"queryStatus": "Enabled"|"Disabled"}``), ``GET
  /extendedquerytags/{tagPath}/errors`` (``limit``/``offset``).

The reindex (:func:`reindex_step`) visits the instances of every data partition in ``sortKey`` order,
:data:`REINDEX_BATCH` per step, from the ``after`` key in its checkpoint.  For each instance it reads
the tags' values from the metadata the index document holds (the metadata blob for the rare instance
whose metadata is too large for it), validates them for the VR (:func:`dicomserver.matching.fold_extended`)
and writes the normalised value into the document's ``x`` map, where QIDO's any-attribute matching
finds it (exact; ranges for DA/DT/TM; fuzzy prefix for PN), and its DICOM JSON into ``attrs`` (QIDO
returns it).  A value that fails validation is not indexed: an error is recorded for the instance
(``GET .../errors``), the tag's ``errorCount`` follows, and at the end a tag with errors gets
``queryStatus`` ``Disabled`` (PATCH enables it again; QIDO then lists it in the
``erroneous-dicom-attributes`` response header).  A step re-run from the same checkpoint (a
redelivered message) writes the same values and records the same error documents.  When every
instance has been visited the tags become ``Ready``, but not before :data:`SETTLE_SECONDS` after
they were declared: a STOW in another process may still be working from a tag list read before the
POST (lists are cached for :data:`~dicomserver.stores.model.EXTENDED_TAGS_MAX_AGE_SECONDS`), so the
last step looks again at what arrived meanwhile.

New instances are indexed on every tag that is ``Adding`` or ``Ready`` when they are stored
(:meth:`~dicomserver.stores.azure.index.CosmosIndexStore.create_instance`), whether any-attribute
search is on or off; a bad value there is recorded as an error too (the instance is stored).

Cost: the reindex is one patch per instance (plus one query per :data:`REINDEX_BATCH`); QIDO reads
the tag list at most once per request (none while the process's cached list is fresh); STOW likewise.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VR, get_entry, keyword_for_tag, tag_for_keyword

from .attributes import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from .errors import BadRequest, Conflict, DicomServerError, NotFound
from .identifiers import Level
from .matching import EXTENDED_TAG_VRS, extended_values
from .operations import operation_handler, operation_reference, start_operation
from .stores import ExtendedQueryTagStore, OperationStore, ReindexableIndex
from .stores.model import (
    EXTENDED_TAGS_MAX_AGE_SECONDS,
    ExtendedQueryTag,
    ExtendedQueryTagError,
    ExtendedQueryTagStatus,
    IndexedInstance,
    Operation,
    OperationStatus,
    QueryStatus,
)

if TYPE_CHECKING:
    from .wiring import Services

log = logging.getLogger(__name__)

#: Most extended query tags declared at once (Azure v2).
MAX_TAGS = 128
#: Instances one reindex step visits.
REINDEX_BATCH = 100
#: A reindex does not finish sooner than this after its tags were declared (see the module docstring).
SETTLE_SECONDS = 10.0
#: Longest body of a POST or PATCH.
MAX_BODY_BYTES = 256 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 200
REINDEX = "reindex"
#: The QIDO response header naming the extended tags of the query that have indexing errors.
ERRONEOUS_ATTRIBUTES_HEADER = "erroneous-dicom-attributes"

_HEX = re.compile(r"[0-9A-Fa-f]{8}")
#: Tags of the attributes QIDO searches without a declaration.
_CORE_TAGS = frozenset(f"{int(tag_for_keyword(k) or 0):08X}" for k in (*STUDY_KEYS, *SERIES_KEYS, *INSTANCE_KEYS))
_LEVELS = {level.value.lower(): level for level in Level}
_LEVEL_NAMES = {Level.STUDY: "Study", Level.SERIES: "Series", Level.INSTANCE: "Instance"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- paths and validation ----------------------------------------------------------------------


def parse_tag_path(text: str) -> str:
    """An extended query tag path (8 hex digits or a keyword) as 8 upper-case hex digits.

    Raises
    ------
    BadRequest
        When it is neither (Azure: "... cannot be parsed into a valid Dicom Tag").
    """
    text = text.strip()
    if _HEX.fullmatch(text):
        return text.upper()
    tag = tag_for_keyword(text) if text.isidentifier() else None
    if tag is None:
        raise _invalid_path(text)
    return f"{int(tag):08X}"


def tag_name(path: str) -> str:
    """The keyword of a standard tag, else its path (as Azure names tags in messages and headers)."""
    if int(path[:4], 16) % 2:
        return path
    return keyword_for_tag(int(path, 16)) or path


def _dictionary_vr(path: str) -> str | None:
    try:
        return str(dictionary_VR(int(path, 16)))
    except KeyError:
        return None


def _invalid_path(text: str) -> BadRequest:
    return BadRequest(f"The extended query tag '{text}' is invalid as it cannot be parsed into a valid Dicom Tag.")


def _validate_entry(entry: object) -> ExtendedQueryTag:
    """One entry of a POST body as a new tag (status Adding, query Enabled)."""
    if not isinstance(entry, dict):
        raise BadRequest("Each extended query tag must be a JSON object with path, vr, privateCreator and level.")
    fields = {str(k).lower(): v for k, v in entry.items()}
    raw_path = fields.get("path")
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise BadRequest("The Dicom Tag Property Path must be specified and must not be null, empty or whitespace.")
    path = parse_tag_path(raw_path)
    group, element = int(path[:4], 16), int(path[4:], 16)
    raw_level = fields.get("level")
    if not isinstance(raw_level, str) or not raw_level.strip():
        raise BadRequest(f"The level for extended query tag '{raw_path}' is missing.")
    level = _LEVELS.get(raw_level.strip().lower())
    if level is None:
        raise BadRequest(
            f"Input Dicom Tag Level '{raw_level}' is invalid. It must have value 'Study', 'Series' or 'Instance'."
        )
    vr_field = fields.get("vr")
    if vr_field is not None and not isinstance(vr_field, str):
        raise BadRequest(f"The VR code '{vr_field}' for tag '{raw_path}' is invalid.")
    vr = vr_field.strip().upper() if vr_field else None
    creator_field = fields.get("privatecreator")
    if creator_field is not None and not isinstance(creator_field, str):
        raise BadRequest(f"The private creator for tag '{raw_path}' is not a valid LO attribute.")
    creator = creator_field.strip() if creator_field else None
    private = group % 2 == 1
    if private:
        if element <= 0xFF:
            if element >= 0x10 and creator:
                raise BadRequest(f"The private creator is not empty for private identification code '{raw_path}'.")
            raise BadRequest(
                f"The extended query tag '{raw_path}' is invalid as it cannot be parsed into a valid Dicom Tag."
            )
        if not creator:
            raise BadRequest(f"The private creator for private tag '{raw_path}' is missing.")
        if len(creator) > 64 or "\\" in creator:
            raise BadRequest(f"The private creator for tag '{raw_path}' is not a valid LO attribute.")
        if not vr:
            raise BadRequest(f"The vr for tag '{raw_path}' is missing.")
    else:
        if creator:
            raise BadRequest(f"The private creator is not empty for standard tag '{raw_path}'.")
        if element == 0 or group in (0x0000, 0x0002):
            raise BadRequest(
                f"The extended query tag '{raw_path}' is invalid as it cannot be parsed into a valid Dicom Tag."
            )
        known = _dictionary_vr(path)
        if known is None:
            raise BadRequest(
                f"The extended query tag '{raw_path}' is invalid as it cannot be parsed into a valid Dicom Tag."
            )
        if path in _CORE_TAGS:
            raise Conflict(f"The query tag '{raw_path}' is already supported.")
        if known == "SQ":
            raise BadRequest("Sequential dicom tags are currently not supported.")
        choices = [v.strip() for v in known.split(" or ")]
        if vr is None:
            vr = next((v for v in choices if v in EXTENDED_TAG_VRS), choices[0])
        elif vr not in choices:
            raise BadRequest(
                f"The VR code '{vr}' is incorrectly specified for '{raw_path}'. The expected VR code for it is "
                f"'{known}'. Retry this request either with the correct VR code or without specifying it."
            )
        if _is_retired_repeater(path):
            raise BadRequest(
                f"The extended query tag '{raw_path}' is invalid as it cannot be parsed into a valid Dicom Tag."
            )
    if vr == "SQ":
        raise BadRequest("Sequential dicom tags are currently not supported.")
    if vr not in EXTENDED_TAG_VRS:
        raise BadRequest(f"The VR code '{vr}' specified for tag '{raw_path}' is not supported.")
    return ExtendedQueryTag(path=path, vr=vr, level=level, private_creator=creator if private else None)


def _is_retired_repeater(path: str) -> bool:
    """Repeating groups (curve, overlay data: ``50xx``/``60xx``) cannot be declared: which one would it be?"""
    try:
        get_entry(int(path, 16))
    except KeyError:
        return True
    return path[:2] in ("50", "60")


def parse_tags(body: bytes) -> list[ExtendedQueryTag]:
    """The tags a POST body declares (validated; 400/409 as Azure)."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if not body.strip():
        raise BadRequest("The extended query tag(s) is missing.")
    try:
        entries = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(entries, list):
        raise BadRequest("The request body must be a JSON array of extended query tags.")
    if not entries:
        raise BadRequest("The extended query tag(s) is missing.")
    tags = [_validate_entry(entry) for entry in entries]
    seen: set[str] = set()
    for tag in tags:
        if tag.path in seen:
            raise BadRequest(f"The extended query tag '{tag_name(tag.path)}' has been specified before.")
        seen.add(tag.path)
    return tags


# -- JSON -------------------------------------------------------------------------------------


def tag_json(tag: ExtendedQueryTag, base_url: str) -> dict[str, Any]:
    """A tag as Azure v2 returns it (``errors`` when it has some, ``operation`` while Adding)."""
    base = base_url.rstrip("/")
    body: dict[str, Any] = {"path": tag.path, "vr": tag.vr}
    if tag.private_creator:
        body["privateCreator"] = tag.private_creator
    body |= {"level": _LEVEL_NAMES[tag.level], "status": tag.status.value, "queryStatus": tag.query_status.value}
    if tag.error_count > 0:
        body["errors"] = {"count": tag.error_count, "href": f"{base}/extendedquerytags/{tag.path}/errors"}
    if tag.status is ExtendedQueryTagStatus.ADDING and tag.operation_id:
        body["operation"] = {"id": tag.operation_id, "href": f"{base}/operations/{tag.operation_id}"}
    return body


def error_json(error: ExtendedQueryTagError) -> dict[str, Any]:
    """An indexing error as Azure v2 returns it."""
    return {
        "studyInstanceUid": error.key.study_instance_uid,
        "seriesInstanceUid": error.key.series_instance_uid,
        "sopInstanceUid": error.key.sop_instance_uid,
        "createdTime": error.created,
        "errorMessage": error.message,
    }


def _int_param(params: list[tuple[str, str]], name: str, default: int, low: int, high: int | None) -> int:
    values = [v for k, v in params if k.lower() == name]
    if len(values) > 1:
        raise BadRequest(f"The query parameter '{name}' is repeated.")
    if not values:
        return default
    try:
        number = int(values[0])
    except ValueError:
        raise BadRequest(f"The {name} value '{values[0]}' is not an integer.") from None
    if number < low or (high is not None and number > high):
        upper = f" and {high}" if high is not None else " or more"
        raise BadRequest(f"The {name} value {number} is out of range: it must be between {low}{upper}.")
    return number


def _paging(params: list[tuple[str, str]]) -> tuple[int, int]:
    for name, _ in params:
        if name.lower() not in ("limit", "offset"):
            raise BadRequest(f"The query parameter '{name}' is not supported here (use limit and offset).")
    return _int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT), _int_param(params, "offset", 0, 0, None)


def _declared(tags: ExtendedQueryTagStore, tag_path: str) -> ExtendedQueryTag:
    path = parse_tag_path(tag_path)
    tag = tags.get_tag(path)
    if tag is None:
        raise NotFound(f"The specified extended query tag with tag path {tag_path} cannot be found.")
    return tag


# -- the API ----------------------------------------------------------------------------------


def add_extended_query_tags(
    *, tags: ExtendedQueryTagStore, operations: OperationStore, body: bytes, base_url: str
) -> dict[str, str]:
    """``POST /extendedquerytags``: declare tags and start their reindex; returns the operation reference (202).

    Raises
    ------
    BadRequest
        An invalid entry, a repeated tag, more than :data:`MAX_TAGS` tags in all.
    Conflict
        A core searchable attribute, a tag already declared, or a reindex still running.
    """
    new = parse_tags(body)
    existing = tags.list_tags()
    declared = {t.path: t for t in existing}
    for tag in new:
        if tag.path in declared:
            raise Conflict(f"The extended query tag '{tag_name(tag.path)}' already exists.")
    if len(existing) + len(new) > MAX_TAGS:
        raise BadRequest(f"Extended query tags exceeds max allowed count '{MAX_TAGS}'.")
    for tag in existing:
        if tag.status is ExtendedQueryTagStatus.ADDING and tag.operation_id:
            running = operations.get(tag.operation_id)
            if running is not None and not running.status.done:
                raise Conflict(f"There is already an active {REINDEX} operation with ID '{running.id}'.")
    created_at = _now()
    added = tags.add_tags([replace(t, created=created_at) for t in new])
    operation = start_operation(
        operations,
        REINDEX,
        [f"extendedquerytags/{t.path}" for t in added],
        {"tags": [t.path for t in added], "after": "", "visited": 0, "started": time.time()},
    )
    for tag in added:
        tags.save_tag(replace(tag, operation_id=operation.id))
    log.info("extended query tags added tags=%s operation=%s", ",".join(t.path for t in added), operation.id)
    return operation_reference(operation, base_url)


def list_extended_query_tags(
    *, tags: ExtendedQueryTagStore, params: list[tuple[str, str]], base_url: str
) -> list[dict[str, Any]]:
    """``GET /extendedquerytags``: every declared tag, by path (``limit``, ``offset``)."""
    limit, offset = _paging(params)
    return [tag_json(t, base_url) for t in tags.list_tags()[offset : offset + limit]]


def get_extended_query_tag(*, tags: ExtendedQueryTagStore, tag_path: str, base_url: str) -> dict[str, Any]:
    """``GET /extendedquerytags/{tagPath}`` (400 invalid path, 404 not declared)."""
    return tag_json(_declared(tags, tag_path), base_url)


def delete_extended_query_tag(*, tags: ExtendedQueryTagStore, tag_path: str) -> None:
    """``DELETE /extendedquerytags/{tagPath}`` (204): QIDO stops accepting it, its errors are removed.

    The values already written into instance documents stay (unreachable: QIDO refuses an undeclared
    tag unless any-attribute search is on, which reads the same values; a new declaration reindexes).
    """
    tag = _declared(tags, tag_path)
    if not tags.delete_tag(tag.path):
        raise NotFound(f"The specified extended query tag with tag path {tag_path} cannot be found.")
    log.info("extended query tag deleted tag=%s", tag.path)


def update_extended_query_tag(
    *, tags: ExtendedQueryTagStore, tag_path: str, body: bytes, base_url: str
) -> dict[str, Any]:
    """``PATCH /extendedquerytags/{tagPath}`` with ``{"queryStatus": "Enabled"|"Disabled"}``: the tag (200)."""
    tag = _declared(tags, tag_path)
    try:
        update = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
    except (ValueError, UnicodeDecodeError):
        update = None
    if not isinstance(update, dict):
        raise BadRequest('The request body must be a JSON object such as {"queryStatus": "Enabled"}.')
    fields = {str(k).lower(): v for k, v in update.items()}
    value = fields.pop("querystatus", None)
    if fields or not isinstance(value, str):
        raise BadRequest('The request body must have exactly one property, queryStatus ("Enabled" or "Disabled").')
    status = {"enabled": QueryStatus.ENABLED, "disabled": QueryStatus.DISABLED}.get(value.strip().lower())
    if status is None:
        raise BadRequest(f"The queryStatus value '{value}' is invalid. It must be 'Enabled' or 'Disabled'.")
    saved = tags.save_tag(replace(tag, query_status=status))
    return tag_json(saved, base_url)


def list_extended_query_tag_errors(
    *, tags: ExtendedQueryTagStore, tag_path: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """``GET /extendedquerytags/{tagPath}/errors``: the indexing errors, oldest first (``limit``, ``offset``)."""
    limit, offset = _paging(params)
    tag = _declared(tags, tag_path)
    return [error_json(e) for e in tags.list_errors(tag, limit, offset)]


# -- QIDO -------------------------------------------------------------------------------------


def query_tags(tags: ExtendedQueryTagStore | None) -> dict[str, ExtendedQueryTag]:
    """The declared tags QIDO knows, by path: one read of the tag store per request at most (cached)."""
    if tags is None:
        return {}
    return {t.path: t for t in tags.list_tags(max_age_seconds=EXTENDED_TAGS_MAX_AGE_SECONDS)}


# -- the reindex operation --------------------------------------------------------------------


@operation_handler(REINDEX)
def reindex_step(operation: Operation, services: Services) -> Operation:
    """One step of a reindex: :data:`REINDEX_BATCH` instances after ``checkpoint["after"]`` (idempotent)."""
    index = services.index
    store = services.extended_tags
    if not isinstance(index, ReindexableIndex):
        raise DicomServerError("The index cannot reindex extended query tags.")
    checkpoint = dict(operation.checkpoint)
    declared = {t.path: t for t in store.list_tags()}
    tags = [declared[p] for p in checkpoint.get("tags", []) if p in declared]
    tags = [t for t in tags if t.status is ExtendedQueryTagStatus.ADDING]
    if not tags:  # every tag was deleted (or finished) meanwhile
        return replace(operation, status=OperationStatus.SUCCEEDED, checkpoint=checkpoint)
    if "total" not in checkpoint:
        checkpoint["total"] = index.count_all_instances()
    batch = index.scan_instances(str(checkpoint.get("after") or ""), REINDEX_BATCH)
    wanted = [(t.path, t.vr, t.private_creator) for t in tags]
    errors: dict[str, list[ExtendedQueryTagError]] = {}
    for instance in batch:
        found = extended_values(_dataset(instance, services), wanted)
        index.set_extended_values(instance, found.values, found.elements, found.cleared)
        for path, message in found.errors.items():
            errors.setdefault(path, []).append(ExtendedQueryTagError(instance.key, message, _now()))
    for tag in tags:
        if errors.get(tag.path):
            store.add_errors(tag, errors[tag.path])
            store.save_tag(replace(tag, error_count=store.count_errors(tag)))
    if batch:
        checkpoint["after"] = batch[-1].sort_key
        checkpoint["visited"] = int(checkpoint.get("visited") or 0) + len(batch)
        total = max(int(checkpoint["total"]), checkpoint["visited"], 1)
        percent = min(99, checkpoint["visited"] * 100 // total)
        log.info("reindex %s visited=%d of about %d", operation.id, checkpoint["visited"], total)
        return replace(operation, checkpoint=checkpoint, percent_complete=percent)
    wait = float(checkpoint.get("started") or 0) + SETTLE_SECONDS - time.time()
    if wait > 0:  # STOWs that read the tag list before the POST may still be storing: look once more
        time.sleep(min(wait, SETTLE_SECONDS))
        return replace(operation, checkpoint=checkpoint)
    for tag in tags:
        count = store.count_errors(tag)
        query_status = QueryStatus.DISABLED if count else tag.query_status
        store.save_tag(replace(tag, status=ExtendedQueryTagStatus.READY, error_count=count, query_status=query_status))
    log.info("reindex %s done tags=%s", operation.id, ",".join(t.path for t in tags))
    return replace(operation, status=OperationStatus.SUCCEEDED, checkpoint=checkpoint, percent_complete=100)


def _dataset(instance: IndexedInstance, services: Services) -> dict[str, Any]:
    """The DICOM JSON to read an instance's tag values from: its inline metadata, else the metadata blob."""
    text: str | bytes | None = instance.metadata_json
    if text is None and instance.metadata_in_blob:
        try:
            text, _ = services.blobs.get_metadata(instance.key)
        except NotFound:
            text = None
    if text is None:
        return instance.attrs
    try:
        dataset = json.loads(text)
    except ValueError:
        return instance.attrs
    return dataset if isinstance(dataset, dict) else instance.attrs
