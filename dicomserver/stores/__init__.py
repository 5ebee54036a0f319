"""Ports: the storage the service needs, as Protocols.

This package owns its types and imports nothing from Azure:

* :mod:`.model`: the value types that cross the boundary (``IndexedInstance``,
  ``SearchQuery``, ``QueryPage``, ``StudySnapshot``, ``OpenedInstance``...);
* :mod:`.layout`: blob names and queue message bodies (the storage contract);
* this module: the Protocols below, which the services (``stow``, ``wado``,
  ``qido``, ``delete``, ``ingest``, ``fhir.sync``) are typed with.

The Azure implementations live in :mod:`.azure` (Blob Storage, Cosmos DB,
Storage Queues); only ``dicomserver/wiring.py`` imports them and the Azure SDK
(``tests/unit/test_layering.py`` checks it).  Azure SDK exceptions are
translated into :mod:`dicomserver.errors` inside :mod:`.azure` and nowhere else;
every round trip an implementation makes is counted
(:mod:`.azure.counting`, :mod:`dicomserver.opcount`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, runtime_checkable

from ..identifiers import InstanceKey, StudyKey
from .model import (
    Change,
    ChangeAction,
    ChangeEntry,
    ChangeState,
    ExtendedQueryTag,
    ExtendedQueryTagError,
    IndexedInstance,
    OpenedInstance,
    Operation,
    OperationStatus,
    QueryPage,
    Record,
    SearchQuery,
    StudySnapshot,
)

__all__ = [
    "BlobStore",
    "Change",
    "ChangeAction",
    "ChangeEntry",
    "ChangeFeed",
    "ChangeState",
    "EventPublisher",
    "ExtendedQueryTag",
    "ExtendedQueryTagError",
    "ExtendedQueryTagStore",
    "ImportStore",
    "IndexStore",
    "SyncQueue",
    "IndexedInstance",
    "OpenedInstance",
    "Operation",
    "OperationStatus",
    "OperationStore",
    "Partition",
    "PartitionStore",
    "QueryPage",
    "Record",
    "ReindexableIndex",
    "SearchQuery",
    "StudySnapshot",
]


class BlobStore(Protocol):
    """Instance files and, for the rare instance whose metadata is too large for the index, its metadata JSON."""

    def ensure_containers(self) -> None: ...

    def put_instance(
        self,
        key: InstanceKey,
        data: IO[bytes],
        length: int,
        transfer_syntax_uid: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Create the instance blob; raises DuplicateInstance if it exists."""

    def open_instance(self, key: InstanceKey) -> OpenedInstance:
        """Start streaming an instance (raises NotFound)."""

    def snapshot_instance(self, key: InstanceKey) -> str:
        """Keep the instance blob as it is now (deleted with the blob); returns the version's id."""

    def with_versions(self, versions: Mapping[InstanceKey, str]) -> BlobStore:
        """A view that reads the given kept versions of those instances instead of the current ones."""

    def delete_instance(self, key: InstanceKey) -> bool:
        """Delete the instance blob; False when there was none."""

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]:
        """The instance blobs of a study or series, indexed or not."""

    def instance_size(self, key: InstanceKey) -> int: ...

    def iter_instance(self, key: InstanceKey, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def put_metadata(self, key: InstanceKey, body: bytes) -> None: ...

    def get_metadata(self, key: InstanceKey) -> tuple[bytes, str]:
        """Return the metadata JSON and its ETag."""

    def delete_metadata(self, key: InstanceKey) -> None: ...


class IndexStore(Protocol):
    """Searchable documents for studies, series and instances (see :mod:`.index` for the cost model)."""

    #: Instance documents keep every simple-VR attribute's values, so QIDO may search any attribute
    #: (``DICOM_SEARCH_ANY_ATTRIBUTE``).
    searches_any_attribute: bool

    def ensure_schema(self) -> None: ...

    def create_instance(self, instance: IndexedInstance) -> bool:
        """Create the instance document (the commit point); False when it already existed."""

    def update_aggregates(self, instances: Sequence[IndexedInstance], count: bool = True) -> None:
        """Count instances this process created into their series and studies (one write per series and study)."""

    def replace_instance(self, instance: IndexedInstance) -> bool:
        """Replace or create the instance document (PUT); True when there was none before."""

    def set_original_version(self, key: InstanceKey, version: str) -> None:
        """Record the kept original version of an instance (before its blob changes)."""

    def original_versions(self, study: StudyKey, series_instance_uid: str | None = None) -> dict[InstanceKey, str]:
        """The kept original versions (bulk update) of the study's or series' instances that have one."""

    def expired_studies(self, now: str, limit: int) -> list[StudyKey]:
        """Studies whose expiry (``expiresAt``) is at or before ``now``, oldest expiry first."""

    def last_store_expiry(self, study: StudyKey) -> tuple[bool, str | None]:
        """Whether the study has instances, and the expiry its most recent store set (None: no expiry)."""

    def set_study_expiry(self, study: StudyKey, expires_at: str | None) -> None: ...

    def add_instance(self, instance: IndexedInstance) -> bool:
        """:meth:`create_instance`, then :meth:`update_aggregates` if it created it."""

    def remove_instance(self, key: InstanceKey) -> bool: ...

    def count_out(self, keys: Sequence[InstanceKey]) -> None:
        """Take instances out of their series' counts (the inverse of :meth:`update_aggregates`)."""

    def discard_instance(self, key: InstanceKey) -> bool:
        """Delete an instance document without counting it out (an undone store); False when there was none."""

    def remove_instances(self, keys: Sequence[InstanceKey]) -> list[InstanceKey]:
        """Unindex instances and count them out of their series and studies; returns those that were indexed."""

    def log_changes(self, changes: Sequence[Change], reserved: int | None = None) -> None:
        """Log committed creates to the change feed (deletes are logged by :meth:`remove_instances`).

        ``reserved``: the last of ``len(changes)`` numbers already reserved with
        :meth:`reserve_changes` (one study).  Never raises: the change is
        committed, and the study's sync logs what is missing.
        """

    def reserve_changes(self, partition: str, count: int) -> int | None:
        """Reserve change feed numbers ahead of a commit (the last one; None without a change feed)."""

    def reconcile_study(self, study: StudyKey, quiet_seconds: float) -> bool:
        """Recompute a quiet study's aggregates from its instances; True when something was corrected."""

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]: ...

    def list_instance_details(self, study: StudyKey, series_instance_uid: str | None = None) -> list[IndexedInstance]:
        """The instances of a study or series with transfer syntax, size and store time."""

    def get_instance(self, key: InstanceKey) -> IndexedInstance | None: ...

    def metadata_etag(self, study: StudyKey, series_instance_uid: str | None = None) -> str | None:
        """A version of the study's or series' metadata (None: not found)."""

    def iter_metadata(
        self, study: StudyKey, series_instance_uid: str | None = None
    ) -> Iterator[tuple[InstanceKey, str | None]]:
        """Each instance's DICOM JSON (None: kept in the metadata blob)."""

    def study_snapshot(self, study: StudyKey) -> StudySnapshot | None:
        """Everything indexed about one study, or None when it has no instance."""

    def list_studies(self, partition: str, patient_id: str | None = None) -> Iterator[StudyKey]: ...

    def search(self, query: SearchQuery) -> QueryPage:
        """Run a QIDO search at the query's level."""


