"""The README's scenarios on the local stack: seeded FHIR + DICOM, cohorts, reports, dose, demographics."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from scripts import seed_scenarios
from scripts.seed_scenarios import PATIENTS, SeedStudy, image, stow, structured_report
from tests.e2e.conftest import ROOT

TODAY = date.today()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def fhir_search(fhir_url: str, resource_type: str, **params: str) -> list[dict[str, Any]]:
    bundle = httpx.get(f"{fhir_url}/{resource_type}", params={**params, "_count": "200"}).json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


@pytest.fixture(scope="module")
def seeded(base_url: str, fhir_url: str) -> list[SeedStudy]:
    studies = seed_scenarios.seed(base_url, fhir_url, today=TODAY)
    assert seed_scenarios.wait_for_sync(fhir_url, studies, timeout=60)
    reports = [s for s in studies if "SR" in s.modalities]
    wait_for(
        lambda: all(
            fhir_search(fhir_url, "DiagnosticReport", subject=f"Patient/seed-{s.patient.key}") for s in reports
        ),
        "the seeded reports' DiagnosticReports",
    )
    return studies


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomserver.cli", "cohort", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def research_search() -> str:
    over_45 = seed_scenarios._years_ago(45, TODAY).isoformat()
    two_years = seed_scenarios._years_ago(2, TODAY).isoformat()
    return (
        f"ImagingStudy?modality=CT&modality=SR&subject:Patient.birthdate=le{over_45}"
        f"&subject:Patient._has:Condition:subject:onset-date=ge{two_years}"
    )


def expected_cohort(seeded: list[SeedStudy]) -> set[str]:
    return {s.study_instance_uid for s in seeded if s.patient.in_cohort}


def test_research_cohort_lists_exactly_the_expected_studies(seeded: list[SeedStudy], fhir_url: str) -> None:
    done = cli("--fhir-url", fhir_url, "--fhir", research_search(), "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {s["study_instance_uid"] for s in found} == expected_cohort(seeded)
    anna = next(s for s in found if s["patient"] == "Patient/seed-anna")
    assert anna["patient_name"] == "Anna Berg"  # the clinic's name, untouched by the sync
    assert anna["modalities"] == ["CT", "SR"]
    assert anna["study_url"].endswith(f"/v2/studies/{anna['study_instance_uid']}")


def test_patient_search_resolves_to_the_patients_studies(seeded: list[SeedStudy], fhir_url: str) -> None:
    over_45 = seed_scenarios._years_ago(45, TODAY).isoformat()
    two_years = seed_scenarios._years_ago(2, TODAY).isoformat()
    search = f"Patient?birthdate=le{over_45}&_has:Condition:subject:onset-date=ge{two_years}"
    done = cli("--fhir-url", fhir_url, "--fhir", search, "--studies", "modality=CT&modality=SR", "--json")
    assert done.returncode == 0, done.stderr
    assert {s["study_instance_uid"] for s in json.loads(done.stdout)} == expected_cohort(seeded)
    everything = cli("--fhir-url", fhir_url, "--fhir", search, "--json")  # every study of those patients
    patients = {s["patient"] for s in json.loads(everything.stdout)}
    # Eva has a CT without a report, David an MR with one: over 45 and diagnosed recently, but not in the cohort.
    assert patients == {"Patient/seed-anna", "Patient/seed-david", "Patient/seed-eva", "Patient/seed-farid"}


def test_an_unsupported_parameter_fails_instead_of_widening_the_cohort(seeded: list[SeedStudy], fhir_url: str) -> None:
    done = cli("--fhir-url", fhir_url, "--fhir", "ImagingStudy?no-such-param=1")
    assert done.returncode == 1
    assert "no-such-param" in done.stderr
    wrong = cli("--fhir-url", fhir_url, "--fhir", "Observation?code=x")
    assert wrong.returncode == 1 and "ImagingStudy or Patient" in wrong.stderr


def test_download_is_byte_identical_with_a_manifest_and_resumes(
    seeded: list[SeedStudy], fhir_url: str, tmp_path: Path
) -> None:
    sent = {
        pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID: hashlib.sha256(part).hexdigest()
        for s in seeded
        if s.patient.in_cohort
        for part in s.instances
    }
    target = tmp_path / "cohort"
    args = ("--fhir-url", fhir_url, "--fhir", research_search(), "--download", str(target), "--concurrency", "3")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((target / "manifest.json").read_text())["instances"]
    assert {row["instance"]: row["sha256"] for row in manifest} == sent
    for row in manifest:
        data = (target / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["size"]
        assert row["patient"] in ("Patient/seed-anna", "Patient/seed-farid")
    csv_lines = (target / "manifest.csv").read_text().splitlines()
    assert csv_lines[0] == "patient,patient_name,study,series,instance,file,sha256,size"
    assert len(csv_lines) == len(manifest) + 1

    removed = target / manifest[0]["file"]
    removed.unlink()
    again = cli(*args, "--quiet")
    assert again.returncode == 0, again.stderr
    assert f"downloaded 1 instances ({manifest[0]['size']} bytes), skipped {len(manifest) - 1}" in again.stderr
    assert hashlib.sha256(removed.read_bytes()).hexdigest() == manifest[0]["sha256"]


def test_report_is_a_diagnostic_report_of_its_study_and_leaves_with_it(
    seeded: list[SeedStudy], base_url: str, fhir_url: str
) -> None:
    farid = next(s for s in seeded if s.patient.key == "farid")
    (report,) = fhir_search(fhir_url, "DiagnosticReport", subject="Patient/seed-farid")
    (study,) = fhir_search(fhir_url, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{farid.study_instance_uid}")
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study['id']}"}]
    assert report["status"] == "final"
    assert report["conclusion"] == "Solitary pulmonary nodule; follow-up CT in 3 months."
    wado = httpx.get(report["presentedForm"][0]["url"], headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert wado.status_code == 200
    assert pydicom.dcmread(io.BytesIO(wado.content)).Modality == "SR"
    assert {s["modality"]["code"] for s in study["series"]} == {"CT", "SR", "SEG"}  # the AI result is listed

    sr_series = next(s for s in study["series"] if s["modality"]["code"] == "SR")
    url = f"{base_url}/studies/{farid.study_instance_uid}/series/{sr_series['uid']}"
    assert httpx.delete(url).status_code == 204
    wait_for(
        lambda: not fhir_search(fhir_url, "DiagnosticReport", subject="Patient/seed-farid"), "the report's removal"
    )


def test_dose_report_gives_cast_observations(seeded: list[SeedStudy], fhir_url: str) -> None:
    observations = fhir_search(fhir_url, "Observation", subject="Patient/seed-anna")
    codes = sorted(o["code"]["coding"][0]["code"] for o in observations)
    assert codes == ["113852", "113852", "73569-6"]
    summary = next(o for o in observations if o["code"]["coding"][0]["code"] == "73569-6")
    assert len(summary["hasMember"]) == 2
    # Searchable as DICOM cast's were: by the study's identifier.
    anna = next(s for s in seeded if s.patient.key == "anna")
    by_study = fhir_search(fhir_url, "Observation", identifier=f"urn:dicom:uid|urn:oid:{anna.study_instance_uid}")
    assert len(by_study) == 3


def test_corrected_patient_name_reaches_fhir_but_clinic_fields_stay(
    seeded: list[SeedStudy], base_url: str, fhir_url: str
) -> None:
    pid = f"E2E-{generate_uid()[-10:]}"
    older = {"id": pid, "name": "Smith^Jonh", "birth_date": "19600101", "sex": "M", "study_date": "20240101"}
    with httpx.Client() as http:
        first = image("CT", study=generate_uid(), series=generate_uid(), sop=generate_uid(), patient=older)
        assert stow(http, base_url, [first]) == 200

    def our_patient() -> dict[str, Any] | None:
        found = fhir_search(fhir_url, "Patient", identifier=f"urn:dicomserver:patient-id|{pid}")
        return found[0] if found else None

    created = wait_for(our_patient, "the Patient created by the sync")
    assert created["name"][0]["given"] == ["Jonh"]
    # The clinic adds a phone number to the Patient the sync created.
    clinic = {**created, "telecom": [{"system": "phone", "value": "+44 20 7946 0123"}]}
    assert httpx.put(f"{fhir_url}/Patient/{created['id']}", json=clinic).status_code == 200

    newer = {**older, "name": "Smith^John", "study_date": (TODAY - timedelta(days=1)).strftime("%Y%m%d")}
    with httpx.Client() as http:
        assert (
            stow(
                http,
                base_url,
                [image("CT", study=generate_uid(), series=generate_uid(), sop=generate_uid(), patient=newer)],
            )
            == 200
        )
    fixed = wait_for(lambda: (p := our_patient()) and p["name"][0]["given"] == ["John"] and p, "the corrected name")
    assert fixed["telecom"] == clinic["telecom"]

    # A Patient the clinic created keeps its name: DICOM never owned it.
    anna = next(p for p in PATIENTS if p.key == "anna")
    renamed = {
        "id": seed_scenarios.patient_id(anna),
        "name": "Berg-Lund^Anna",
        "birth_date": seed_scenarios.birth_date(anna, TODAY).strftime("%Y%m%d"),
        "sex": "F",
        "study_date": TODAY.strftime("%Y%m%d"),
    }
    newest = generate_uid()
    with httpx.Client() as http:
        sr = structured_report(
            study=newest, series=generate_uid(), sop=generate_uid(), patient=renamed, findings="x", impression="y"
        )
        assert stow(http, base_url, [sr]) == 200
    wait_for(
        lambda: fhir_search(fhir_url, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{newest}"), "the newest study"
    )
    patient = httpx.get(f"{fhir_url}/Patient/seed-anna").json()
    assert patient["name"] == [{"use": "official", "family": "Berg", "given": ["Anna"]}]
    assert patient["telecom"][0]["value"] == anna.phone
