"""Cosmos DB (NoSQL) index: the only module that writes Cosmos SQL.

Layout
------
The change feed
---------------
:meth:`CosmosIndexStore.log_changes` logs committed creates to the change
feed (:mod:`.changefeed`, container ``changefeed``): the store sequence calls it
after the commit (:mod:`dicomserver.ingest`: with the request's aggregate
update, or right after the commit of a one-instance request);
:meth:`CosmosIndexStore.remove_instances` (DELETE, orphan removal) logs the
deletes it made.  So no rolled-back store has an entry, and a committed one
lacks its entry only while its request is still running, or if the writer died
first, until the study's write-ahead sync logs it.  Sequence numbers come from
one counter document per data partition (atomic ``incr``: unique and increasing
per partition, not global); the reader never returns an entry past a gap that
may still close.  Cost: 2 index round trips per batch (counter patch + one log
document per study), whatever the batch size.

Three containers, one per QIDO level, all partitioned by ``/pk`` =
``"{partition}|{StudyInstanceUID}"`` (everything about one study lives in one
logical partition of each container), so a query reads only the documents
of its level: ``studies``, ``series`` and ``instances``.

``studies`` (id ``"study"``)
    ``attrs``: DICOM JSON of the study-level attributes of the latest stored
    instance ("latest wins", as in Azure); ``q``: normalised search values
    (see :mod:`dicomserver.matching`); ``ModalitiesInStudy``; ``sortKey``
    (creation time in ns + UID: unique, immutable).  The study's counts are
    not stored here but summed from its series documents when read (one
    query per result page), so a store into an existing series never writes
    the study document.
``series`` (id = SeriesInstanceUID)
    series-level ``attrs`` and ``q``, ``Modality``, ``NumberOfSeriesRelatedInstances``.
``instances`` (id ``"{SeriesInstanceUID}|{SOPInstanceUID}"``)
    every indexed attribute of all levels in ``attrs``, study- and series-level
    search values in ``q``, SOPClassUID, TransferSyntaxUID, size, ``sortKey``,
    the frame and bulk-data tables, and the instance's whole DICOM JSON
    metadata as a string (``metadata``) when it is at most
    :data:`INLINE_METADATA_LIMIT` bytes (else ``metadataInBlob`` and the
    metadata blob holds it).  So study or series metadata is one paged
    single-partition query, not one blob read per instance.

Only ``q``, the UIDs and ``sortKey`` are indexed (``attrs``, ``metadata`` and
the tables are excluded), which keeps writes cheap.

Write path and its cost
-----------------------
Storing an instance is :meth:`CosmosIndexStore.create_instance`: one
``create`` of its document, which fails with 409 when it already exists.
That create is the commit point: whoever creates the document (STOW, the
repair trigger or bulk import) and only they bring the aggregates up to date,
with :meth:`CosmosIndexStore.update_aggregates`, once per request for all
the instances the request created: one ``patch`` per touched series (``incr``
the count, ``set`` the latest attributes).  The study document is patched
(``set`` the latest attributes, ``add`` the modality of a new series) only
when the request created a series or carries study attributes that differ
from the ones this process last wrote for the study (a per-process hash; a
process that has not written the study yet always patches).  A patch is
atomic on the server, so concurrent writers into one study never lose an
increment and no read, COUNT or retry loop is needed: a one-instance STOW
into an existing series costs 2 index round trips whatever the study size,
a 20-instance STOW 20 + 1 per series.  The first instance of a series or
study finds no document to patch (404) and creates it (409 from a concurrent
creator: patch again).  Measured alternative: also counting into the study
document costs a third round trip per one-instance STOW (about a quarter of
its index time); counts summed from the series documents cost one query per
QIDO page instead.

"Latest wins" for study attributes therefore holds per writer process: when
two processes store instances of one study whose study-level attributes
disagree (inconsistent data), the study keeps the value of whichever process
changed it last.

Deletes patch the series counts down; a series whose count reaches 0 is
deleted with the etag the patch returned (412: someone stored meanwhile, so
it stays), then ModalitiesInStudy is recomputed from the remaining series and
a study without series is deleted.

A writer that dies between the instance create and the aggregate patch leaves
the counts short; :meth:`CosmosIndexStore.reconcile_study` recomputes them
from the instance documents, and the FHIR sync (which every stored study gets,
see :mod:`dicomserver.fhir.sync`) calls it once the study has been quiet for a
while, so the counts become exact again without any per-instance cost.

Queries
-------
Every value is a query parameter (``@p0``...), never spliced into SQL text.
Matching uses only functions both Cosmos DB and the emulator support: ``=``
on folded values, ``>=``/``<=`` on ``YYYYMMDD`` strings for date ranges,
``ARRAY_CONTAINS`` for UID lists and ModalitiesInStudy, ``EXISTS(SELECT
VALUE w FROM w IN c.q.PatientNameWords WHERE STARTSWITH(w, @p))`` for fuzzy
person names, ``RegexMatch`` for PS3.18 ``*``/``?`` wildcards.

* ``/studies``: the ``studies`` container, cross-partition.
* ``/series`` and ``/instances`` without study-level conditions: the
  ``series`` or ``instances`` container directly (single-partition when the
  path names the study: ``c.pk = @pk``).
* ``/series`` and ``/instances`` *with* study-level conditions: those are
  evaluated on the study documents (so they see the study's latest-wins
  values and ModalitiesInStudy), giving study ``pk`` values in batches of
  50, oldest first; each batch is searched with ``ARRAY_CONTAINS(@pks,
  c.pk)`` plus the series/instance conditions, until the page is full.
  Results of lower levels get the study attributes and counts from one
  batched read of their study documents.

Paging: ``SELECT TOP (offset+limit) ... ORDER BY c.sortKey ASC`` and the
first ``offset`` rows are skipped (the emulator has no OFFSET/LIMIT).
``sortKey`` is the creation time in ns plus the UID: unique and immutable,
and ascending order means new data lands after the pages already read, so
offset paging never repeats or skips a result while data is being added.
The request charge of each search is summed and logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError
from pydicom.datadict import tag_for_keyword

from ...attributes import (
    INSTANCE_KEYS,
    LEVEL_ATTRIBUTES,
    NUMBER_ATTRIBUTES,
    ORDER_KEYS,
    PERSON_NAME_ATTRIBUTES,
    SERIES_KEYS,
    STUDY_KEYS,
    TIME_ATTRIBUTES,
)
from ...dicomjson import first_value, keyword_key, select, tag_key
from ...errors import DependencyUnavailable
from ...identifiers import InstanceKey, Level, SeriesKey, StudyKey
from ...matching import (
    any_attribute_values,
    extended_values,
    fold_number,
    fold_person_name,
    fold_text,
    fold_time,
    person_name_words,
)
from .. import ChangeFeed, ExtendedQueryTagStore
from ..model import (
    EXTENDED_TAGS_MAX_AGE_SECONDS,
    Change,
    ChangeAction,
    ExtendedQueryTag,
    ExtendedQueryTagError,
    ExtendedQueryTagStatus,
    IndexedInstance,
    Match,
    MatchKind,
    QueryPage,
    Record,
    SearchQuery,
    SeriesSnapshot,
    StudySnapshot,
)
from . import failure
from .cosmos import read_item_or_none

log = logging.getLogger(__name__)

_MODALITY = keyword_key("Modality")

T = TypeVar("T")

STUDIES_CONTAINER = "studies"
SERIES_CONTAINER = "series"
INSTANCES_CONTAINER = "instances"
PARTITION_KEY_PATH = "/pk"


#: Search keywords whose value lives at the top of a document rather than in ``q``.
_TOP_LEVEL_FIELDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "ModalitiesInStudy"}


def _path(keyword: str) -> str:
    """The document path of a search keyword's value (``/q/StudyDate``, ``/StudyInstanceUID``)."""
    return f"/{keyword}" if keyword in _TOP_LEVEL_FIELDS else f"/q/{keyword}"


def _policy(level: Level, *excluded: str) -> dict[str, Any]:
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": path} for path in (*excluded, '/"_etag"/?')],
        # ``orderby``: ORDER BY <key> ASC|DESC, sortKey ASC|DESC.  Cosmos serves DESC, DESC from the
        # ascending index read backwards; the local stand-in needs the descending one spelled out.
        "compositeIndexes": [
            [{"path": _path(keyword), "order": order}, {"path": "/sortKey", "order": order}]
            for keyword in ORDER_KEYS[level]
            for order in ("ascending", "descending")
        ],
    }


