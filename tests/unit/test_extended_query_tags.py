"""Extended query tags without storage: declaration checks, JSON, value validation and QIDO parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dicomserver.errors import BadRequest, Conflict
from dicomserver.extended_query_tags import parse_tag_path, parse_tags, tag_json
from dicomserver.identifiers import Level
from dicomserver.matching import extended_values, fold_extended
from dicomserver.qido import Resource, parse_search
from dicomserver.stores.model import ExtendedQueryTag, ExtendedQueryTagStatus, MatchKind, QueryStatus

BASE = "https://dicom.test/v2"


def body(*entries: dict[str, Any]) -> bytes:
    return json.dumps(list(entries)).encode()


class TestDeclaring:
    def test_keyword_or_tag_with_the_dictionary_vr_and_a_case_insensitive_level(self) -> None:
        tags = parse_tags(
            body({"path": "PatientAge", "level": "study"}, {"Path": "00181030", "VR": "LO", "Level": "SERIES"})
        )
        assert [(t.path, t.vr, t.level) for t in tags] == [
            ("00101010", "AS", Level.STUDY),
            ("00181030", "LO", Level.SERIES),
        ]
        assert all(t.status is ExtendedQueryTagStatus.ADDING and t.query_status is QueryStatus.ENABLED for t in tags)

    def test_private_tag_needs_its_creator_and_vr(self) -> None:
        (tag,) = parse_tags(body({"path": "00091001", "vr": "SS", "privateCreator": "ACME", "level": "Instance"}))
        assert (tag.path, tag.vr, tag.private_creator) == ("00091001", "SS", "ACME")
        with pytest.raises(BadRequest, match="private creator for private tag '00091001' is missing"):
            parse_tags(body({"path": "00091001", "vr": "SS", "level": "Instance"}))
        with pytest.raises(BadRequest, match="vr for tag '00091001' is missing"):
            parse_tags(body({"path": "00091001", "privateCreator": "ACME", "level": "Instance"}))
        with pytest.raises(BadRequest, match="not empty for standard tag"):
            parse_tags(body({"path": "PatientAge", "privateCreator": "ACME", "level": "Study"}))

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            ({"path": "NoSuchKeyword", "level": "Study"}, "cannot be parsed into a valid Dicom Tag"),
            ({"path": "PatientAge", "level": "Patient"}, "Level 'Patient' is invalid"),
            ({"path": "PatientAge"}, "level for extended query tag 'PatientAge' is missing"),
            ({"path": "PatientAge", "vr": "LO", "level": "Study"}, "expected VR code for it is 'AS'"),
            (
                {"path": "ImageComments", "level": "Instance"},
                "VR code 'LT' specified for tag 'ImageComments' is not supported",
            ),
            ({"path": "00091001", "vr": "OB", "privateCreator": "A", "level": "Study"}, "VR code 'OB'"),
            ({"path": "ReferencedSeriesSequence", "level": "Study"}, "Sequential dicom tags"),
            ({"path": "00400275.00321060", "level": "Study"}, "cannot be parsed"),  # a tag inside a sequence
            ({"level": "Study"}, "Path must be specified"),
        ],
    )
    def test_invalid_entries_are_400_with_a_message(self, entry: dict[str, Any], message: str) -> None:
        with pytest.raises(BadRequest, match=message):
            parse_tags(body(entry))

    def test_core_attributes_are_already_supported_409(self) -> None:
        with pytest.raises(Conflict, match="The query tag 'StudyDate' is already supported."):
            parse_tags(body({"path": "StudyDate", "level": "Study"}))

    def test_a_tag_twice_in_one_request_is_400(self) -> None:
        with pytest.raises(BadRequest, match="'PatientAge' has been specified before"):
            parse_tags(body({"path": "PatientAge", "level": "Study"}, {"path": "00101010", "level": "Study"}))

    @pytest.mark.parametrize("raw", [b"", b"[]", b"{}", b"not json", b'["PatientAge"]'])
    def test_bodies_that_are_not_an_array_of_tags_are_400(self, raw: bytes) -> None:
        with pytest.raises(BadRequest):
            parse_tags(raw)

    def test_tag_paths(self) -> None:
        assert parse_tag_path("PatientAge") == "00101010" == parse_tag_path("00101010")
        assert parse_tag_path("0009100a") == "0009100A"
        with pytest.raises(BadRequest):
            parse_tag_path("0010101")


class TestJson:
    def test_a_ready_tag(self) -> None:
        tag = ExtendedQueryTag("00080070", "LO", Level.INSTANCE, status=ExtendedQueryTagStatus.READY)
        assert tag_json(tag, BASE) == {
            "path": "00080070",
            "vr": "LO",
            "level": "Instance",
            "status": "Ready",
            "queryStatus": "Enabled",
        }

    def test_an_adding_tag_with_errors_has_its_operation_and_errors_references(self) -> None:
        tag = ExtendedQueryTag("00101010", "AS", Level.STUDY, error_count=21, operation_id="ab" * 16)
        out = tag_json(replace_query(tag, QueryStatus.DISABLED), BASE + "/")
        assert out["errors"] == {"count": 21, "href": f"{BASE}/extendedquerytags/00101010/errors"}
        assert out["operation"] == {"id": "ab" * 16, "href": f"{BASE}/operations/{'ab' * 16}"}
        assert out["queryStatus"] == "Disabled"


def replace_query(tag: ExtendedQueryTag, status: QueryStatus) -> ExtendedQueryTag:
    from dataclasses import replace

    return replace(tag, query_status=status)


class TestValues:
    @pytest.mark.parametrize(
        ("vr", "value", "folded"),
        [
            ("DA", "20200131", "20200131"),
            ("TM", "1010", "101000.000000"),
            ("AS", "035Y", "035y"),
            ("US", 7, 7),
            ("IS", " 12 ", 12),
            ("FD", 1.5, 1.5),
            ("PN", {"Alphabetic": "Müller^Jürgen"}, "muller jurgen"),
            ("LO", "Head ", "head"),
            ("UI", "1.2.3", "1.2.3"),
        ],
    )
    def test_valid_values_are_folded_as_qido_matches_them(self, vr: str, value: object, folded: object) -> None:
        assert fold_extended(vr, value) == (folded, None)

    @pytest.mark.parametrize(
        ("vr", "value"),
        [
            ("DA", "2020-13-45"),
            ("DA", "20201345"),
            ("TM", "2561"),
            ("AS", "35Y"),
            ("US", 70000),
            ("IS", "x"),
            ("UI", "1.02"),
        ],
    )
    def test_invalid_values_are_errors(self, vr: str, value: object) -> None:
        folded, error = fold_extended(vr, value)
        assert folded is None and error

    def test_empty_values_are_not_indexed_and_not_errors(self) -> None:
        assert fold_extended("LO", "  ") == (None, None)
        assert fold_extended("PN", {"Alphabetic": ""}) == (None, None)

    def test_dataset_values_first_value_private_creator_and_vr_mismatch(self) -> None:
        dataset = {
            "00101010": {"vr": "AS", "Value": ["035Y", "036Y"]},
            "00080022": {"vr": "DA", "Value": ["2020-13-45"]},
            "00090010": {"vr": "LO", "Value": ["ACME"]},
            "00091001": {"vr": "LO", "Value": ["Widget"]},
            "00111001": {"vr": "LO", "Value": ["Other creator"]},
            "00181030": {"vr": "SH", "Value": ["Head"]},
        }
        tags = [
            ("00101010", "AS", None),
            ("00080022", "DA", None),
            ("00091001", "LO", "ACME"),
            ("00111001", "LO", "ACME"),
            ("00181030", "LO", None),
            ("00080070", "LO", None),
        ]
        found = extended_values(dataset, tags)
        assert found.values == {"00101010": ["035y"], "00091001": ["widget"]}
        assert found.elements["00101010"] == {"vr": "AS", "Value": ["035Y"]}
        assert set(found.errors) == {"00080022", "00181030"}
        assert "failed validation for VR 'DA'" in found.errors["00080022"]
        assert "expected to have VR 'LO' but has 'SH'" in found.errors["00181030"]
        assert set(found.cleared) == {"00080022", "00111001", "00181030", "00080070"}


def tag(path: str, vr: str, level: Level, **kwargs: Any) -> ExtendedQueryTag:
    return ExtendedQueryTag(path, vr, level, status=kwargs.pop("status", ExtendedQueryTagStatus.READY), **kwargs)


class TestQidoParsing:
    EXTENDED = {
        "00101010": tag("00101010", "AS", Level.STUDY),
        "00181030": tag("00181030", "LO", Level.SERIES, error_count=2),
        "00080022": tag("00080022", "DA", Level.INSTANCE, query_status=QueryStatus.DISABLED, error_count=1),
        "00091001": tag("00091001", "PN", Level.INSTANCE, private_creator="ACME"),
        "00080070": tag("00080070", "LO", Level.INSTANCE, status=ExtendedQueryTagStatus.ADDING),
    }

    def parse(self, resource: Resource, params: list[tuple[str, str]], any_attribute: bool = False) -> Any:
        return parse_search(resource, params, any_attribute=any_attribute, extended=self.EXTENDED)

    def test_a_ready_tag_matches_by_its_vr_and_is_returned_at_its_level(self) -> None:
        parsed = self.parse(Resource(Level.STUDY), [("PatientAge", "035Y")])
        (match,) = parsed.query.attribute_matches
        assert (match.keyword, match.kind, match.values) == ("00101010", MatchKind.EXACT, ("035y",))
        assert 0x00101010 in parsed.include and parsed.query.extended_tags == ("00101010",)
        assert parsed.erroneous == ()

    def test_levels_follow_the_core_keys(self) -> None:
        assert self.parse(Resource(Level.INSTANCE), [("ProtocolName", "x")]).erroneous == ("ProtocolName",)
        self.parse(Resource(Level.SERIES), [("PatientAge", "035Y")])
        with pytest.raises(BadRequest, match="not searchable here"):
            self.parse(Resource(Level.STUDY), [("ProtocolName", "x")])
        with pytest.raises(BadRequest, match="not searchable here"):
            self.parse(Resource(Level.SERIES, study_in_path=True), [("PatientAge", "035Y")])
        # with any-attribute search, a tag below the resource matches like any attribute
        self.parse(Resource(Level.STUDY), [("ProtocolName", "x")], any_attribute=True)

    def test_disabled_is_400_and_adding_is_not_searchable(self) -> None:
        with pytest.raises(BadRequest, match="Query is disabled on specified attribute 'AcquisitionDate'"):
            self.parse(Resource(Level.INSTANCE), [("AcquisitionDate", "20200101")])
        with pytest.raises(BadRequest, match="not searchable at this resource"):
            self.parse(Resource(Level.INSTANCE), [("Manufacturer", "ACME")])

    def test_declared_private_tag_with_fuzzy_person_name(self) -> None:
        parsed = self.parse(Resource(Level.INSTANCE), [("00091001", "jo do"), ("fuzzymatching", "true")])
        (match,) = parsed.query.attribute_matches
        assert (match.kind, match.values) == (MatchKind.FUZZY_PERSON_NAME, ("jo", "do"))
        with pytest.raises(BadRequest, match="private"):
            self.parse(Resource(Level.INSTANCE), [("00091002", "x")])

    def test_date_ranges_and_repeats(self) -> None:
        extended = dict(self.EXTENDED)
        extended["00080022"] = tag("00080022", "DA", Level.INSTANCE)
        parsed = parse_search(Resource(Level.INSTANCE), [("AcquisitionDate", "20200101-")], extended=extended)
        assert parsed.query.attribute_matches[0].values == ("20200101", "")
        with pytest.raises(BadRequest, match="repeated"):
            parse_search(
                Resource(Level.INSTANCE), [("00080022", "20200101"), ("AcquisitionDate", "20200101")], extended=extended
            )
