"""The change feed and its events over HTTP, through the local host and its queue trigger."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from azure.storage.queue import QueueClient
from pydicom.uid import generate_uid

from tests.dicomfiles import make_instance
from tests.e2e.test_auth import token
from tests.e2e.test_pipelines import eventually
from tests.stowhttp import stored


def changefeed(base_url: str, **params: object) -> httpx.Response:
    return httpx.get(f"{base_url}/changefeed", params={k: str(v) for k, v in params.items()}, timeout=30)


def test_stored_and_deleted_instances_appear_in_order_with_their_states(base_url: str) -> None:
    start = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    study = generate_uid()
    (ds,) = stored(base_url, [make_instance(study=study)])
    assert httpx.delete(f"{base_url}/studies/{study}").status_code == 204
    response = changefeed(base_url, startTime=start, limit=200)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    mine = [e for e in response.json() if e["StudyInstanceUid"] == study]
    assert [(e["Action"], e["State"]) for e in mine] == [("create", "deleted"), ("delete", "deleted")]
    assert mine[0]["SopInstanceUid"] == ds.SOPInstanceUID and mine[0]["Sequence"] < mine[1]["Sequence"]
    assert mine[0]["Timestamp"].endswith("Z")
    latest = httpx.get(f"{base_url}/changefeed/latest", timeout=30)
    assert latest.status_code == 200 and latest.json()["Sequence"] >= mine[1]["Sequence"]


def test_metadata_is_included_by_default_and_left_out_on_request(base_url: str) -> None:
    start = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    (ds,) = stored(base_url, [make_instance()])
    (entry,) = [e for e in changefeed(base_url, startTime=start).json() if e["SopInstanceUid"] == ds.SOPInstanceUID]
    assert entry["State"] == "current" and entry["Metadata"]["0020000D"]["Value"] == [ds.StudyInstanceUID]
    bare = changefeed(base_url, startTime=start, includemetadata="false").json()
    assert all("Metadata" not in e for e in bare)


def test_bad_parameters_and_media_types_are_refused_with_a_message(base_url: str) -> None:
    for params in ({"limit": 201}, {"offset": "x"}, {"startTime": "not-a-date"}, {"includemetadata": "maybe"}):
        response = changefeed(base_url, **params)
        assert response.status_code == 400 and response.json()["message"], params
    refused = httpx.get(f"{base_url}/changefeed", headers={"Accept": "application/dicom"}, timeout=30)
    assert refused.status_code == 406


def _events(stack_env: dict[str, str]) -> list[dict[str, Any]]:
    queue = QueueClient.from_connection_string(stack_env["DICOM_STORAGE"], "dicom-events")
    return [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]


def test_the_trigger_publishes_an_event_for_every_stored_instance(base_url: str, stack_env: dict[str, str]) -> None:
    (ds,) = stored(base_url, [make_instance()])

    def published() -> dict[str, Any]:
        found = [e for e in _events(stack_env) if e["data"]["imageSopInstanceUid"] == ds.SOPInstanceUID]
        assert found, "not yet"
        return found[0]

    created = eventually(lambda: _retrying(published), timeout=60)
    assert created["eventType"] == "Microsoft.HealthcareApis.DicomImageCreated"
    assert created["data"]["imageStudyInstanceUid"] == ds.StudyInstanceUID
    assert created["data"]["partitionName"] == "Microsoft.Default"


def _retrying(check: Any) -> Any:
    try:
        return check()
    except AssertionError:
        return None


def test_readers_may_read_the_change_feed_and_anonymous_callers_may_not(
    secure_base_url: str, auth_key_dir: Path
) -> None:
    reader = {"Authorization": f"Bearer {token(auth_key_dir, ['DICOM.Data.Reader'])}"}
    assert httpx.get(f"{secure_base_url}/changefeed", headers=reader, timeout=30).status_code == 200
    assert httpx.get(f"{secure_base_url}/changefeed/latest", headers=reader, timeout=30).status_code in (200, 204)
    assert httpx.get(f"{secure_base_url}/changefeed", timeout=30).status_code == 401


def test_a_host_killed_after_the_write_publishes_the_event_after_restart(
    stack_env: dict[str, str], tmp_path_factory: Any
) -> None:
    """SIGKILL the host right after STOW answered (before its write-ahead message is due); a new host publishes."""
    import os
    import signal
    import uuid

    from tests.e2e.conftest import HOST_PIDS, local_host

    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack_env,
        "DICOM_AUTH_MODE": "none",
        "DICOM_COSMOS_DATABASE": f"killed{suffix}",
        "DICOM_INSTANCE_CONTAINER": f"killed{suffix}",
        "DICOM_METADATA_CONTAINER": f"killed-meta{suffix}",
        "DICOM_IMPORT_CONTAINER": f"killed-import{suffix}",
        "DICOM_IMPORT_ERRORS_CONTAINER": f"killed-errors{suffix}",
        "DICOM_FHIR_SYNC_QUEUE": f"killed-sync{suffix}",
        "DICOM_EVENTS_QUEUE": f"killed-events{suffix}",
        "DICOM_FHIR_SYNC_DELAY_SECONDS": "5",
    }
    with local_host(env, tmp_path_factory.mktemp("doomed")) as doomed:
        (ds,) = stored(doomed, [make_instance()])
        os.killpg(HOST_PIDS[doomed], signal.SIGKILL)  # no shutdown, no trigger ran
    queue = QueueClient.from_connection_string(stack_env["DICOM_STORAGE"], env["DICOM_EVENTS_QUEUE"])
    assert list(queue.peek_messages(max_messages=32)) == []
    with local_host(env, tmp_path_factory.mktemp("restarted")):

        def published() -> list[dict[str, Any]]:
            return [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]

        (event,) = eventually(published, timeout=60)
    assert event["eventType"] == "Microsoft.HealthcareApis.DicomImageCreated"
    assert event["data"]["imageSopInstanceUid"] == ds.SOPInstanceUID
