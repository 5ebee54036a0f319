"""Extended query tags and their indexing errors on Cosmos DB (:class:`~dicomserver.stores.ExtendedQueryTagStore`).

One container, ``extendedquerytags``, partitioned by ``/pk``:

* the tag documents (id = the 8-hex path) share the logical partition ``"tags"``: at most 128 of
  them, so listing them is one single-partition query;
* the errors of one declaration of a tag live in the partition ``"errors|{path}|{generation}"``
  (id = ``"{study}|{series}|{sop}"``, so recording an error twice, e.g. by a repeated reindex step,
  is one document).  A tag declared again gets a new generation, so the errors of an earlier
  declaration are never seen again even when deleting them was cut short.

Hot paths (QIDO, STOW) read the tag list through :meth:`CosmosExtendedQueryTagStore.list_tags`
with a ``max_age_seconds``: the list this process read at most that long ago is reused (one read
per process per :data:`CACHE_SECONDS`, none per request in between).  Writes in this process drop
the cached list, so they are seen at once here and after at most :data:`CACHE_SECONDS` elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from ...errors import Conflict
from ...identifiers import InstanceKey, Level
from ..model import (
    EXTENDED_TAGS_MAX_AGE_SECONDS,
    ExtendedQueryTag,
    ExtendedQueryTagError,
    ExtendedQueryTagStatus,
    QueryStatus,
)
from .cosmos import read_item_or_none
from .index import _call, _write

log = logging.getLogger(__name__)

EXTENDED_QUERY_TAGS_CONTAINER = "extendedquerytags"
PARTITION_KEY_PATH = "/pk"
#: How long QIDO and STOW reuse the tag list this process read (seconds).
CACHE_SECONDS = EXTENDED_TAGS_MAX_AGE_SECONDS
#: Most error documents a DELETE removes itself (the rest are unreachable: see the module docstring).
MAX_ERRORS_DELETED = 500
_TAGS_PK = "tags"
#: What an unavailable Cosmos is called in this module's errors.
_SERVICE = "extended query tag store"


def _errors_pk(tag: ExtendedQueryTag) -> str:
    return f"errors|{tag.path}|{tag.generation}"


def _to_doc(tag: ExtendedQueryTag) -> dict[str, Any]:
    return {
        "id": tag.path,
        "pk": _TAGS_PK,
        "path": tag.path,
        "vr": tag.vr,
        "privateCreator": tag.private_creator,
        "level": tag.level.value,
        "status": tag.status.value,
        "queryStatus": tag.query_status.value,
        "errorCount": tag.error_count,
        "operationId": tag.operation_id,
        "created": tag.created,
        "generation": tag.generation,
    }


def _from_doc(doc: dict[str, Any]) -> ExtendedQueryTag:
    return ExtendedQueryTag(
        path=str(doc["path"]),
        vr=str(doc["vr"]),
        level=Level(doc["level"]),
        private_creator=doc.get("privateCreator") or None,
        status=ExtendedQueryTagStatus(doc["status"]),
        query_status=QueryStatus(doc["queryStatus"]),
        error_count=int(doc.get("errorCount") or 0),
        operation_id=doc.get("operationId") or None,
        created=str(doc.get("created") or ""),
        generation=str(doc.get("generation") or ""),
    )


class CosmosExtendedQueryTagStore:
    """Tag and error documents in the ``extendedquerytags`` container."""

    def __init__(self, client: CosmosClient, database: str, *, emulator: bool = False) -> None:
        self._client = client
        self._database_name = database
        self._emulator = emulator
        self._container: ContainerProxy = client.get_database_client(database).get_container_client(
            EXTENDED_QUERY_TAGS_CONTAINER
        )
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._cached: tuple[float, list[ExtendedQueryTag]] | None = None

    def ensure_schema(self) -> None:
        db = _call("create database", lambda: self._client.create_database_if_not_exists(self._database_name), _SERVICE)
        self._container = _call(
            "create container",
            lambda: db.create_container_if_not_exists(
                EXTENDED_QUERY_TAGS_CONTAINER, partition_key=PartitionKey(PARTITION_KEY_PATH)
            ),
            _SERVICE,
        )

    # -- tags ---------------------------------------------------------------------------------

    def list_tags(self, max_age_seconds: float = 0.0) -> list[ExtendedQueryTag]:
        if max_age_seconds <= 0:
            return self._read_tags()
        with self._loading:  # parallel parts of one STOW with a cold cache: one of them reads
            with self._lock:
                cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < max_age_seconds:
                return list(cached[1])
            return self._read_tags()

    def _read_tags(self) -> list[ExtendedQueryTag]:
        read_at = time.monotonic()
        rows = _call(
            "list extended query tags",
            lambda: list(
                self._container.query_items(
                    "SELECT * FROM c WHERE c.pk = @pk",
                    parameters=[{"name": "@pk", "value": _TAGS_PK}],
                    partition_key=_TAGS_PK,
                )
            ),
            _SERVICE,
        )
        tags = sorted((_from_doc(row) for row in rows), key=lambda t: t.path)
        with self._lock:
            self._cached = (read_at, tags)
        return list(tags)

    def _forget(self) -> None:
        with self._lock:
            self._cached = None

    def get_tag(self, path: str) -> ExtendedQueryTag | None:
        doc = _call(
            "read extended query tag",
            lambda: read_item_or_none(self._container, path, _TAGS_PK, self._emulator),
            _SERVICE,
        )
        return _from_doc(doc) if doc is not None else None

    def add_tags(self, tags: Sequence[ExtendedQueryTag]) -> list[ExtendedQueryTag]:
        """Create the tag documents; on a 409 the ones this call created are deleted again (all or none)."""
        self._forget()
        created: list[ExtendedQueryTag] = []
        for tag in tags:
            stamped = tag if tag.generation else _with_generation(tag)
            _, status = _write("add extended query tag", partial(self._container.create_item, _to_doc(stamped)), (409,))
            if status == 409:
                for done in created:
                    self._delete_doc(done.path)
                raise Conflict(f"The extended query tag '{tag.path}' already exists.")
            created.append(stamped)
        return created

    def save_tag(self, tag: ExtendedQueryTag) -> ExtendedQueryTag:
        self._forget()
        doc, _ = _write("save extended query tag", lambda: self._container.upsert_item(_to_doc(tag)))
        return _from_doc(doc) if doc is not None else tag

    def delete_tag(self, path: str) -> bool:
        tag = self.get_tag(path)
        if tag is None:
            return False
        self._forget()
        deleted = self._delete_doc(path)
        pk = _errors_pk(tag)
        rows = _call(
            "list extended query tag errors",
            lambda: list(
                self._container.query_items(
                    f"SELECT TOP {MAX_ERRORS_DELETED} c.id FROM c WHERE c.pk = @pk",
                    parameters=[{"name": "@pk", "value": pk}],
                    partition_key=pk,
                )
            ),
            _SERVICE,
        )
        for row in rows:
            _write(
                "delete extended query tag error",
                partial(self._container.delete_item, row["id"], pk),
                tolerated=(404, 500),
            )
        return deleted

    def _delete_doc(self, path: str) -> bool:
        # the stand-in answers 500 for a missing item, Cosmos 404
        gone = _write("delete extended query tag", lambda: self._container.delete_item(path, _TAGS_PK), (404, 500))
        return gone[1] == 0

    # -- errors -------------------------------------------------------------------------------

    def add_errors(self, tag: ExtendedQueryTag, errors: Sequence[ExtendedQueryTagError]) -> int:
        """One create per error (409: already recorded)."""
        pk = _errors_pk(tag)
        new = 0
        for error in errors:
            key = error.key
            doc = {
                "id": f"{key.study_instance_uid}|{key.series_instance_uid}|{key.sop_instance_uid}",
                "pk": pk,
                "partition": key.partition,
                "studyInstanceUid": key.study_instance_uid,
                "seriesInstanceUid": key.series_instance_uid,
                "sopInstanceUid": key.sop_instance_uid,
                "createdTime": error.created,
                "errorMessage": error.message,
            }
            _, status = _write("add extended query tag error", partial(self._container.create_item, doc), (409,))
            new += status == 0
        return new

    def count_errors(self, tag: ExtendedQueryTag) -> int:
        pk = _errors_pk(tag)
        counts = _call(
            "count extended query tag errors",
            lambda: list(
                self._container.query_items(
                    "SELECT VALUE COUNT(1) FROM c WHERE c.pk = @pk",
                    parameters=[{"name": "@pk", "value": pk}],
                    partition_key=pk,
                )
            ),
            _SERVICE,
        )
        values: list[Any] = counts  # SELECT VALUE: numbers, not documents
        return sum(int(c) for c in values)

    def list_errors(self, tag: ExtendedQueryTag, limit: int, offset: int) -> list[ExtendedQueryTagError]:
        pk = _errors_pk(tag)
        rows = _call(
            "list extended query tag errors",
            lambda: list(
                self._container.query_items(
                    "SELECT TOP @top * FROM c WHERE c.pk = @pk ORDER BY c.createdTime ASC",
                    parameters=[{"name": "@pk", "value": pk}, {"name": "@top", "value": offset + limit}],
                    partition_key=pk,
                )
            ),
            _SERVICE,
        )
        rows.sort(key=lambda r: (str(r.get("createdTime") or ""), str(r["id"])))
        return [
            ExtendedQueryTagError(
                key=InstanceKey(
                    str(r.get("partition") or ""),
                    str(r["studyInstanceUid"]),
                    str(r["seriesInstanceUid"]),
                    str(r["sopInstanceUid"]),
                ),
                message=str(r.get("errorMessage") or ""),
                created=str(r.get("createdTime") or ""),
            )
            for r in rows[offset : offset + limit]
        ]


def _with_generation(tag: ExtendedQueryTag) -> ExtendedQueryTag:
    from dataclasses import replace

    return replace(tag, generation=uuid.uuid4().hex)
