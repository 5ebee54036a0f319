"""The msdicom-expiry-* headers and the local host's NCRONTAB schedules (no emulator)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dicomserver.errors import BadRequest
from dicomserver.expiry import EXPIRY_LEVEL_HEADER, EXPIRY_OPTION_HEADER, EXPIRY_TIME_HEADER, parse_expiry
from scripts.localhost.timers import Schedule

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def headers(**values: str) -> dict[str, str]:
    names = {"time": EXPIRY_TIME_HEADER, "option": EXPIRY_OPTION_HEADER, "level": EXPIRY_LEVEL_HEADER}
    return {names[k]: v for k, v in values.items()}


def test_no_headers_no_expiry() -> None:
    assert parse_expiry({}.get, NOW) is None


@pytest.mark.parametrize(
    "given",
    [
        {"time": "90000"},
        {"time": "90000", "option": "RelativeToNow", "level": "Study"},
        {"time": " 90000 ", "option": "relativetonow", "level": "STUDY"},
    ],
)
def test_the_expiry_is_relative_to_now(given: dict[str, str]) -> None:
    assert parse_expiry(headers(**given).get, NOW) == "2026-12-01T12:01:30.000000Z"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"option": "RelativeToNow"}, "is required"),
        ({"time": ""}, "is required"),
        ({"time": "0"}, "between 1"),
        ({"time": "-5"}, "between 1"),
        ({"time": "1.5"}, "must be an integer"),
        ({"time": "soon"}, "must be an integer"),
        ({"time": "1000", "option": "Absolute"}, "only RelativeToNow"),
        ({"time": "1000", "level": "Series"}, "only Study"),
        ({"time": str(10**20)}, "between 1"),
    ],
)
def test_bad_expiry_headers_are_400_with_a_message(given: dict[str, str], says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_expiry(headers(**given).get, NOW)
    assert caught.value.status == 400 and says in caught.value.message


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-12-01T12:00:00", "2026-12-01T12:05:00"),
        ("0 */5 * * * *", "2026-12-01T12:03:59", "2026-12-01T12:05:00"),
        ("*/2 * * * * *", "2026-12-01T12:00:01", "2026-12-01T12:00:02"),
        ("30 0 3 * * *", "2026-12-01T12:00:00", "2026-12-02T03:00:30"),
        ("0 0 0 1 1 *", "2026-12-01T12:00:00", "2027-01-01T00:00:00"),
        ("0 0 9 * * 1-5", "2026-12-04T10:00:00", "2026-12-07T09:00:00"),  # Friday → Monday
        ("0 15,45 * * * *", "2026-12-01T12:20:00", "2026-12-01T12:45:00"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Schedule(expression).next_after(start) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", ["* * * * *", "61 * * * * *", "*/0 * * * * *", "a * * * * *"])
def test_bad_schedules_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        Schedule(expression)
