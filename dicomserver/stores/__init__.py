"""Ports: the storage the service needs, as Protocols.

Services receive implementations as arguments; only ``wiring.py`` builds the
Azure ones (``blob.py``, ``index.py``, ``queue.py``).  Azure SDK exceptions are
translated into :mod:`dicomserver.errors` inside this package and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Protocol

from ..identifiers import InstanceKey, StudyKey
from .blob import OpenedInstance
from .model import IndexedInstance, QueryPage, Record, SearchQuery, StudySnapshot

__all__ = [
    "BlobStore",
    "IndexStore",
    "SyncQueue",
    "IndexedInstance",
    "QueryPage",
    "Record",
    "SearchQuery",
    "StudySnapshot",
]


class BlobStore(Protocol):
    """Instance files and their precomputed metadata JSON."""

    def ensure_containers(self) -> None: ...

    def put_instance(
        self, key: InstanceKey, data: IO[bytes], length: int, transfer_syntax_uid: str | None = None
    ) -> None:
        """Create the instance blob; raises DuplicateInstance if it exists."""

    def open_instance(self, key: InstanceKey) -> OpenedInstance:
        """Start streaming an instance (raises NotFound)."""

    def delete_instance(self, key: InstanceKey) -> None: ...

    def instance_size(self, key: InstanceKey) -> int: ...

    def iter_instance(self, key: InstanceKey, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def put_metadata(self, key: InstanceKey, body: bytes) -> None: ...

    def get_metadata(self, key: InstanceKey) -> tuple[bytes, str]:
        """Return the metadata JSON and its ETag."""

    def delete_metadata(self, key: InstanceKey) -> None: ...


class IndexStore(Protocol):
    """Searchable documents for studies, series and instances."""

    def ensure_schema(self) -> None: ...

    def add_instance(self, instance: IndexedInstance) -> None:
        """Index an instance and bring its series and study aggregates up to date."""

    def remove_instance(self, key: InstanceKey) -> None: ...

    def remove_instances(self, keys: Sequence[InstanceKey]) -> None:
        """Unindex instances and refresh the aggregates of their series and studies."""

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]: ...

    def list_instance_details(self, study: StudyKey, series_instance_uid: str | None = None) -> list[IndexedInstance]:
        """The instances of a study or series with transfer syntax, size and store time."""

    def get_instance(self, key: InstanceKey) -> IndexedInstance | None: ...

    def study_snapshot(self, study: StudyKey) -> StudySnapshot | None:
        """Everything indexed about one study, or None when it has no instance."""

    def list_studies(self, partition: str, patient_id: str | None = None) -> Iterator[StudyKey]: ...

    def search(self, query: SearchQuery) -> QueryPage:
        """Run a QIDO search at the query's level."""


class SyncQueue(Protocol):
    """The fhir-sync queue: one message per changed study."""

    def ensure_queue(self) -> None: ...

    def enqueue_studies(self, studies: Sequence[StudyKey]) -> None: ...
