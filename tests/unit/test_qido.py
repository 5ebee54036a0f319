from __future__ import annotations

import pytest

from dicomserver.errors import BadRequest
from dicomserver.qido import parse_study_search, study_result
from dicomserver.stores.model import MatchKind, StudyRecord


def matches(*pairs: tuple[str, str]) -> dict[str, tuple[MatchKind, tuple[str, ...]]]:
    search = parse_study_search(pairs)
    return {m.keyword: (m.kind, m.values) for m in search.query.matches}


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
        parse_study_search([("StudyDate", value)])


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
        parse_study_search(pairs)


def test_known_parameters_are_case_insensitive() -> None:
    search = parse_study_search([("LIMIT", "5"), ("Offset", "2")])
    assert (search.query.limit, search.query.offset) == (5, 2)


def test_results_hold_defaults_match_keys_and_computed_attributes() -> None:
    search = parse_study_search([("ModalitiesInStudy", "ct"), ("includefield", "NumberOfStudyRelatedInstances")])
    record = StudyRecord(
        attrs={"00100020": {"vr": "LO", "Value": ["P1"]}, "00080030": {"vr": "TM", "Value": ["1015"]}},
        modalities_in_study=("CT", "MR"),
        number_of_series=2,
        number_of_instances=7,
    )
    out = study_result(record, search.include)
    assert out["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert out["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert out["00201208"] == {"vr": "IS", "Value": [7]}
    assert "00080030" not in out  # StudyTime only with includefield
    assert "00201206" not in out
