"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6; Azure v2 "Search (QIDO-RS)").

Parsing turns query parameters into a :class:`SearchQuery` of normalised
:class:`Match` conditions grouped by level (see :mod:`dicomserver.matching`);
the index turns that into Cosmos SQL (:mod:`dicomserver.stores.azure.index`).

Rules, as in Azure v2 unless marked "PS3.18":

* known parameters (``limit``, ``offset``, ``includefield``, ``orderby``,
  ``fuzzymatching``, and PS3.18's ``accept`` and ``charset``) are case-insensitive; every other key is an attribute,
  given as a keyword or an 8-hex-digit tag, and must be searchable at the
  resource (:data:`SEARCHABLE`), else 400;
* a repeated attribute or an empty value is a 400;
* dates (StudyDate, PatientBirthDate, PerformedProcedureStepStartDate)
  match exactly or by inclusive range ``from-to``, either end open but not both;
  times (StudyTime, PerformedProcedureStepStartTime) likewise, to the precision given
  (``10`` is 10:00:00-10:59:59.999999); IS values (SeriesNumber, InstanceNumber) by
  numeric equality.  PS3.18 Table 10.6.1-5's keys StudyTime, StudyID, SeriesNumber,
  SeriesDescription, PerformedProcedureStepStartTime, SOPClassUID and InstanceNumber
  match only instances stored since they became searchable (older index documents lack them);
  RequestAttributesSequence keys are not searchable;
* person names match ignoring case and accents; with ``fuzzymatching=true``
  every word of the value must be the prefix of a word of the name;
* other strings match ignoring case;
* PS3.18 §8.3.4.1: ``*`` and ``?`` wildcards in string and name values, and
  comma-separated UID lists;
* caps: a value is at most :data:`MAX_VALUE_LENGTH` characters with at most
  :data:`MAX_WILDCARDS` ``*`` (runs collapsed); ``offset`` at most :data:`MAX_OFFSET`;
* results carry, without includefield, PS3.18's required attributes (Tables
  10.6.3-3/-4/-5; a superset of Azure v2's minimal defaults, see
  :mod:`dicomserver.attributes`): the level's own; ``/series`` adds the
  study's, ``/instances`` the study's and series', ``/studies/{s}/instances``
  the series'; plus the computed ModalitiesInStudy, Number-of-Related
  counts, InstanceAvailability (``ONLINE``: everything stored is) and
  RetrieveURL (absolute, when the caller passes the base URL); an attribute
  the stored instance lacks is omitted; ``includefield=all`` adds the rest of
  the level's indexed attributes;
* ``limit`` is 1-200 (default 100); ``offset`` ≥ 0; results are in the order
  the index received them (oldest first), so offset paging never repeats or
  skips a result while data is being added (Azure pages newest-first and can);
* ``orderby=[-]Keyword`` (as dcm4chee; one attribute of the result level, see
  :data:`dicomserver.attributes.ORDER_KEYS`, else 400) sorts by that attribute, ``-``
  descending, ties in arrival order (reversed when descending); documents without the
  attribute come first ascending, last descending;
