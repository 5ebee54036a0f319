"""Long-running operations on Cosmos DB and a Storage queue (:class:`~dicomserver.stores.OperationStore`).

One document per operation in the ``operations`` container (partition key ``/id``: operations are
read by id). Saves replace the document only at the etag it was read at, so two workers that run
the same step (a redelivered queue message) cannot both advance it. A step is one message on the
``dicom-operations`` queue (``{"id": ...}``); the queue trigger runs it and queues the next one.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.storage.queue import QueueClient

from ..layout import operation_message
from ..model import Operation, OperationStatus
from . import failure
from .cosmos import read_item_or_none
from .index import _call, _write

log = logging.getLogger(__name__)

OPERATIONS_CONTAINER = "operations"
#: What an unavailable Cosmos is called in this module's errors.
OPERATIONS = "operations store"


def _to_doc(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "type": op.type,
        "status": op.status.value,
        "done": op.status.done,
        "created": op.created,
        "updated": op.updated,
        "percent": op.percent_complete,
        "resources": list(op.resources),
        "results": op.results,
        "checkpoint": op.checkpoint,
        "partition": op.partition,
    }


def _from_doc(doc: dict[str, Any]) -> Operation:
    return Operation(
        id=str(doc["id"]),
        type=str(doc["type"]),
        status=OperationStatus(doc["status"]),
        created=str(doc["created"]),
        updated=str(doc["updated"]),
        percent_complete=int(doc.get("percent") or 0),
        resources=[str(r) for r in doc.get("resources") or []],
        results=doc.get("results"),
        checkpoint=dict(doc.get("checkpoint") or {}),
        partition=str(doc.get("partition") or ""),
        etag=doc.get("_etag"),
    )


class CosmosOperationStore:
    """Operation documents in Cosmos DB, steps on a Storage queue."""

    def __init__(self, client: CosmosClient, database: str, queue: QueueClient, *, emulator: bool = False) -> None:
        self._client = client
        self._database_name = database
        self._emulator = emulator
        self._container: ContainerProxy = client.get_database_client(database).get_container_client(
            OPERATIONS_CONTAINER
        )
        self._queue = queue

    def ensure_schema(self) -> None:
        db = _call(
            "create database", lambda: self._client.create_database_if_not_exists(self._database_name), OPERATIONS
        )
        self._container = _call(
            "create container",
            lambda: db.create_container_if_not_exists(OPERATIONS_CONTAINER, partition_key=PartitionKey("/id")),
            OPERATIONS,
        )
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise failure("The operations queue is unavailable.", exc) from exc

    def create(self, operation: Operation) -> Operation:
        doc, _ = _write("create operation", lambda: self._container.create_item(_to_doc(operation)))
        assert doc is not None
        return _from_doc(doc)

    def get(self, operation_id: str) -> Operation | None:
        doc = _call(
            "read operation",
            lambda: read_item_or_none(self._container, operation_id, operation_id, self._emulator),
            OPERATIONS,
        )
        return _from_doc(doc) if doc is not None else None

    def save(self, operation: Operation) -> Operation | None:
        doc, _status = _write(
            "save operation",
            lambda: self._container.replace_item(
                operation.id,
                _to_doc(operation),
                etag=operation.etag,
                match_condition=MatchConditions.IfNotModified,
            ),
            tolerated=(412,),
        )
        return _from_doc(doc) if doc is not None else None

    def schedule(self, operation_id: str, delay_seconds: int = 0) -> None:
        try:
            self._queue.send_message(operation_message(operation_id), visibility_timeout=delay_seconds or None)
        except AzureError as exc:
            raise failure("The operations queue is unavailable.", exc) from exc

    def find_active(self, type_: str, resource: str) -> Operation | None:
        rows = _call(
            "find operation",
            lambda: list(
                self._container.query_items(
                    "SELECT * FROM c WHERE c.type = @t AND c.done = false AND ARRAY_CONTAINS(c.resources, @r)",
                    parameters=[{"name": "@t", "value": type_}, {"name": "@r", "value": resource}],
                    enable_cross_partition_query=True,
                )
            ),
            OPERATIONS,
        )
        return _from_doc(rows[0]) if rows else None
