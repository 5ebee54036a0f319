"""Value types that cross the store boundary (Cosmos dicts never leave ``index.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..identifiers import InstanceKey


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


class MatchKind(Enum):
    """How a query value is compared with the indexed value."""

    EXACT = "exact"  # case-insensitive string equality
    ANY_OF = "any_of"  # one of several exact values (UID lists)
    RANGE = "range"  # inclusive; values = (low or "", high or "")
    PERSON_NAME = "person_name"  # case/accent-insensitive equality of the whole name
    FUZZY_PERSON_NAME = "fuzzy_person_name"  # each query word prefixes a name word
    CONTAINS = "contains"  # multi-valued attribute holds the value (ModalitiesInStudy)


@dataclass(frozen=True, slots=True)
class Match:
    """One query condition on one attribute (values already normalised)."""

    keyword: str
    kind: MatchKind
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """A search for studies: all ``matches`` must hold."""

    matches: tuple[Match, ...] = ()
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """A study as the index holds it."""

    attrs: dict[str, Any]
    modalities_in_study: tuple[str, ...]
    number_of_series: int
    number_of_instances: int


@dataclass(frozen=True, slots=True)
class QueryPage:
    """A page of search results."""

    items: list[StudyRecord] = field(default_factory=list)
    request_charge: float = 0.0
