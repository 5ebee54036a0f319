"""Value types that cross the store boundary (Cosmos dicts never leave ``index.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..identifiers import DEFAULT_PARTITION, InstanceKey, Level, StudyKey

#: Metadata JSON up to this many characters is kept in the instance's index document (Cosmos
#: items are limited to 2 MB); larger metadata goes to the metadata blob.
INLINE_METADATA_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class OpenedInstance:
    """An instance blob being read: its size, transfer syntax (if recorded) and chunks."""

    size: int
    transfer_syntax_uid: str | None
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    """What the index keeps about one stored instance.

    ``attrs`` is DICOM JSON of the attributes of every level that QIDO can
    return (see :mod:`dicomserver.attributes`).
    """

    key: InstanceKey
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    attrs: dict[str, Any]
    stored_at: str = ""
    #: Byte ranges of each frame in the instance blob (see :mod:`dicomserver.frames`).
    frames: list[list[list[int]]] | None = None
    #: ``{path: [offset, length, vr]}`` of binary attributes (see :mod:`dicomserver.bulkdata`).
    bulkdata: dict[str, list[Any]] | None = None
    #: The instance's DICOM JSON metadata (an object, as text), kept in the index when small enough.
    metadata_json: str | None = None
    #: Order of arrival (``{ns}|{uid}``); set by the index when empty.
    sort_key: str = ""
    #: The index document's version (read side only).
    etag: str = ""
    #: The metadata lives in the metadata blob (too large for the document).
    metadata_in_blob: bool = False
    #: When the instance's study expires (ISO 8601 UTC; ``msdicom-expiry-*`` headers of its store): the
    #: last store of a study sets or clears its study's expiry (write side only).
    expires_at: str | None = None
    #: The kept original version of the instance blob (a bulk update keeps the first one).
    original_version: str | None = None

    @property
    def large_metadata(self) -> bytes | None:
        """The metadata JSON to keep in the metadata blob: when it is too large for the index document."""
        if self.metadata_json is None or len(self.metadata_json) <= INLINE_METADATA_LIMIT:
            return None
        return self.metadata_json.encode()


class MatchKind(Enum):
    """How a query value is compared with the indexed value."""

    EXACT = "exact"  # case-insensitive string equality
    ANY_OF = "any_of"  # one of several exact values (UID lists)
    RANGE = "range"  # inclusive; values = (low or "", high or "")
    PERSON_NAME = "person_name"  # case/accent-insensitive equality of the whole name
    FUZZY_PERSON_NAME = "fuzzy_person_name"  # each query word prefixes a name word
    CONTAINS = "contains"  # multi-valued attribute holds the value (ModalitiesInStudy)
    WILDCARD = "wildcard"  # PS3.18 §8.3.4.1 "*" and "?" (values = (regex,))
    NUMBER = "number"  # numeric equality of an IS value (values = (str(int),))


@dataclass(frozen=True, slots=True)
class Match:
    """One query condition on one attribute (values already normalised)."""

    keyword: str
    kind: MatchKind
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A QIDO search at one level: every match must hold.

    Matches are grouped by the level of the attribute they test; the path
    UIDs (``/studies/{s}/series/{se}/instances``) narrow the search.
    """

    level: Level
    study_matches: tuple[Match, ...] = ()
    series_matches: tuple[Match, ...] = ()
    instance_matches: tuple[Match, ...] = ()
    #: Matches on attributes outside the core keys (``keyword`` is the 8-hex tag): tested on the
    #: instances' ``x`` values; a study or series matches when one of its instances does.
    attribute_matches: tuple[Match, ...] = ()
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    partition: str = DEFAULT_PARTITION
    limit: int = 100
    offset: int = 0
    #: ``orderby``: ``(keyword, descending)`` of one attribute of the result level; ties (and
    #: everything when empty) in arrival order (``sortKey``), reversed when descending.
    order_by: tuple[tuple[str, bool], ...] = ()
    #: Count the matches (``QueryPage.count``) instead of returning a page.
    count_only: bool = False
    #: Extended query tags (8-hex) to return with study and series results: their values come from
    #: the latest stored instance of each result (instance results carry them already).
    extended_tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Record:
    """One search result: DICOM JSON of every level it covers, and computed values."""

    attrs: dict[str, Any]
    modalities_in_study: tuple[str, ...] = ()
    number_of_study_series: int = 0
    number_of_study_instances: int = 0
    number_of_series_instances: int = 0


