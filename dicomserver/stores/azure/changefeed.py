"""The change feed on Cosmos DB: one ``changefeed`` container, one sequence for the whole service.

Layout
------
``changefeed`` holds, in one logical partition (``/pk`` = :data:`FEED_PK`), one
counter document (id ``"sequence"``, ``value`` = the last sequence number handed
out) and immutable log documents, one per batch of changes of one study logged
together (a STOW request's instances of a study, a DELETE): id = the
zero-padded first sequence number, ``seq``/``last`` (the numbers it holds,
consecutive), ``partition`` (the data partition of the study), ``study``,
``ts`` (ISO 8601 UTC, microseconds, ``Z``),
``changes`` (``seq``, ``series``, ``sop``, ``action``: create/update/delete) and
``published`` (its events were handed to the publisher; the only field ever
changed).  The reader expands documents into entries.  The state
(current/replaced/deleted) and the metadata are not stored in the entry: they
are read from the instance documents when the feed is read, so an entry never
has to be rewritten when its instance changes.

How the order holds with concurrent writers
-------------------------------------------
A change is logged only *after* it is committed (the instance document created,
or removed), so a rolled-back store never has an entry.  Logging a batch is two
round trips: ``patch`` ``incr`` of the partition's counter document by the
batch size (atomic in Cosmos: concurrent writers get distinct, increasing
ranges, in the order the counter saw them) and the create of the log document
with those numbers.  Between the two a
later number can become visible before an earlier one (two writers racing), and
a writer that dies between them leaves a number that never appears.  The reader
therefore returns entries in sequence order only up to the first gap whose
following entry is younger than :data:`GAP_SETTLE_SECONDS` (the earlier
number is still being written); an older gap is a number that will never
appear and is passed.  So a consumer paging with ``offset`` never sees an
entry appear before one it has already read.  A writer that dies between its
commit and its entry leaves a committed instance without an entry: the
FHIR sync that every write schedules ahead (write-ahead queue message) runs
:func:`dicomserver.changes.repair_study`, which logs it then (with a new,
later number).

The order is global: Azure v2's change feed (at the base path, not under
``/partitions/{name}``) lists every data partition's changes in one sequence, each
entry naming its ``PartitionName``.  One logical partition holds the whole log
(Cosmos allows 20 GB per logical partition: at about 150 bytes per change, over
a hundred million changes).
Timestamps come from the writer's clock just after its number was handed out,
so across processes they follow the sequence to within clock skew; the time
window filters on the timestamp and orders by the sequence.

Cost (counted by :mod:`dicomserver.opcount`): 2 index round trips per batch
(counter patch + document create) whatever its size: a STOW request logs its
instances once per study when it counts them in (with the aggregates, at least
every 100 instances), a one-instance request right after its commit, a DELETE
once per study.  A read is one query for the entries plus one
cross-partition query for the state (and metadata) of their instances; the
offset is skipped while the documents stream past (``TOP offset+limit``; only the
window is held in memory), so deep offsets cost the reads they skip.  The hot
spot is the counter document: every store in the service patches it (Cosmos
serves a few hundred to a thousand writes a second on one document).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from ...errors import DependencyUnavailable
from ...identifiers import InstanceKey, StudyKey
from ..model import Change, ChangeAction, ChangeEntry, ChangeState
from .index import INSTANCES_CONTAINER, PARTITION_KEY_PATH, _call, _write, study_pk

CHANGEFEED_CONTAINER = "changefeed"
#: Entries and the counter are indexed on what the reader filters and orders by.
CHANGEFEED_INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "includedPaths": [
        {"path": "/seq/?"},
        {"path": "/last/?"},
        {"path": "/ts/?"},
        {"path": "/study/?"},
        {"path": "/partition/?"},
        {"path": "/published/?"},
    ],
    "excludedPaths": [{"path": "/*"}],
}
COUNTER_ID = "sequence"
#: The one logical partition of the log and its counter (a value no data partition name can take).
FEED_PK = "$feed"
#: What an unavailable Cosmos is called in this module's errors ("The change feed is unavailable (...)").
FEED = "change feed"
#: A gap in the sequence followed by an entry younger than this is a change still being logged.
GAP_SETTLE_SECONDS = 5.0
#: Entries read past ``offset + limit`` to find out whether a gap closes.
_ATTEMPTS = 3


def timestamp(when: datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds and ``Z``: sorts as text in time order."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry_id(seq: int) -> str:
    return f"{seq:019d}"


def _age_seconds(ts: str) -> float:
    return time.time() - datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class CosmosChangeFeed:
    """:class:`~dicomserver.stores.ChangeFeed` on Cosmos DB (see the module docstring)."""

    def __init__(self, client: CosmosClient, database: str, *, emulator: bool = False) -> None:
        self._client = client
        self._database_name = database
        self._emulator = emulator
        db = client.get_database_client(database)
        self._feed: ContainerProxy = db.get_container_client(CHANGEFEED_CONTAINER)
        self._instances: ContainerProxy = db.get_container_client(INSTANCES_CONTAINER)

    def ensure_schema(self) -> None:
        db = _call(
            "create database", lambda: self._client.create_database_if_not_exists(self._database_name), FEED
        )
        self._feed = _call(
            "create container",
            lambda: db.create_container_if_not_exists(
                CHANGEFEED_CONTAINER,
                partition_key=PartitionKey(PARTITION_KEY_PATH),
                indexing_policy=CHANGEFEED_INDEXING_POLICY,
            ),
            FEED,
        )

    # -- writing ------------------------------------------------------------------------------

    def record(self, changes: Sequence[Change], reserved: int | None = None) -> list[int]:
        """Log committed changes: per study, one counter patch (unless ``reserved``) and one log document."""
        groups: dict[tuple[str, str], list[Change]] = {}
        for change in changes:
            groups.setdefault((change.key.partition, change.key.study_instance_uid), []).append(change)
        if reserved is not None and len(groups) != 1:
            raise ValueError("reserved numbers are for the changes of one study")
        numbers: list[int] = []
        for (partition, study), group in groups.items():
            last = reserved if reserved is not None else self.reserve(partition, len(group))
            first = last - len(group) + 1
            doc = {
                "id": _entry_id(first),
                "pk": FEED_PK,
                "partition": partition,
                "seq": first,
                "last": last,
                "study": study,
                "ts": timestamp(),
                "changes": [
                    {
                        "seq": first + i,
                        "series": c.key.series_instance_uid,
                        "sop": c.key.sop_instance_uid,
                        "action": c.action.value,
                    }
                    for i, c in enumerate(group)
                ],
                "published": False,
            }
            _write("change feed entry", lambda doc=doc: self._feed.create_item(doc))  # type: ignore[misc]
            numbers.extend(range(first, last + 1))
        return numbers

    def reserve(self, partition: str, count: int) -> int:
        """Hand out ``count`` numbers: the last one of them (atomic ``incr`` of the counter document).

        The sequence is the service's, whatever the data ``partition`` of the changes.
        """
        ops = [{"op": "incr", "path": "/value", "value": count}]
        for _ in range(_ATTEMPTS):
            patched, status = _write(
                "change feed sequence",
                lambda: self._feed.patch_item(COUNTER_ID, partition_key=FEED_PK, patch_operations=ops),
                tolerated=(404,) if not self._emulator else (404, 500),
            )
            if patched is not None:
                return int(patched["value"])
            created, status = _write(
                "change feed sequence",
                lambda: self._feed.create_item({"id": COUNTER_ID, "pk": FEED_PK, "value": count}),
                tolerated=(409,),
            )
            if created is not None:
                return count
        raise DependencyUnavailable("The change feed sequence could not be reserved.")

    def mark_published(self, entries: Sequence[ChangeEntry]) -> None:
        """Mark the log documents of ``entries`` published (one patch per document)."""
        ops = [{"op": "set", "path": "/published", "value": True}]
        for first in sorted({e.record for e in entries}):
            _write(
                "change feed published",
                lambda first=first: self._feed.patch_item(  # type: ignore[misc]
                    _entry_id(first), partition_key=FEED_PK, patch_operations=ops
                ),
                tolerated=(404,),
            )

    # -- reading ------------------------------------------------------------------------------

    def read(self, start: str, end: str, offset: int, limit: int, include_metadata: bool) -> list[ChangeEntry]:
        sql = (
            "SELECT TOP @n * FROM c WHERE c.pk = @pk AND IS_DEFINED(c.seq) AND c.ts >= @start AND c.ts < @end "
            "ORDER BY c.seq"
        )
        params: list[dict[str, Any]] = [
            {"name": "@n", "value": offset + limit},
            {"name": "@pk", "value": FEED_PK},
            {"name": "@start", "value": start},
            {"name": "@end", "value": end},
        ]
        rows = _call("change feed read", lambda: self._window(sql, params, offset, limit), FEED)
        return self._resolve(rows, include_metadata)

    def latest(self, include_metadata: bool) -> ChangeEntry | None:
        docs = self._query(
            "SELECT TOP 1 * FROM c WHERE c.pk = @pk AND IS_DEFINED(c.seq) ORDER BY c.seq DESC",
            [{"name": "@pk", "value": FEED_PK}],
        )
        entries = self._resolve(_expand(docs)[-1:], include_metadata)
        return entries[0] if entries else None

    def study_entries(self, study: StudyKey) -> list[ChangeEntry]:
        docs = self._query(
            "SELECT * FROM c WHERE c.pk = @pk AND c.study = @study AND c.partition = @partition "
            "AND IS_DEFINED(c.seq) ORDER BY c.seq",
            [
                {"name": "@pk", "value": FEED_PK},
                {"name": "@study", "value": study.study_instance_uid},
                {"name": "@partition", "value": study.partition},
            ],
        )
        return [_entry(row, ChangeState.CURRENT) for row in _expand(docs)]

    def _window(self, sql: str, params: list[dict[str, Any]], offset: int, limit: int) -> list[dict[str, Any]]:
        """Entries ``offset`` to ``offset + limit`` of the log documents ``sql`` returns in sequence order.

        The documents are streamed: only the window is kept, whatever the offset, and the read stops
        once it is full.  It also stops at the first gap that may still close (see the module
        docstring); the number before the first document is looked up too (one query), so a gap at
        the start of the window is seen as well.
        """
        kept: list[dict[str, Any]] = []
        seen = 0
        previous: dict[str, Any] | None = None
        for doc in self._feed.query_items(sql, parameters=params, partition_key=FEED_PK):
            young = _age_seconds(doc["ts"]) < GAP_SETTLE_SECONDS
            if previous is None:
                first = int(doc["seq"])
                if first > 1 and young and not self._exists(first - 1):
                    break
            elif int(doc["seq"]) != int(previous["last"]) + 1 and young:
                break
            previous = doc
            for row in _expand([doc]):
                if seen >= offset:
                    kept.append(row)
                seen += 1
                if len(kept) == limit:
                    return kept
        return kept

    def _exists(self, seq: int) -> bool:
        rows = self._query(
            "SELECT VALUE c.seq FROM c WHERE c.pk = @pk AND c.seq <= @seq AND c.last >= @seq",
            [{"name": "@pk", "value": FEED_PK}, {"name": "@seq", "value": seq}],
        )
        return bool(rows)

    def _resolve(self, rows: list[dict[str, Any]], include_metadata: bool) -> list[ChangeEntry]:
        """Each entry with its instance's state now (and metadata): one query for all their instances."""
        if not rows:
            return []
        fields = "c.id, c.pk, c.storedAt, c.createdAt" + (", c.metadata, c.metadataInBlob" if include_metadata else "")
        wanted = sorted({f"{r['series']}|{r['sop']}" for r in rows})
        pks = sorted({study_pk(StudyKey(str(r["partition"]), str(r["study"]))) for r in rows})
        docs = {
            (str(d["pk"]), str(d["id"])): d
            for d in _call(
                "change feed state",
                lambda: list(
                    self._instances.query_items(
                        f"SELECT {fields} FROM c WHERE ARRAY_CONTAINS(@pks, c.pk) AND ARRAY_CONTAINS(@ids, c.id)",
                        parameters=[{"name": "@pks", "value": pks}, {"name": "@ids", "value": wanted}],
                        enable_cross_partition_query=True,
                    )
                ),
                FEED,
            )
        }
        out = []
        for row in rows:
            key = (study_pk(StudyKey(str(row["partition"]), str(row["study"]))), f"{row['series']}|{row['sop']}")
            doc = docs.get(key)
            action = ChangeAction(row["action"])
            # The document's lifetime began at createdAt (its first store; a PUT keeps it) and its
            # current version at storedAt: earlier entries are of a deleted lifetime or a replaced version.
            stored_at = _as_timestamp(doc.get("storedAt")) if doc is not None else ""
            created_at = _as_timestamp(doc.get("createdAt") or doc.get("storedAt")) if doc is not None else ""
            if doc is None or action is ChangeAction.DELETE or str(row["ts"]) < created_at:
                state = ChangeState.DELETED
            elif str(row["ts"]) < stored_at:
                state = ChangeState.REPLACED
            else:
                state = ChangeState.CURRENT
            # The metadata of the instance's version this entry belongs to: none for an ended lifetime.
            alive = doc is not None and include_metadata and state is ChangeState.CURRENT
            metadata = doc.get("metadata") if alive and doc is not None else None
            in_blob = bool(alive and doc is not None and doc.get("metadataInBlob"))
            out.append(_entry(row, state, metadata, in_blob))
        return out

    def _query(self, sql: str, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _call(
            "change feed read",
            lambda: list(self._feed.query_items(sql, parameters=params, partition_key=FEED_PK)),
            FEED,
        )


def _as_timestamp(stored_at: object) -> str:
    """An instance document's ``storedAt`` (ISO 8601 with offset) in the entries' timestamp format."""
    if not stored_at:
        return ""
    return timestamp(datetime.fromisoformat(str(stored_at).replace("Z", "+00:00")))


def _expand(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log documents → one row per change, in sequence order."""
    rows = []
    for doc in docs:
        for change in doc.get("changes") or []:
            rows.append(
                {
                    **change,
                    "partition": doc["partition"],
                    "study": doc["study"],
                    "ts": doc["ts"],
                    "record": doc["seq"],
                    "published": doc.get("published"),
                }
            )
    return rows


def _entry(row: dict[str, Any], state: ChangeState, metadata: Any = None, in_blob: bool = False) -> ChangeEntry:
    return ChangeEntry(
        sequence=int(row["seq"]),
        key=InstanceKey(str(row["partition"]), str(row["study"]), str(row["series"]), str(row["sop"])),
        action=ChangeAction(row["action"]),
        timestamp=str(row["ts"]),
        state=state,
        metadata_json=str(metadata) if metadata is not None else None,
        metadata_in_blob=in_blob,
        published=bool(row.get("published")),
        record=int(row["record"]),
    )
