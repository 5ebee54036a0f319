"""The cohort command's pure parts (dicomserver.cohort): search parsing, tokens, manifest; no emulator."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from dicomserver import cohort
from dicomserver.cli import main


def test_search_on_imaging_study_or_patient_is_passed_as_written() -> None:
    assert cohort.parse_search("ImagingStudy?modality=CT&subject:Patient.birthdate=le1980-01-01") == (
        "ImagingStudy",
        [("modality", "CT"), ("subject:Patient.birthdate", "le1980-01-01")],
    )
    assert cohort.parse_search("/Patient?_has:Condition:subject:code=http://snomed.info/sct|123") == (
        "Patient",
        [("_has:Condition:subject:code", "http://snomed.info/sct|123")],
    )


@pytest.mark.parametrize("search", ["Observation?code=1", "", "studies?PatientID=1"])
def test_other_searches_are_refused_with_an_example(search: str) -> None:
    with pytest.raises(ValueError, match="ImagingStudy or Patient"):
        cohort.parse_search(search)


def test_tokens_static_none_on_loopback_else_azure_scope() -> None:
    assert cohort.TokenSource.for_url("https://fhir.example", "abc", "s")() == "abc"
    assert cohort.TokenSource.for_url("http://127.0.0.1:8090/fhir", None, "s")() is None

    class Credential:  # the shape of azure.identity's get_token
        def get_token(self, scope: str) -> SimpleNamespace:
            return SimpleNamespace(token=f"token-for-{scope}")

    remote = cohort.TokenSource.for_url("https://fhir.example", None, "https://fhir.example/.default", Credential)
    assert remote() == "token-for-https://fhir.example/.default"
    with pytest.raises(cohort.CohortError, match="static token"):
        cohort.TokenSource.for_url("https://fhir.example", None, "s")()


def test_manifest_round_trip_and_unreadable_manifest(tmp_path: Path) -> None:
    entry = cohort.ManifestEntry("Patient/p", "Ann", "1.2", "1.2.3", "1.2.3.4", "1.2/1.2.3/1.2.3.4.dcm", "ab" * 32, 7)
    cohort.write_manifest(tmp_path, [entry], "ImagingStudy?modality=CT")
    assert cohort.load_manifest(tmp_path) == {("1.2", "1.2.3", "1.2.3.4"): entry}
    assert (tmp_path / "manifest.csv").read_text().splitlines()[1].startswith("Patient/p,Ann,1.2,1.2.3,")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(cohort.CohortError, match="move it away"):
        cohort.load_manifest(tmp_path)


def test_download_refuses_zero_concurrency(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        cohort.download_studies([], tmp_path, concurrency=0)


def test_cli_without_fhir_url_says_how_to_set_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cohort", "--fhir", "Patient?gender=female", "--fhir-url", ""]) == 2
    assert "FHIR_URL" in capsys.readouterr().err
