from __future__ import annotations

import pytest
from pydicom.datadict import keyword_for_tag

from dicomserver.errors import BadRequest
from dicomserver.identifiers import Level
from dicomserver.qido import Resource, parse_search, result_dataset, retrieve_url
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
    # PS3.18 Table 10.6.3-3 attributes are defaults now (Azure v2 returned these only with includefield)
    assert out["00080030"] == {"vr": "TM", "Value": ["1015"]}
    assert out["00201206"] == {"vr": "IS", "Value": [2]}
    assert "00101010" not in out  # PatientAge: only with includefield


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
    # NumberOfSeriesRelatedInstances is a PS3.18 default now (Azure v2: only with includefield=all)
    assert 0x00201209 in tags(SERIES) and 0x00201209 in tags(SERIES_IN_STUDY)
    assert 0x00080021 in tags(SERIES, include_all=True) and 0x00080021 not in tags(SERIES)  # SeriesDate
    assert 0x00200013 in tags(INSTANCES, include_all=True)


def keywords(tags: set[int]) -> set[str]:
    return {keyword_for_tag(tag) for tag in tags}


#: PS3.18 Tables 10.6.3-3, -4 and -5 (Azure v2's minimal defaults are a subset of each).
PS318_STUDY = {
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
}  # fmt: skip
PS318_SERIES = {
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence",
}  # fmt: skip
PS318_INSTANCE = {
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
}  # fmt: skip
AZURE_STUDY = {
    "StudyDate", "AccessionNumber", "StudyDescription", "ReferringPhysicianName", "PatientName", "PatientID",
    "PatientBirthDate", "StudyInstanceUID",
}  # fmt: skip
AZURE_SERIES = {"Modality", "ManufacturerModelName", "SeriesInstanceUID", "PerformedProcedureStepStartDate"}
#: The series' own count is on the series documents only: instance results do not carry it.
SERIES_FOR_INSTANCES = PS318_SERIES - {"NumberOfSeriesRelatedInstances", "RetrieveURL"}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (STUDIES, PS318_STUDY | AZURE_STUDY),
        (SERIES, PS318_SERIES | AZURE_SERIES | PS318_STUDY | AZURE_STUDY),
        (SERIES_IN_STUDY, PS318_SERIES | AZURE_SERIES | {"StudyInstanceUID"}),
        (
            INSTANCES,
            PS318_INSTANCE | SERIES_FOR_INSTANCES | AZURE_SERIES | PS318_STUDY | AZURE_STUDY,
        ),
        (INSTANCES_IN_STUDY, PS318_INSTANCE | SERIES_FOR_INSTANCES | AZURE_SERIES | {"StudyInstanceUID"}),
        (INSTANCES_IN_SERIES, PS318_INSTANCE | {"StudyInstanceUID", "SeriesInstanceUID"}),
    ],
    ids=["studies", "series", "study-series", "instances", "study-instances", "series-instances"],
)
def test_defaults_are_the_ps318_required_attributes(resource: Resource, expected: set[str]) -> None:
    assert keywords(resource.defaults(False)) == expected
    assert keywords(parse_search(resource, []).include) == expected


@pytest.mark.parametrize(
    ("resource", "extra"),
    [
        (STUDIES, {"PatientAge", "PatientWeight", "IssuerOfPatientID", "ProcedureCodeSequence"}),
        (SERIES_IN_STUDY, {"SeriesDate", "SeriesTime", "Laterality"}),
        (INSTANCES_IN_SERIES, set()),
    ],
)
def test_includefield_all_adds_the_rest_of_the_level(resource: Resource, extra: set[str]) -> None:
    defaults = keywords(resource.defaults(False))
    everything = keywords(parse_search(resource, [("includefield", "all")]).include)
    assert extra <= everything - defaults
    assert defaults <= everything
    named = keywords(parse_search(resource, [("includefield", "PatientAge,SeriesTime")]).include)
    assert named == defaults | {"PatientAge", "SeriesTime"}


