"""Extended query tags against the emulators: declare, reindex existing instances, search, errors, delete."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicomserver import extended_query_tags as eqt
from dicomserver import opcount, operations, qido
from dicomserver.attributes import all_index_tags
from dicomserver.dicomjson import select
from dicomserver.errors import BadRequest, Conflict, NotFound
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, Level
from dicomserver.qido import Resource, parse_search
from dicomserver.settings import Settings
from dicomserver.stores.model import IndexedInstance, OperationStatus
from dicomserver.wiring import Services, build_services, provision_services

BASE = "http://dicom.test/v2"
OTHER_PARTITION = "other"
PATIENT_AGE, PROTOCOL, ACQUISITION_DATE, PRIVATE = "00101010", "00181030", "00080022", "00091001"


@pytest.fixture
def plain(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """Services with any-attribute search off: only declared tags are searchable beyond the core keys."""
    monkeypatch.setattr(eqt, "SETTLE_SECONDS", 0.0)
    built = build_services(dataclasses.replace(settings, search_any_attribute=False))
    provision_services(built)
    yield built


def store(
    services: Services, study: str, series: str, partition: str = DEFAULT_PARTITION, **values: tuple[str, Any]
) -> InstanceKey:
    """Index one instance whose DICOM JSON has ``values`` (``tag: (vr, value)``) besides its UIDs."""
    key = InstanceKey(partition, study, series, generate_uid())
    full: dict[str, Any] = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": [key.sop_instance_uid]},
        "00080060": {"vr": "CS", "Value": ["OT"]},
        "00100020": {"vr": "LO", "Value": ["PAT-1"]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
    }
    for tag, (vr, value) in values.items():
        full[tag] = {"vr": vr, "Value": [value]}
    services.index.add_instance(
        IndexedInstance(
            key=key,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size=1,
            attrs=select(full, all_index_tags()),
            metadata_json=json.dumps(full),
        )
    )
    return key


def declare(services: Services, *entries: dict[str, Any]) -> str:
    reference = eqt.add_extended_query_tags(
        tags=services.extended_tags,
        operations=services.operations,
        body=json.dumps(list(entries)).encode(),
        base_url=BASE,
    )
    assert reference["href"] == f"{BASE}/operations/{reference['id']}"
    return reference["id"]


def run_until_done(services: Services, operation_id: str) -> int:
    """Run the operation's steps as the queue trigger would; returns how many ran."""
    steps = 0
    while True:
        saved = operations.run_step(services.operations, operation_id, services)
        steps += 1
        assert saved is not None
        if saved.status.done:
            return steps
        assert steps < 50


def search(services: Services, level: str, params: list[tuple[str, str]], **path: str) -> qido.SearchResults:
    function = {
        "studies": qido.search_for_studies,
        "series": qido.search_for_series,
        "instances": qido.search_for_instances,
    }
    return asyncio.run(
        function[level](index=services.index, params=params, extended_tags=services.extended_tags, **path)  # type: ignore[operator]
    )


