"""Shared test configuration: test tiers, environment isolation and pydicom settings.

Tiers follow the folders: ``tests/unit`` is marked ``unit``, ``tests/integration``
``integration`` and ``tests/e2e`` ``e2e`` (``pytest -m unit``).  A unit test may
not use the emulators: requesting :func:`stack_env` or :func:`fhir_url`, directly
or through other fixtures, fails it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import config

# tests/unit/test_tiers.py runs pytest on generated test trees.
pytest_plugins = ("pytester",)

# Tests build deliberately invalid datasets; pydicom must let them be written.
config.settings.writing_validation_mode = config.IGNORE
config.settings.reading_validation_mode = config.IGNORE

TESTS_DIR = Path(__file__).resolve().parent
#: The tiers: each is a folder under ``tests/`` and the marker of the tests in it.
TIERS = frozenset({"unit", "integration", "e2e"})
#: Session fixtures that start emulators (forbidden in the unit tier).
EMULATOR_FIXTURES = ("stack_env", "fhir_url")
_CURRENT_ITEM = pytest.StashKey[pytest.Item]()


def tier_of(path: Path) -> str | None:
    """The tier marker of a test file, from its folder under ``tests/`` (None outside the tiers)."""
    try:
        folder = path.resolve().relative_to(TESTS_DIR).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(tier)


def _unit_uses_emulator(item: pytest.Item, fixture: str) -> str:
    return (
        f"{item.nodeid} is a unit test (tests/unit: fast, no emulator, no network) "
        f"but needs the emulator fixture {fixture!r}; move it to tests/integration or drop the fixture"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a unit test that requests an emulator fixture, before any fixture is set up."""
    item.config.stash[_CURRENT_ITEM] = item
    if item.get_closest_marker("unit") is None:
        return
    # fixturenames is the closure: fixtures requested through other fixtures are included.
    for fixture in EMULATOR_FIXTURES:
        if fixture in getattr(item, "fixturenames", ()):
            pytest.fail(_unit_uses_emulator(item, fixture), pytrace=False)


def _forbid_in_unit_tier(request: pytest.FixtureRequest, fixture: str) -> None:
    """Catch ``request.getfixturevalue`` from a unit test, which the setup check cannot see.

    A session fixture's ``request.node`` is the session, hence the item recorded at setup.  Only
    the first setup runs this: in a full run, a fixture already started by an integration test is
    handed out without it (``pytest -m unit`` always starts none).
    """
    item = request.config.stash.get(_CURRENT_ITEM, None)
    if item is not None and item.get_closest_marker("unit") is not None:
        pytest.fail(_unit_uses_emulator(item, fixture), pytrace=False)


@pytest.fixture(autouse=True)
def _isolated_environment() -> Iterator[None]:
    """Every test starts from the same environment and cannot leak changes."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def stack_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite and the Cosmos DB stand-in, started once per test session on free ports.

    Free ports keep the suite independent of a ``make run`` on the same machine.
    """
    _forbid_in_unit_tier(request, "stack_env")
    from scripts import devstack

    with devstack.local_stack(
        tmp_path_factory.mktemp("azurite"),
        blob_port=devstack.free_port(),
        queue_port=devstack.free_port(),
        cosmos_port=devstack.free_port(),
    ) as env:
        yield env


@pytest.fixture(scope="session")
def fhir_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sekmet-fhir FHIR R4 server (own virtualenv), started once per test session."""
    _forbid_in_unit_tier(request, "fhir_url")
    from scripts import devstack
    from scripts.fhirserver import fhir_server

    with fhir_server(tmp_path_factory.mktemp("fhir"), devstack.free_port()) as url:
        yield url