class SyncQueue(Protocol):
    """The fhir-sync queue: one message per changed study."""

    def ensure_queue(self) -> None: ...

    def enqueue_studies(self, studies: Sequence[StudyKey], delay_seconds: int = 0) -> None: ...

    def schedule_sync(self, studies: Sequence[StudyKey]) -> None:
        """Before a write into ``studies``: make sure a sync runs after it (write-ahead, at most one message
        per study every few seconds)."""

    def retry_later(self, study: StudyKey, attempt: int, delay_seconds: int) -> None:
        """Queue the study again, invisible for ``delay_seconds`` (back-off of a transient failure)."""

    def send_to_poison(self, body: str) -> None:
        """Park a message in the ``-poison`` queue (replayed with ``dicomserver.cli requeue-poison``)."""

    def drain_poison(self) -> list[str]:
        """Remove and return the messages of the poison queue (a batch; call until empty)."""


class ImportStore(Protocol):
    """The bulk-import drop container and the container its rejects move to."""

    def ensure_containers(self) -> None: ...

    def iter_import(self, name: str) -> Iterator[bytes]:
        """Stream a dropped file (raises NotFound)."""

    def delete_import(self, name: str) -> None:
        """Delete a dropped file (no error when it is gone)."""

    def reject_import(self, name: str, data: IO[bytes], length: int, reason: dict[str, Any]) -> None:
        """Move a dropped file (whose bytes the caller holds) to the errors container with its reason."""


