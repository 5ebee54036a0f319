"""QIDO-RS: search for studies (PS3.18 §10.6; Azure v2 "Search (QIDO-RS)").

Parsing turns query parameters into a :class:`StudyQuery` of normalised
:class:`Match` conditions (see :mod:`dicomserver.matching`); the index turns
that into Cosmos SQL.  Rules, as in Azure v2:

* known parameters (``limit``, ``offset``, ``includefield``,
  ``fuzzymatching``) are case-insensitive; every other key is an attribute,
  given as a keyword or an 8-hex-digit tag, and must be searchable at the
  resource's level, else 400;
* a repeated attribute or an empty value is a 400;
* dates (StudyDate, PatientBirthDate) match exactly or by inclusive range
  ``from-to``, either end open but not both;
* person names match ignoring case and accents; with ``fuzzymatching=true``
  every word of the value must be the prefix of a word of the name;
* StudyInstanceUID accepts a comma-separated list (PS3.18 §8.3.4.1);
* ``limit`` is 1-200 (default 100); ``offset`` ≥ 0.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from .attributes import (
    DATE_ATTRIBUTES,
    PERSON_NAME_ATTRIBUTES,
    STUDY_ALL_EXTRA,
    STUDY_DEFAULT,
    STUDY_SEARCHABLE,
    UID_ATTRIBUTES,
)
from .dicomjson import tag_key
from .errors import BadRequest
from .identifiers import is_valid_uid
from .matching import fold_person_name, fold_text, person_name_words
from .stores import IndexStore
from .stores.model import Match, MatchKind, StudyQuery, StudyRecord

DEFAULT_LIMIT = 100
MAX_LIMIT = 200

_TAG_HEX = re.compile(r"[0-9A-Fa-f]{8}")
_MODALITIES_IN_STUDY = 0x00080061
_NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
_NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
_COMPUTED_STUDY = (_MODALITIES_IN_STUDY, _NUMBER_OF_STUDY_RELATED_SERIES, _NUMBER_OF_STUDY_RELATED_INSTANCES)


@dataclass(frozen=True, slots=True)
class StudySearch:
    """A parsed /studies search: the query and the attributes to return."""

    query: StudyQuery
    include: frozenset[int]


def _keyword(name: str) -> str:
    """Resolve a keyword or an 8-hex-digit tag to a keyword (400 if unknown)."""
    if _TAG_HEX.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise BadRequest(f"The attribute '{name}' is not a known DICOM tag.")
        return keyword
    if tag_for_keyword(name) is None:
        raise BadRequest(f"The query parameter '{name}' is not supported: it is not a known DICOM keyword.")
    return name


def _parse_date(text: str, keyword: str) -> str:
    if not re.fullmatch(r"\d{8}", text):
        raise BadRequest(f"The {keyword} value '{text}' is not a date in the form YYYYMMDD.")
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise BadRequest(f"The {keyword} value '{text}' is not a valid date.") from None
    return text


def _date_match(keyword: str, value: str) -> Match:
    if "-" not in value:
        day = _parse_date(value, keyword)
        return Match(keyword, MatchKind.RANGE, (day, day))
    low, sep, high = value.partition("-")
    if not low and not high:
        raise BadRequest(f"The {keyword} range '{value}' has no start and no end.")
    low_v = _parse_date(low, keyword) if low else ""
    high_v = _parse_date(high, keyword) if high else ""
    if low_v and high_v and low_v > high_v:
        raise BadRequest(f"The {keyword} range '{value}' starts after it ends.")
    return Match(keyword, MatchKind.RANGE, (low_v, high_v))


def _match(keyword: str, value: str, fuzzy: bool) -> Match:
    if keyword in UID_ATTRIBUTES:
        uids = tuple(u.strip() for u in value.replace("\\", ",").split(","))
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(f"The {keyword} value '{uid}' is not a valid UID.")
        return Match(keyword, MatchKind.ANY_OF if len(uids) > 1 else MatchKind.EXACT, uids)
    if keyword in DATE_ATTRIBUTES:
        return _date_match(keyword, value)
    if keyword in PERSON_NAME_ATTRIBUTES:
        if fuzzy:
            words = tuple(person_name_words(value))
            if not words:
                raise BadRequest(f"The {keyword} value '{value}' has no name words to match.")
            return Match(keyword, MatchKind.FUZZY_PERSON_NAME, words)
        return Match(keyword, MatchKind.PERSON_NAME, (fold_person_name(value),))
    if keyword == "ModalitiesInStudy":
        return Match(keyword, MatchKind.CONTAINS, (value.strip().upper(),))
    return Match(keyword, MatchKind.EXACT, (fold_text(value),))


def _int_param(name: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"The {name} value '{value}' is not an integer.") from None
    if number < low or (high is not None and number > high):
        upper = f" and {high}" if high is not None else ""
        raise BadRequest(f"The {name} value {number} is out of range: it must be between {low}{upper}.")
    return number


def parse_study_search(params: Iterable[tuple[str, str]]) -> StudySearch:
    """Parse the query parameters of ``GET /studies``.

    Raises
    ------
    BadRequest
        Naming the offending parameter or value.
    """
    pairs = list(params)
    fuzzy = False
    limit, offset = DEFAULT_LIMIT, 0
    include: set[int] = set()
    include_all = False
    filters: dict[str, str] = {}
    seen_known: set[str] = set()
    for name, value in pairs:
        lower = name.lower()
        if lower in ("limit", "offset", "fuzzymatching"):
            if lower in seen_known:
                raise BadRequest(f"The query parameter '{name}' is repeated.")
            seen_known.add(lower)
        if lower == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadRequest(f"The fuzzymatching value '{value}' must be true or false.")
            fuzzy = value.lower() == "true"
        elif lower == "limit":
            limit = _int_param("limit", value, 1, MAX_LIMIT)
        elif lower == "offset":
            offset = _int_param("offset", value, 0, None)
        elif lower == "includefield":
            for field_name in (v.strip() for v in value.split(",")):
                if not field_name:
                    raise BadRequest("The includefield parameter has an empty value.")
                if field_name.lower() == "all":
                    include_all = True
                    continue
                include.add(int(tag_for_keyword(_keyword(field_name)) or 0))
        else:
            keyword = _keyword(name)
            if keyword in filters:
                raise BadRequest(f"The query attribute '{name}' is repeated.")
            if not value.strip():
                raise BadRequest(f"The query attribute '{name}' has an empty value.")
            if keyword not in STUDY_SEARCHABLE:
                raise BadRequest(f"The attribute '{name}' is not searchable at the study level.")
            filters[keyword] = value
    if include_all and include:
        raise BadRequest("includefield=all cannot be combined with other includefield values.")
    matches = tuple(_match(k, v, fuzzy) for k, v in filters.items())
    returned = set(STUDY_DEFAULT) | include
    if include_all:
        returned |= set(STUDY_ALL_EXTRA) | set(_COMPUTED_STUDY)
    for keyword in filters:
        returned.add(int(tag_for_keyword(keyword) or 0))
    return StudySearch(StudyQuery(matches, limit, offset), frozenset(returned))


def study_result(record: StudyRecord, include: frozenset[int]) -> dict[str, Any]:
    """Build the DICOM JSON of one study result."""
    out: dict[str, Any] = {}
    for tag in sorted(include):
        key = tag_key(tag)
        if tag == _MODALITIES_IN_STUDY:
            out[key] = (
                {"vr": "CS", "Value": list(record.modalities_in_study)} if record.modalities_in_study else {"vr": "CS"}
            )
        elif tag == _NUMBER_OF_STUDY_RELATED_SERIES:
            out[key] = {"vr": "IS", "Value": [record.number_of_series]}
        elif tag == _NUMBER_OF_STUDY_RELATED_INSTANCES:
            out[key] = {"vr": "IS", "Value": [record.number_of_instances]}
        elif key in record.attrs:
            out[key] = record.attrs[key]
    return out


async def search_for_studies(*, index: IndexStore, params: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Search for studies (PS3.18 §10.6.1); an empty list means 204.

    Raises
    ------
    BadRequest
        For an invalid query.
    """
    search = parse_study_search(params)
    page = await asyncio.to_thread(index.search_studies, search.query)
    return [study_result(record, search.include) for record in page.items]
