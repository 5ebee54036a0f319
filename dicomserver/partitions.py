"""Data partitions (Azure DICOM service v2, "Data partitions"): one deployment, several isolated stores.

With ``DICOM_DATA_PARTITIONS_ENABLED`` on, every STOW, WADO, QIDO and DELETE path
names its partition, ``/v2/partitions/{partitionName}/studies/...``; the same
Study, Series and SOP Instance UIDs may then be stored once in each partition,
and nothing reads, searches or deletes across partitions (every key carries its
partition: :class:`~dicomserver.identifiers.StudyKey`, the index's ``partition``
field, the blob names).  The other APIs (change feed, operations, ``GET
/v2/partitions``) stay at the base path.  Off, the partitioned paths are a 400 and
everything lives in ``Microsoft.Default`` (:data:`~dicomserver.identifiers.DEFAULT_PARTITION`),
which is also what ``/v2/partitions/Microsoft.Default/...`` addresses when on.

The rules, as Azure answers them (all 400):

* partitions on, no partition in the path: "PartitionName value is missing in the route segment.";
* partitions off, a partition in the path: "Data partitions feature is disabled.";
* a name that is not 1-64 letters, digits, ``.``, ``-`` and ``_`` (Azure's ``PartitionNameValidator``);
* a read or delete in a partition nothing was ever stored in: "Specified PartitionName ... does not exist.".

A partition is created by its first store (POST or PUT ``/studies``): the
:class:`PartitionCatalog` records it (:class:`~dicomserver.stores.PartitionStore`)
before the store runs, as Azure's ``GetOrAddPartition`` does.  The catalog
remembers in the process every partition it has seen, so a process reads (and at
most once writes) each partition's record once; ``Microsoft.Default`` is always
there (Azure's schema creates it with key 1) and is never looked up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

from .errors import BadRequest
from .identifiers import DEFAULT_PARTITION
from .stores import Partition, PartitionStore

log = logging.getLogger(__name__)

#: Azure's rule: up to 64 alphanumeric characters, ``.``, ``-`` and ``_`` (UIDs, GUIDs, readable names).
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Azure's key of Microsoft.Default.
DEFAULT_KEY = 1

MISSING_PARTITION = "PartitionName value is missing in the route segment."
FEATURE_DISABLED = "Data partitions feature is disabled."


def validate_partition_name(name: str) -> str:
    """Check a partition name taken from a request path.

    Raises
    ------
    BadRequest
        Unless ``name`` is 1-64 letters, digits, ``.``, ``-`` and ``_``.
    """
    if _NAME.fullmatch(name) is None:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise BadRequest(
            f"The specified PartitionName '{shown}' is invalid: a partition name is 1-64 letters, digits, "
            "'.', '-' and '_'."
        )
    return name


def partition_of_path(name: str | None, *, enabled: bool) -> str:
    """The partition a STOW/WADO/QIDO/DELETE request addresses (``name``: from ``/partitions/{name}``, if any).

    Raises
    ------
    BadRequest
        When partitions are on and the path names none, when they are off and it names one, or for
        an invalid name.
    """
    if not enabled:
        if name is not None:
            raise BadRequest(FEATURE_DISABLED)
        return DEFAULT_PARTITION
    if name is None:
        raise BadRequest(MISSING_PARTITION)
    return validate_partition_name(name)


class PartitionCatalog:
    """The partitions that exist, remembered in the process (see the module docstring)."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._known: set[str] = {DEFAULT_PARTITION}
        self._recorded: set[str] = set()
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        self.store.ensure_schema()

    def _remember(self, name: str, recorded: bool) -> None:
        with self._lock:
            self._known.add(name)
            if recorded:
                self._recorded.add(name)

    def seen(self, name: str, *, recorded: bool) -> bool:
        """Whether the process knows the partition exists (``recorded``: and that its record was written)."""
        return name in (self._recorded if recorded else self._known)

    def get_or_add(self, name: str) -> None:
        """Before a store into ``name``: record the partition unless this process already saw it recorded."""
        if name in self._recorded:
            return
        partition = self.store.add_partition(name)
        log.info("partition recorded name=%s key=%d", partition.name, partition.key)
        self._remember(name, recorded=True)

    def require(self, name: str) -> None:
        """Before a read or delete in ``name``.

        Raises
        ------
        BadRequest
            When nothing was ever stored in the partition (Azure: 400).
        """
        if name in self._known:
            return
        if self.store.get_partition(name) is None:
            raise BadRequest(f"Specified PartitionName '{name}' does not exist.")
        self._remember(name, recorded=True)

    def list(self) -> list[Partition]:
        """Every partition, ``Microsoft.Default`` included (recorded now if it never was: Azure always lists it)."""
        found = self.store.list_partitions()
        if not any(p.name == DEFAULT_PARTITION for p in found):
            found = sorted([*found, self.store.add_partition(DEFAULT_PARTITION)], key=lambda p: p.key)
            self._remember(DEFAULT_PARTITION, recorded=True)
        return found


async def prepare_partition(catalog: PartitionCatalog, name: str, *, creates: bool) -> None:
    """Make sure the partition of a request can be used: created by a store, existing for anything else.

    Raises
    ------
    BadRequest
        When a read or delete names a partition that does not exist.
    DependencyUnavailable
        When the partition store is unavailable.
    """
    if not catalog.seen(name, recorded=creates):
        await asyncio.to_thread(catalog.get_or_add if creates else catalog.require, name)


def partition_json(partition: Partition) -> dict[str, Any]:
    """One partition as Azure's ``GET /partitions`` returns it (``PartitionEntry``)."""
    return {
        "partitionKey": partition.key,
        "partitionName": partition.name,
        "createdDate": partition.created_date,
    }


async def get_partitions(*, catalog: PartitionCatalog, enabled: bool) -> list[dict[str, Any]]:
    """``GET /v2/partitions``: every data partition (Azure: ``PartitionController.GetAllPartitions``).

    Raises
    ------
    BadRequest
        When partitions are off ("Data partitions feature is disabled.").
    """
    if not enabled:
        raise BadRequest(FEATURE_DISABLED)
    return [partition_json(p) for p in await asyncio.to_thread(catalog.list)]
