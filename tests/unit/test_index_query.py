"""The Cosmos SQL builder: every value is a parameter, never spliced into the SQL text."""

from __future__ import annotations

from typing import Any

from dicomserver.identifiers import Level
from dicomserver.qido import Resource, parse_search
from dicomserver.stores.azure.index import _condition
from dicomserver.stores.model import Match, MatchKind

HOSTILE = "x' OR 1=1 --"


def sql(match: Match) -> tuple[str, list[dict[str, Any]]]:
    params: list[dict[str, Any]] = []
    return _condition(match, params), params


def test_each_match_kind_becomes_parameterised_sql() -> None:
    assert sql(Match("PatientID", MatchKind.EXACT, ("p1",))) == (
        "c.q.PatientID = @p0",
        [{"name": "@p0", "value": "p1"}],
    )
    assert (
        sql(Match("StudyInstanceUID", MatchKind.ANY_OF, ("1.2", "1.3")))[0] == "ARRAY_CONTAINS(@p0, c.StudyInstanceUID)"
    )
    assert sql(Match("ModalitiesInStudy", MatchKind.CONTAINS, ("CT",)))[0] == "ARRAY_CONTAINS(c.ModalitiesInStudy, @p0)"
    assert sql(Match("StudyDate", MatchKind.RANGE, ("20200101", "")))[0] == "(c.q.StudyDate >= @p0)"
    assert sql(Match("StudyDate", MatchKind.RANGE, ("", "20201231")))[0] == "(c.q.StudyDate <= @p0)"
    assert sql(Match("StudyDate", MatchKind.RANGE, ("20200101", "20201231")))[0] == (
        "(c.q.StudyDate >= @p0 AND c.q.StudyDate <= @p1)"
    )
    fuzzy, params = sql(Match("PatientName", MatchKind.FUZZY_PERSON_NAME, ("jo", "do")))
    assert fuzzy == (
        "EXISTS(SELECT VALUE w FROM w IN c.q.PatientNameWords WHERE STARTSWITH(w, @p0)) AND "
        "EXISTS(SELECT VALUE w FROM w IN c.q.PatientNameWords WHERE STARTSWITH(w, @p1))"
    )
    assert [p["value"] for p in params] == ["jo", "do"]
    assert sql(Match("StudyDescription", MatchKind.WILDCARD, ("^a.*$",)))[0] == "RegexMatch(c.q.StudyDescription, @p0)"


def test_hostile_values_only_ever_reach_parameters() -> None:
    search = parse_search(
        Resource(Level.INSTANCE),
        [("PatientID", HOSTILE), ("StudyDescription", HOSTILE + "*"), ("PatientName", HOSTILE), ("Modality", HOSTILE)],
    )
    query = search.query
    for match in query.study_matches + query.series_matches:
        text, params = sql(match)
        assert "OR 1=1" not in text and "'" not in text
        assert any("x'" in str(p["value"]) for p in params)  # the value, quote and all, is a parameter


def test_numbers_and_order_by() -> None:
    from dicomserver.stores.azure.index import _order_by
    from dicomserver.stores.model import SearchQuery

    assert sql(Match("InstanceNumber", MatchKind.NUMBER, ("7",))) == (
        "c.q.InstanceNumber = @p0",
        [{"name": "@p0", "value": 7}],
    )
    assert sql(Match("SOPClassUID", MatchKind.EXACT, ("1.2",)))[0] == "c.SOPClassUID = @p0"
    assert _order_by(SearchQuery(Level.STUDY)) == "ORDER BY c.sortKey ASC"
    desc = SearchQuery(Level.STUDY, order_by=(("StudyDate", True),))
    assert _order_by(desc) == "ORDER BY c.q.StudyDate DESC, c.sortKey DESC"


def test_any_attribute_matches_test_every_value_of_x() -> None:
    assert sql(Match("00181030", MatchKind.EXACT, ("head",))) == (
        'EXISTS(SELECT VALUE v FROM v IN c.x["00181030"] WHERE v = @p0)',
        [{"name": "@p0", "value": "head"}],
    )
    assert sql(Match("00180050", MatchKind.NUMBER, ("1.25",)))[1] == [{"name": "@p0", "value": 1.25}]
    text, params = sql(Match("00080022", MatchKind.RANGE, ("20200101", HOSTILE)))
    assert text == 'EXISTS(SELECT VALUE v FROM v IN c.x["00080022"] WHERE (v >= @p0 AND v <= @p1))'
    assert params[1]["value"] == HOSTILE
