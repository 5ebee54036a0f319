"""Structured reports → DiagnosticReport and dose Observations (dicomserver.fhir.reports); no emulator."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest

from dicomserver.fhir import reports
from scripts.seed_scenarios import (
    BASIC_TEXT_SR,
    DoseEvent,
    dose_report,
    structured_report,
)

PATIENT = {"id": "PID-1", "name": "Doe^Jane", "birth_date": "19700101", "sex": "F", "study_date": "20240301"}
CTX = reports.ReportContext(
    study_instance_uid="1.2.3",
    sop_instance_uid="1.2.3.9",
    patient_id="pat-1",
    imaging_study_id="study-1",
    instance_url="https://dicom.example/v2/studies/1.2.3/series/1.2.3.8/instances/1.2.3.9",
)


def metadata(part10: bytes) -> dict[str, Any]:
    return pydicom.dcmread(io.BytesIO(part10)).to_json_dict()  # type: ignore[no-any-return]


def report(**kwargs: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "study": "1.2.3",
        "series": "1.2.3.8",
        "sop": "1.2.3.9",
        "patient": PATIENT,
        "findings": "A 9 mm nodule.",
        "impression": "Follow up in 3 months.",
    }
    return metadata(structured_report(**{**defaults, **kwargs}))


def test_verified_report_becomes_a_final_diagnostic_report_linked_to_study_and_instance() -> None:
    resource = reports.diagnostic_report(report(), CTX)
    assert resource["status"] == "final"
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["imagingStudy"] == [{"reference": "ImagingStudy/study-1"}]
    assert resource["identifier"] == [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.9"}]
    assert resource["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging report"}
    ]
    assert resource["effectiveDateTime"] == "2024-03-01"
    assert resource["presentedForm"][0]["url"] == CTX.instance_url
    assert resource["presentedForm"][0]["contentType"] == "application/dicom"
    assert resource["conclusion"] == "Follow up in 3 months."  # the Impression, not the finding
    assert resource["meta"]["tag"] == [{"system": reports.STUDY_TAG_SYSTEM, "code": "study-1"}]


def test_unverified_report_is_preliminary_and_partial_is_partial() -> None:
    assert reports.diagnostic_report(report(verified=False), CTX)["status"] == "preliminary"
    partial = report()
    partial["0040A491"] = {"vr": "CS", "Value": ["PARTIAL"]}
    assert reports.diagnostic_report(partial, CTX)["status"] == "partial"


def test_conclusion_falls_back_to_every_text_item_without_an_impression() -> None:
    md = report(sop_class=BASIC_TEXT_SR)
    items = md["0040A730"]["Value"]
    items[1]["0040A043"]["Value"][0]["00080100"]["Value"] = ["121070"]  # "Findings", not a conclusion
    items[1]["0040A043"]["Value"][0]["00080104"]["Value"] = ["Findings"]
    assert reports.diagnostic_report(md, CTX)["conclusion"] == "A 9 mm nodule.\nFollow up in 3 months."


def test_effective_date_uses_content_date_time_with_timezone_else_study_date() -> None:
    md = report()
    md["00080201"] = {"vr": "SH", "Value": ["+0100"]}
    assert reports.diagnostic_report(md, CTX)["effectiveDateTime"] == "2024-03-01T12:00:00+01:00"
    del md["00080023"]
    assert reports.diagnostic_report(md, CTX)["effectiveDateTime"] == "2024-03-01T10:15:00+01:00"


def test_report_without_title_gets_a_text_code() -> None:
    md = report()
    del md["0040A043"]
    assert reports.diagnostic_report(md, CTX)["code"] == {"text": "Structured report"}


def dose(events: list[DoseEvent]) -> dict[str, Any]:
    return metadata(dose_report(study="1.2.3", series="1.2.3.7", sop="1.2.3.9", patient=PATIENT, events=events))


def test_dose_report_gives_cast_summary_and_irradiation_events() -> None:
    observations = reports.dose_observations(
        dose([DoseEvent("1.2.3.100", "3.2", "120.5"), DoseEvent("1.2.3.101", "4", "160")]),
        CTX,
        lambda event: f"obs-{event or 'summary'}",
    )
    summary, first, second = observations
    assert summary["id"] == "obs-summary"
    assert summary["code"]["coding"][0] == reports.RADIATION_EXPOSURE  # LOINC 73569-6 as cast
    assert summary["code"]["coding"][1]["code"] == "113701"
    assert summary["partOf"] == [{"reference": "ImagingStudy/study-1"}]
    assert summary["subject"] == {"reference": "Patient/pat-1"}
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"} in summary["identifier"]  # cast's identifier
    assert summary["hasMember"] == [
        {"reference": "Observation/obs-1.2.3.100"},
        {"reference": "Observation/obs-1.2.3.101"},
    ]
    values = {c["code"]["coding"][0]["code"]: c for c in summary["component"]}
    assert values["113813"]["valueQuantity"] == {
        "value": 280.5,
        "unit": "mGy.cm",
        "code": "mGy.cm",
        "system": "http://unitsofmeasure.org",
    }
    assert values["113812"]["valueInteger"] == 2
    assert "113830" not in values  # an event's CTDIvol is not the summary's

    assert first["code"]["coding"][0] == reports.IRRADIATION_EVENT  # DCM 113852 as cast
    assert first["code"]["coding"][1]["code"] == "113819"
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.100"} in first["identifier"]
    assert first["bodySite"]["coding"][0]["code"] == "43799004"
    event_values = {c["code"]["coding"][0]["code"]: c for c in first["component"]}
    assert event_values["113830"]["valueQuantity"]["value"] == 3.2
    assert event_values["113838"]["valueQuantity"]["value"] == 120.5
    assert event_values["113835"]["valueCodeableConcept"]["coding"][0]["code"] == "113691"
    assert second["component"][0]["valueQuantity"]["value"] == 4


def test_irradiation_event_without_its_uid_is_left_out_as_cast_does() -> None:
    md = dose([DoseEvent("1.2.3.100", "3.2", "120.5")])
    acquisition = md["0040A730"]["Value"][1]
    acquisition["0040A730"]["Value"] = [
        i for i in acquisition["0040A730"]["Value"] if i["0040A043"]["Value"][0]["00080100"]["Value"] != ["113769"]
    ]
    observations = reports.dose_observations(md, CTX, lambda event: f"obs-{event}")
    assert [o["code"]["coding"][0]["code"] for o in observations] == ["73569-6"]
    assert "hasMember" not in observations[0]


@pytest.mark.parametrize("verified", [True, False])
def test_a_text_report_gives_no_dose_observations(verified: bool) -> None:
    assert reports.dose_observations(report(verified=verified), CTX, lambda event: "x") == []
