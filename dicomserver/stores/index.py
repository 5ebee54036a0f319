"""Cosmos DB (NoSQL) index: the only module that writes Cosmos SQL.

Design
------
One container, ``index``, partition key ``/pk`` where ``pk`` is
``"{partition}|{StudyInstanceUID}"``: everything about one study lives in one
logical partition, so per-study work (aggregates, delete) is single-partition
and study-level QIDO is one cross-partition query over small documents.

Documents (``type`` tells them apart):

``study`` (id ``"study"``)
    ``attrs``: DICOM JSON of the study-level attributes of the latest stored
    instance ("latest wins", as in Azure); ``q``: normalised search values
    (see :mod:`dicomserver.matching`); the aggregates ``ModalitiesInStudy``,
    ``NumberOfStudyRelatedSeries``, ``NumberOfStudyRelatedInstances``;
    ``sortKey`` (creation time in ns + UID: unique, immutable).
``series`` (id ``"series|{SeriesInstanceUID}"``)
    series-level ``attrs``, ``Modality``, ``NumberOfSeriesRelatedInstances``.
``instance`` (id ``"instance|{SeriesInstanceUID}|{SOPInstanceUID}"``)
    every indexed attribute of all levels in ``attrs``, series-level search
    values in ``q``, SOPClassUID, TransferSyntaxUID, size and ``sortKey``.

The indexing policy indexes everything except ``attrs`` (returned, never
filtered on), and has one composite index for the ORDER BY.

Aggregates are *recomputed* from the documents below them (COUNT over the
instance documents, a read of the series documents) and written with an
etag-conditional replace, retried on 412.  Each writer recounts after its own
insert, and a write only succeeds when no other write happened since the
writer's read, so the last successful write always reflects every insert that
preceded it: counts stay exact under parallel stores, in any order.

Queries
-------
Every value is a query parameter (``@p0``...), never spliced into SQL text.
Matching uses only functions both Cosmos DB and the emulator support: ``=``
on folded values, ``>=``/``<=`` on ``YYYYMMDD`` strings for date ranges,
``ARRAY_CONTAINS`` for UID lists and ModalitiesInStudy, ``EXISTS(SELECT
VALUE w FROM w IN c.q.PatientNameWords WHERE STARTSWITH(w, @p))`` for fuzzy
person names, ``RegexMatch`` for PS3.18 ``*``/``?`` wildcards.

* ``/studies``: study documents, cross-partition.
* ``/series`` and ``/instances`` without study-level conditions: series or
  instance documents directly (single-partition when the path names the
  study: ``c.pk = @pk``).
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
The composite index ``(type ASC, sortKey ASC)`` serves the ORDER BY.  The
request charge of each search is summed and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from ..attributes import LEVEL_ATTRIBUTES, PERSON_NAME_ATTRIBUTES, SERIES_KEYS, STUDY_KEYS
from ..dicomjson import first_value, select, tag_key
from ..errors import DependencyUnavailable
from ..identifiers import InstanceKey, Level, SeriesKey, StudyKey
from ..matching import fold_person_name, fold_text, person_name_words
from .cosmos import read_item_or_none
from .model import (
    IndexedInstance,
    Match,
    MatchKind,
    QueryPage,
    Record,
    SearchQuery,
    SeriesSnapshot,
    StudySnapshot,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_CONTAINER = "index"
PARTITION_KEY_PATH = "/pk"

#: Indexing policy of the ``index`` container (the Bicep template uses the same).
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/*"}],
    # attrs are searched through q; frame and bulk data tables are only ever read by id
    "excludedPaths": [{"path": "/attrs/*"}, {"path": "/frames/*"}, {"path": "/bulkdata/*"}, {"path": '/"_etag"/?'}],
    "compositeIndexes": [
        [{"path": "/type", "order": "ascending"}, {"path": "/sortKey", "order": "ascending"}],
    ],
}

_MAX_RETRIES = 20
#: Studies per batch when a series/instance search has study-level conditions.
_STUDY_BATCH = 50

#: Search keywords whose value lives at the top of a document rather than in ``q``.
_TOP_LEVEL_FIELDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "ModalitiesInStudy"}


def study_pk(key: StudyKey) -> str:
    return f"{key.partition}|{key.study_instance_uid}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _search_values(attrs: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    """Normalised values of ``keywords`` found in DICOM JSON ``attrs``."""
    from pydicom.datadict import tag_for_keyword

    # Every document carries the word lists (empty when unknown): the emulator
    # fails on EXISTS(... IN c.q.XWords) when the path is undefined.
    q: dict[str, Any] = {f"{keyword}Words": [] for keyword in sorted(PERSON_NAME_ATTRIBUTES)}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        value = first_value(attrs.get(tag_key(tag)))
        if value is None:
            continue
        if keyword in PERSON_NAME_ATTRIBUTES:
            text = value.get("Alphabetic", "") if isinstance(value, dict) else str(value)
            q[keyword] = fold_person_name(text)
            q[keyword + "Words"] = person_name_words(text)
        else:
            q[keyword] = fold_text(str(value))
    return q


# Normalised into ``q`` (UIDs and ModalitiesInStudy are top-level document fields).
_STUDY_SEARCH_KEYWORDS = tuple(k for k in STUDY_KEYS if k not in ("StudyInstanceUID", "ModalitiesInStudy"))
_SERIES_SEARCH_KEYWORDS = tuple(k for k in SERIES_KEYS if k != "SeriesInstanceUID")


class CosmosIndexStore:
    """The index on Cosmos DB (or the local stand-in)."""

    def __init__(self, client: CosmosClient, database: str, *, emulator: bool = False) -> None:
        self._client = client
        self._database_name = database
        self._emulator = emulator
        self._container: ContainerProxy = client.get_database_client(database).get_container_client(INDEX_CONTAINER)

    # -- schema -----------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the database and container if missing (idempotent)."""
        db = self._call("create database", lambda: self._client.create_database_if_not_exists(self._database_name))
        self._container = self._call(
            "create container",
            lambda: db.create_container_if_not_exists(
                INDEX_CONTAINER, partition_key=PartitionKey(PARTITION_KEY_PATH), indexing_policy=INDEXING_POLICY
            ),
        )

    # -- writes -------------------------------------------------------------

    def add_instance(self, instance: IndexedInstance) -> None:
        key = instance.key
        pk = study_pk(key.study)
        doc = {
            "id": f"instance|{key.series_instance_uid}|{key.sop_instance_uid}",
            "pk": pk,
            "type": "instance",
            "partition": key.partition,
            "StudyInstanceUID": key.study_instance_uid,
            "SeriesInstanceUID": key.series_instance_uid,
            "SOPInstanceUID": key.sop_instance_uid,
            "SOPClassUID": instance.sop_class_uid,
            "TransferSyntaxUID": instance.transfer_syntax_uid,
            "size": instance.size,
            "attrs": instance.attrs,
            "q": _search_values(instance.attrs, _STUDY_SEARCH_KEYWORDS + _SERIES_SEARCH_KEYWORDS),
            "sortKey": f"{time.time_ns():020d}|{key.sop_instance_uid}",
            "storedAt": instance.stored_at or _now(),
            "frames": instance.frames,
            "bulkdata": instance.bulkdata,
        }
        self._call("index instance", lambda: self._container.upsert_item(doc))
        self._refresh_series(key.series, select(instance.attrs, LEVEL_ATTRIBUTES[Level.SERIES]))
        self._refresh_study(key.study, select(instance.attrs, LEVEL_ATTRIBUTES[Level.STUDY]))

    def remove_instance(self, key: InstanceKey) -> None:
        self.remove_instances([key])

    def remove_instances(self, keys: Sequence[InstanceKey]) -> None:
        """Unindex instances, then refresh each affected series and study once."""
        for key in keys:
            pk = study_pk(key.study)
            item = f"instance|{key.series_instance_uid}|{key.sop_instance_uid}"
            try:
                self._container.delete_item(item, partition_key=pk)
            except CosmosHttpResponseError as exc:
                if exc.status_code not in (404, 500):  # 500: the emulator's "missing"
                    raise DependencyUnavailable("The index is unavailable (unindex instance).") from exc
            except AzureError as exc:
                raise DependencyUnavailable("The index is unavailable (unindex instance).") from exc
        for series in dict.fromkeys(key.series for key in keys):
            self._refresh_series(series, None)
        for study in dict.fromkeys(key.study for key in keys):
            self._refresh_study(study, None)

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]:
        """The instances of a study (or of one of its series), from the index."""
        pk = study_pk(study)
        sql = "SELECT c.SeriesInstanceUID, c.SOPInstanceUID FROM c WHERE c.pk = @pk AND c.type = 'instance'"
        params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
        if series_instance_uid is not None:
            sql += " AND c.SeriesInstanceUID = @se"
            params.append({"name": "@se", "value": series_instance_uid})
        rows = self._call(
            "list instances", lambda: list(self._container.query_items(sql, parameters=params, partition_key=pk))
        )
        return [
            InstanceKey(study.partition, study.study_instance_uid, row["SeriesInstanceUID"], row["SOPInstanceUID"])
            for row in rows
        ]

    def list_instance_details(self, study: StudyKey, series_instance_uid: str | None = None) -> list[IndexedInstance]:
        """The instances of a study or series with transfer syntax, size and store time (no attributes)."""
        pk = study_pk(study)
        sql = (
            "SELECT c.SeriesInstanceUID, c.SOPInstanceUID, c.SOPClassUID, c.TransferSyntaxUID, c.size, c.storedAt "
            "FROM c WHERE c.pk = @pk AND c.type = 'instance'"
        )
        params: list[dict[str, Any]] = [{"name": "@pk", "value": pk}]
        if series_instance_uid is not None:
            sql += " AND c.SeriesInstanceUID = @se"
            params.append({"name": "@se", "value": series_instance_uid})
        rows: list[dict[str, Any]] = self._call(
            "list instances", lambda: list(self._container.query_items(sql, parameters=params, partition_key=pk))
        )
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
            )
            for row in rows
        ]
        return sorted(details, key=lambda d: (d.key.series_instance_uid, d.stored_at, d.key.sop_instance_uid))

    def study_snapshot(self, study: StudyKey) -> StudySnapshot | None:
        """Every document of a study (one single-partition query); None when it has no instance."""
        pk = study_pk(study)
        rows: list[dict[str, Any]] = self._call(
            "study snapshot",
            lambda: list(
                self._container.query_items(
                    "SELECT c.type, c.SeriesInstanceUID, c.attrs, c.ModalitiesInStudy, c.NumberOfStudyRelatedSeries, "
                    "c.NumberOfStudyRelatedInstances, c.NumberOfSeriesRelatedInstances, c.sortKey "
                    "FROM c WHERE c.pk = @pk",
                    parameters=[{"name": "@pk", "value": pk}],
                    partition_key=pk,
                )
            ),
        )
        studies = [r for r in rows if r.get("type") == "study"]
        instances = sorted((r for r in rows if r.get("type") == "instance"), key=lambda r: r.get("sortKey", ""))
        if not studies or not instances:
            return None
        by_series: dict[str, list[dict[str, Any]]] = {}
        for row in instances:
            by_series.setdefault(row["SeriesInstanceUID"], []).append(row.get("attrs") or {})
        series = [
            SeriesSnapshot(
                attrs=row.get("attrs") or {},
                number_of_instances=int(row.get("NumberOfSeriesRelatedInstances") or 0),
                instances=by_series.get(row["SeriesInstanceUID"], []),
            )
            for row in sorted((r for r in rows if r.get("type") == "series"), key=lambda r: r.get("sortKey", ""))
        ]
        doc = studies[0]
        return StudySnapshot(
            key=study,
            attrs=doc.get("attrs") or {},
            modalities_in_study=tuple(doc.get("ModalitiesInStudy") or ()),
            number_of_series=int(doc.get("NumberOfStudyRelatedSeries") or 0),
            number_of_instances=int(doc.get("NumberOfStudyRelatedInstances") or 0),
            series=series,
        )

    def list_studies(self, partition: str, patient_id: str | None = None) -> Iterator[StudyKey]:
        """Every study (optionally of one PatientID), for resync tools."""
        sql = "SELECT c.StudyInstanceUID FROM c WHERE c.type = 'study' AND c.partition = @partition"
        params: list[dict[str, Any]] = [{"name": "@partition", "value": partition}]
        if patient_id is not None:
            sql += " AND c.q.PatientID = @pid"
            params.append({"name": "@pid", "value": fold_text(patient_id)})
        try:
            for row in self._container.query_items(sql, parameters=params, enable_cross_partition_query=True):
                yield StudyKey(partition, row["StudyInstanceUID"])
        except AzureError as exc:
            raise DependencyUnavailable("The index is unavailable (list studies).") from exc

    def get_instance(self, key: InstanceKey) -> IndexedInstance | None:
        pk = study_pk(key.study)
        item = f"instance|{key.series_instance_uid}|{key.sop_instance_uid}"
        doc = self._call("read instance", lambda: read_item_or_none(self._container, item, pk, self._emulator))
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
        )

    def _count(self, pk: str, extra_where: str = "", params: list[dict[str, Any]] | None = None) -> int:
        sql = f"SELECT VALUE COUNT(1) FROM c WHERE c.pk = @pk AND c.type = 'instance'{extra_where}"
        parameters = [{"name": "@pk", "value": pk}, *(params or [])]
        rows: list[Any] = self._call(
            "count", lambda: list(self._container.query_items(sql, parameters=parameters, partition_key=pk))
        )
        return int(rows[0]) if rows else 0

    def _refresh_series(self, key: SeriesKey, attrs: dict[str, Any] | None) -> None:
        pk = study_pk(key.study)
        item = f"series|{key.series_instance_uid}"

        def build(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            count = self._count(
                pk, " AND c.SeriesInstanceUID = @se", [{"name": "@se", "value": key.series_instance_uid}]
            )
            if count == 0:
                return None
            new_attrs = attrs if attrs is not None else (existing or {}).get("attrs", {})
            modality = first_value(new_attrs.get(tag_key(0x00080060)))
            return {
                "id": item,
                "pk": pk,
                "type": "series",
                "partition": key.partition,
                "StudyInstanceUID": key.study_instance_uid,
                "SeriesInstanceUID": key.series_instance_uid,
                "Modality": str(modality).upper() if modality else None,
                "attrs": new_attrs,
                "q": _search_values(new_attrs, _SERIES_SEARCH_KEYWORDS),
                "NumberOfSeriesRelatedInstances": count,
                "sortKey": (existing or {}).get("sortKey") or f"{time.time_ns():020d}|{key.series_instance_uid}",
                "updatedAt": _now(),
            }

        self._conditional_refresh(pk, item, build)

    def _refresh_study(self, key: StudyKey, attrs: dict[str, Any] | None) -> None:
        pk = study_pk(key)

        def build(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            instances = self._count(pk)
            if instances == 0:
                return None
            series_rows = self._call(
                "read series",
                lambda: list(
                    self._container.query_items(
                        "SELECT c.Modality FROM c WHERE c.pk = @pk AND c.type = 'series'",
                        parameters=[{"name": "@pk", "value": pk}],
                        partition_key=pk,
                    )
                ),
            )
            modalities = sorted({row["Modality"] for row in series_rows if row.get("Modality")})
            new_attrs = attrs if attrs is not None else (existing or {}).get("attrs", {})
            q = _search_values(new_attrs, _STUDY_SEARCH_KEYWORDS)
            return {
                "id": "study",
                "pk": pk,
                "type": "study",
                "partition": key.partition,
                "StudyInstanceUID": key.study_instance_uid,
                "attrs": new_attrs,
                "q": q,
                "ModalitiesInStudy": modalities,
                "NumberOfStudyRelatedSeries": len(series_rows),
                "NumberOfStudyRelatedInstances": instances,
                "sortKey": (existing or {}).get("sortKey") or f"{time.time_ns():020d}|{key.study_instance_uid}",
                "createdAt": (existing or {}).get("createdAt") or _now(),
                "updatedAt": _now(),
            }

        self._conditional_refresh(pk, "study", build)

    def _conditional_refresh(
        self, pk: str, item: str, build: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> None:
        """Read, rebuild and write back ``item`` with etag conditions, retrying on conflicts."""
        for attempt in range(_MAX_RETRIES):
            existing = self._call(
                "read aggregate", lambda: read_item_or_none(self._container, item, pk, self._emulator)
            )
            new = build(existing)
            try:
                if new is None:
                    if existing is not None:
                        self._container.delete_item(
                            item,
                            partition_key=pk,
                            etag=existing["_etag"],
                            match_condition=MatchConditions.IfNotModified,
                        )
                elif existing is None:
                    self._container.create_item(new)
                else:
                    self._container.replace_item(
                        item, new, etag=existing["_etag"], match_condition=MatchConditions.IfNotModified
                    )
                return
            except CosmosHttpResponseError as exc:
                if exc.status_code in (409, 412, 404) or (self._emulator and exc.status_code == 500 and new is None):
                    time.sleep(min(0.005 * (2**attempt), 0.2))
                    continue
                raise DependencyUnavailable("The index is unavailable (aggregate update).") from exc
            except AzureError as exc:
                raise DependencyUnavailable("The index is unavailable (aggregate update).") from exc
        raise DependencyUnavailable(f"The aggregate {item} of {pk} could not be updated: too much contention.")

    # -- queries --------------------------------------------------------------

    def search(self, query: SearchQuery) -> QueryPage:
        """Run a QIDO search; see the module docstring for how levels combine."""
        start = time.perf_counter()
        charge = _Charge()
        top = query.offset + query.limit
        if query.level is Level.STUDY:
            rows = self._select("study", query.study_matches, query, top, charge)
            records = [_study_record(row) for row in rows]
        else:
            rows = self._level_rows(query, top, charge)
            studies = self._studies_by_pk({row["pk"] for row in rows[query.offset : top]}, charge)
            records = [_lower_record(row, studies.get(row["pk"])) for row in rows]
        log.info(
            "qido level=%s matches=%d rows=%d request_charge=%.2f elapsed_ms=%.1f",
            query.level.value,
            len(query.study_matches) + len(query.series_matches) + len(query.instance_matches),
            len(rows),
            charge.total,
            (time.perf_counter() - start) * 1000,
        )
        return QueryPage(items=records[query.offset : top], request_charge=charge.total)

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
        for batch in self._matching_study_pks(query, charge):
            rows.extend(self._select(doc_type, own, query, top - len(rows), charge, pks=batch))
            if len(rows) >= top:
                break
        return rows

    def _matching_study_pks(self, query: SearchQuery, charge: _Charge) -> Iterator[list[str]]:
        where, params = self._where("study", query.study_matches, query)
        sql = f"SELECT c.pk FROM c WHERE {where} ORDER BY c.sortKey ASC"
        pages = self._container.query_items(
            sql, parameters=params, enable_cross_partition_query=True, max_item_count=_STUDY_BATCH
        ).by_page()
        try:
            for page in pages:
                charge.add(self._container)
                batch = [row["pk"] for row in page]
                if batch:
                    yield batch
        except AzureError as exc:
            raise DependencyUnavailable("The index is unavailable (search).") from exc

    def _where(
        self, doc_type: str, matches: tuple[Match, ...], query: SearchQuery, pks: list[str] | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        params: list[dict[str, Any]] = [
            {"name": "@type", "value": doc_type},
            {"name": "@partition", "value": query.partition},
        ]
        where = ["c.type = @type", "c.partition = @partition"]
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
        sql = f"SELECT TOP @top * FROM c WHERE {where} ORDER BY c.sortKey ASC"
        pk = params[2]["value"] if query.study_instance_uid is not None else None
        if pk is not None:
            iterator = self._container.query_items(sql, parameters=params, partition_key=pk)
        else:
            iterator = self._container.query_items(sql, parameters=params, enable_cross_partition_query=True)
        rows: list[dict[str, Any]] = []
        try:
            for page in iterator.by_page():
                charge.add(self._container)
                rows.extend(page)
                if len(rows) >= top:
                    break
        except AzureError as exc:
            raise DependencyUnavailable("The index is unavailable (search).") from exc
        return rows[:top]

    def _studies_by_pk(self, pks: set[str], charge: _Charge) -> dict[str, dict[str, Any]]:
        """The study documents of ``pks`` (for the study-level attributes of lower-level results)."""
        if not pks:
            return {}
        sql = "SELECT * FROM c WHERE c.type = 'study' AND ARRAY_CONTAINS(@pks, c.pk)"
        try:
            rows = list(
                self._container.query_items(
                    sql, parameters=[{"name": "@pks", "value": sorted(pks)}], enable_cross_partition_query=True
                )
            )
        except AzureError as exc:
            raise DependencyUnavailable("The index is unavailable (search).") from exc
        charge.add(self._container)
        return {row["pk"]: row for row in rows}

    # -- helpers ----------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except AzureError as exc:
            log.warning("cosmos failed during %s: %s", what, exc)
            raise DependencyUnavailable(f"The index is unavailable ({what}).") from exc


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
        modalities_in_study=tuple(row.get("ModalitiesInStudy") or ()),
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


def _field(keyword: str) -> str:
    return f"c.{keyword}" if keyword in _TOP_LEVEL_FIELDS else f"c.q.{keyword}"


def _condition(match: Match, params: list[dict[str, Any]]) -> str:
    """Translate one match into a WHERE fragment, appending its parameters."""

    def param(value: Any) -> str:
        name = f"@p{len(params)}"
        params.append({"name": name, "value": value})
        return name

    path = _field(match.keyword)
    if match.kind is MatchKind.EXACT or match.kind is MatchKind.PERSON_NAME:
        return f"{path} = {param(match.values[0])}"
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
