from __future__ import annotations

import pytest

from dicomserver.errors import BadRequest
from dicomserver.identifiers import Level
from dicomserver.qido import Resource, parse_search, result_dataset
from dicomserver.stores.model import MatchKind, Record
from tests.search import study_search


def matches(*pairs: tuple[str, str]) -> dict[str, tuple[MatchKind, tuple[str, ...]]]:
    search = study_search(pairs)
    return {m.keyword: (m.kind, m.values) for m in search.query.study_matches}


def test_keywords_and_tags_are_both_accepted() -> None:
    assert matches(("00100020", "abc")) == {"PatientID": (MatchKind.EXACT, ("abc",))}
    assert matches(("PatientID", "ABC")) == {"PatientID": (MatchKind.EXACT, ("abc",))}


def test_dates_single_and_ranges() -> None:
    assert matches(("StudyDate", "20200101"))["StudyDate"] == (MatchKind.RANGE, ("20200101", "20200101"))
    assert matches(("StudyDate", "20200101-20201231"))["StudyDate"] == (MatchKind.RANGE, ("20200101", "20201231"))
    assert matches(("StudyDate", "-20201231"))["StudyDate"] == (MatchKind.RANGE, ("", "20201231"))
    assert matches(("StudyDate", "20200101-"))["StudyDate"] == (MatchKind.RANGE, ("20200101", ""))


@pytest.mark.parametrize("value", ["-", "2020", "20201301", "20201231-20200101", "2020-01-01"])
def test_bad_dates_are_rejected(value: str) -> None:
    with pytest.raises(BadRequest, match="StudyDate"):
        study_search([("StudyDate", value)])


def test_person_names_fold_case_and_accents() -> None:
    assert matches(("PatientName", "MÜLLER^Jürgen"))["PatientName"] == (MatchKind.PERSON_NAME, ("muller jurgen",))
    fuzzy = matches(("PatientName", "jo do"), ("fuzzymatching", "true"))
    assert fuzzy["PatientName"] == (MatchKind.FUZZY_PERSON_NAME, ("jo", "do"))