@dataclass(frozen=True, slots=True)
class QueryPage:
    """A page of search results."""

    items: list[Record] = field(default_factory=list)
    request_charge: float = 0.0
    #: The number of matches, for a ``count_only`` query.
    count: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    """A series as the index holds it, with its instances' attributes."""

    attrs: dict[str, Any]
    number_of_instances: int
    instances: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StudySnapshot:
    """Everything the index holds about one study (the FHIR sync's input)."""

    key: StudyKey
    attrs: dict[str, Any]
    modalities_in_study: tuple[str, ...]
    number_of_series: int
    number_of_instances: int
    series: list[SeriesSnapshot]
    #: Every indexed instance of the study, with the ISO time it was stored.
    stored_at: dict[InstanceKey, str] = field(default_factory=dict)


class ChangeAction(Enum):
    """What a change feed entry records (Azure v2 ``Action``)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class ChangeState(Enum):
    """The instance's state now, as seen from an entry (Azure v2 ``State``)."""

    CURRENT = "current"
    REPLACED = "replaced"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to log: an instance created, updated or deleted."""

    key: InstanceKey
    action: ChangeAction


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One change feed entry, with the state of its instance now and (when asked and it exists) its metadata."""

    sequence: int
    key: InstanceKey
    action: ChangeAction
    #: When the change was logged: ISO 8601 UTC with microseconds and a ``Z``.
    timestamp: str
    state: ChangeState
    #: The instance's current DICOM JSON (as stored: BulkDataURI placeholders), when it exists and was asked for.
    metadata_json: str | None = None
    #: The instance's metadata lives in the metadata blob (too large for its index document).
    metadata_in_blob: bool = False
    #: The entry was handed to the event publisher.
    published: bool = False
    #: The log record holding the entry (the first sequence number of its document).
    record: int = 0


class OperationStatus(Enum):
    """Status of a long-running operation (Azure v2 ``GET /operations/{id}``)."""

    NOT_STARTED = "notStarted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def done(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELED)


@dataclass(slots=True)
class Operation:
    """A long-running operation (reindex of extended query tags, bulk update).

    ``checkpoint`` is the handler's own state between steps (JSON-serialisable); a step that
    dies is run again from the last saved checkpoint, so each step must be idempotent.
    ``etag`` is the stored version this value was read at (saves are conditional on it).
    """

    id: str
    type: str
    status: OperationStatus
    created: str
    updated: str
    percent_complete: int = 0
    #: Paths (relative to the API base, e.g. ``extendedquerytags/00101010``) of what it works on.
    resources: list[str] = field(default_factory=list)
    #: Type-specific results (bulk update: studyUpdated, instanceUpdated, studyFailed, errors).
    results: dict[str, Any] | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    partition: str = DEFAULT_PARTITION
    etag: str | None = None


#: How long QIDO and STOW may reuse the extended query tag list their process read (seconds): a tag
#: declared, changed or deleted elsewhere is seen at most this late.
EXTENDED_TAGS_MAX_AGE_SECONDS = 5.0


class ExtendedQueryTagStatus(Enum):
    """Lifecycle of an extended query tag (Azure v2 ``status``)."""

    ADDING = "Adding"
    READY = "Ready"
    DELETING = "Deleting"


class QueryStatus(Enum):
    """Whether QIDO may use an extended query tag (Azure v2 ``queryStatus``)."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"


@dataclass(frozen=True, slots=True)
class ExtendedQueryTag:
    """A declared extended query tag (see :mod:`dicomserver.extended_query_tags`).

    ``path`` is the tag as 8 upper-case hex digits; ``generation`` names this declaration (a tag
    deleted and declared again gets a new one, so errors of the old one are never counted again).
    """

    path: str
    vr: str
    level: Level
    private_creator: str | None = None
    status: ExtendedQueryTagStatus = ExtendedQueryTagStatus.ADDING
    query_status: QueryStatus = QueryStatus.ENABLED
    error_count: int = 0
    operation_id: str | None = None
    created: str = ""
    generation: str = ""


@dataclass(frozen=True, slots=True)
class ExtendedQueryTagError:
    """One instance whose value of an extended query tag could not be indexed."""

    key: InstanceKey
    message: str
    created: str = ""