def test_retrieve_url_and_instance_availability_per_level() -> None:
    attrs = {
        "0020000D": {"vr": "UI", "Value": ["1.2.1"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.2"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00080056": {"vr": "CS", "Value": ["NEARLINE"]},  # the source archive's value is not ours
    }
    record = Record(attrs=attrs, number_of_series_instances=4)
    base = "https://dicom.example/v2/"
    urls = {}
    for resource in (STUDIES, SERIES, INSTANCES):
        search = parse_search(resource, [])
        url = retrieve_url(record, search.query, base)
        out = result_dataset(record, search.include, level=resource.level, retrieve_url=url)
        urls[resource.level] = out["00081190"]
        assert out["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}  # /series: with the study's attributes
    assert urls == {
        Level.STUDY: {"vr": "UR", "Value": ["https://dicom.example/v2/studies/1.2.1"]},
        Level.SERIES: {"vr": "UR", "Value": ["https://dicom.example/v2/studies/1.2.1/series/1.2.2"]},
        Level.INSTANCE: {
            "vr": "UR",
            "Value": ["https://dicom.example/v2/studies/1.2.1/series/1.2.2/instances/1.2.3"],
        },
    }


def test_series_results_count_their_instances_and_instance_results_omit_that_count() -> None:
    record = Record(attrs={"0020000E": {"vr": "UI", "Value": ["1.2.2"]}}, number_of_series_instances=4)
    include = frozenset({0x00201209, 0x00081190})
    assert result_dataset(record, include, level=Level.SERIES) == {"00201209": {"vr": "IS", "Value": [4]}}
    assert result_dataset(record, include, level=Level.INSTANCE) == {}  # no base URL: no RetrieveURL either


def test_retrieve_url_uses_the_path_uids_when_the_record_lacks_them() -> None:
    search = parse_search(SERIES_IN_STUDY, [], study_instance_uid="1.2.1")
    record = Record(attrs={"0020000E": {"vr": "UI", "Value": ["1.2.2"]}})
    assert retrieve_url(record, search.query, "http://h/v2") == "http://h/v2/studies/1.2.1/series/1.2.2"
    assert retrieve_url(Record(attrs={}), parse_search(STUDIES, []).query, "http://h/v2") is None


def test_missing_values_are_omitted() -> None:
    record = Record(attrs={"0020000D": {"vr": "UI", "Value": ["1.2.1"]}})
    out = result_dataset(record, parse_search(STUDIES, []).include, level=Level.STUDY)
    assert set(out) == {"0020000D", "00080056", "00080061", "00201206", "00201208"}
    assert out["00080061"] == {"vr": "CS"}


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


def test_new_table_10_6_1_5_keys_parse() -> None:
    from dicomserver.identifiers import Level as L
    from dicomserver.qido import Resource as R
    from dicomserver.qido import parse_search as parse
    from dicomserver.stores.model import MatchKind as K

    q = parse(
        R(L.INSTANCE),
        [
            ("StudyTime", "0800-10"),
            ("StudyID", "S*"),
            ("SeriesNumber", "07"),
            ("SeriesDescription", "ax"),
            ("PerformedProcedureStepStartTime", "0930"),
            ("SOPClassUID", "1.2,1.3"),
            ("InstanceNumber", "3"),
        ],
    ).query
    study = {m.keyword: m for m in q.study_matches}
    assert study["StudyTime"].values == ("080000.000000", "105959.999999")
    assert study["StudyID"].kind is K.WILDCARD
    series = {m.keyword: m for m in q.series_matches}
    assert (series["SeriesNumber"].kind, series["SeriesNumber"].values) == (K.NUMBER, ("7",))
    assert series["PerformedProcedureStepStartTime"].values == ("093000.000000", "093059.999999")
    instance = {m.keyword: m for m in q.instance_matches}
    assert instance["SOPClassUID"].kind is K.ANY_OF and instance["InstanceNumber"].values == ("3",)
    for bad in [("StudyTime", "2500"), ("StudyTime", "11-10"), ("SeriesNumber", "x"), ("InstanceNumber", "1.5")]:
        with pytest.raises(BadRequest):
            parse(R(L.INSTANCE), [bad])


def test_orderby_and_count_parse() -> None:
    from dicomserver.identifiers import Level as L
    from dicomserver.qido import Resource as R
    from dicomserver.qido import parse_search as parse

    assert parse(R(L.STUDY), [("OrderBy", "-StudyDate")]).query.order_by == (("StudyDate", True),)
    assert parse(R(L.SERIES), [("orderby", "00200011")]).query.order_by == (("SeriesNumber", False),)
    assert parse(R(L.STUDY), [], count_only=True).query.count_only
    for resource, bad in [
        (R(L.STUDY), "SeriesNumber"),
        (R(L.STUDY), "a,b"),
        (R(L.INSTANCE), "StudyDate"),
        (R(L.STUDY), ""),
    ]:
        with pytest.raises(BadRequest):
            parse(resource, [("orderby", bad)])
    with pytest.raises(BadRequest):
        parse(R(L.STUDY), [("orderby", "StudyDate"), ("orderby", "StudyTime")])


def test_any_attribute_parsing() -> None:
    import pytest as _pytest

    from dicomserver.errors import BadRequest as _BadRequest
    from dicomserver.identifiers import Level as _Level
    from dicomserver.matching import any_attribute_values
    from dicomserver.qido import Resource as _Resource
    from dicomserver.qido import parse_search as _parse
    from dicomserver.stores.model import MatchKind as _Kind

    def one(key: str, value: str, level: _Level = _Level.INSTANCE):  # type: ignore[no-untyped-def]
        (match,) = _parse(_Resource(level), [(key, value)], any_attribute=True).query.attribute_matches
        return match.keyword, match.kind, match.values

    assert one("ProtocolName", "Head") == ("00181030", _Kind.EXACT, ("head",))
    assert one("00181030", "He*") == ("00181030", _Kind.WILDCARD, ("^he.*$",))
    assert one("SliceThickness", "5.0", _Level.STUDY) == ("00180050", _Kind.NUMBER, ("5",))
    assert one("EchoNumbers", "3") == ("00180086", _Kind.NUMBER, ("3",))
    assert one("AcquisitionDate", "20200101-") == ("00080022", _Kind.RANGE, ("20200101", ""))
    assert one("AcquisitionTime", "10") == ("00080032", _Kind.RANGE, ("100000.000000", "105959.999999"))
    assert one("OperatorsName", "Müller^J") == ("00081070", _Kind.PERSON_NAME, ("muller j",))
    assert one("FrameOfReferenceUID", "1.2,1.3")[1:] == (_Kind.ANY_OF, ("1.2", "1.3"))
    for key, value in (
        ("NoSuchKeyword", "x"),  # unknown keyword
        ("00091001", "x"),  # private tag
        ("ReferencedImageSequence", "x"),  # SQ
        ("SliceThickness", "thick"),
        ("AcquisitionDate", "2020"),
    ):
        with _pytest.raises(_BadRequest):
            _parse(_Resource(_Level.INSTANCE), [(key, value)], any_attribute=True)
    with _pytest.raises(_BadRequest):  # turned off: undeclared keys are 400 as before
        _parse(_Resource(_Level.INSTANCE), [("ProtocolName", "Head")], any_attribute=False)
    # core keys keep their own path
    assert not _parse(_Resource(_Level.STUDY), [("PatientID", "1")], any_attribute=True).query.attribute_matches
    x = any_attribute_values(
        {
            "00181030": {"vr": "LO", "Value": ["Head "]},
            "00180050": {"vr": "DS", "Value": [1.25]},
            "00200013": {"vr": "IS", "Value": [7]},
            "00081070": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jo"}]},
            "00081140": {"vr": "SQ", "Value": [{}]},
            "7FE00010": {"vr": "OW", "InlineBinary": "AA=="},
            "00091001": {"vr": "LO", "Value": ["private"]},
            "00204000": {"vr": "LT", "Value": ["x" * 65]},
        }
    )
    assert x == {"00181030": ["head"], "00180050": [1.25], "00200013": [7], "00081070": ["doe jo"]}