class ChangeFeed(Protocol):
    """The change feed: an ordered, immutable log of creates, updates and deletes, per data partition.

    See :mod:`.azure.changefeed` for how the order is kept with concurrent writers and what it costs.
    """

    def ensure_schema(self) -> None: ...

    def record(self, changes: Sequence[Change], reserved: int | None = None) -> list[int]:
        """Append one entry per change (after the change is committed); returns their sequence numbers.

        ``reserved``: the last of ``len(changes)`` numbers already reserved (changes of one study).
        """

    def reserve(self, partition: str, count: int) -> int:
        """Hand out ``count`` sequence numbers (one sequence for all data partitions); returns the last one."""

    def read(self, start: str, end: str, offset: int, limit: int, include_metadata: bool) -> list[ChangeEntry]:
        """Entries of every data partition with ``start <= timestamp < end`` in sequence order, skipping
        ``offset``, at most ``limit``."""

    def latest(self, include_metadata: bool) -> ChangeEntry | None:
        """The entry with the highest sequence number (None: no entry yet)."""

    def study_entries(self, study: StudyKey) -> list[ChangeEntry]:
        """Every entry of one study, in sequence order (state not resolved: CURRENT)."""

    def mark_published(self, entries: Sequence[ChangeEntry]) -> None:
        """Remember that these entries' events were handed to the publisher."""


class EventPublisher(Protocol):
    """Where DICOM events go: an Event Grid topic in Azure, a Storage queue locally."""

    def ensure_destination(self) -> None: ...

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Send events (Event Grid schema dicts); raises DependencyUnavailable when they could not be sent."""


class OperationStore(Protocol):
    """Long-running operations: their state documents and the queue that runs their steps."""

    def ensure_schema(self) -> None: ...

    def create(self, operation: Operation) -> Operation:
        """Store a new operation; returns it with its etag."""

    def get(self, operation_id: str) -> Operation | None: ...

    def save(self, operation: Operation) -> Operation | None:
        """Replace the stored operation if it is still at ``operation.etag``; ``None`` if another writer won."""

    def schedule(self, operation_id: str, delay_seconds: int = 0) -> None:
        """Queue a step of the operation (the operations queue trigger runs it)."""

    def find_active(self, type_: str, resource: str) -> Operation | None:
        """An operation of ``type_`` on ``resource`` that is not done, if any."""


class ExtendedQueryTagStore(Protocol):
    """Declared extended query tags and their indexing errors (see :mod:`.azure.extended_tags`)."""

    def ensure_schema(self) -> None: ...

    def list_tags(self, max_age_seconds: float = 0.0) -> list[ExtendedQueryTag]:
        """Every declared tag, by path; with ``max_age_seconds`` > 0 a list this process read that recently
        may be returned instead of reading the store (hot paths: QIDO and STOW)."""

    def get_tag(self, path: str) -> ExtendedQueryTag | None:
        """One tag by its 8-hex path (None when not declared)."""

    def add_tags(self, tags: Sequence[ExtendedQueryTag]) -> list[ExtendedQueryTag]:
        """Declare tags, all or none; raises Conflict when one is already declared."""

    def save_tag(self, tag: ExtendedQueryTag) -> ExtendedQueryTag:
        """Replace a declared tag (status, query status, error count, operation)."""

    def delete_tag(self, path: str) -> bool:
        """Forget a tag and its errors; False when it was not declared."""

    def add_errors(self, tag: ExtendedQueryTag, errors: Sequence[ExtendedQueryTagError]) -> int:
        """Record indexing errors (one per instance: recording one again changes nothing); returns how many
        were new."""

    def count_errors(self, tag: ExtendedQueryTag) -> int: ...

    def list_errors(self, tag: ExtendedQueryTag, limit: int, offset: int) -> list[ExtendedQueryTagError]:
        """Errors in the order they were recorded."""


@runtime_checkable
class ReindexableIndex(Protocol):
    """What the reindex of extended query tags needs from the index, besides :class:`IndexStore`."""

    def count_all_instances(self) -> int:
        """Instances of every data partition."""

    def scan_instances(self, after: str, limit: int) -> list[IndexedInstance]:
        """Up to ``limit`` instances of every data partition, by ``sort_key`` after ``after`` (with metadata)."""

    def set_extended_values(
        self, instance: IndexedInstance, values: dict[str, list[Any]], elements: dict[str, Any], cleared: Sequence[str]
    ) -> None:
        """Write the searchable ``values`` and DICOM JSON ``elements`` of extended tags into an instance's
        document, and drop the values of the ``cleared`` tags (not indexable).  Idempotent."""


@dataclass(frozen=True, slots=True)
class Partition:
    """A data partition (Azure v2 "Data partitions"): its system-assigned key, name and creation time."""

    key: int
    name: str
    #: ISO 8601 UTC.
    created_date: str


class PartitionStore(Protocol):
    """The data partitions that exist (:mod:`dicomserver.partitions`; one document each)."""

    def ensure_schema(self) -> None: ...

    def get_partition(self, name: str) -> Partition | None:
        """The partition called ``name``, or None when nothing was ever stored there."""

    def add_partition(self, name: str) -> Partition:
        """Record the partition (a new key) unless it exists; returns the stored one either way."""

    def list_partitions(self) -> list[Partition]:
        """Every partition, by key."""
