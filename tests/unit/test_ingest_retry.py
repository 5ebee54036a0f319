"""Triggers ride out dependency outages (dicomserver.ingest.riding_out_outages)."""

from __future__ import annotations

import pytest

from dicomserver.errors import BadRequest, DependencyUnavailable
from dicomserver.ingest import riding_out_outages


def test_an_outage_shorter_than_the_delays_is_waited_out() -> None:
    calls, waits = [0], []

    def work() -> str:
        calls[0] += 1
        if calls[0] < 3:
            raise DependencyUnavailable("The index is unavailable (index instance).")
        return "done"

    assert riding_out_outages(work, delays=(1.0, 2.0, 4.0), sleep=waits.append) == "done"
    assert waits == [1.0, 2.0] and calls[0] == 3


def test_a_longer_outage_raises_after_the_last_delay_for_the_host_to_retry() -> None:
    waits: list[float] = []

    def work() -> None:
        raise DependencyUnavailable("Blob storage is unavailable (instance download).")

    with pytest.raises(DependencyUnavailable):
        riding_out_outages(work, delays=(1.0, 2.0), sleep=waits.append)
    assert waits == [1.0, 2.0]


def test_other_errors_are_not_retried() -> None:
    waits: list[float] = []

    def work() -> None:
        raise BadRequest("not an outage")

    with pytest.raises(BadRequest):
        riding_out_outages(work, delays=(1.0,), sleep=waits.append)
    assert waits == []