def test_uid_lists() -> None:
    assert matches(("StudyInstanceUID", "1.2,1.3"))["StudyInstanceUID"] == (MatchKind.ANY_OF, ("1.2", "1.3"))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("Foo", "1")], "Foo"),
        ([("SOPInstanceUID", "1.2")], "not searchable"),
        ([("Modality", "CT")], "not searchable"),
        ([("PatientID", "a"), ("PatientID", "b")], "repeated"),
        ([("PatientID", "")], "empty"),
        ([("limit", "0")], "limit"),
        ([("limit", "201")], "limit"),
        ([("offset", "-1")], "offset"),
        ([("limit", "x")], "limit"),
        ([("StudyInstanceUID", "abc")], "abc"),
        ([("includefield", "all"), ("includefield", "StudyTime")], "all"),
        ([("fuzzymatching", "maybe")], "fuzzymatching"),
    ],
)
def test_invalid_queries_are_400_naming_the_problem(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        study_search(pairs)


def test_known_parameters_are_case_insensitive() -> None:
    search = study_search([("LIMIT", "5"), ("Offset", "2")])
    assert (search.query.limit, search.query.offset) == (5, 2)


def test_results_hold_defaults_match_keys_and_computed_attributes() -> None:
    search = study_search([("ModalitiesInStudy", "ct"), ("includefield", "NumberOfStudyRelatedInstances")])
    record = Record(
        attrs={"00100020": {"vr": "LO", "Value": ["P1"]}, "00080030": {"vr": "TM", "Value": ["1015"]}},
        modalities_in_study=("CT", "MR"),
        number_of_study_series=2,
        number_of_study_instances=7,
    )
    out = result_dataset(record, search.include)
    assert out["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert out["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert out["00201208"] == {"vr": "IS", "Value": [7]}
    assert "00080030" not in out  # StudyTime only with includefield
    assert "00201206" not in out


STUDIES = Resource(Level.STUDY)
SERIES = Resource(Level.SERIES)
SERIES_IN_STUDY = Resource(Level.SERIES, study_in_path=True)
INSTANCES = Resource(Level.INSTANCE)
INSTANCES_IN_STUDY = Resource(Level.INSTANCE, study_in_path=True)
INSTANCES_IN_SERIES = Resource(Level.INSTANCE, study_in_path=True, series_in_path=True)


@pytest.mark.parametrize(
    ("resource", "allowed", "refused"),
    [
        (SERIES, ["PatientID", "Modality", "SeriesInstanceUID", "ManufacturerModelName"], ["SOPInstanceUID"]),
        (SERIES_IN_STUDY, ["Modality", "PerformedProcedureStepStartDate"], ["PatientID", "StudyInstanceUID"]),
        (INSTANCES, ["PatientName", "Modality", "SOPInstanceUID"], []),
        (INSTANCES_IN_STUDY, ["SeriesInstanceUID", "SOPInstanceUID"], ["AccessionNumber"]),
        (INSTANCES_IN_SERIES, ["SOPInstanceUID"], ["Modality", "StudyDate"]),
    ],
)
def test_searchable_attributes_follow_the_azure_table(
    resource: Resource, allowed: list[str], refused: list[str]
) -> None:
    values = {"PerformedProcedureStepStartDate": "20200101", "StudyDate": "20200101"}
    for keyword in allowed:
        uid = keyword.endswith("UID")
        parse_search(resource, [(keyword, "1.2.3" if uid else values.get(keyword, "x"))])
    for keyword in refused:
        with pytest.raises(BadRequest, match="not searchable"):
            parse_search(resource, [(keyword, "1.2.3" if keyword.endswith("UID") else values.get(keyword, "x"))])


def test_matches_are_grouped_by_level() -> None:
    query = parse_search(INSTANCES, [("PatientID", "p"), ("Modality", "MR"), ("SOPInstanceUID", "1.2")]).query
    assert [m.keyword for m in query.study_matches] == ["PatientID"]
    assert [m.keyword for m in query.series_matches] == ["Modality"]
    assert [m.keyword for m in query.instance_matches] == ["SOPInstanceUID"]


def test_wildcards_become_anchored_regular_expressions() -> None:
    kinds = matches(("PatientName", "MÜL*^J?rgen"), ("StudyDescription", "Head (axial)*"))
    assert kinds["PatientName"] == (MatchKind.WILDCARD, (r"^mul.*\ j.rgen$",))
    assert kinds["StudyDescription"] == (MatchKind.WILDCARD, (r"^head\ \(axial\).*$",))


def test_default_attributes_per_resource() -> None:
    def tags(resource: Resource, include_all: bool = False) -> set[int]:
        return resource.defaults(include_all)

    assert 0x00100010 in tags(SERIES) and 0x00100010 not in tags(SERIES_IN_STUDY)
    assert 0x0020000D in tags(SERIES_IN_STUDY)
    assert 0x00080060 in tags(INSTANCES_IN_STUDY) and 0x00080060 not in tags(INSTANCES_IN_SERIES)
    assert 0x00201209 in tags(SERIES, include_all=True) and 0x00201209 not in tags(SERIES)
    assert 0x00200013 in tags(INSTANCES, include_all=True)


class TestCaps:
    """Small requests never become unbounded work (hardening issue)."""

    def test_offset_beyond_the_cap_is_a_400(self) -> None:
        from dicomserver.qido import MAX_OFFSET

        with pytest.raises(BadRequest, match="offset"):
            parse_search(STUDIES, [("offset", str(MAX_OFFSET + 1))])
        with pytest.raises(BadRequest, match="offset"):
            parse_search(STUDIES, [("offset", "1" + "0" * 5000)])  # beyond int() digits: still a 400
        assert parse_search(STUDIES, [("offset", str(MAX_OFFSET))]).query.offset == MAX_OFFSET

    def test_runs_of_wildcards_collapse_and_too_many_are_a_400(self) -> None:
        (match,) = parse_search(STUDIES, [("StudyDescription", "**a***b*")]).query.study_matches
        assert match.values == ("^.*a.*b.*$",)
        with pytest.raises(BadRequest, match="wildcards"):
            parse_search(STUDIES, [("StudyDescription", "*a*a*a*a*a*a*a*ab")])

    def test_an_overlong_value_is_a_400(self) -> None:
        with pytest.raises(BadRequest, match="longer than"):
            parse_search(STUDIES, [("PatientID", "x" * 5000)])