* ``.../count`` (as dcm4chee) answers ``{"count": N}`` for the same filters;
* extended query tags (:mod:`dicomserver.extended_query_tags`) are searchable once ``Ready``, at
  their level and below (a Study tag on ``/studies``, ``/series`` and ``/instances``; a Series tag on
  series and instances; an Instance tag on instances), matched by their declared VR like
  any-attribute keys (plus fuzzy prefix matching of PN with ``fuzzymatching=true``), and returned
  at their level when they are match keys or includefields.  A tag whose ``queryStatus`` is
  ``Disabled`` is a 400 (as Azure's QueryParser); a tag with indexing errors is named in the
  ``erroneous-dicom-attributes`` response header (:attr:`SearchResults.erroneous_attributes`).  A
  private tag is searchable only when declared.  The tag list is read at most once per request
  (reused for a few seconds: :data:`~dicomserver.stores.model.EXTENDED_TAGS_MAX_AGE_SECONDS`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from . import negotiation
from .attributes import (
    DATE_ATTRIBUTES,
    INSTANCE_ALL_EXTRA,
    INSTANCE_DEFAULT,
    INSTANCE_KEYS,
    NUMBER_ATTRIBUTES,
    ORDER_KEYS,
    PERSON_NAME_ATTRIBUTES,
    SERIES_ALL_EXTRA,
    SERIES_DEFAULT,
    SERIES_KEYS,
    STUDY_ALL_EXTRA,
    STUDY_DEFAULT,
    STUDY_KEYS,
    TIME_ATTRIBUTES,
    UID_ATTRIBUTES,
)
from .dicomjson import keyword_tag, tag_key
from .errors import BadRequest
from .extended_query_tags import query_tags, tag_name
from .identifiers import DEFAULT_PARTITION, Level, is_valid_uid
from .matching import (
    DECIMAL_VRS,
    INTEGER_VRS,
    SEARCHABLE_VRS,
    fold_decimal,
    fold_number,
    fold_person_name,
    fold_text,
    fold_time,
    person_name_words,
)
from .stores import ExtendedQueryTagStore, IndexStore
from .stores.model import ExtendedQueryTag, ExtendedQueryTagStatus, Match, MatchKind, QueryStatus, Record, SearchQuery
from .urls import DicomWebUrl

DEFAULT_LIMIT = 100
MAX_LIMIT = 200
#: Largest ``offset``: paging costs the index ``offset + limit`` rows (no OFFSET in the stand-in), so
#: deeper pages are refused rather than scanned into memory.
MAX_OFFSET = 10_000
#: Most ``*`` wildcards in one value (after runs of ``*`` are collapsed): each one multiplies the
#: backtracking of the regular expression the index evaluates on every candidate document.
MAX_WILDCARDS = 4
#: Longest value of one query attribute.
MAX_VALUE_LENGTH = 1024

_KEY_LEVEL = {
    **{k: Level.STUDY for k in STUDY_KEYS},
    **{k: Level.SERIES for k in SERIES_KEYS},
    **{k: Level.INSTANCE for k in INSTANCE_KEYS},
}

_TAG_HEX = re.compile(r"[0-9A-Fa-f]{8}")
_MODALITIES_IN_STUDY = keyword_tag("ModalitiesInStudy")
_NUMBER_OF_STUDY_RELATED_SERIES = keyword_tag("NumberOfStudyRelatedSeries")
_NUMBER_OF_STUDY_RELATED_INSTANCES = keyword_tag("NumberOfStudyRelatedInstances")
_NUMBER_OF_SERIES_RELATED_INSTANCES = keyword_tag("NumberOfSeriesRelatedInstances")
_STUDY_INSTANCE_UID = keyword_tag("StudyInstanceUID")
_SERIES_INSTANCE_UID = keyword_tag("SeriesInstanceUID")
_SOP_INSTANCE_UID = keyword_tag("SOPInstanceUID")
_RETRIEVE_URL = keyword_tag("RetrieveURL")
_INSTANCE_AVAILABILITY = keyword_tag("InstanceAvailability")

#: Computed attributes PS3.18 requires in every result of the level (besides the stored ones).
_STUDY_COMPUTED = frozenset(
    {
        _MODALITIES_IN_STUDY,
        _NUMBER_OF_STUDY_RELATED_SERIES,
        _NUMBER_OF_STUDY_RELATED_INSTANCES,
        _INSTANCE_AVAILABILITY,
        _RETRIEVE_URL,
    }
)
_SERIES_COMPUTED = frozenset({_NUMBER_OF_SERIES_RELATED_INSTANCES, _RETRIEVE_URL})
_INSTANCE_COMPUTED = frozenset({_INSTANCE_AVAILABILITY, _RETRIEVE_URL})


@dataclass(frozen=True, slots=True)
class Resource:
    """A QIDO resource: the result level and which path UIDs it has."""

    level: Level
    study_in_path: bool = False
    series_in_path: bool = False

    @property
    def searchable(self) -> tuple[str, ...]:
        """Attributes that may be matched here (Azure v2 searchable-attributes table)."""
        if self.level is Level.STUDY:
            return STUDY_KEYS
        if self.level is Level.SERIES:
            return SERIES_KEYS if self.study_in_path else STUDY_KEYS + SERIES_KEYS
        if self.series_in_path:
            return INSTANCE_KEYS
        if self.study_in_path:
            return SERIES_KEYS + INSTANCE_KEYS
        return STUDY_KEYS + SERIES_KEYS + INSTANCE_KEYS

    def defaults(self, include_all: bool) -> set[int]:
        """Attributes returned without includefield (and with ``includefield=all``).

        PS3.18 §10.6.3.3: the level's Table 10.6.3-3/-4/-5 attributes; ``/series`` adds the study's,
        ``/instances`` the study's and series', ``/studies/{s}/instances`` the series'.
        ``includefield=all`` adds the rest of the level's indexed attributes.
        """
        study = set(STUDY_DEFAULT) | _STUDY_COMPUTED
        # NumberOfSeriesRelatedInstances is kept on the series documents only, so instance results omit it.
        series = set(SERIES_DEFAULT) | (_SERIES_COMPUTED - {_NUMBER_OF_SERIES_RELATED_INSTANCES})
        if self.level is Level.STUDY:
            tags = study
            if include_all:
                tags |= set(STUDY_ALL_EXTRA)
            return tags
        if self.level is Level.SERIES:
            tags = set(SERIES_DEFAULT) | _SERIES_COMPUTED | {_STUDY_INSTANCE_UID}
            if not self.study_in_path:
                tags |= study
            if include_all:
                tags |= set(SERIES_ALL_EXTRA)
            return tags
        tags = set(INSTANCE_DEFAULT) | _INSTANCE_COMPUTED | {_STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID}
        if not self.series_in_path:
            tags |= series
        if not self.study_in_path:
            tags |= study
        if include_all:
            tags |= set(INSTANCE_ALL_EXTRA)
        return tags


@dataclass(frozen=True, slots=True)
class Search:
    """A parsed search: the index query and the attributes to return."""

    query: SearchQuery
    include: frozenset[int]
    #: Extended query tags of the query that have indexing errors (keyword, or path when private).
    erroneous: tuple[str, ...] = ()


class SearchResults(list[dict[str, Any]]):
    """The results of a search (a list of DICOM JSON datasets) and what its response header says."""

    #: Extended query tags of the query with indexing errors (``erroneous-dicom-attributes``).
    erroneous_attributes: tuple[str, ...] = ()


_LEVEL_RANK = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}


def _extended_levels(resource: Resource) -> frozenset[Level]:
    """The levels whose extended query tags may be matched at ``resource`` (as the core keys)."""
    if resource.level is Level.STUDY:
        return frozenset({Level.STUDY})
    if resource.level is Level.SERIES:
        return frozenset({Level.SERIES}) if resource.study_in_path else frozenset({Level.STUDY, Level.SERIES})
    if resource.series_in_path:
        return frozenset({Level.INSTANCE})
    if resource.study_in_path:
        return frozenset({Level.SERIES, Level.INSTANCE})
    return frozenset(Level)


def _ready_tag(name: str, extended: Mapping[str, ExtendedQueryTag]) -> ExtendedQueryTag | None:
    """The Ready extended query tag ``name`` (8 hex digits or keyword) names, if any."""
    if not extended:
        return None
    if _TAG_HEX.fullmatch(name):
        path = name.upper()
    else:
        tag = tag_for_keyword(name)
        if tag is None:
            return None
        path = f"{int(tag):08X}"
    found = extended.get(path)
    return found if found is not None and found.status is ExtendedQueryTagStatus.READY else None


def _keyword(name: str) -> str:
    """Resolve a keyword or an 8-hex-digit tag to a keyword (400 if unknown or private)."""
    if _TAG_HEX.fullmatch(name):
        if int(name[:4], 16) % 2:
            raise BadRequest(f"The attribute '{name}' is a private tag: private attributes are not searchable.")
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
    low, _, high = value.partition("-")
    if not low and not high:
        raise BadRequest(f"The {keyword} range '{value}' has no start and no end.")
    low_v = _parse_date(low, keyword) if low else ""
    high_v = _parse_date(high, keyword) if high else ""
    if low_v and high_v and low_v > high_v:
        raise BadRequest(f"The {keyword} range '{value}' starts after it ends.")
    return Match(keyword, MatchKind.RANGE, (low_v, high_v))


def _time_match(keyword: str, value: str) -> Match:
    """TM: exact (to the precision given: ``10`` is 10:00-10:59:59.999999) or inclusive range ``from-to``."""

    def parse(text: str, upper: bool) -> str:
        folded = fold_time(text, upper=upper)
        if folded is None:
            raise BadRequest(f"The {keyword} value '{text}' is not a time in the form HHMMSS.FFFFFF.")
        return folded

    if "-" not in value:
        return Match(keyword, MatchKind.RANGE, (parse(value, False), parse(value, True)))
    low, _, high = value.partition("-")
    if not low and not high:
        raise BadRequest(f"The {keyword} range '{value}' has no start and no end.")
    low_v = parse(low, False) if low else ""
    high_v = parse(high, True) if high else ""
    if low_v and high_v and low_v > high_v:
        raise BadRequest(f"The {keyword} range '{value}' starts after it ends.")
    return Match(keyword, MatchKind.RANGE, (low_v, high_v))


def _wildcard_regex(folded: str) -> str:
    """Anchored regular expression for a folded value with ``*`` / ``?`` wildcards.

    Runs of ``*`` are one ``*``; more than :data:`MAX_WILDCARDS` of them is a 400.
    """
    folded = re.sub(r"\*+", "*", folded)
    if folded.count("*") > MAX_WILDCARDS:
        raise BadRequest(f"The value '{folded}' has more than {MAX_WILDCARDS} '*' wildcards.")
    pieces = []
    for ch in folded:
        pieces.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "^" + "".join(pieces) + "$"


def _match(keyword: str, value: str, fuzzy: bool) -> Match:
    if keyword in UID_ATTRIBUTES:
        uids = tuple(u.strip() for u in value.replace("\\", ",").split(","))
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(f"The {keyword} value '{uid}' is not a valid UID.")
        return Match(keyword, MatchKind.ANY_OF if len(uids) > 1 else MatchKind.EXACT, uids)
    if keyword in DATE_ATTRIBUTES:
        return _date_match(keyword, value)
    if keyword in TIME_ATTRIBUTES:
        return _time_match(keyword, value)
    if keyword in NUMBER_ATTRIBUTES:
        number = fold_number(value)
        if number is None:
            raise BadRequest(f"The {keyword} value '{value}' is not an integer.")
        return Match(keyword, MatchKind.NUMBER, (str(number),))
    wildcard = "*" in value or "?" in value
    if keyword in PERSON_NAME_ATTRIBUTES:
        if wildcard:  # "*" and "?" are not name separators, so folding keeps them
            return Match(keyword, MatchKind.WILDCARD, (_wildcard_regex(fold_person_name(value)),))
        if fuzzy:
            words = tuple(person_name_words(value))
            if not words:
                raise BadRequest(f"The {keyword} value '{value}' has no name words to match.")
            return Match(keyword, MatchKind.FUZZY_PERSON_NAME, words)
        return Match(keyword, MatchKind.PERSON_NAME, (fold_person_name(value),))
    if keyword == "ModalitiesInStudy":
        if wildcard:
            raise BadRequest("ModalitiesInStudy does not accept wildcards.")
        return Match(keyword, MatchKind.CONTAINS, (value.strip().upper(),))
    if wildcard:
        return Match(keyword, MatchKind.WILDCARD, (_wildcard_regex(fold_text(value)),))
    return Match(keyword, MatchKind.EXACT, (fold_text(value),))


def _any_vr(keyword: str) -> str:
    """The dictionary VR of ``keyword`` when any-attribute search supports it, else 400."""
    tag = int(tag_for_keyword(keyword) or 0)
    try:
        vrs = [vr.strip() for vr in dictionary_VR(tag).split(" or ")]
    except KeyError:
        vrs = []
    if not vrs or any(vr not in SEARCHABLE_VRS for vr in vrs):
        shown = " or ".join(vrs) or "unknown"
        raise BadRequest(f"The attribute '{keyword}' (VR {shown}) is not searchable (sequence or binary value).")
    return vrs[0]


def _any_match(keyword: str, value: str) -> Match:
    """A match on an attribute outside the core keys, by its VR; ``Match.keyword`` is its 8-hex tag.

    Same rules as the core keys: UID lists, DA/TM ranges (DT: ``from-to`` by prefix), numbers
    compared numerically (IS, DS and the binary number VRs), PN ignoring case and accents, other
    strings ignoring case, ``*``/``?`` wildcards in strings and names.  No fuzzy matching.
    """
    return _vr_match(f"{int(tag_for_keyword(keyword) or 0):08X}", keyword, _any_vr(keyword), value)


def _vr_match(tag: str, keyword: str, vr: str, value: str, fuzzy: bool = False) -> Match:
    """A match on the ``x`` values of ``tag`` (any attribute, or an extended query tag of VR ``vr``).

    ``fuzzy`` (extended query tags, ``fuzzymatching=true``): every word of a PN value is the prefix
    of a word of the name.
    """
    wildcard = "*" in value or "?" in value
    if vr == "PN" and fuzzy and not wildcard:
        words = tuple(person_name_words(value))
        if not words:
            raise BadRequest(f"The {keyword} value '{value}' has no name words to match.")
        return Match(tag, MatchKind.FUZZY_PERSON_NAME, words)
    if vr == "UI":
        uids = tuple(u.strip() for u in value.replace("\\", ",").split(","))
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(f"The {keyword} value '{uid}' is not a valid UID.")
        return Match(tag, MatchKind.ANY_OF if len(uids) > 1 else MatchKind.EXACT, uids)
    if vr == "DA":
        return Match(tag, MatchKind.RANGE, _date_match(keyword, value).values)
    if vr == "TM":
        return Match(tag, MatchKind.RANGE, _time_match(keyword, value).values)
    if vr == "DT":
        low, sep, high = value.partition("-")
        for part in (low, high):
            if part and not re.fullmatch(r"\d{4,14}(\.\d{1,6})?", part):
                raise BadRequest(f"The {keyword} value '{part}' is not a date-time (YYYYMMDDHHMMSS.FFFFFF).")
        if not sep:
            return Match(tag, MatchKind.RANGE, (low, low + "\uffff"))
        if not low and not high:
            raise BadRequest(f"The {keyword} range '{value}' has no start and no end.")
        return Match(tag, MatchKind.RANGE, (low, high + "\uffff" if high else ""))
    if vr in INTEGER_VRS or vr in DECIMAL_VRS:
        number = fold_number(value) if vr in INTEGER_VRS else fold_decimal(value)
        if number is None:
            kind = "an integer" if vr in INTEGER_VRS else "a number"
            raise BadRequest(f"The {keyword} value '{value}' is not {kind}.")
        return Match(tag, MatchKind.NUMBER, (str(number),))
    fold = fold_person_name if vr == "PN" else fold_text
    if wildcard:
        return Match(tag, MatchKind.WILDCARD, (_wildcard_regex(fold(value)),))
    return Match(tag, MatchKind.PERSON_NAME if vr == "PN" else MatchKind.EXACT, (fold(value),))


def _int_param(name: str, value: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"The {name} value '{value}' is not an integer.") from None
    if number < low or (high is not None and number > high):
        upper = f" and {high}" if high is not None else ""
        raise BadRequest(f"The {name} value {number} is out of range: it must be between {low}{upper}.")
    return number


def _order_by(resource: Resource, value: str) -> tuple[str, bool]:
    """One ``orderby`` key: an attribute of the result level, ``-`` prefixed for descending."""
    names = [v.strip() for v in value.split(",")]
    if len(names) != 1 or not names[0]:
        raise BadRequest("The orderby parameter takes one attribute (optionally prefixed with '-').")
    name = names[0]
    descending = name.startswith("-")
    keyword = _keyword(name.removeprefix("-").removeprefix("+").strip())
    if keyword not in ORDER_KEYS[resource.level]:
        supported = ", ".join(ORDER_KEYS[resource.level])
        raise BadRequest(f"The orderby attribute '{name}' is not supported here; use one of: {supported}.")
    return keyword, descending


def parse_search(
    resource: Resource,
    params: Iterable[tuple[str, str]],
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    count_only: bool = False,
    any_attribute: bool = True,
    extended: Mapping[str, ExtendedQueryTag] | None = None,
    partition: str = DEFAULT_PARTITION,
) -> Search:
    """Parse the query parameters of a QIDO request.

    ``any_attribute`` (the index's :attr:`~dicomserver.stores.IndexStore.searches_any_attribute`,
    from ``DICOM_SEARCH_ANY_ATTRIBUTE``) lets keys outside the core keys (:data:`SEARCHABLE`) match
    (:func:`_any_match`); a core key keeps its own rules.  ``extended``: the declared extended query
    tags by path (only ``Ready`` ones are searchable, see the module docstring).

    Raises
    ------
    BadRequest
        Naming the offending parameter or value.
    """
    fuzzy = False
    limit, offset = DEFAULT_LIMIT, 0
    include: set[int] = set()
    include_all = False
    filters: dict[str, str] = {}
    seen_known: set[str] = set()
    order_by: tuple[tuple[str, bool], ...] = ()
    extended = extended or {}
    tags: dict[str, ExtendedQueryTag] = {}  # extended query tags matched or included, by path
    erroneous: list[str] = []
    allowed_levels = _extended_levels(resource)
    for name, value in params:
        lower = name.lower()
        if lower in ("limit", "offset", "fuzzymatching", "orderby"):
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
            offset = _int_param("offset", value, 0, MAX_OFFSET)
        elif lower == "orderby":
            order_by = (_order_by(resource, value),)
        elif lower in ("accept", "charset"):
            continue  # PS3.18 §8.3.3.1 request parameters, negotiated by the adapter (dicomserver.negotiation)
        elif lower == "includefield":
            for field_name in (v.strip() for v in value.split(",")):
                if not field_name:
                    raise BadRequest("The includefield parameter has an empty value.")
                if field_name.lower() == "all":
                    include_all = True
                    continue
                included = _ready_tag(field_name, extended)
                if included is not None:
                    tags[included.path] = included
                    include.add(int(included.path, 16))
                    continue
                include.add(int(tag_for_keyword(_keyword(field_name)) or 0))
        else:
            declared = _ready_tag(name, extended)
            if declared is not None:
                _check_extended(name, value, declared, allowed_levels, any_attribute, filters)
                if declared.error_count > 0:
                    erroneous.append(tag_name(declared.path))
                tags[declared.path] = declared
                filters[declared.path] = value
                continue
            keyword = _keyword(name)
            if keyword in filters:
                raise BadRequest(f"The query attribute '{name}' is repeated.")
            if not value.strip():
                raise BadRequest(f"The query attribute '{name}' has an empty value.")
            if len(value) > MAX_VALUE_LENGTH:
                raise BadRequest(f"The query attribute '{name}' is longer than {MAX_VALUE_LENGTH} characters.")
            if keyword not in resource.searchable and (not any_attribute or keyword in _KEY_LEVEL):
                raise BadRequest(f"The attribute '{name}' is not searchable at this resource ({resource.level.value}).")
            filters[keyword] = value
    if include_all and include:
        raise BadRequest("includefield=all cannot be combined with other includefield values.")
    by_level: dict[Level, list[Match]] = {level: [] for level in Level}
    others: list[Match] = []
    for keyword, value in filters.items():
        if keyword in tags:
            others.append(_vr_match(keyword, tag_name(keyword), tags[keyword].vr, value, fuzzy))
        elif keyword in _KEY_LEVEL:
            by_level[_KEY_LEVEL[keyword]].append(_match(keyword, value, fuzzy))
        else:
            others.append(_any_match(keyword, value))
    # extended tags are returned at their level and below (a study's tag with its series and instances)
    shown = {path for path, tag in tags.items() if _LEVEL_RANK[tag.level] <= _LEVEL_RANK[resource.level]}
    returned = (resource.defaults(include_all) | include) - {int(path, 16) for path in tags.keys() - shown}
    returned |= {int(tag_for_keyword(keyword) or 0) for keyword in filters if keyword not in tags}
    returned |= {int(path, 16) for path in shown}
    query = SearchQuery(
        level=resource.level,
        study_matches=tuple(by_level[Level.STUDY]),
        series_matches=tuple(by_level[Level.SERIES]),
        instance_matches=tuple(by_level[Level.INSTANCE]),
        attribute_matches=tuple(others),
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        limit=limit,
        offset=offset,
        order_by=order_by,
        count_only=count_only,
        extended_tags=tuple(sorted(shown)) if resource.level is not Level.INSTANCE else (),
        partition=partition,
    )
    return Search(query, frozenset(returned - {0}), tuple(erroneous))


def _check_extended(
    name: str,
    value: str,
    tag: ExtendedQueryTag,
    allowed_levels: frozenset[Level],
    any_attribute: bool,
    filters: Mapping[str, str],
) -> None:
    """400 for a Disabled tag (as Azure's QueryParser), a repeated or empty key, or a tag below the resource."""
    if tag.path in filters:
        raise BadRequest(f"The query attribute '{name}' is repeated.")
    if not value.strip():
        raise BadRequest(f"The query attribute '{name}' has an empty value.")
    if len(value) > MAX_VALUE_LENGTH:
        raise BadRequest(f"The query attribute '{name}' is longer than {MAX_VALUE_LENGTH} characters.")
    if tag.query_status is QueryStatus.DISABLED:
        raise BadRequest(
            f"Query is disabled on specified attribute '{name}': it has {tag.error_count} indexing error(s); "
            'enable it with PATCH .../extendedquerytags/{tagPath} and {"queryStatus": "Enabled"}.'
        )
    if tag.level not in allowed_levels and not any_attribute:
        level = tag.level.value.capitalize()
        raise BadRequest(f"The attribute '{name}' (an extended query tag of level {level}) is not searchable here.")


def _uid(attrs: dict[str, Any], tag: int, fallback: str | None) -> str | None:
    element = attrs.get(tag_key(tag)) or {}
    values = element.get("Value") or ()
    return str(values[0]) if values and values[0] else fallback


def retrieve_url(record: Record, query: SearchQuery, base_url: str) -> str | None:
    """The absolute RetrieveURL of one result (its level is the query's); None when a UID is unknown."""
    study = _uid(record.attrs, _STUDY_INSTANCE_UID, query.study_instance_uid)
    series = (
        _uid(record.attrs, _SERIES_INSTANCE_UID, query.series_instance_uid) if query.level is not Level.STUDY else None
    )
    instance = _uid(record.attrs, _SOP_INSTANCE_UID, None) if query.level is Level.INSTANCE else None
    uids = {Level.STUDY: (study,), Level.SERIES: (study, series), Level.INSTANCE: (study, series, instance)}
    if any(uid is None for uid in uids[query.level]):
        return None
    return DicomWebUrl(base_url.rstrip("/"), query.partition, study, series, instance).url


def result_dataset(
    record: Record,
    include: frozenset[int],
    *,
    level: Level | None = None,
    retrieve_url: str | None = None,
) -> dict[str, Any]:
    """Build the DICOM JSON of one result (of the query's ``level``) from the attributes to return.

    RetrieveURL is returned only when ``retrieve_url`` is given; NumberOfSeriesRelatedInstances
    not for instance results (they do not carry their series' count).
    """
    computed: dict[int, dict[str, Any]] = {
        _MODALITIES_IN_STUDY: {"vr": "CS", "Value": list(record.modalities_in_study)}
        if record.modalities_in_study
        else {"vr": "CS"},
        _NUMBER_OF_STUDY_RELATED_SERIES: {"vr": "IS", "Value": [record.number_of_study_series]},
        _NUMBER_OF_STUDY_RELATED_INSTANCES: {"vr": "IS", "Value": [record.number_of_study_instances]},
        # PS3.4 C.4.23.1.1: every instance this service holds is retrievable at once.
        _INSTANCE_AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]},
    }
    if level is not Level.INSTANCE:
        computed[_NUMBER_OF_SERIES_RELATED_INSTANCES] = {"vr": "IS", "Value": [record.number_of_series_instances]}
    if retrieve_url is not None:
        computed[_RETRIEVE_URL] = {"vr": "UR", "Value": [retrieve_url]}
    out: dict[str, Any] = {}
    for tag in sorted(include):
        key = tag_key(tag)
        if tag in computed:
            out[key] = computed[tag]
        elif tag in (_NUMBER_OF_SERIES_RELATED_INSTANCES, _RETRIEVE_URL):
            continue  # not known here: omitted rather than taken from the stored instance
        elif key in record.attrs:
            out[key] = record.attrs[key]
    return out