#: Indexing policy of each container (infra/modules/cosmos.bicep uses the same; a test checks it).
INDEXING_POLICIES: dict[str, dict[str, Any]] = {
    STUDIES_CONTAINER: _policy(Level.STUDY, "/attrs/*"),
    SERIES_CONTAINER: _policy(Level.SERIES, "/attrs/*"),
    # attrs are searched through q; metadata and the frame and bulk data tables are only read by id
    INSTANCES_CONTAINER: _policy(Level.INSTANCE, "/attrs/*", "/metadata/?", "/frames/*", "/bulkdata/*"),
}

#: Attempts of a read when the Cosmos SDK trips over its own shared state (see ``_call``).
_SDK_RACE_ATTEMPTS = 3
#: Studies per batch when a series/instance search has study-level conditions.
_STUDY_BATCH = 50
#: Attempts of a patch-or-create when creators race (each loser patches the winner's document).
_ATTEMPTS = 8

#: What instance queries return (never the inline metadata).
_INSTANCE_FIELDS = (
    "c.pk, c.partition, c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID, c.SOPClassUID, "
    "c.TransferSyntaxUID, c.size, c.storedAt, c.attrs, c.sortKey"
)


def study_pk(key: StudyKey) -> str:
    return f"{key.partition}|{key.study_instance_uid}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _sort_key(uid: str) -> str:
    return f"{time.time_ns():020d}|{uid}"


