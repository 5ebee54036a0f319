"""Fixtures for tests against the running emulators."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from dicomserver.settings import Settings
from dicomserver.wiring import Services, build_services, provision_services


@pytest.fixture
def settings(stack_env: dict[str, str]) -> Settings:
    """Settings for one test: its own database, containers and queue."""
    suffix = uuid.uuid4().hex[:10]
    env = dict(stack_env)
    env.update(
        {
            "DICOM_COSMOS_DATABASE": f"test{suffix}",
            "DICOM_INSTANCE_CONTAINER": f"dicom{suffix}",
            "DICOM_METADATA_CONTAINER": f"meta{suffix}",
            "DICOM_FHIR_SYNC_QUEUE": f"sync{suffix}",
            "DICOM_EVENTS_QUEUE": f"events{suffix}",
            "DICOM_OPERATIONS_QUEUE": f"ops{suffix}",
        }
    )
    return Settings.from_env(env)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    provision_services(built)
    yield built