async def search(
    *,
    index: IndexStore,
    resource: Resource,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    accept: str | None = None,
    base_url: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> SearchResults:
    """Search at ``resource`` (PS3.18 §10.6.1); an empty list means 204.

    ``base_url`` is the public DICOMweb base (``.../v2``) the results' RetrieveURL values start
    with; without it they have none.  ``extended_tags``: the declared extended query tags (read at
    most once, through the store's short-lived cache).

    Raises
    ------
    NotAcceptable
        When ``accept`` excludes DICOM JSON (checked first).
    BadRequest
        For an invalid query.
    """
    negotiation.dicom_json(accept, "QIDO-RS")
    parsed = parse_search(
        resource,
        params,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        any_attribute=index.searches_any_attribute,
        extended=await _declared_tags(extended_tags),
        partition=partition,
    )
    query = parsed.query
    page = await asyncio.to_thread(index.search, query)
    results = SearchResults(
        result_dataset(
            record,
            parsed.include,
            level=query.level,
            retrieve_url=retrieve_url(record, query, base_url) if base_url is not None else None,
        )
        for record in page.items
    )
    results.erroneous_attributes = parsed.erroneous
    return results


async def _declared_tags(store: ExtendedQueryTagStore | None) -> dict[str, ExtendedQueryTag]:
    return await asyncio.to_thread(query_tags, store) if store is not None else {}


async def search_for_studies(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    accept: str | None = None,
    base_url: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> SearchResults:
    """``GET /studies``."""
    return await search(
        index=index,
        resource=Resource(Level.STUDY),
        params=params,
        accept=accept,
        base_url=base_url,
        extended_tags=extended_tags,
        partition=partition,
    )


async def search_for_series(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    accept: str | None = None,
    base_url: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> SearchResults:
    """``GET /series`` or ``GET /studies/{study}/series``."""
    resource = Resource(Level.SERIES, study_in_path=study_instance_uid is not None)
    return await search(
        index=index,
        resource=resource,
        params=params,
        study_instance_uid=study_instance_uid,
        accept=accept,
        base_url=base_url,
        extended_tags=extended_tags,
        partition=partition,
    )


async def search_for_instances(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    accept: str | None = None,
    base_url: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> SearchResults:
    """``GET /instances``, ``/studies/{s}/instances`` or ``/studies/{s}/series/{se}/instances``."""
    resource = Resource(
        Level.INSTANCE, study_in_path=study_instance_uid is not None, series_in_path=series_instance_uid is not None
    )
    return await search(
        index=index,
        resource=resource,
        params=params,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        accept=accept,
        base_url=base_url,
        extended_tags=extended_tags,
        partition=partition,
    )


async def count(
    *,
    index: IndexStore,
    resource: Resource,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> dict[str, int]:
    """The number of results a search at ``resource`` has (as dcm4chee's ``/count``): ``{"count": N}``.

    The parameters are a search's; ``limit``, ``offset``, ``orderby`` and ``includefield`` are checked
    but have no effect.
    """
    parsed = parse_search(
        resource,
        params,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        count_only=True,
        any_attribute=index.searches_any_attribute,
        extended=await _declared_tags(extended_tags),
        partition=partition,
    )
    page = await asyncio.to_thread(index.search, parsed.query)
    return {"count": page.count or 0}


async def search_for_studies_count(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> dict[str, int]:
    """``GET /studies/count``."""
    return await count(
        index=index, resource=Resource(Level.STUDY), params=params, extended_tags=extended_tags, partition=partition
    )


async def search_for_series_count(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> dict[str, int]:
    """``GET /series/count`` or ``GET /studies/{study}/series/count``."""
    resource = Resource(Level.SERIES, study_in_path=study_instance_uid is not None)
    return await count(
        index=index,
        resource=resource,
        params=params,
        study_instance_uid=study_instance_uid,
        extended_tags=extended_tags,
        partition=partition,
    )


async def search_for_instances_count(
    *,
    index: IndexStore,
    params: Iterable[tuple[str, str]],
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    extended_tags: ExtendedQueryTagStore | None = None,
    partition: str = DEFAULT_PARTITION,
) -> dict[str, int]:
    """``GET /instances/count``, ``/studies/{s}/instances/count`` or ``/studies/{s}/series/{se}/instances/count``."""
    resource = Resource(
        Level.INSTANCE, study_in_path=study_instance_uid is not None, series_in_path=series_instance_uid is not None
    )
    return await count(
        index=index,
        resource=resource,
        params=params,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        extended_tags=extended_tags,
        partition=partition,
    )