def uids(results: list[dict[str, Any]], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def test_reindex_of_existing_instances_across_partitions_then_search_at_every_level(plain: Services) -> None:
    study_a, study_b, study_c = generate_uid(), generate_uid(), generate_uid()
    series_a = [generate_uid(), generate_uid()]
    series_b, series_c = generate_uid(), generate_uid()
    for i in range(130):
        store(plain, study_a, series_a[i % 2], **{PATIENT_AGE: ("AS", "035Y"), PROTOCOL: ("LO", f"Head {i % 2}")})
    bad = None
    for i in range(100):
        date = "2020-13-45" if i == 7 else "20210615"
        key = store(
            plain,
            study_b,
            series_b,
            **{PATIENT_AGE: ("AS", "050Y"), ACQUISITION_DATE: ("DA", date), PRIVATE: ("LO", "Widget")},
        )
        bad = key if i == 7 else bad
    for _ in range(25):
        store(plain, study_c, series_c, OTHER_PARTITION, **{PATIENT_AGE: ("AS", "035Y")})
    assert bad is not None

    # not declared yet, any-attribute search off: 400
    with pytest.raises(BadRequest):
        search(plain, "studies", [("PatientAge", "035Y")])

    operation_id = declare(
        plain,
        {"path": "PatientAge", "level": "study"},
        {"path": PROTOCOL, "vr": "LO", "level": "Series"},
        {"path": ACQUISITION_DATE, "level": "Instance"},
        {"path": PRIVATE, "vr": "LO", "privateCreator": "ACME 1.0", "level": "Instance"},
    )
    adding = eqt.get_extended_query_tag(tags=plain.extended_tags, tag_path="00101010", base_url=BASE)
    assert adding == {
        "path": PATIENT_AGE,
        "vr": "AS",
        "level": "Study",
        "status": "Adding",
        "queryStatus": "Enabled",
        "operation": {"id": operation_id, "href": f"{BASE}/operations/{operation_id}"},
    }
    status, body = operations.get_operation(plain.operations, operation_id, BASE)
    assert status == 202 and body["type"] == "reindex"
    assert f"{BASE}/extendedquerytags/{PATIENT_AGE}" in body["resources"]
    # while Adding the tag is not searchable (any-attribute search is off)
    with pytest.raises(BadRequest):
        search(plain, "studies", [("PatientAge", "035Y")])
    # one reindex at a time
    with pytest.raises(Conflict, match="already an active reindex"):
        declare(plain, {"path": "StationName", "level": "Series"})

    steps = run_until_done(plain, operation_id)
    assert steps >= 3  # 255 instances, 100 per step
    status, body = operations.get_operation(plain.operations, operation_id, BASE)
    assert status == 200 and body["status"] == "succeeded" and body["percentComplete"] == 100

    listed = eqt.list_extended_query_tags(tags=plain.extended_tags, params=[], base_url=BASE)
    by_path = {t["path"]: t for t in listed}
    assert [t["path"] for t in listed] == sorted(by_path)
    assert by_path[PATIENT_AGE] == {
        "path": PATIENT_AGE,
        "vr": "AS",
        "level": "Study",
        "status": "Ready",
        "queryStatus": "Enabled",
    }
    assert by_path[PRIVATE]["privateCreator"] == "ACME 1.0"
    assert by_path[ACQUISITION_DATE]["queryStatus"] == "Disabled"
    assert by_path[ACQUISITION_DATE]["errors"] == {
        "count": 1,
        "href": f"{BASE}/extendedquerytags/{ACQUISITION_DATE}/errors",
    }
    errors = eqt.list_extended_query_tag_errors(tags=plain.extended_tags, tag_path="AcquisitionDate", params=[])
    assert len(errors) == 1
    assert errors[0]["studyInstanceUid"] == study_b and errors[0]["sopInstanceUid"] == bad.sop_instance_uid
    assert errors[0]["seriesInstanceUid"] == series_b and errors[0]["createdTime"]
    assert "2020-13-45" in errors[0]["errorMessage"] and "DA" in errors[0]["errorMessage"]

    # study-level tag: on /studies, /series and /instances, returned at its level
    st, se, sop = "0020000D", "0020000E", "00080018"
    found = search(plain, "studies", [("PatientAge", "035Y")])
    assert uids(found, st) == {study_a}  # study C is in another data partition
    assert found[0][PATIENT_AGE] == {"vr": "AS", "Value": ["035Y"]}
    assert not found.erroneous_attributes
    assert uids(search(plain, "series", [(PATIENT_AGE, "050Y")]), se) == {series_b}
    assert len(search(plain, "instances", [("PatientAge", "035Y"), ("limit", "200")])) == 130
    other = parse_search(
        Resource(Level.INSTANCE),
        [(PATIENT_AGE, "035Y")],
        any_attribute=False,
        extended=eqt.query_tags(plain.extended_tags),
    )
    other_page = plain.index.search(dataclasses.replace(other.query, partition=OTHER_PARTITION))
    assert len(other_page.items) == 25  # the other partition was reindexed too
    # series-level tag: series and instances, not studies
    assert uids(search(plain, "series", [("ProtocolName", "head 1")]), se) == {series_a[1]}
    assert len(search(plain, "instances", [("ProtocolName", "Head 0"), ("limit", "200")])) == 65
    with pytest.raises(BadRequest, match="not searchable here"):
        search(plain, "studies", [("ProtocolName", "Head 1")])
    # includefield returns it at its level
    series_result = search(plain, "series", [("SeriesInstanceUID", series_a[0]), ("includefield", "ProtocolName")])
    assert series_result[0][PROTOCOL]["Value"] == ["Head 0"]
    # a private tag, declared with its creator
    assert len(search(plain, "instances", [(PRIVATE, "widget"), ("limit", "200")])) == 100
    # a Disabled tag (reindex errors) is a 400 until enabled again; then the header names it
    with pytest.raises(BadRequest, match="Query is disabled"):
        search(plain, "instances", [("AcquisitionDate", "20210101-")])
    enabled = eqt.update_extended_query_tag(
        tags=plain.extended_tags, tag_path=ACQUISITION_DATE, body=b'{"queryStatus": "Enabled"}', base_url=BASE
    )
    assert enabled["queryStatus"] == "Enabled" and enabled["errors"]["count"] == 1
    found = search(plain, "instances", [("AcquisitionDate", "20210101-"), ("limit", "200")])
    assert len(found) == 99 and bad.sop_instance_uid not in uids(found, sop)
    assert found.erroneous_attributes == ("AcquisitionDate",)
    with pytest.raises(BadRequest, match="of level Instance"):  # instance-level tag
        search(plain, "studies", [("AcquisitionDate", "20210615")])
    # delete: no longer searchable, errors gone
    eqt.delete_extended_query_tag(tags=plain.extended_tags, tag_path="AcquisitionDate")
    with pytest.raises(BadRequest):
        search(plain, "instances", [("AcquisitionDate", "20210615")])
    with pytest.raises(NotFound):
        eqt.list_extended_query_tag_errors(tags=plain.extended_tags, tag_path=ACQUISITION_DATE, params=[])
    with pytest.raises(NotFound):
        eqt.get_extended_query_tag(tags=plain.extended_tags, tag_path=ACQUISITION_DATE, base_url=BASE)


def test_a_redelivered_step_gives_the_same_result(plain: Services) -> None:
    study, series = generate_uid(), generate_uid()
    for i in range(120):
        store(plain, study, series, **{ACQUISITION_DATE: ("DA", "20201345" if i % 40 == 0 else "20200102")})
    operation_id = declare(plain, {"path": ACQUISITION_DATE, "level": "Instance"})
    first = plain.operations.get(operation_id)
    assert first is not None
    once = eqt.reindex_step(dataclasses.replace(first, status=OperationStatus.RUNNING), plain)
    again = eqt.reindex_step(dataclasses.replace(first, status=OperationStatus.RUNNING), plain)  # same message twice
    assert once.checkpoint == again.checkpoint and once.percent_complete == again.percent_complete
    tag = plain.extended_tags.get_tag(ACQUISITION_DATE)
    assert tag is not None and plain.extended_tags.count_errors(tag) == 3 == tag.error_count
    # the runner: a save at a stale etag loses, so a second delivery of the same step stops
    assert operations.run_step(plain.operations, operation_id, plain) is not None
    run_until_done(plain, operation_id)
    tag = plain.extended_tags.get_tag(ACQUISITION_DATE)
    assert tag is not None and tag.error_count == 3 and tag.status.value == "Ready"
    assert len(search(plain, "instances", [("limit", "200")])) == 120


def test_declaring_conflicts_and_bad_bodies(plain: Services) -> None:
    declare(plain, {"path": "PatientAge", "level": "Study"})
    with pytest.raises(Conflict, match="already exists"):
        declare(plain, {"path": "00101010", "level": "Study"})
    with pytest.raises(Conflict, match="already supported"):
        declare(plain, {"path": "PatientName", "level": "Study"})
    with pytest.raises(BadRequest, match="exceeds max allowed count"):
        many = [
            {"path": f"0009{0x1000 + i:04X}", "vr": "LO", "privateCreator": "X", "level": "Instance"}
            for i in range(128)
        ]
        declare(plain, *many)
    with pytest.raises(BadRequest):
        eqt.get_extended_query_tag(tags=plain.extended_tags, tag_path="NotAKeyword", base_url=BASE)
    with pytest.raises(NotFound):
        eqt.get_extended_query_tag(tags=plain.extended_tags, tag_path="StationName", base_url=BASE)
    with pytest.raises(BadRequest, match="queryStatus"):
        eqt.update_extended_query_tag(
            tags=plain.extended_tags, tag_path="PatientAge", body=b'{"queryStatus": "x"}', base_url=BASE
        )
    with pytest.raises(BadRequest, match="between 1 and 200"):
        eqt.list_extended_query_tags(tags=plain.extended_tags, params=[("limit", "201")], base_url=BASE)
    assert eqt.list_extended_query_tags(tags=plain.extended_tags, params=[("offset", "1")], base_url=BASE) == []


def test_new_instances_are_indexed_at_store_time_and_round_trips_stay_low(plain: Services) -> None:
    operation_id = declare(
        plain, {"path": "PatientAge", "level": "Study"}, {"path": "AcquisitionDate", "level": "Instance"}
    )
    run_until_done(plain, operation_id)  # nothing stored yet
    tags = plain.extended_tags
    study, series = generate_uid(), generate_uid()
    store(plain, study, series, **{PATIENT_AGE: ("AS", "035Y")})  # the study and series exist from here on
    tags.list_tags(max_age_seconds=60)  # warm
    with opcount.counting() as warm:
        store(plain, study, series, **{PATIENT_AGE: ("AS", "035Y"), ACQUISITION_DATE: ("DA", "20220202")})
    tags._forget()  # type: ignore[attr-defined]
    with opcount.counting() as cold:
        store(plain, study, series, **{PATIENT_AGE: ("AS", "035Y"), ACQUISITION_DATE: ("DA", "20220203")})
    assert cold.index - warm.index == 1  # STOW: at most one tag-store read, none while the list is fresh
    bad = store(plain, study, series, **{PATIENT_AGE: ("AS", "35 years"), ACQUISITION_DATE: ("DA", "20220204")})
    assert uids(search(plain, "studies", [("PatientAge", "035Y")]), "0020000D") == {study}
    assert len(search(plain, "instances", [("AcquisitionDate", "20220201-20220203")])) == 2
    age = tags.get_tag(PATIENT_AGE)
    assert age is not None and age.error_count == 1 and age.query_status.value == "Enabled"
    errors = eqt.list_extended_query_tag_errors(tags=tags, tag_path=PATIENT_AGE, params=[])
    assert [e["sopInstanceUid"] for e in errors] == [bad.sop_instance_uid]
    tags._forget()  # type: ignore[attr-defined]
    with opcount.counting() as cold_qido:
        found = search(plain, "studies", [("PatientAge", "035Y")])
    with opcount.counting() as warm_qido:
        search(plain, "studies", [("PatientAge", "035Y")])
    assert found.erroneous_attributes == ("PatientAge",)
    assert cold_qido.index - warm_qido.index == 1  # QIDO: at most one tag-store read per request
    assert warm_qido.index <= 4  # instances (the tag) + studies + their counts + the tag's returned values


def test_with_any_attribute_search_the_declared_tags_keep_their_own_rules(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eqt, "SETTLE_SECONDS", 0.0)
    study, series = generate_uid(), generate_uid()
    store(services, study, series, **{ACQUISITION_DATE: ("DA", "2020-13-45")})
    good = store(
        services,
        study,
        series,
        **{ACQUISITION_DATE: ("DA", "20200105"), "00101005": ("PN", {"Alphabetic": "Müller^Jürgen"})},
    )
    # undeclared: any-attribute search finds the values as they are
    assert len(search(services, "instances", [("AcquisitionDate", "20200105")])) == 1
    run_until_done(
        services,
        declare(services, {"path": "AcquisitionDate", "level": "Instance"}, {"path": "00101005", "level": "Study"}),
    )
    with pytest.raises(BadRequest, match="Query is disabled"):
        search(services, "instances", [("AcquisitionDate", "20200105")])
    eqt.update_extended_query_tag(
        tags=services.extended_tags, tag_path="AcquisitionDate", body=b'{"QueryStatus": "enabled"}', base_url=BASE
    )
    found = search(services, "instances", [("AcquisitionDate", "20200101-20201231")])
    assert uids(found, "00080018") == {good.sop_instance_uid} and found.erroneous_attributes == ("AcquisitionDate",)
    # PN: case- and accent-insensitive, fuzzy prefix of name words with fuzzymatching=true
    name = "PatientBirthName"
    assert uids(search(services, "studies", [(name, "mul jur"), ("fuzzymatching", "true")]), "0020000D") == {study}
    assert search(services, "studies", [(name, "ller"), ("fuzzymatching", "true")]) == []
    assert uids(search(services, "studies", [(name, "MULLER^JURGEN")]), "0020000D") == {study}
    assert search(services, "studies", [(name, "mul jur")]) == []
