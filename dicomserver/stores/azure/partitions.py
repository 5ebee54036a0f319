"""Data partitions on Cosmos DB (:class:`~dicomserver.stores.PartitionStore`).

Layout
------
One ``partitions`` container (partition key ``/id``): one document per data
partition, ``{"id": <name>, "partitionKey": <int>, "createdDate": <ISO 8601 UTC>}``,
and one counter document, id :data:`COUNTER_ID` (``$`` is not allowed in a
partition name, so it can never be a partition), whose ``value`` is the last key
handed out.  ``Microsoft.Default`` has key 1 (as in Azure, where the schema
creates it), so the counter starts at 1 and the first other partition gets 2.

Cost
----
:meth:`CosmosPartitionStore.get_partition` is one point read.
:meth:`CosmosPartitionStore.add_partition` is one point read when the partition
exists; creating one is a counter ``incr`` patch and a create (a create that loses
a race to another writer costs one more read, and leaves a key unused, as SQL
identity gaps do).  :mod:`dicomserver.partitions` remembers in the process what it
has seen, so a process pays this once per partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from ...errors import DependencyUnavailable
from ...identifiers import DEFAULT_PARTITION
from .. import Partition
from .cosmos import read_item_or_none
from .index import _call, _write

PARTITIONS_CONTAINER = "partitions"
#: The id of the counter document (not a valid partition name).
COUNTER_ID = "$key"
#: Azure's key of Microsoft.Default.
DEFAULT_KEY = 1
#: What an unavailable Cosmos is called in this module's errors.
PARTITIONS = "partition store"
_ATTEMPTS = 5


def _from_doc(doc: dict[str, Any]) -> Partition:
    return Partition(key=int(doc["partitionKey"]), name=str(doc["id"]), created_date=str(doc["createdDate"]))


class CosmosPartitionStore:
    """Partition documents in Cosmos DB (see the module docstring)."""

    def __init__(self, client: CosmosClient, database: str, *, emulator: bool = False) -> None:
        self._client = client
        self._database_name = database
        self._emulator = emulator
        self._container: ContainerProxy = client.get_database_client(database).get_container_client(
            PARTITIONS_CONTAINER
        )

    def ensure_schema(self) -> None:
        db = _call(
            "create database", lambda: self._client.create_database_if_not_exists(self._database_name), PARTITIONS
        )
        self._container = _call(
            "create container",
            lambda: db.create_container_if_not_exists(PARTITIONS_CONTAINER, partition_key=PartitionKey("/id")),
            PARTITIONS,
        )

    def get_partition(self, name: str) -> Partition | None:
        doc = _call(
            "read partition",
            lambda: read_item_or_none(self._container, name, name, self._emulator),
            PARTITIONS,
        )
        return _from_doc(doc) if doc is not None else None

    def add_partition(self, name: str) -> Partition:
        existing = self.get_partition(name)
        if existing is not None:
            return existing
        key = DEFAULT_KEY if name == DEFAULT_PARTITION else self._next_key()
        doc = {
            "id": name,
            "partitionKey": key,
            "createdDate": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        created, _ = _write("add partition", lambda: self._container.create_item(doc), tolerated=(409,))
        if created is not None:
            return _from_doc(created)
        raced = self.get_partition(name)  # another writer created it first
        if raced is None:
            raise DependencyUnavailable(f"The partition store is unavailable (partition '{name}' not readable).")
        return raced

    def list_partitions(self) -> list[Partition]:
        docs = _call(
            "list partitions",
            lambda: list(
                self._container.query_items(
                    "SELECT c.id, c.partitionKey, c.createdDate FROM c", enable_cross_partition_query=True
                )
            ),
            PARTITIONS,
        )
        return sorted((_from_doc(d) for d in docs if d["id"] != COUNTER_ID), key=lambda p: p.key)

    def _next_key(self) -> int:
        """Hand out a key (atomic ``incr`` of the counter document, created on first use)."""
        ops = [{"op": "incr", "path": "/value", "value": 1}]
        first = DEFAULT_KEY + 1
        counter = {"id": COUNTER_ID, "value": first}
        for _ in range(_ATTEMPTS):
            patched, _status = _write(
                "partition key",
                lambda: self._container.patch_item(COUNTER_ID, partition_key=COUNTER_ID, patch_operations=ops),
                tolerated=(404,) if not self._emulator else (404, 500),
            )
            if patched is not None:
                return int(patched["value"])
            created, _status = _write(
                "partition key",
                lambda: self._container.create_item(counter),
                tolerated=(409,),
            )
            if created is not None:
                return first
        raise DependencyUnavailable("The partition store is unavailable (no partition key could be reserved).")
