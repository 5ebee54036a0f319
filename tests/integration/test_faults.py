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
