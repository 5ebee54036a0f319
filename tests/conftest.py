"""Shared test configuration: environment isolation and pydicom settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydicom import config

# Tests build deliberately invalid datasets; pydicom must let them be written.
config.settings.writing_validation_mode = config.IGNORE
config.settings.reading_validation_mode = config.IGNORE


@pytest.fixture(autouse=True)
def _isolated_environment() -> Iterator[None]:
    """Every test starts from the same environment and cannot leak changes."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite and the Cosmos DB stand-in, started once per test session on free ports.

    Free ports keep the suite independent of a ``make run`` on the same machine.
    """
    from scripts import devstack

    with devstack.local_stack(
        tmp_path_factory.mktemp("azurite"),
        blob_port=devstack.free_port(),
        queue_port=devstack.free_port(),
        cosmos_port=devstack.free_port(),
    ) as env:
        yield env


@pytest.fixture(scope="session")
def fhir_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sekmet-fhir FHIR R4 server (own virtualenv), started once per test session."""
    from scripts import devstack
    from scripts.fhirserver import fhir_server

    with fhir_server(tmp_path_factory.mktemp("fhir"), devstack.free_port()) as url:
        yield url
