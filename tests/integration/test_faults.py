"""Fault injection: dependencies fail mid-request; nothing is lost, nothing partial is visible."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pydicom
import pytest

from dicomserver.errors import DependencyUnavailable
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.settings import Settings
from dicomserver.wiring import Services, build_services, provision_services
from tests.dicomfiles import make_instance, multipart_body, zero_preamble
from tests.faultproxy import FaultProxy
from tests.integration.test_stow import store
from tests.search import study_search


def key_of(data: bytes) -> InstanceKey:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def visible_studies(services: Services, key: InstanceKey) -> int:
    query = study_search([("StudyInstanceUID", key.study_instance_uid)]).query
    return len(services.index.search(query).items)


@pytest.fixture
def cosmos_proxy(settings: Settings) -> Iterator[tuple[FaultProxy, Services]]:
    """Services whose Cosmos DB connection goes through a switchable proxy."""
    target = urlparse(settings.cosmos_endpoint).port
    assert target is not None
    with FaultProxy(target) as proxy:
        env = {"DICOM_COSMOS_ENDPOINT": f"http://127.0.0.1:{proxy.port}/"}
        proxied = Settings(**{**_fields(settings), "cosmos_endpoint": env["DICOM_COSMOS_ENDPOINT"]})
        built = build_services(proxied)
        provision_services(built)
        yield proxy, built


def _fields(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}


def test_cosmos_outage_during_stow_fails_cleanly_and_a_retry_succeeds(
    cosmos_proxy: tuple[FaultProxy, Services],
) -> None:
    proxy, services = cosmos_proxy
    data = make_instance()
    key = key_of(data)
    body, ctype = multipart_body([data])
    proxy.down()
    with pytest.raises(DependencyUnavailable):
        store(services, body, ctype)
    proxy.up()
    assert visible_studies(services, key) == 0  # no orphan in QIDO
    assert services.index.get_instance(key) is None
    with pytest.raises(Exception, match="not found"):
        b"".join(services.blobs.iter_instance(key))  # the blob write was undone
    assert store(services, body, ctype).status == 200  # and the client's retry succeeds
    assert visible_studies(services, key) == 1


def test_azurite_restart_mid_run_loses_nothing(tmp_path: Path, stack_env: dict[str, str]) -> None:
    from scripts import devstack

    blob_port, queue_port = devstack.free_port(), devstack.free_port()
    data_dir = tmp_path / "azurite"
    azurite = devstack.start_azurite(data_dir, blob_port, queue_port)
    try:
        devstack.wait_for_port("127.0.0.1", blob_port, 30)
        env = {**stack_env, "DICOM_STORAGE": devstack.azurite_connection_string(blob_port, queue_port)}
        env["DICOM_COSMOS_DATABASE"] = f"restart{blob_port}"
        services = build_services(Settings.from_env(env))
        provision_services(services)
        first, second = make_instance(), make_instance()
        assert store(services, *multipart_body([first])).status == 200

        devstack.stop(azurite)
        with pytest.raises(DependencyUnavailable):
            store(services, *multipart_body([second]))
        assert services.index.get_instance(key_of(second)) is None  # nothing half-stored

        azurite = devstack.start_azurite(data_dir, blob_port, queue_port)
        devstack.wait_for_port("127.0.0.1", blob_port, 30)
        assert b"".join(services.blobs.iter_instance(key_of(first))) == zero_preamble(first)
        assert store(services, *multipart_body([second])).status == 200
    finally:
        devstack.stop(azurite)


def test_a_cosmos_outage_during_the_repair_trigger_is_ridden_out_not_poisoned(
    cosmos_proxy: tuple[FaultProxy, Services],
) -> None:
    import threading

    from dicomserver.ingest import Outcome, ensure_indexed, riding_out_outages
    from dicomserver.stores.layout import instance_blob_name

    proxy, services = cosmos_proxy
    data = make_instance()
    key = key_of(data)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))  # a blob whose STOW died before indexing
    proxy.down()
    threading.Timer(2.0, proxy.up).start()  # the outage lasts about 2 s
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        import time

        time.sleep(seconds)

    outcome = riding_out_outages(
        lambda: ensure_indexed(services.blobs, services.index, services.sync_queue, instance_blob_name(key)),
        delays=(0.5, 1.0, 2.0, 4.0),
        sleep=wait,
    )
    assert outcome is Outcome.INDEXED  # absorbed (by the SDK's own retries and, beyond them, our waits)
    assert visible_studies(services, key) == 1


def test_an_index_outage_during_the_fhir_sync_backs_off_instead_of_raising(
    cosmos_proxy: tuple[FaultProxy, Services], fhir_url: str
) -> None:
    import base64
    import json

    from azure.storage.queue import QueueClient

    from dicomserver.fhir.client import FhirClient
    from dicomserver.fhir.sync import handle_sync_message
    from dicomserver.identifiers import StudyKey
    from dicomserver.stores.layout import sync_message

    proxy, services = cosmos_proxy
    study = StudyKey(DEFAULT_PARTITION, "1.2.826.0.1.3680043.8.498.424242")
    proxy.down()
    with FhirClient(fhir_url) as fhir:
        outcome = handle_sync_message(
            body=sync_message(study, 2),
            index=services.index,
            blobs=services.blobs,
            fhir=fhir,
            queue=services.sync_queue,
            dicomweb_base_url="http://dicom.test/v2",
            patient_identifier_system="urn:test",
        )
    proxy.up()
    assert outcome is None  # not raised: the host would have counted it towards poison
    queue = QueueClient.from_connection_string(
        services.settings.storage_connection_string or "", services.settings.fhir_sync_queue
    )
    assert list(queue.peek_messages()) == []  # re-queued invisible (40 s for attempt 3), not visible now
    assert queue.get_queue_properties().approximate_message_count == 1
    poison = QueueClient.from_connection_string(
        services.settings.storage_connection_string or "", services.settings.fhir_sync_queue + "-poison"
    )
    assert [json.loads(base64.b64decode(m.content)) for m in poison.peek_messages()] == []


def test_storage_that_refuses_our_identity_is_424_not_503(settings: Settings) -> None:
    """A wrong account key (as a missing role in Azure): Azure Storage answers 403, the service 424."""
    import base64
    import re

    from dicomserver.errors import DependencyFailed

    wrong_key = base64.b64encode(b"not the account key" * 3).decode()
    connection = re.sub(r"AccountKey=[^;]+", f"AccountKey={wrong_key}", settings.storage_connection_string or "")
    refused = build_services(Settings(**{**_fields(settings), "storage_connection_string": connection}))
    body, ctype = multipart_body([make_instance()])
    with pytest.raises(DependencyFailed) as caught:
        store(refused, body, ctype)
    assert caught.value.status == 424 and "refused" in caught.value.message
