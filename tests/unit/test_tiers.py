"""The test tiers of tests/conftest.py: markers by folder, and a unit tier without emulators."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

import tests.conftest

PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider --strict-markers
markers =
    unit: fast, no emulator, no network
    integration: needs the local emulators
    e2e: runs the local Functions host over HTTP
"""

# Shadows the real scripts.devstack in the generated tree: reaching it means an emulator would start.
DEVSTACK_STUB = """\
raise RuntimeError("EMULATOR STARTED: the unit tier reached scripts.devstack")
"""


def _tree(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    """A generated project: this repository's tests/conftest.py, a pytest.ini and ``files``."""
    pytester.makefile(".ini", pytest=PYTEST_INI)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "conftest.py").write_text(Path(tests.conftest.__file__).read_text())
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_this_module_is_in_the_unit_tier(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None
    assert request.node.get_closest_marker("e2e") is None


def test_tier_of_follows_the_folder_under_tests() -> None:
    tests_dir = Path(tests.conftest.__file__).resolve().parent
    assert tests.conftest.tier_of(tests_dir / "unit" / "test_x.py") == "unit"
    assert tests.conftest.tier_of(tests_dir / "integration" / "test_x.py") == "integration"
    assert tests.conftest.tier_of(tests_dir / "e2e" / "sub" / "test_x.py") == "e2e"
    assert tests.conftest.tier_of(tests_dir / "test_x.py") is None
    assert tests.conftest.tier_of(tests_dir.parent / "bench" / "test_x.py") is None


def test_markers_follow_the_folders(pytester: pytest.Pytester) -> None:
    test = "def test_it():\n    pass\n"
    _tree(
        pytester,
        {
            "tests/unit/test_a.py": test,
            "tests/integration/test_b.py": test,
            "tests/e2e/test_c.py": test,
            "other/test_d.py": test,
        },
    )
    items, _ = pytester.inline_genitems("tests", "other")
    tiers = {
        item.path.relative_to(pytester.path).as_posix(): sorted(
            m.name for m in item.iter_markers() if m.name in ("unit", "integration", "e2e")
        )
        for item in items
    }
    assert tiers == {
        "tests/unit/test_a.py": ["unit"],
        "tests/integration/test_b.py": ["integration"],
        "tests/e2e/test_c.py": ["e2e"],
        "other/test_d.py": [],
    }

    selected = pytester.runpytest("-m", "unit", "--collect-only", "-q", "tests")
    selected.stdout.fnmatch_lines(["tests/unit/test_a.py::test_it", "1/3 tests collected (2 deselected)*"])


def test_unit_tests_cannot_use_the_emulators(pytester: pytest.Pytester) -> None:
    _tree(
        pytester,
        {
            "scripts/__init__.py": "",
            "scripts/devstack.py": DEVSTACK_STUB,
            "tests/unit/conftest.py": dedent(
                """\
                import pytest

                @pytest.fixture
                def needs_fhir(fhir_url):
                    return fhir_url
                """
            ),
            "tests/unit/test_guard.py": dedent(
                """\
                def test_direct(stack_env):
                    pass

                def test_transitive(needs_fhir):
                    pass

                def test_dynamic(request):
                    request.getfixturevalue("stack_env")

                def test_plain():
                    pass
                """
            ),
            # Outside the unit tier the fixture is reached (here: the stub, instead of a FHIR server).  Not
            # stack_env: a session fixture caches its error, which test_dynamic would then see.
            "tests/integration/test_fhir.py": "def test_fhir(fhir_url):\n    pass\n",
        },
    )
    # A subprocess, so that ``scripts`` is the stub of the generated tree, never the real one.
    result = pytester.runpytest_subprocess("tests")
    result.assert_outcomes(passed=1, failed=1, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_fhir*",
            "E   RuntimeError: EMULATOR STARTED*",
            "*ERROR at setup of test_direct*",
            "tests/unit/test_guard.py::test_direct is a unit test (tests/unit: fast, no emulator, no network)"
            " but needs the emulator fixture 'stack_env'*",
            "*ERROR at setup of test_transitive*",
            "tests/unit/test_guard.py::test_transitive is a unit test*fixture 'fhir_url'*",
            "*FAILURES*",
            "*test_dynamic*",
            "tests/unit/test_guard.py::test_dynamic is a unit test*fixture 'stack_env'*",
        ]
    )
    reached = [line for line in result.stdout.lines if line.startswith("E   RuntimeError: EMULATOR STARTED")]
    assert len(reached) == 1  # test_fhir's, no unit test's
