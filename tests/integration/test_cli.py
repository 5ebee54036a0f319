"""The operations CLI against the emulators and the FHIR server."""

from __future__ import annotations

import os

import pytest
from pydicom.uid import generate_uid

from dicomserver import cli
from dicomserver.fhir import mapping
from dicomserver.fhir.client import FhirClient
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey
from dicomserver.settings import Settings
from dicomserver.stores.layout import sync_message
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_stow import store


@pytest.fixture
def cli_env(settings: Settings, services: Services, fhir_url: str) -> Settings:
    env = {
        "DICOM_STORAGE": settings.storage_connection_string or "",
        "DICOM_COSMOS_ENDPOINT": settings.cosmos_endpoint,
        "DICOM_COSMOS_KEY": settings.cosmos_key or "",
        "DICOM_COSMOS_EMULATOR": "true",
        "DICOM_COSMOS_DATABASE": settings.cosmos_database,
        "DICOM_INSTANCE_CONTAINER": settings.instance_container,
        "DICOM_METADATA_CONTAINER": settings.metadata_container,
        "DICOM_FHIR_SYNC_QUEUE": settings.fhir_sync_queue,
        "DICOM_PUBLIC_BASE_URL": "https://cli.example.org",
        "FHIR_URL": fhir_url,
    }
    os.environ.update(env)  # restored by the autouse environment fixture
    return Settings.from_env()


def test_resync_by_patient_and_all(cli_env: Settings, services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    patient = f"CLI-{generate_uid()[-8:]}"
    studies = [generate_uid(), generate_uid()]
    for study in studies:
        assert store(services, *multipart_body([make_instance(study=study, patient_id=patient)])).status == 200
    assert cli.main(["resync", "--patient", patient, "--quiet"]) == 0
    assert "2 created" in capsys.readouterr().out
    with FhirClient(cli_env.fhir_url or "") as fhir:
        for study in studies:
            assert fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)})
    assert cli.main(["resync", "--all", "--quiet"]) == 0
    assert "2 unchanged" in capsys.readouterr().out
    assert cli.main(["resync", "--study", studies[0], "--enqueue"]) == 0
    assert "queued 1 studies" in capsys.readouterr().out


def test_requeue_poison_moves_messages_back(cli_env: Settings, services: Services) -> None:
    study = StudyKey(DEFAULT_PARTITION, generate_uid())
    services.sync_queue.send_to_poison(sync_message(study, 8))
    assert cli.main(["requeue-poison"]) == 0
    assert services.sync_queue.drain_poison() == []


def test_replay_blob_poison_indexes_the_parked_blobs(
    cli_env: Settings, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64
    import io
    import json

    import pydicom
    from azure.storage.queue import QueueClient

    from dicomserver.identifiers import InstanceKey
    from dicomserver.stores.azure.queue import BLOB_POISON_QUEUE
    from dicomserver.stores.layout import instance_blob_name

    data = make_instance()
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    key = InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    services.blobs.put_instance(key, io.BytesIO(data), len(data))  # its trigger failed until poisoned
    poison = QueueClient.from_connection_string(cli_env.storage_connection_string or "", BLOB_POISON_QUEUE)
    try:
        poison.create_queue()
    except Exception:  # noqa: BLE001 - exists
        pass
    message = {
        "Type": "BlobTrigger",
        "FunctionId": "Host.Functions.ensure_indexed",
        "BlobType": "BlockBlob",
        "ContainerName": cli_env.instance_container,
        "BlobName": instance_blob_name(key),
        "ETag": '"0x1"',
    }
    poison.send_message(base64.b64encode(json.dumps(message).encode()).decode())
    assert services.index.get_instance(key) is None
    assert cli.main(["replay-blob-poison"]) == 0
    assert "replayed 1 blobs (1 indexed)" in capsys.readouterr().out
    assert services.index.get_instance(key) is not None