def _search_values(attrs: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    """Normalised values of ``keywords`` found in DICOM JSON ``attrs``.

    Times are ``HHMMSS.ffffff`` strings, IS values numbers; an ``orderby`` key the instance
    lacks is ``null`` (a defined value, so composite-index ORDER BY never leaves the document out).
    """
    from pydicom.datadict import tag_for_keyword

    # Every document carries the word lists (empty when unknown): the emulator
    # fails on EXISTS(... IN c.q.XWords) when the path is undefined.
    q: dict[str, Any] = {f"{keyword}Words": [] for keyword in sorted(PERSON_NAME_ATTRIBUTES)}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        value = first_value(attrs.get(tag_key(tag)))
        if keyword in _ORDER_KEYWORDS:
            q[keyword] = None
        if value is None:
            continue
        if keyword in TIME_ATTRIBUTES:
            q[keyword] = fold_time(str(value))
        elif keyword in NUMBER_ATTRIBUTES:
            q[keyword] = fold_number(value)
        elif keyword in PERSON_NAME_ATTRIBUTES:
            text = value.get("Alphabetic", "") if isinstance(value, dict) else str(value)
            q[keyword] = fold_person_name(text)
            q[keyword + "Words"] = person_name_words(text)
        else:
            q[keyword] = fold_text(str(value))
    return q


# Normalised into ``q`` (UIDs and ModalitiesInStudy are top-level document fields).
_STUDY_SEARCH_KEYWORDS = tuple(k for k in STUDY_KEYS if k not in _TOP_LEVEL_FIELDS)
_SERIES_SEARCH_KEYWORDS = tuple(k for k in SERIES_KEYS if k not in _TOP_LEVEL_FIELDS)
_INSTANCE_SEARCH_KEYWORDS = tuple(k for k in INSTANCE_KEYS if k not in _TOP_LEVEL_FIELDS)
_ORDER_KEYWORDS = frozenset(k for keys in ORDER_KEYS.values() for k in keys if k not in _TOP_LEVEL_FIELDS)


#: Tags of the core keys: searched through ``q`` (or top-level fields), so not repeated in ``x``.
_CORE_TAGS = frozenset(f"{int(tag_for_keyword(k) or 0):08X}" for k in (*STUDY_KEYS, *SERIES_KEYS, *INSTANCE_KEYS))
_TAG = re.compile(r"[0-9A-F]{8}")


def _dataset(instance: IndexedInstance) -> dict[str, Any]:
    """The instance's whole DICOM JSON when the index keeps it, else its indexed attributes."""
    try:
        dataset = json.loads(instance.metadata_json) if instance.metadata_json else instance.attrs
    except ValueError:
        dataset = instance.attrs
    return dataset if isinstance(dataset, dict) else {}


def _any_values(instance: IndexedInstance, dataset: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """The ``x`` map: normalised values of the instance's top-level simple-VR attributes by tag."""
    return any_attribute_values(dataset if dataset is not None else _dataset(instance), _CORE_TAGS)


def _modality(attrs: dict[str, Any]) -> str | None:
    value = first_value(attrs.get(_MODALITY))
    return str(value).upper() if value else None


def _status(exc: CosmosHttpResponseError) -> int:
    return int(exc.status_code or 0)


#: Statuses of a delete whose item is already gone (the emulator answers 500 instead of 404).
_GONE = (404, 500)


def _write(what: str, call: Callable[[], T], tolerated: tuple[int, ...] = ()) -> tuple[T | None, int]:
    """Run one Cosmos write: ``(result, 0)``, or ``(None, status)`` for a ``tolerated`` status.

    Any other failure is :class:`DependencyUnavailable` ("The index is unavailable ({what}).").
    """
    try:
        return call(), 0
    except CosmosHttpResponseError as exc:
        if _status(exc) in tolerated:
            return None, _status(exc)
        raise failure(f"The index is unavailable ({what}).", exc) from exc
    except AzureError as exc:
        raise failure(f"The index is unavailable ({what}).", exc) from exc


def _call(what: str, call: Callable[[], T], service: str = "index") -> T:
    """Run one Cosmos read (or idempotent write): an SDK failure is :class:`DependencyUnavailable`.

    ``service`` names what is unavailable in the message ("The index is unavailable (...)").
    """
    for attempt in range(_SDK_RACE_ATTEMPTS):
        try:
            return call()
        except AzureError as exc:
            log.warning("cosmos failed during %s: %s", what, exc)
            raise failure(f"The {service} is unavailable ({what}).", exc) from exc
        except RuntimeError as exc:
            # azure-cosmos 4.17 can iterate response headers that another thread is changing
            # ("OrderedDict mutated during iteration", seen under concurrent STOWs in the bench);
            # every call passed here is a read or an idempotent write, so it is repeated.
            if attempt + 1 == _SDK_RACE_ATTEMPTS:
                raise failure(f"The {service} client failed ({what}).", exc) from exc
            log.warning("cosmos client race during %s (repeated): %s", what, exc)
    raise AssertionError("unreachable")


class CosmosIndexStore:
    """The index on Cosmos DB (or the local stand-in)."""

    def __init__(
        self,
        client: CosmosClient,
        database: str,
        *,
        emulator: bool = False,
        changes: ChangeFeed | None = None,
        any_attribute: bool = True,
    ) -> None:
        self._client = client
        #: Keep every simple-VR attribute's values (``x``) for any-attribute search (``DICOM_SEARCH_ANY_ATTRIBUTE``).
        self.searches_any_attribute = any_attribute
        #: Where committed creates and deletes are logged (see :meth:`log_changes`).
        self._changes = changes
        self._database_name = database
        self._emulator = emulator
        db = client.get_database_client(database)
        self._studies: ContainerProxy = db.get_container_client(STUDIES_CONTAINER)
        self._series: ContainerProxy = db.get_container_client(SERIES_CONTAINER)
        self._instances: ContainerProxy = db.get_container_client(INSTANCES_CONTAINER)
        #: pk -> hash of the study attributes this process last wrote (see the module docstring)
        self._study_hashes: OrderedDict[str, str] = OrderedDict()
        #: Declared extended query tags, indexed into every new instance document (set by wiring).
        self.extended_tags: ExtendedQueryTagStore | None = None
        #: Per thread: the extended tag errors of the document :meth:`_instance_doc` built last.
        self._pending = threading.local()
        self._hash_lock = threading.Lock()

    # -- schema -----------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the database and the three containers if missing (idempotent)."""
        db = _call("create database", lambda: self._client.create_database_if_not_exists(self._database_name))
        made = {
            name: _call(
                "create container",
                lambda name=name: db.create_container_if_not_exists(  # type: ignore[misc]
                    name, partition_key=PartitionKey(PARTITION_KEY_PATH), indexing_policy=INDEXING_POLICIES[name]
                ),
            )
            for name in INDEXING_POLICIES
        }
        self._studies, self._series, self._instances = (
            made[STUDIES_CONTAINER],
            made[SERIES_CONTAINER],
            made[INSTANCES_CONTAINER],
        )

    # -- writes -------------------------------------------------------------

    def create_instance(self, instance: IndexedInstance) -> bool:
        """Create the instance document: the commit point of a store.

        Returns
        -------
        bool
            True when this call created it, False when it already existed.
            Only a caller that got True passes the instance to
            :meth:`update_aggregates`.
        """
        doc = self._instance_doc(instance)
        errors = self._pending.__dict__.pop("errors", None)  # set by _instance_doc (extended tags)
        _, status = _write("index instance", lambda: self._instances.create_item(doc), tolerated=(409,))
        if status == 0 and errors:
            self._record_extended_errors(instance.key, errors)
        return status == 0

    def _instance_doc(self, instance: IndexedInstance) -> dict[str, Any]:
        """The instance document of ``instance`` (see :meth:`create_instance`)."""
        key = instance.key
        doc = {
            "id": f"{key.series_instance_uid}|{key.sop_instance_uid}",
            "pk": study_pk(key.study),
            "partition": key.partition,
            "StudyInstanceUID": key.study_instance_uid,
            "SeriesInstanceUID": key.series_instance_uid,
            "SOPInstanceUID": key.sop_instance_uid,
            "SOPClassUID": instance.sop_class_uid,
            "TransferSyntaxUID": instance.transfer_syntax_uid,
            "size": instance.size,
            "attrs": instance.attrs,
            "q": _search_values(
                instance.attrs, _STUDY_SEARCH_KEYWORDS + _SERIES_SEARCH_KEYWORDS + _INSTANCE_SEARCH_KEYWORDS
            ),
            "sortKey": instance.sort_key or _sort_key(key.sop_instance_uid),
            "storedAt": instance.stored_at or _now(),
            "expiresAt": instance.expires_at,
            "originalVersion": instance.original_version,
            "frames": instance.frames,
            "bulkdata": instance.bulkdata,
        }
        self._add_searchable_values(doc, instance)
        if instance.metadata_json is not None and instance.large_metadata is None:
            doc["metadata"] = instance.metadata_json
        else:
            doc["metadataInBlob"] = True
        return doc

    def replace_instance(self, instance: IndexedInstance) -> bool:
        """Replace (or create) the instance document: a PUT of an instance that may exist.

        The document keeps when the instance was first stored (``createdAt``): change feed
        entries older than that belong to an earlier lifetime (deleted), entries between it and
        ``storedAt`` to a replaced version.  One read and one upsert.

        Returns
        -------
        bool
            True when there was no document before (the caller counts the instance in).
        """
        key = instance.key
        doc = self._instance_doc(instance)
        old = _call(
            "read instance",
            lambda: read_item_or_none(self._instances, doc["id"], doc["pk"], self._emulator),
        )
        if old is not None:
            doc["createdAt"] = old.get("createdAt") or old.get("storedAt")
            doc["sortKey"] = old.get("sortKey") or doc["sortKey"]
            doc["originalVersion"] = doc.get("originalVersion") or old.get("originalVersion")
        _write("replace instance", lambda: self._instances.upsert_item(doc))
        log.debug("instance %s %s", key.sop_instance_uid, "replaced" if old is not None else "created by PUT")
        return old is None

    def set_original_version(self, key: InstanceKey, version: str) -> None:
        """Record the kept original version of an instance in its document (a bulk update's first step)."""
        ops = [{"op": "set", "path": "/originalVersion", "value": version}]
        item = f"{key.series_instance_uid}|{key.sop_instance_uid}"
        _write(
            "original version",
            lambda: self._instances.patch_item(item, study_pk(key.study), patch_operations=ops),
        )

    def original_versions(self, study: StudyKey, series_instance_uid: str | None = None) -> dict[InstanceKey, str]:
        """Instances of the study (or series) with a kept original version: one single-partition query."""
        pk = study_pk(study)
        sql = "SELECT c.SeriesInstanceUID, c.SOPInstanceUID, c.originalVersion FROM c WHERE c.pk = @pk"
        sql += " AND IS_STRING(c.originalVersion)"
        params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
        if series_instance_uid is not None:
            sql += " AND c.SeriesInstanceUID = @series"
            params.append({"name": "@series", "value": series_instance_uid})
        rows = _call(
            "original versions",
            lambda: list(self._instances.query_items(sql, parameters=params, partition_key=pk)),
        )
        return {
            InstanceKey(
                study.partition, study.study_instance_uid, str(r["SeriesInstanceUID"]), str(r["SOPInstanceUID"])
            ): str(r["originalVersion"])
            for r in rows
        }

    def expired_studies(self, now: str, limit: int) -> list[StudyKey]:
        """Studies whose study document says they expire at or before ``now`` (one cross-partition query)."""
        rows = _call(
            "expired studies",
            lambda: list(
                self._studies.query_items(
                    f"SELECT TOP {int(limit)} c.partition, c.StudyInstanceUID, c.expiresAt FROM c "
                    "WHERE c.id = 'study' AND IS_STRING(c.expiresAt) AND c.expiresAt <= @now",
                    parameters=[{"name": "@now", "value": now}],
                    enable_cross_partition_query=True,
                )
            ),
        )
        rows.sort(key=lambda r: str(r["expiresAt"]))
        return [StudyKey(str(r["partition"]), str(r["StudyInstanceUID"])) for r in rows]

    def last_store_expiry(self, study: StudyKey) -> tuple[bool, str | None]:
        """``(stored, expiresAt)`` of the study's most recently stored instance: the last store decides."""
        pk = study_pk(study)
        rows = _call(
            "last store",
            lambda: list(
                self._instances.query_items(
                    "SELECT TOP 1 c.expiresAt FROM c WHERE c.pk = @pk ORDER BY c.storedAt DESC",
                    parameters=[{"name": "@pk", "value": pk}],
                    partition_key=pk,
                )
            ),
        )
        if not rows:
            return False, None
        value = rows[0].get("expiresAt")
        return True, str(value) if value else None

    def set_study_expiry(self, study: StudyKey, expires_at: str | None) -> None:
        """Set or clear the study document's expiry (a missing study is ignored)."""
        ops = [{"op": "set", "path": "/expiresAt", "value": expires_at}]
        _write(
            "study expiry",
            lambda: self._studies.patch_item("study", study_pk(study), patch_operations=ops),
            tolerated=(404,) if not self._emulator else (404, 500),
        )

    def reserve_changes(self, partition: str, count: int) -> int | None:
        return self._changes.reserve(partition, count) if self._changes is not None else None

    def log_changes(self, changes: Sequence[Change], reserved: int | None = None) -> None:
        """Log committed changes to the change feed; a failure is logged, not raised.

        The change is committed either way; the sync that every write schedules
        ahead logs it later (:func:`dicomserver.changefeed.repair_study`).
        """
        if self._changes is None or not changes:
            return
        try:
            self._changes.record(changes, reserved)
        except Exception as exc:  # noqa: BLE001 - committed: repaired by the study's sync
            log.error("change feed write failed changes=%d (the study's sync logs them later): %s", len(changes), exc)

    def update_aggregates(self, instances: Sequence[IndexedInstance], count: bool = True) -> None:
        """Count newly created instances into their series and studies: one patch per series and per study.

        ``instances`` are in store order; the last one of each series and study
        gives the level attributes (latest wins) and the study's expiry.  With
        ``count=False`` (replaced instances) only the attributes are refreshed.
        """
        by_series: dict[SeriesKey, list[IndexedInstance]] = {}
        for instance in instances:
            by_series.setdefault(instance.key.series, []).append(instance)
        new_series: dict[StudyKey, list[str]] = {}
        for series, members in by_series.items():
            if self._bump_series(series, len(members) if count else 0, members[-1].attrs):
                new_series.setdefault(series.study, []).append(_modality(members[-1].attrs) or "")
        latest: dict[StudyKey, IndexedInstance] = {}
        for instance in instances:
            latest[instance.key.study] = instance
        for study, instance in latest.items():
            created = new_series.get(study, [])
            attrs = select(instance.attrs, LEVEL_ATTRIBUTES[Level.STUDY])
            state = json.dumps([attrs, instance.expires_at], sort_keys=True)
            digest = hashlib.sha1(state.encode(), usedforsecurity=False).hexdigest()
            pk = study_pk(study)
            with self._hash_lock:
                unchanged = self._study_hashes.get(pk) == digest
            if created or not unchanged:
                self._bump_study(study, [m for m in dict.fromkeys(created) if m], attrs, instance.expires_at)
                with self._hash_lock:
                    self._study_hashes[pk] = digest
                    self._study_hashes.move_to_end(pk)
                    while len(self._study_hashes) > 10_000:
                        self._study_hashes.popitem(last=False)

    def add_instance(self, instance: IndexedInstance) -> bool:
        """Create the instance document and, if this call created it, count it in (see above)."""
        created = self.create_instance(instance)
        if created:
            self.update_aggregates([instance])
        return created

    def _bump_series(self, key: SeriesKey, count: int, instance_attrs: dict[str, Any]) -> bool:
        """Patch (or create) a series document; True when this call created it."""
        new = self._series_doc(key, count, instance_attrs)
        operations: list[dict[str, Any]] = [
            {"op": "incr", "path": "/NumberOfSeriesRelatedInstances", "value": count},
            *({"op": "set", "path": f"/{name}", "value": new[name]} for name in ("attrs", "q", "Modality")),
        ]
        return self._patch_or_create(self._series, key.series_instance_uid, new["pk"], operations, new, "series")

    @staticmethod
    def _series_doc(key: SeriesKey, count: int, instance_attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = select(instance_attrs, LEVEL_ATTRIBUTES[Level.SERIES])
        modality = _modality(attrs)
        return {
            "id": key.series_instance_uid,
            "pk": study_pk(key.study),
            "partition": key.partition,
            "StudyInstanceUID": key.study_instance_uid,
            "SeriesInstanceUID": key.series_instance_uid,
            "Modality": modality,
            "attrs": attrs,
            "q": _search_values(attrs, _SERIES_SEARCH_KEYWORDS),
            "NumberOfSeriesRelatedInstances": count,
            "sortKey": _sort_key(key.series_instance_uid),
        }

    @staticmethod
    def _study_doc(
        key: StudyKey, modalities: list[str], attrs: dict[str, Any], expires_at: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": "study",
            "pk": study_pk(key),
            "partition": key.partition,
            "StudyInstanceUID": key.study_instance_uid,
            "attrs": attrs,
            "q": _search_values(attrs, _STUDY_SEARCH_KEYWORDS),
            "ModalitiesInStudy": modalities,
            "sortKey": _sort_key(key.study_instance_uid),
            "createdAt": _now(),
            "expiresAt": expires_at,
        }

    def _bump_study(
        self, key: StudyKey, new_modalities: list[str], attrs: dict[str, Any], expires_at: str | None = None
    ) -> None:
        """Patch (or create) the study document: latest attributes and expiry, modalities of new series."""
        new = self._study_doc(key, new_modalities, attrs, expires_at)
        pk = new["pk"]
        operations: list[dict[str, Any]] = [
            {"op": "set", "path": f"/{name}", "value": new[name]} for name in ("attrs", "q", "expiresAt")
        ]
        # Patches take at most 10 operations; more new modalities in one request are rare (a second patch).
        room = 10 - len(operations)
        operations += [{"op": "add", "path": "/ModalitiesInStudy/-", "value": m} for m in new_modalities[:room]]
        created = self._patch_or_create(self._studies, "study", pk, operations, new, "study")
        if not created and new_modalities[room:]:
            extra = [{"op": "add", "path": "/ModalitiesInStudy/-", "value": m} for m in new_modalities[room:]]
            _call("study modalities", lambda: self._studies.patch_item("study", pk, patch_operations=extra[:10]))

    def _patch_or_create(
        self,
        container: ContainerProxy,
        item: str,
        pk: str,
        operations: list[dict[str, Any]],
        new: dict[str, Any],
        what: str,
    ) -> bool:
        for _ in range(_ATTEMPTS):
            patch = lambda: container.patch_item(item, pk, patch_operations=operations)  # noqa: E731
            if _write(f"{what} aggregate", patch, tolerated=(404,))[1] == 0:
                return False
            # 404: no document yet, create it; 409: created concurrently, patch that one
            if _write(f"{what} aggregate", lambda: container.create_item(new), tolerated=(409,))[1] == 0:
                return True
        raise DependencyUnavailable(f"The {what} aggregate of {pk} could not be written: too much contention.")

    def remove_instance(self, key: InstanceKey) -> bool:
        return bool(self.remove_instances([key]))

    def discard_instance(self, key: InstanceKey) -> bool:
        """Delete an instance document without counting it out (an undone store); False when there was none."""
        item = f"{key.series_instance_uid}|{key.sop_instance_uid}"
        delete = lambda: self._instances.delete_item(item, study_pk(key.study))  # noqa: E731
        return _write("unindex instance", delete, tolerated=_GONE)[1] == 0

    def remove_instances(self, keys: Sequence[InstanceKey]) -> list[InstanceKey]:
        """Delete instance documents and count them out of their series and studies.

        Returns the keys whose documents this call deleted (absent ones are skipped).
        """
        removed = [key for key in keys if self.discard_instance(key)]
        self.count_out(removed)
        self.log_changes([Change(key, ChangeAction.DELETE) for key in removed])
        return removed

    def count_out(self, keys: Sequence[InstanceKey]) -> None:
        """Take instances out of their series' counts (the inverse of :meth:`update_aggregates`).

        A series whose count reaches 0 is deleted, then its study's modalities
        are recomputed (and a study without series deleted).
        """
        by_series: dict[SeriesKey, int] = {}
        for key in keys:
            by_series[key.series] = by_series.get(key.series, 0) + 1
        emptied: dict[StudyKey, int] = {}
        for series, count in by_series.items():
            if self._drop_count(self._series, series.series_instance_uid, study_pk(series.study), count, "Series"):
                emptied[series.study] = emptied.get(series.study, 0) + 1
        for study in dict.fromkeys(key.study for key in keys):
            if emptied.get(study):
                self._refresh_study_modalities(study)

    def _refresh_study_modalities(self, study: StudyKey) -> None:
        """After series were deleted: the study's modalities from what is left, or no study at all."""
        pk = study_pk(study)
        rows = self._query(
            self._series, "SELECT c.Modality FROM c WHERE c.pk = @pk", [{"name": "@pk", "value": pk}], pk, "series"
        )
        if rows:
            modalities = sorted({row["Modality"] for row in rows if row.get("Modality")})
            operations = [{"op": "set", "path": "/ModalitiesInStudy", "value": modalities}]
            _write("study update", lambda: self._studies.patch_item("study", pk, patch_operations=operations), _GONE)
        else:
            _write("study update", lambda: self._studies.delete_item("study", pk), _GONE)
            with self._hash_lock:
                self._study_hashes.pop(pk, None)

    def _drop_count(self, container: ContainerProxy, item: str, pk: str, count: int, level: str) -> bool:
        """Patch a count down; delete the document when it reaches 0. True when it was deleted."""
        field = f"/NumberOf{level}RelatedInstances"
        operations = [{"op": "incr", "path": field, "value": -count}]
        patch = lambda: container.patch_item(item, pk, patch_operations=operations)  # noqa: E731
        doc, status = _write("aggregate update", patch, tolerated=(404,))
        if doc is None:
            return True  # 404: already gone
        if int(doc.get(field[1:]) or 0) > 0:
            return False
        etag = doc["_etag"]
        delete = lambda: container.delete_item(item, pk, etag=etag, match_condition=MatchConditions.IfNotModified)  # noqa: E731
        # 412: an instance was stored meanwhile, the document stays
        return _write("aggregate delete", delete, tolerated=(404, 412))[1] != 412

    def reconcile_study(self, study: StudyKey, quiet_seconds: float) -> bool:
        """Recompute a study's series and study documents from its instance documents, if it has been quiet.

        Repairs what a writer that died between its instance create and its
        aggregate patch left behind: series counts short, a series or study
        document missing, a modality missing.  Skipped (False) while any
        instance of the study is younger than ``quiet_seconds``, since a writer
        may still be between those two steps.  Each write is etag-conditional
        (or a create), so a concurrent store makes it give up rather than
        overwrite (the next sync tries again).  Returns True when something was
        corrected.
        """
        pk = study_pk(study)
        params = [{"name": "@pk", "value": pk}]
        rows = self._query(
            self._instances,
            "SELECT c.SeriesInstanceUID, c.storedAt, c.sortKey, c.attrs FROM c WHERE c.pk = @pk",
            params,
            pk,
            "reconcile",
        )
        newest = max((str(r.get("storedAt") or "") for r in rows), default="")
        if newest and datetime.fromisoformat(newest).timestamp() > time.time() - quiet_seconds:
            return False
        members: dict[str, list[dict[str, Any]]] = {}
        for row in sorted(rows, key=lambda r: str(r.get("sortKey") or "")):
            members.setdefault(row["SeriesInstanceUID"], []).append(row)
        series_docs = {
            d["SeriesInstanceUID"]: d
            for d in self._query(self._series, "SELECT * FROM c WHERE c.pk = @pk", params, pk, "reconcile")
        }
        changed = False
        for uid, doc in series_docs.items():
            want = len(members.get(uid, []))
            if int(doc.get("NumberOfSeriesRelatedInstances") or 0) != want:
                changed = True
                self._conditional_write(self._series, doc, {"NumberOfSeriesRelatedInstances": want})
        modalities: set[str] = {
            str(d["Modality"]) for u, d in series_docs.items() if members.get(u) and d.get("Modality")
        }
        for uid, found in members.items():
            if uid not in series_docs:
                changed = True
                self._create_missing(
                    self._series,
                    self._series_doc(
                        SeriesKey(study.partition, study.study_instance_uid, uid), len(found), found[-1]["attrs"]
                    ),
                )
                modalities |= {m for m in [_modality(found[-1]["attrs"])] if m}
        study_doc = _call("reconcile", lambda: read_item_or_none(self._studies, "study", pk, self._emulator))
        if rows and study_doc is None:
            changed = True
            latest = max(rows, key=lambda r: str(r.get("sortKey") or ""))
            doc = self._study_doc(study, sorted(modalities), select(latest["attrs"], LEVEL_ATTRIBUTES[Level.STUDY]))
            self._create_missing(self._studies, doc)
        elif study_doc is not None and not rows:
            changed = True
            self._conditional_write(self._studies, study_doc, None)
        elif study_doc is not None and sorted(set(study_doc.get("ModalitiesInStudy") or [])) != sorted(modalities):
            changed = True
            self._conditional_write(self._studies, study_doc, {"ModalitiesInStudy": sorted(modalities)})
        if changed:
            log.warning("reconciled the aggregates of study=%s", study.study_instance_uid)
        return changed

    def _create_missing(self, container: ContainerProxy, doc: dict[str, Any]) -> None:
        _write("reconcile", lambda: container.create_item(doc), tolerated=(409,))  # 409: a writer created it

    def _conditional_write(self, container: ContainerProxy, doc: dict[str, Any], values: dict[str, Any] | None) -> None:
        """Replace ``doc`` with ``values`` merged in (None or a count of 0: delete it) unless it changed since read."""
        etag = doc["_etag"]
        unchanged = MatchConditions.IfNotModified
        write: Callable[[], object]
        if values is None or values.get("NumberOfSeriesRelatedInstances") == 0:
            write = lambda: container.delete_item(doc["id"], doc["pk"], etag=etag, match_condition=unchanged)  # noqa: E731
        else:
            body = {k: v for k, v in doc.items() if not k.startswith("_")} | values
            write = lambda: container.replace_item(doc["id"], body, etag=etag, match_condition=unchanged)  # noqa: E731
        _write("reconcile", write, tolerated=(404, 412))

    # -- extended query tags -----------------------------------------------------

    def _add_searchable_values(self, doc: dict[str, Any], instance: IndexedInstance) -> None:
        """Set the document's ``x`` map: every simple-VR attribute (``DICOM_SEARCH_ANY_ATTRIBUTE``) and, in
        any case, the validated values of the declared extended query tags (Adding or Ready), whose DICOM
        JSON also goes into ``attrs`` (QIDO returns it).

        The declared tags come from the tag store's list cached for
        :data:`~dicomserver.stores.model.EXTENDED_TAGS_MAX_AGE_SECONDS` (so at most one read per
        process in that time, none in most requests).  Values that fail validation are not indexed;
        their errors are recorded once the document is created (:meth:`create_instance`).
        """
        self._pending.__dict__.pop("errors", None)
        tags = self._indexed_tags()
        if not self.searches_any_attribute and not tags:
            return
        dataset = _dataset(instance)
        x = _any_values(instance, dataset) if self.searches_any_attribute else {}
        if tags:
            found = extended_values(dataset, [(t.path, t.vr, t.private_creator) for t in tags])
            for path in found.cleared:
                x.pop(path, None)
            x.update(found.values)
            if found.elements:
                doc["attrs"] = {**doc["attrs"], **found.elements}
            if found.errors:
                by_path = {t.path: t for t in tags}
                self._pending.errors = [(by_path[p], m) for p, m in found.errors.items()]
        doc["x"] = x

    def _indexed_tags(self) -> list[ExtendedQueryTag]:
        if self.extended_tags is None:
            return []
        return [
            t
            for t in self.extended_tags.list_tags(max_age_seconds=EXTENDED_TAGS_MAX_AGE_SECONDS)
            if t.status is not ExtendedQueryTagStatus.DELETING
        ]

    def _record_extended_errors(self, key: InstanceKey, errors: list[tuple[ExtendedQueryTag, str]]) -> None:
        """Record the extended tag values a new instance could not index (Azure v2 stores it with a warning).

        A failure is logged, not raised: the instance is committed, and its value is simply not searchable.
        """
        store = self.extended_tags
        if store is None:
            return
        for tag, message in errors:
            try:
                if store.add_errors(tag, [ExtendedQueryTagError(key, message, _now())]):
                    store.save_tag(replace(tag, error_count=store.count_errors(tag)))
            except DependencyUnavailable as exc:
                log.warning("extended query tag error not recorded tag=%s: %s", tag.path, exc.message)

    def count_all_instances(self) -> int:
        """Instances of every data partition (one cross-partition COUNT)."""
        rows = self._query(self._instances, "SELECT VALUE COUNT(1) FROM c", [], None, "count instances")
        counts: list[Any] = rows  # SELECT VALUE: numbers, not documents
        return sum(int(n) for n in counts)

    def scan_instances(self, after: str, limit: int) -> list[IndexedInstance]:
        """Up to ``limit`` instances of every data partition with ``sortKey`` > ``after``, in that order.

        One cross-partition query; each instance comes with its attrs and inline metadata (the reindex reads
        the values of new extended tags from them).
        """
        sql = (
            "SELECT TOP @top c.partition, c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID, c.SOPClassUID, "
            "c.TransferSyntaxUID, c.size, c.attrs, c.metadata, c.metadataInBlob, c.sortKey, c.x "
            "FROM c WHERE c.sortKey > @after ORDER BY c.sortKey ASC"
        )
        params: list[dict[str, Any]] = [{"name": "@top", "value": limit}, {"name": "@after", "value": after}]
        rows = self._query(self._instances, sql, params, None, "scan instances")
        return [
            IndexedInstance(
                key=InstanceKey(
                    str(row.get("partition") or ""),
                    row["StudyInstanceUID"],
                    row["SeriesInstanceUID"],
                    row["SOPInstanceUID"],
                ),
                sop_class_uid=row.get("SOPClassUID", ""),
                transfer_syntax_uid=row.get("TransferSyntaxUID", ""),
                size=int(row.get("size") or 0),
                attrs=row.get("attrs") or {},
                metadata_json=row.get("metadata"),
                metadata_in_blob=bool(row.get("metadataInBlob")),
                sort_key=str(row["sortKey"]),
                # whether the document has an x map (its values are not needed)
                etag="x" if isinstance(row.get("x"), dict) else "",
            )
            for row in rows[:limit]
        ]

    def set_extended_values(
        self, instance: IndexedInstance, values: dict[str, list[Any]], elements: dict[str, Any], cleared: Sequence[str]
    ) -> None:
        """Patch an instance document: ``x``/``attrs`` entries of the extended tags set or removed.

        One patch (two when many tags are reindexed together: 10 operations each) per instance: the
        reindex of a tag costs a round trip per stored instance, which is why it runs as a background
        operation.  Only the tags' own entries are touched, so a concurrent writer of other entries is
        never overwritten; re-running it writes the same values.
        """
        key = instance.key
        has_x = instance.etag == "x"
        operations: list[dict[str, Any]] = []
        if has_x:
            operations += [{"op": "set", "path": f"/x/{tag}", "value": v} for tag, v in values.items()]
        elif values:
            operations.append({"op": "set", "path": "/x", "value": values})
        operations += [{"op": "set", "path": f"/attrs/{tag}", "value": e} for tag, e in elements.items()]
        removals = [tag for tag in cleared if tag not in values]
        if has_x:
            # "remove" of an absent path fails the whole patch, so only entries the document may hold
            operations += [{"op": "set", "path": f"/x/{tag}", "value": []} for tag in removals]
        if not operations:
            return
        item, pk = f"{key.series_instance_uid}|{key.sop_instance_uid}", study_pk(key.study)
        for start in range(0, len(operations), 10):
            chunk = operations[start : start + 10]
            patch = lambda chunk=chunk: self._instances.patch_item(item, pk, patch_operations=chunk)  # noqa: E731
            _write("reindex instance", patch, tolerated=(404,) if not self._emulator else (404, 500))

    def _extended_study_attrs(
        self, rows: list[dict[str, Any]], query: SearchQuery, charge: _Charge
    ) -> dict[str, dict[str, Any]]:
        """``{pk or series uid: {tag: element}}`` of the extended tags a study or series page returns.

        One query over the page's studies' instances (only when the query returns extended tags); the
        latest stored instance of each study or series gives the value, as for the core attributes.
        """
        if not query.extended_tags or not rows:
            return {}
        # the tags are 8 upper-case hex digits (checked by QIDO's parser): the only text spliced in
        fields = ", ".join(f'c.attrs["{tag}"] AS t{tag}' for tag in query.extended_tags if _TAG.fullmatch(tag))
        sql = f"SELECT c.pk, c.SeriesInstanceUID, c.sortKey, {fields} FROM c WHERE ARRAY_CONTAINS(@pks, c.pk)"
        pks = sorted({row["pk"] for row in rows})
        found = self._query(self._instances, sql, [{"name": "@pks", "value": pks}], None, "search")
        charge.add(self._instances)
        out: dict[str, dict[str, Any]] = {}
        for row in sorted(found, key=lambda r: str(r.get("sortKey") or "")):
            owner = row["pk"] if query.level is Level.STUDY else row["SeriesInstanceUID"]
            for tag in query.extended_tags:
                element = row.get(f"t{tag}")
                if element:
                    out.setdefault(owner, {})[tag] = element
        return out

    # -- reads -------------------------------------------------------------------

    def _query(
        self, container: ContainerProxy, sql: str, params: list[dict[str, Any]], pk: str | None, what: str
    ) -> list[dict[str, Any]]:
        if pk is not None:
            return _call(what, lambda: list(container.query_items(sql, parameters=params, partition_key=pk)))
        return _call(
            what, lambda: list(container.query_items(sql, parameters=params, enable_cross_partition_query=True))
        )

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]:
        """The instances of a study (or of one of its series), from the index."""
        return [d.key for d in self.list_instance_details(study, series_instance_uid)]

    def list_instance_details(self, study: StudyKey, series_instance_uid: str | None = None) -> list[IndexedInstance]:
        """The instances of a study or series with transfer syntax, size and store time (no attributes)."""
        pk = study_pk(study)
        sql = (
            "SELECT c.SeriesInstanceUID, c.SOPInstanceUID, c.SOPClassUID, c.TransferSyntaxUID, c.size, c.storedAt, "
            "c.metadataInBlob FROM c WHERE c.pk = @pk"
        )
        params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
        if series_instance_uid is not None:
            sql += " AND c.SeriesInstanceUID = @se"
            params.append({"name": "@se", "value": series_instance_uid})
        rows = self._query(self._instances, sql, params, pk, "list instances")
        details = [
            IndexedInstance(
                key=InstanceKey(
                    study.partition, study.study_instance_uid, row["SeriesInstanceUID"], row["SOPInstanceUID"]
                ),
                sop_class_uid=row.get("SOPClassUID", ""),
                transfer_syntax_uid=row.get("TransferSyntaxUID", ""),
                size=int(row.get("size") or 0),
                attrs={},
                stored_at=row.get("storedAt", ""),
                metadata_in_blob=bool(row.get("metadataInBlob")),
            )
            for row in rows
        ]
        return sorted(details, key=lambda d: (d.key.series_instance_uid, d.stored_at, d.key.sop_instance_uid))

    def metadata_etag(self, study: StudyKey, series_instance_uid: str | None = None) -> str | None:
        """A version of a study's or series' metadata; None when absent.  One read.

        Every store into or delete from a series patches its document, so the
        series document's etag (for a study: the etags of all its series
        documents, hashed) changes whenever the metadata does.
        """
        pk = study_pk(study)
        if series_instance_uid is not None:
            doc = _call(
                "metadata etag", lambda: read_item_or_none(self._series, series_instance_uid, pk, self._emulator)
            )
            return None if doc is None else str(doc["_etag"]).strip('"')
        rows = self._query(
            self._series, "SELECT c.id, c._etag FROM c WHERE c.pk = @pk", [{"name": "@pk", "value": pk}], pk, "etag"
        )
        if not rows:
            return None
        versions = ";".join(f"{r['id']}={r['_etag']}" for r in sorted(rows, key=lambda r: str(r["id"])))
        return hashlib.sha1(versions.encode(), usedforsecurity=False).hexdigest()

    def iter_metadata(
        self, study: StudyKey, series_instance_uid: str | None = None
    ) -> Iterator[tuple[InstanceKey, str | None]]:
        """The DICOM JSON metadata of each instance of a study or series, page by page.

        One single-partition query (pages of up to 1,000 instances or 4 MB). Yields
        ``(key, metadata)``; ``metadata`` is None when it lives in the metadata
        blob (too large for the document).
        """
        pk = study_pk(study)
        sql = "SELECT c.SeriesInstanceUID, c.SOPInstanceUID, c.metadata FROM c WHERE c.pk = @pk"
        params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
        if series_instance_uid is not None:
            sql += " AND c.SeriesInstanceUID = @se"
            params.append({"name": "@se", "value": series_instance_uid})
        pages = self._instances.query_items(sql, parameters=params, partition_key=pk, max_item_count=1000).by_page()
        while True:
            try:
                page = list(next(pages))
            except StopIteration:
                return
            except AzureError as exc:
                raise failure("The index is unavailable (metadata).", exc) from exc
            for row in page:
                key = InstanceKey(
                    study.partition, study.study_instance_uid, row["SeriesInstanceUID"], row["SOPInstanceUID"]
                )
                yield key, row.get("metadata")

    def study_snapshot(self, study: StudyKey) -> StudySnapshot | None:
        """Everything indexed about one study (three single-partition reads); None when it has no instance."""
        pk = study_pk(study)
        params = [{"name": "@pk", "value": pk}]
        doc = _call("study snapshot", lambda: read_item_or_none(self._studies, "study", pk, self._emulator))
        instances = self._query(
            self._instances,
            "SELECT c.SeriesInstanceUID, c.SOPInstanceUID, c.attrs, c.sortKey, c.storedAt FROM c WHERE c.pk = @pk",
            params,
            pk,
            "study snapshot",
        )
        if doc is None or not instances:
            return None
        series_docs = self._query(self._series, "SELECT * FROM c WHERE c.pk = @pk", params, pk, "study snapshot")
        instances.sort(key=lambda r: r.get("sortKey", ""))
        by_series: dict[str, list[dict[str, Any]]] = {}
        for row in instances:
            by_series.setdefault(row["SeriesInstanceUID"], []).append(row.get("attrs") or {})
        series = [
            SeriesSnapshot(
                attrs=row.get("attrs") or {},
                number_of_instances=len(by_series.get(row["SeriesInstanceUID"], [])),
                instances=by_series.get(row["SeriesInstanceUID"], []),
            )
            for row in sorted(series_docs, key=lambda r: r.get("sortKey", ""))
            if row["SeriesInstanceUID"] in by_series
        ]
        return StudySnapshot(
            key=study,
            attrs=doc.get("attrs") or {},
            modalities_in_study=tuple(sorted({s for s in doc.get("ModalitiesInStudy") or () if s})),
            number_of_series=len(series),
            number_of_instances=len(instances),
            series=series,
            stored_at={
                InstanceKey(
                    study.partition, study.study_instance_uid, r["SeriesInstanceUID"], r["SOPInstanceUID"]
                ): str(r.get("storedAt") or "")
                for r in instances
            },
        )

    def list_studies(self, partition: str, patient_id: str | None = None) -> Iterator[StudyKey]:
        """Every study (optionally of one PatientID), for resync tools."""
        sql = "SELECT c.StudyInstanceUID FROM c WHERE c.partition = @partition"
        params: list[dict[str, Any]] = [{"name": "@partition", "value": partition}]
        if patient_id is not None:
            sql += " AND c.q.PatientID = @pid"
            params.append({"name": "@pid", "value": fold_text(patient_id)})
        try:
            for row in self._studies.query_items(sql, parameters=params, enable_cross_partition_query=True):
                yield StudyKey(partition, row["StudyInstanceUID"])
        except AzureError as exc:
            raise failure("The index is unavailable (list studies).", exc) from exc

    def get_instance(self, key: InstanceKey) -> IndexedInstance | None:
        """One point read of the instance document (with its inline metadata)."""
        pk = study_pk(key.study)
        item = f"{key.series_instance_uid}|{key.sop_instance_uid}"
        doc = _call("read instance", lambda: read_item_or_none(self._instances, item, pk, self._emulator))
        if doc is None:
            return None
        return IndexedInstance(
            key=key,
            sop_class_uid=doc["SOPClassUID"],
            transfer_syntax_uid=doc["TransferSyntaxUID"],
            size=int(doc["size"]),
            attrs=doc["attrs"],
            stored_at=doc.get("storedAt", ""),
            frames=doc.get("frames"),
            bulkdata=doc.get("bulkdata"),
            metadata_json=doc.get("metadata"),
            metadata_in_blob=bool(doc.get("metadataInBlob")),
            etag=str(doc.get("_etag", "")).strip('"'),
            original_version=doc.get("originalVersion"),
            expires_at=doc.get("expiresAt"),
        )

    def _container_for(self, doc_type: str) -> ContainerProxy:
        return {"study": self._studies, "series": self._series, "instance": self._instances}[doc_type]

    # -- queries --------------------------------------------------------------

    def search(self, query: SearchQuery) -> QueryPage:
        """Run a QIDO search; see the module docstring for how levels combine."""
        start = time.perf_counter()
        charge = _Charge()
        query = self._resolve_attribute_matches(query, charge)
        top = query.offset + query.limit
        if query.count_only:
            total = self._count_matches(query, charge)
            log.info(
                "qido count level=%s count=%d request_charge=%.2f elapsed_ms=%.1f",
                query.level.value,
                total,
                charge.total,
                (time.perf_counter() - start) * 1000,
            )
            return QueryPage(request_charge=charge.total, count=total)
        if query.level is Level.STUDY:
            rows = self._select("study", query.study_matches, query, top, charge)
            page = rows[query.offset : top]
            self._add_study_counts(page, charge)
            extended = self._extended_study_attrs(page, query, charge)
            records = [_with_attrs(_study_record(row), extended.get(row["pk"])) for row in page]
        else:
            rows = self._level_rows(query, top, charge)
            page = rows[query.offset : top]
            studies = self._studies_by_pk({row["pk"] for row in page}, charge)
            records = [_lower_record(row, studies.get(row["pk"])) for row in page]
            if query.level is Level.SERIES:
                extended = self._extended_study_attrs(page, query, charge)
                owners = [row["SeriesInstanceUID"] for row in page]
                records = [_with_attrs(r, extended.get(o)) for r, o in zip(records, owners, strict=True)]
        log.info(
            "qido level=%s matches=%d rows=%d request_charge=%.2f elapsed_ms=%.1f",
            query.level.value,
            len(query.study_matches) + len(query.series_matches) + len(query.instance_matches),
            len(rows),
            charge.total,
            (time.perf_counter() - start) * 1000,
        )
        return QueryPage(items=records, request_charge=charge.total)

    def _resolve_attribute_matches(self, query: SearchQuery, charge: _Charge) -> SearchQuery:
        """The query with its any-attribute matches made ordinary ones.

        At the instance level they test the instance documents; at the study and series levels a
        study or series matches when at least one of its instances does: the matching instances'
        UIDs become a ``StudyInstanceUID``/``SeriesInstanceUID`` list condition.
        """
        if not query.attribute_matches:
            return query
        if query.level is Level.INSTANCE:
            return replace(
                query, instance_matches=query.instance_matches + query.attribute_matches, attribute_matches=()
            )
        where, params = self._where("instance", query.attribute_matches, query)
        sql = f"SELECT c.StudyInstanceUID, c.SeriesInstanceUID FROM c WHERE {where}"
        pk = params[1]["value"] if query.study_instance_uid is not None else None
        rows = self._query(self._instances, sql, params, pk, "search")
        charge.add(self._instances)
        if query.level is Level.STUDY:
            uids = tuple(sorted({row["StudyInstanceUID"] for row in rows}))
            owner = Match("StudyInstanceUID", MatchKind.ANY_OF, uids)
            return replace(query, study_matches=query.study_matches + (owner,), attribute_matches=())
        uids = tuple(sorted({row["SeriesInstanceUID"] for row in rows}))
        owner = Match("SeriesInstanceUID", MatchKind.ANY_OF, uids)
        return replace(query, series_matches=query.series_matches + (owner,), attribute_matches=())

    def _level_rows(self, query: SearchQuery, top: int, charge: _Charge) -> list[dict[str, Any]]:
        """Series or instance documents matching the query, in result order."""
        doc_type = "series" if query.level is Level.SERIES else "instance"
        own = query.series_matches + (query.instance_matches if doc_type == "instance" else ())
        if query.study_instance_uid is not None or not query.study_matches:
            return self._select(doc_type, own, query, top, charge)
        # Study-level conditions are evaluated on the study documents (latest wins, as in
        # Azure), then the lower level is searched within those studies, batch by batch,
        # in study order, until the page is full.
        rows: list[dict[str, Any]] = []
        if query.order_by:
            # Results sorted by an attribute: the first ``top`` of each batch of studies, merged
            # (every matching study is visited).
            for batch in self._matching_study_pks(query, charge):
                rows.extend(self._select(doc_type, own, query, top, charge, pks=batch))
                rows = _sorted_rows(rows, query)[:top]
            return rows
        for batch in self._matching_study_pks(query, charge):
            rows.extend(self._select(doc_type, own, query, top - len(rows), charge, pks=batch))
            if len(rows) >= top:
                break
        return rows

    def _count_matches(self, query: SearchQuery, charge: _Charge) -> int:
        """How many documents of the query's level match it."""
        query = self._resolve_attribute_matches(query, charge)
        if query.level is Level.STUDY:
            return self._count("study", query.study_matches, query, charge)
        doc_type = "series" if query.level is Level.SERIES else "instance"
        own = query.series_matches + (query.instance_matches if doc_type == "instance" else ())
        if query.study_instance_uid is not None or not query.study_matches:
            return self._count(doc_type, own, query, charge)
        return sum(
            self._count(doc_type, own, query, charge, pks=batch) for batch in self._matching_study_pks(query, charge)
        )

    def _count(
        self,
        doc_type: str,
        matches: tuple[Match, ...],
        query: SearchQuery,
        charge: _Charge,
        pks: list[str] | None = None,
    ) -> int:
        """``SELECT VALUE COUNT(1)`` of the documents of one type matching ``matches``."""
        where, params = self._where(doc_type, matches, query, pks)
        sql = f"SELECT VALUE COUNT(1) FROM c WHERE {where}"
        pk = params[1]["value"] if query.study_instance_uid is not None else None
        container = self._container_for(doc_type)

        def run() -> int:
            if pk is not None:
                iterator = container.query_items(sql, parameters=params, partition_key=pk)
            else:
                iterator = container.query_items(sql, parameters=params, enable_cross_partition_query=True)
            total = 0
            for page in iterator.by_page():
                charge.add(container)
                counts: list[Any] = list(page)  # SELECT VALUE: numbers, not documents
                total += sum(int(value) for value in counts)
            return total

        return _call("count", run)

    def _matching_study_pks(self, query: SearchQuery, charge: _Charge) -> Iterator[list[str]]:
        where, params = self._where("study", query.study_matches, query)
        sql = f"SELECT c.pk FROM c WHERE {where} ORDER BY c.sortKey ASC"
        pages = self._studies.query_items(
            sql, parameters=params, enable_cross_partition_query=True, max_item_count=_STUDY_BATCH
        ).by_page()
        try:
            for page in pages:
                charge.add(self._studies)
                batch = [row["pk"] for row in page]
                if batch:
                    yield batch
        except AzureError as exc:
            raise failure("The index is unavailable (search).", exc) from exc

    def _where(
        self, doc_type: str, matches: tuple[Match, ...], query: SearchQuery, pks: list[str] | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        params: list[dict[str, Any]] = [{"name": "@partition", "value": query.partition}]
        where = ["c.partition = @partition"]
        if query.study_instance_uid is not None:
            params.append({"name": "@pk", "value": study_pk(StudyKey(query.partition, query.study_instance_uid))})
            where.append("c.pk = @pk")
        if query.series_instance_uid is not None and doc_type != "study":
            params.append({"name": "@se", "value": query.series_instance_uid})
            where.append("c.SeriesInstanceUID = @se")
        if pks is not None:
            params.append({"name": "@pks", "value": pks})
            where.append("ARRAY_CONTAINS(@pks, c.pk)")
        where.extend(_condition(match, params) for match in matches)
        return " AND ".join(where), params

    def _select(
        self,
        doc_type: str,
        matches: tuple[Match, ...],
        query: SearchQuery,
        top: int,
        charge: _Charge,
        pks: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``SELECT TOP top`` documents of one type, oldest first (stable offset paging)."""
        where, params = self._where(doc_type, matches, query, pks)
        params.append({"name": "@top", "value": max(top, 1)})
        fields = _INSTANCE_FIELDS + ", c.q" if doc_type == "instance" else "*"
        sql = f"SELECT TOP @top {fields} FROM c WHERE {where} {_order_by(query)}"
        pk = params[1]["value"] if query.study_instance_uid is not None else None
        container = self._container_for(doc_type)

        def run() -> list[dict[str, Any]]:
            if pk is not None:
                iterator = container.query_items(sql, parameters=params, partition_key=pk)
            else:
                iterator = container.query_items(sql, parameters=params, enable_cross_partition_query=True)
            rows: list[dict[str, Any]] = []
            for page in iterator.by_page():
                charge.add(container)
                rows.extend(page)
                if len(rows) >= top:
                    break
            return rows[:top]

        return _call("search", run)

    def _studies_by_pk(self, pks: set[str], charge: _Charge) -> dict[str, dict[str, Any]]:
        """The study documents of ``pks`` (for the study-level attributes of lower-level results)."""
        if not pks:
            return {}
        sql = "SELECT * FROM c WHERE ARRAY_CONTAINS(@pks, c.pk)"
        rows = self._query(self._studies, sql, [{"name": "@pks", "value": sorted(pks)}], None, "search")
        charge.add(self._studies)
        self._add_study_counts(rows, charge)
        return {row["pk"]: row for row in rows}

    def _add_study_counts(self, studies: list[dict[str, Any]], charge: _Charge) -> None:
        """Set each study row's NumberOfStudyRelatedSeries/Instances from its series documents (one query)."""
        if not studies:
            return
        sql = "SELECT c.pk, c.NumberOfSeriesRelatedInstances FROM c WHERE ARRAY_CONTAINS(@pks, c.pk)"
        pks = sorted({row["pk"] for row in studies})
        series = self._query(self._series, sql, [{"name": "@pks", "value": pks}], None, "search")
        charge.add(self._series)
        counts: dict[str, list[int]] = {}
        for row in series:
            n = int(row.get("NumberOfSeriesRelatedInstances") or 0)
            if n > 0:
                counts.setdefault(row["pk"], []).append(n)
        for row in studies:
            found = counts.get(row["pk"], [])
            row["NumberOfStudyRelatedSeries"] = len(found)
            row["NumberOfStudyRelatedInstances"] = sum(found)

    # -- helpers ----------------------------------------------------------------


class _Charge:
    """Request units of one search (Cosmos reports them per response)."""

    def __init__(self) -> None:
        self.total = 0.0

    def add(self, container: ContainerProxy) -> None:
        headers: Mapping[str, Any] = container.client_connection.last_response_headers or {}
        self.total += float(headers.get("x-ms-request-charge", 0) or 0)


def _study_record(row: dict[str, Any]) -> Record:
    return Record(
        attrs=row.get("attrs") or {},
        # The list may hold a modality twice (appended by concurrent new series); it is a set.
        modalities_in_study=tuple(sorted({m for m in row.get("ModalitiesInStudy") or () if m})),
        number_of_study_series=int(row.get("NumberOfStudyRelatedSeries") or 0),
        number_of_study_instances=int(row.get("NumberOfStudyRelatedInstances") or 0),
    )


def _lower_record(row: dict[str, Any], study: dict[str, Any] | None) -> Record:
    """A series or instance result, with the study's attributes and computed values."""
    study_record = _study_record(study) if study else Record(attrs={})
    return Record(
        attrs={**study_record.attrs, **(row.get("attrs") or {})},
        modalities_in_study=study_record.modalities_in_study,
        number_of_study_series=study_record.number_of_study_series,
        number_of_study_instances=study_record.number_of_study_instances,
        number_of_series_instances=int(row.get("NumberOfSeriesRelatedInstances") or 0),
    )


def _with_attrs(record: Record, extra: dict[str, Any] | None) -> Record:
    """``record`` with extra DICOM JSON attributes (extended query tags); the record's own win."""
    return replace(record, attrs={**extra, **record.attrs}) if extra else record


def _field(keyword: str) -> str:
    return f"c.{keyword}" if keyword in _TOP_LEVEL_FIELDS else f"c.q.{keyword}"


def _order_by(query: SearchQuery) -> str:
    """The ORDER BY clause: arrival order, or ``orderby``'s key with arrival order breaking ties.

    Both fields go the same direction, so one composite index per key (read backwards when
    descending) serves it (:data:`INDEXING_POLICIES`).
    """
    if not query.order_by:
        return "ORDER BY c.sortKey ASC"
    keyword, descending = query.order_by[0]
    direction = "DESC" if descending else "ASC"
    return f"ORDER BY {_field(keyword)} {direction}, c.sortKey {direction}"


def _order_value(row: dict[str, Any], keyword: str) -> tuple[int, float, str]:
    """A row's ``orderby`` value ranked as Cosmos ranks types (undefined < null < numbers < strings)."""
    holder = row if keyword in _TOP_LEVEL_FIELDS else row.get("q") or {}
    if keyword not in holder:
        return (0, 0.0, "")
    value = holder[keyword]
    if value is None:
        return (1, 0.0, "")
    if isinstance(value, bool):
        return (2, float(value), "")
    if isinstance(value, int | float):
        return (3, float(value), "")
    return (4, 0.0, str(value))


def _sorted_rows(rows: list[dict[str, Any]], query: SearchQuery) -> list[dict[str, Any]]:
    """Rows in the query's ``orderby`` order (as Cosmos sorts them), for merging batches."""
    keyword, descending = query.order_by[0]
    return sorted(rows, key=lambda r: (_order_value(r, keyword), str(r.get("sortKey") or "")), reverse=descending)


def _condition(match: Match, params: list[dict[str, Any]]) -> str:
    """Translate one match into a WHERE fragment, appending its parameters."""

    def param(value: Any) -> str:
        name = f"@p{len(params)}"
        params.append({"name": name, "value": value})
        return name

    if _TAG.fullmatch(match.keyword):
        # An any-attribute match: some value of the instance's ``x`` list satisfies it.  The tag
        # (8 upper-case hex digits, checked just above) is the only text spliced in.
        if match.kind is MatchKind.FUZZY_PERSON_NAME:
            # x keeps a name as its folded words joined by spaces: each query word starts one of them
            words = (param("(^| )" + re.escape(word)) for word in match.values)
            inner = " AND ".join(f"RegexMatch(v, {w})" for w in words)
        else:
            inner = _compare(match, "v", param)
        return f'EXISTS(SELECT VALUE v FROM v IN c.x["{match.keyword}"] WHERE {inner})'
    return _compare(match, _field(match.keyword), param)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _compare(match: Match, path: str, param: Callable[[Any], str]) -> str:
    """The WHERE fragment comparing ``path`` with one match's values."""
    if match.kind is MatchKind.EXACT or match.kind is MatchKind.PERSON_NAME:
        return f"{path} = {param(match.values[0])}"
    if match.kind is MatchKind.NUMBER:
        return f"{path} = {param(_number(match.values[0]))}"
    if match.kind is MatchKind.ANY_OF:
        return f"ARRAY_CONTAINS({param(list(match.values))}, {path})"
    if match.kind is MatchKind.CONTAINS:
        return f"ARRAY_CONTAINS({path}, {param(match.values[0])})"
    if match.kind is MatchKind.RANGE:
        low, high = match.values
        parts = []
        if low:
            parts.append(f"{path} >= {param(low)}")
        if high:
            parts.append(f"{path} <= {param(high)}")
        return "(" + " AND ".join(parts) + ")"
    if match.kind is MatchKind.WILDCARD:
        return f"RegexMatch({path}, {param(match.values[0])})"
    if match.kind is MatchKind.FUZZY_PERSON_NAME:
        words = f"c.q.{match.keyword}Words"
        return " AND ".join(
            f"EXISTS(SELECT VALUE w FROM w IN {words} WHERE STARTSWITH(w, {param(word)}))" for word in match.values
        )
    raise ValueError(f"unsupported match kind {match.kind!r}")
