"""The STOW-RS response body and status (PS3.18 §10.5.3, Azure v2 store response), built without storage."""

from __future__ import annotations

import pytest

from dicomserver.errors import DependencyUnavailable, FailureReason
from dicomserver.stow import InstanceResult, _response

BASE = "http://127.0.0.1:7071/v2"
CT = "1.2.840.10008.5.1.4.1.1.2"


def stored(sop: str, warnings: tuple[str, ...] = ()) -> InstanceResult:
    url = f"{BASE}/studies/1/series/2/instances/{sop}"
    return InstanceResult(CT, sop, retrieve_url=url, warnings=warnings)


def failed(sop: str | None, reason: FailureReason, dependency: bool = False) -> InstanceResult:
    return InstanceResult(CT if sop else None, sop, reason, f"why {sop}", dependency_failed=dependency)


def test_all_stored_is_200_with_referenced_sops_and_their_retrieve_urls() -> None:
    response = _response([stored("1.1"), stored("1.2")], None, BASE)
    assert response.status == 200
    assert set(response.body) == {"00081199"}  # ReferencedSOPSequence only; no RetrieveURL without a study path
    items = response.body["00081199"]["Value"]
    assert [i["00081155"]["Value"] for i in items] == [["1.1"], ["1.2"]]
    assert items[0]["00081150"] == {"vr": "UI", "Value": [CT]}
    assert items[0]["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/1/series/2/instances/1.1"]}


def test_study_in_path_gives_the_study_retrieve_url() -> None:
    assert _response([stored("1.1")], "1", BASE).body["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/1"]}


def test_mixed_is_202_with_failure_reasons_and_comments() -> None:
    response = _response([stored("1.1"), failed("1.2", FailureReason.SOP_INSTANCE_ALREADY_EXISTS)], None, BASE)
    assert response.status == 202
    failure = response.body["00081198"]["Value"][0]
    assert failure["00081197"] == {"vr": "US", "Value": [45070]}
    assert failure["00081155"] == {"vr": "UI", "Value": ["1.2"]}
    assert failure["00000902"] == {"vr": "LO", "Value": ["why 1.2"]}


def test_none_stored_is_409_without_a_referenced_sequence() -> None:
    response = _response([failed(None, FailureReason.PROCESSING_FAILURE)], "1", BASE)
    assert response.status == 409
    assert set(response.body) == {"00081198"}
    assert response.body["00081198"]["Value"][0]["00081155"] == {"vr": "UI"}  # unknown UID: empty value


def test_stored_with_validation_warnings_is_202_with_warning_reason_1() -> None:
    response = _response([stored("1.1", ("PatientName is too long",))], None, BASE)
    assert response.status == 202
    item = response.body["00081199"]["Value"][0]
    assert item["00081196"] == {"vr": "US", "Value": [1]}
    assert item["00741048"]["Value"] == [{"00000902": {"vr": "LO", "Value": ["PatientName is too long"]}}]


def test_every_failure_from_an_unavailable_dependency_is_503() -> None:
    with pytest.raises(DependencyUnavailable):
        _response([failed("1.1", FailureReason.PROCESSING_FAILURE, dependency=True)], None, BASE)
    mixed = [failed("1.1", FailureReason.PROCESSING_FAILURE, True), failed("1.2", FailureReason.VALIDATION_FAILURE)]
    assert _response(mixed, None, BASE).status == 409
