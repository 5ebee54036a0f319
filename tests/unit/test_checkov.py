"""Security scan of infra/*.bicep with checkov: no failed check, and every skipped check says why.

checkov lives in a virtualenv of its own, pinned in the Makefile (``make checkov-venv``; ``make test``
creates it). The scan is offline (``skip-download`` in infra/.checkov.yaml).
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CONFIG = INFRA / ".checkov.yaml"
CHECKOV = ROOT / ".local" / "checkov-venv" / "bin" / "checkov"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
#: `// checkov:skip=CKV_AZURE_35: reason` (checkov's own pattern, plus the reason we insist on)
INLINE_SKIP = re.compile(r"checkov:skip=([A-Za-z0-9_-]+)(?::\s*(.*))?")
MIN_REASON = 20  # characters: "n/a" is not a reason


def pinned_version() -> str:
    match = re.search(r"^CHECKOV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile pins checkov with CHECKOV_VERSION := <version>"
    return match.group(1)


def checkov() -> Path:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed in {CHECKOV.parent.parent}: run `make checkov-venv` (or `make test`)")
    return CHECKOV


def run_checkov(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(checkov()), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@cache
def scan() -> dict[str, Any]:
    """checkov's JSON report of the bicep framework (one run per test session)."""
    done = run_checkov("-d", "infra", "--config-file", str(CONFIG), "-o", "json")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report (exit {done.returncode}):\n{done.stderr[-3000:]}")
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep) == 1, f"expected one bicep report, got {[r.get('check_type') for r in reports]}"
    return bicep[0]  # type: ignore[no-any-return]


def records(kind: str) -> list[dict[str, Any]]:
    return scan()["results"].get(kind, [])  # type: ignore[no-any-return]


def test_checkov_is_the_pinned_version() -> None:
    version = run_checkov("--version").stdout.strip()
    assert version == pinned_version(), (
        f"checkov {version} installed, Makefile pins {pinned_version()}: make checkov-venv"
    )
    assert scan()["summary"]["checkov_version"] == pinned_version()


def test_every_template_is_parsed_and_scanned() -> None:
    summary = scan()["summary"]
    assert summary["parsing_errors"] == 0, scan()["results"].get("parsing_errors")
    assert summary["passed"] > 0 and summary["resource_count"] > 0
    scanned = {r["file_path"] for kind in ("passed_checks", "failed_checks", "skipped_checks") for r in records(kind)}
    # every template that declares a resource checkov has checks for was scanned
    for path in ("/modules/storage.bicep", "/modules/cosmos.bicep", "/modules/functionapp.bicep"):
        assert path in scanned, f"checkov did not scan infra{path}"


def test_no_failed_check() -> None:
    failed = [
        f"{r['check_id']} {r['check_name']!r} on {r['resource']} (infra{r['file_path']}:{r['file_line_range']})"
        for r in records("failed_checks")
    ]
    assert not failed, (
        "checkov failed checks; fix the template, or if the check does not apply skip it inside the resource "
        "with `// checkov:skip=CKV_...: reason`:\n" + "\n".join(failed)
    )


def test_every_skipped_check_has_a_reason() -> None:
    assert records("skipped_checks"), "no skipped check reported: are the inline skips still read?"
    for record in records("skipped_checks"):
        reason = (record.get("check_result") or {}).get("suppress_comment", "").strip()
        assert reason and reason != "No comment provided" and len(reason) >= MIN_REASON, (
            f"{record['check_id']} on {record['resource']} (infra{record['file_path']}) is skipped without a reason"
        )


def test_every_inline_skip_names_a_check_with_a_reason_and_takes_effect() -> None:
    reported = {(r["check_id"], r["file_path"]) for r in records("skipped_checks")}
    seen = 0
    for path in BICEP_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = INLINE_SKIP.search(line)
            if not match:
                continue
            seen += 1
            check, reason = match.group(1), (match.group(2) or "").strip()
            where = f"{path.relative_to(ROOT)}:{number}"
            assert re.fullmatch(r"CKV2?_AZURE_\d+", check), f"{where}: skip names no checkov check: {check}"
            assert len(reason) >= MIN_REASON, f"{where}: skip of {check} without a reason"
            # a skip outside a resource body is ignored by checkov: it must show up as skipped
            assert (check, "/" + str(path.relative_to(INFRA))) in reported, f"{where}: {check} skip has no effect"
    assert seen == len(records("skipped_checks")), "every skipped check comes from one inline skip"


def test_config_file_skips_have_reasons() -> None:
    """Checks skipped for all resources (skip-check in infra/.checkov.yaml) carry a `# reason` each."""
    lines = CONFIG.read_text().splitlines()
    assert any(re.match(r"^framework:", line) for line in lines) and "  - bicep" in lines
    assert "skip-download: true" in lines, "the scan must stay offline"
    start = next(i for i, line in enumerate(lines) if line.startswith("skip-check:"))
    inline = lines[start].partition(":")[2].split("#")[0].strip()
    assert inline in ("", "[]"), "list skip-check entries one a line, each with a `# reason` comment"
    for line in lines[start + 1 :]:
        if not line.startswith((" ", "-")) or not line.strip():
            break
        if line.strip().startswith("#"):
            continue
        entry, _, reason = line.partition("#")
        assert re.fullmatch(r"\s*-\s*CKV2?_AZURE_\d+\s*", entry), f"infra/.checkov.yaml: odd skip-check entry {line!r}"
        assert len(reason.strip()) >= MIN_REASON, f"infra/.checkov.yaml: {entry.strip()} skipped without a reason"
