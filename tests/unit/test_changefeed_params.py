"""Change feed parameters (Azure v2 defaults, ranges and 400s) and the event schema, without storage."""

from __future__ import annotations

import uuid

import pytest

from dicomserver.changefeed import EVENT_TYPES, MAX_TIME, MIN_TIME, FeedQuery, event, parse_feed_query
from dicomserver.errors import BadRequest
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.stores import ChangeAction, ChangeEntry, ChangeState


def test_defaults_are_azures() -> None:
    assert parse_feed_query([]) == FeedQuery(MIN_TIME, MAX_TIME, 0, 100, True)


def test_names_are_case_insensitive_and_times_are_normalised_to_utc() -> None:
    query = parse_feed_query(
        [
            ("StartTime", "2026-12-01T10:00:00+01:00"),
            ("ENDTIME", "2026-12-01T10:00:00Z"),
            ("Offset", "5"),
            ("limit", "200"),
            ("IncludeMetadata", "False"),
        ]
    )
    assert query == FeedQuery("2026-12-01T09:00:00.000000Z", "2026-12-01T10:00:00.000000Z", 5, 200, False)


def test_a_plus_decoded_as_a_space_in_an_offset_is_read_back() -> None:
    assert parse_feed_query([("startTime", "2026-12-01T10:00:00 01:00")]).start == "2026-12-01T09:00:00.000000Z"


def test_a_time_without_an_offset_is_utc() -> None:
    assert parse_feed_query([("endTime", "2026-12-01")]).end == "2026-12-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("limit", "0")], "between 1 and 200"),
        ([("limit", "201")], "between 1 and 200"),
        ([("limit", "ten")], "not an integer"),
        ([("offset", "-1")], "at least 0"),
        ([("startTime", "yesterday")], "not a date and time"),
        ([("includemetadata", "yes")], "not true or false"),
        ([("startTime", "2026-12-02"), ("endTime", "2026-12-01")], "must be before"),
        ([("offset", "1"), ("offset", "2")], "more than once"),
    ],
)
def test_bad_parameters_are_400_with_a_message(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_feed_query(params)


def test_latest_takes_only_includemetadata() -> None:
    assert parse_feed_query([("includemetadata", "false"), ("limit", "0")], latest=True).include_metadata is False


def entry(action: ChangeAction, sequence: int = 7) -> ChangeEntry:
    key = InstanceKey(DEFAULT_PARTITION, "1.2", "1.2.3", "1.2.3.4")
    return ChangeEntry(sequence, key, action, "2026-12-01T10:00:00.123456Z", ChangeState.CURRENT)


def test_events_follow_the_health_data_services_dicom_schema() -> None:
    created = event(entry(ChangeAction.CREATE), "dicom.example.org")
    assert created == {
        "id": created["id"],
        "topic": "dicom.example.org",
        "subject": "dicom.example.org/v2/studies/1.2/series/1.2.3/instances/1.2.3.4",
        "eventType": "Microsoft.HealthcareApis.DicomImageCreated",
        "eventTime": "2026-12-01T10:00:00.123456Z",
        "dataVersion": "1",
        "metadataVersion": "1",
        "data": {
            "partitionName": "Microsoft.Default",
            "imageStudyInstanceUid": "1.2",
            "imageSeriesInstanceUid": "1.2.3",
            "imageSopInstanceUid": "1.2.3.4",
            "serviceHostName": "dicom.example.org",
            "sequenceNumber": 7,
        },
    }
    uuid.UUID(created["id"])


def test_event_ids_are_stable_per_entry_so_duplicates_can_be_dropped() -> None:
    assert event(entry(ChangeAction.CREATE), "h")["id"] == event(entry(ChangeAction.CREATE), "h")["id"]
    assert event(entry(ChangeAction.CREATE, 7), "h")["id"] != event(entry(ChangeAction.CREATE, 8), "h")["id"]


def test_every_action_has_its_event_type() -> None:
    assert {a: EVENT_TYPES[a].rsplit(".", 1)[1] for a in ChangeAction} == {
        ChangeAction.CREATE: "DicomImageCreated",
        ChangeAction.UPDATE: "DicomImageUpdated",
        ChangeAction.DELETE: "DicomImageDeleted",
    }


def test_an_event_of_a_partition_names_the_instance_under_its_partition() -> None:
    key = InstanceKey("site-a", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    entry = ChangeEntry(7, key, ChangeAction.CREATE, "2026-12-01T10:00:00.000000Z", ChangeState.CURRENT)
    published = event(entry, "dicom.test")
    assert published["subject"] == "dicom.test/v2/partitions/site-a/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    assert published["data"]["partitionName"] == "site-a"
