"""The change feed (Azure v2 "Change feed overview") and the DICOM events published from it.

Reading: ``GET /v2/changefeed?startTime=&endTime=&offset=&limit=&includemetadata=``
(:func:`read_change_feed`) and ``GET /v2/changefeed/latest`` (:func:`read_latest_change`).
startTime is inclusive (default 0001-01-01), endTime exclusive (default
9999-12-31); offset counts entries skipped inside that window (default 0);
limit is 1-200 (default 100); includemetadata (default true) adds each
instance's current DICOM JSON while it exists.  Entries are in sequence
order; State is the instance's state now (current, replaced, deleted).

Writing happens in the store sequence (:func:`dicomserver.ingest.commit_instance`)
and in DELETE (:mod:`dicomserver.delete`), after the change is committed; see
:mod:`dicomserver.stores.azure.changefeed` for the order guarantee and cost.

Events: :func:`process_study` runs in the queue trigger that every write
schedules ahead (the fhir-sync message of the study, see
:mod:`dicomserver.fhir.sync`), never in the HTTP request.  It logs what a dead
writer left unlogged (:func:`repair_study`), then publishes each entry of the
study not yet published as a ``Microsoft.HealthcareApis.DicomImageCreated`` /
``DicomImageUpdated`` / ``DicomImageDeleted`` event (Azure Health Data Services
event schema) and marks it published.  At least once: a host that dies after
publishing and before marking publishes again; the event ``id`` is derived
from the partition and sequence number, so a consumer can drop duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import bulkdata, negotiation
from .errors import BadRequest, NotFound
from .identifiers import StudyKey
from .stores import BlobStore, Change, ChangeAction, ChangeEntry, ChangeFeed, EventPublisher, IndexStore
from .urls import DicomWebUrl

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
MIN_TIME = "0001-01-01T00:00:00.000000Z"
MAX_TIME = "9999-12-31T23:59:59.999999Z"
#: Namespace of the event ids (uuid5 of ``partition:sequence``).
EVENT_ID_NAMESPACE = uuid.UUID("6b1f4a52-0f7e-4c35-9b59-4a3f1d6c2e11")
EVENT_TYPES = {
    ChangeAction.CREATE: "Microsoft.HealthcareApis.DicomImageCreated",
    ChangeAction.UPDATE: "Microsoft.HealthcareApis.DicomImageUpdated",
    ChangeAction.DELETE: "Microsoft.HealthcareApis.DicomImageDeleted",
}


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """The parameters of one change feed read, validated."""

    start: str = MIN_TIME
    end: str = MAX_TIME
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    include_metadata: bool = True


def _time(name: str, value: str) -> str:
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        example = "2026-12-01T10:00:00Z"
        raise BadRequest(f"The {name} '{value}' is not a date and time (ISO 8601, e.g. {example}).") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(name: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise BadRequest(f"The {name} '{value}' is not an integer.") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"The {name} {number} is out of range: it must be {bound}.")
    return number


def _bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise BadRequest(f"The {name} '{value}' is not true or false.")
    return text == "true"


def parse_feed_query(params: Iterable[tuple[str, str]], *, latest: bool = False) -> FeedQuery:
    """Validate the change feed's query parameters (names case-insensitive, as Azure's).

    Raises
    ------
    BadRequest
        For a value that is not a date, integer or boolean, an out-of-range
        offset or limit, a repeated parameter, or a window whose start is not before its end.
    """
    values: dict[str, str] = {}
    for name, value in params:
        key = name.lower()
        if key in values:
            raise BadRequest(f"The parameter '{name}' is given more than once.")
        values[key] = value
    include = _bool("includemetadata", values["includemetadata"]) if "includemetadata" in values else True
    if latest:
        return FeedQuery(include_metadata=include)
    start = _time("startTime", values["starttime"]) if "starttime" in values else MIN_TIME
    end = _time("endTime", values["endtime"]) if "endtime" in values else MAX_TIME
    if start >= end:
        raise BadRequest(f"The startTime {start} must be before the endTime {end}.")
    offset = _int("offset", values["offset"], 0, None) if "offset" in values else 0
    limit = _int("limit", values["limit"], 1, MAX_LIMIT) if "limit" in values else DEFAULT_LIMIT
    return FeedQuery(start, end, offset, limit, include)


def _metadata(blobs: BlobStore, entry: ChangeEntry, base_url: str) -> dict[str, Any] | None:
    if entry.metadata_json is not None:
        text = entry.metadata_json.encode()
    elif entry.metadata_in_blob:
        try:
            text, _ = blobs.get_metadata(entry.key)
        except NotFound:
            return None
    else:
        return None
    resolved = bulkdata.resolve_uris(text, DicomWebUrl.of_instance(base_url, entry.key).bulkdata_prefix)
    value: dict[str, Any] = json.loads(resolved)
    return value


def entry_json(entry: ChangeEntry, blobs: BlobStore, base_url: str, include_metadata: bool) -> dict[str, Any]:
    """One entry as Azure v2 returns it."""
    out: dict[str, Any] = {
        "Sequence": entry.sequence,
        "PartitionName": entry.key.partition,
        "StudyInstanceUid": entry.key.study_instance_uid,
        "SeriesInstanceUid": entry.key.series_instance_uid,
        "SopInstanceUid": entry.key.sop_instance_uid,
        "Action": entry.action.value,
        "Timestamp": entry.timestamp,
        "State": entry.state.value,
    }
    if include_metadata:
        metadata = _metadata(blobs, entry, base_url)
        if metadata is not None:
            out["Metadata"] = metadata
    return out


async def read_change_feed(
    *,
    feed: ChangeFeed,
    blobs: BlobStore,
    params: Iterable[tuple[str, str]],
    base_url: str,
    accept: str | None = None,
) -> list[dict[str, Any]]:
    """``GET /changefeed``: the entries of a time window, by offset and limit (an empty list is ``[]``)."""
    query = parse_feed_query(params)
    negotiation.plain_json(accept, "Change feed")

    def run() -> list[dict[str, Any]]:
        entries = feed.read(query.start, query.end, query.offset, query.limit, query.include_metadata)
        return [entry_json(e, blobs, base_url, query.include_metadata) for e in entries]

    return await asyncio.to_thread(run)


async def read_latest_change(
    *,
    feed: ChangeFeed,
    blobs: BlobStore,
    params: Iterable[tuple[str, str]],
    base_url: str,
    accept: str | None = None,
) -> dict[str, Any] | None:
    """``GET /changefeed/latest``: the newest entry (None when the feed is empty: 204)."""
    query = parse_feed_query(params, latest=True)
    negotiation.plain_json(accept, "Change feed")

    def run() -> dict[str, Any] | None:
        entry = feed.latest(query.include_metadata)
        return entry_json(entry, blobs, base_url, query.include_metadata) if entry is not None else None

    return await asyncio.to_thread(run)


def repair_study(feed: ChangeFeed, index: IndexStore, study: StudyKey, quiet_seconds: float) -> list[ChangeEntry]:
    """Log what a writer that died after its commit left unlogged; returns the study's entries.

    An instance without a create/update entry since it was stored gets a create
    entry; an instance whose last entry is a create/update but which is no longer
    indexed gets a delete entry.  Only changes older than ``quiet_seconds`` are
    repaired (a live writer may be between its commit and its entry).
    """
    entries = feed.study_entries(study)
    last: dict[tuple[str, str], ChangeEntry] = {}
    for entry in entries:
        last[(entry.key.series_instance_uid, entry.key.sop_instance_uid)] = entry
    instances = index.list_instance_details(study)
    horizon = time.time() - quiet_seconds
    missing: list[Change] = []
    present = set()
    for instance in instances:
        ident = (instance.key.series_instance_uid, instance.key.sop_instance_uid)
        present.add(ident)
        latest = last.get(ident)
        stored = _epoch(instance.stored_at)
        logged = latest is not None and latest.action is not ChangeAction.DELETE and _epoch(latest.timestamp) >= stored
        if not logged and stored < horizon:
            missing.append(Change(instance.key, ChangeAction.CREATE))
    for ident, latest in last.items():
        if ident not in present and latest.action is not ChangeAction.DELETE and _epoch(latest.timestamp) < horizon:
            missing.append(Change(latest.key, ChangeAction.DELETE))
    if not missing:
        return entries
    log.warning("logging %d change(s) a writer left unlogged study=%s", len(missing), study.study_instance_uid)
    feed.record(missing)
    return feed.study_entries(study)


def _epoch(text: str) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def event(entry: ChangeEntry, service_host: str) -> dict[str, Any]:
    """The Event Grid event of one entry (Azure Health Data Services DICOM event schema)."""
    key = entry.key
    return {
        "id": str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key.partition}:{entry.sequence}")),
        "topic": service_host,
        "subject": service_host + DicomWebUrl.of_instance("/v2", key).url,
        "eventType": EVENT_TYPES[entry.action],
        "eventTime": entry.timestamp,
        "dataVersion": "1",
        "metadataVersion": "1",
        "data": {
            "partitionName": key.partition,
            "imageStudyInstanceUid": key.study_instance_uid,
            "imageSeriesInstanceUid": key.series_instance_uid,
            "imageSopInstanceUid": key.sop_instance_uid,
            "serviceHostName": service_host,
            "sequenceNumber": entry.sequence,
        },
    }


def process_study(
    *,
    feed: ChangeFeed,
    index: IndexStore,
    publisher: EventPublisher,
    study: StudyKey,
    service_host: str,
    quiet_seconds: float,
) -> int:
    """Repair the study's log, then publish its unpublished entries as events; returns how many were published.

    Raises
    ------
    DependencyUnavailable
        When the index, the feed or the event destination is unavailable (the caller backs off and retries).
    """
    entries = repair_study(feed, index, study, quiet_seconds)
    pending = [e for e in entries if not e.published]
    if not pending:
        return 0
    publisher.publish([event(e, service_host) for e in pending])
    feed.mark_published(pending)
    log.info("published %d event(s) study=%s", len(pending), study.study_instance_uid)
    return len(pending)
