"""Reports, dose reports and derived objects through the FHIR sync (Azurite, Cosmos stand-in, sekmet-fhir)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicomserver import delete, opcount
from dicomserver.fhir import mapping, reports
from dicomserver.fhir.client import FhirClient
from dicomserver.fhir.sync import SyncOutcome, resource_id, sync_study
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, StudyKey
from dicomserver.wiring import Services
from scripts.seed_scenarios import DoseEvent, dose_report, image, key_object, segmentation, structured_report
from tests.dicomfiles import multipart_body
from tests.integration.test_stow import store

BASE = "https://dicom.example.org/v2"
SYSTEM = "urn:test:patient-id"


@pytest.fixture
def fhir(fhir_url: str) -> Iterator[FhirClient]:
    client = FhirClient(fhir_url)
    yield client
    client.close()


def sync(services: Services, fhir: FhirClient, study: str) -> SyncOutcome:
    return sync_study(
        index=services.index,
        blobs=services.blobs,
        fhir=fhir,
        study=StudyKey(DEFAULT_PARTITION, study),
        dicomweb_base_url=BASE,
        patient_identifier_system=SYSTEM,
    )


def patient(pid: str, name: str = "Doe^Jane", study_date: str = "20240301", **more: str) -> dict[str, str]:
    return {"id": pid, "name": name, "birth_date": "19700101", "sex": "F", "study_date": study_date, **more}


def put(services: Services, *parts: bytes) -> None:
    assert store(services, *multipart_body(list(parts))).status == 200


def tagged(fhir: FhirClient, resource_type: str, study: str) -> list[dict[str, Any]]:
    study_id = resource_id("study", BASE, DEFAULT_PARTITION, study)
    return fhir.search_all(resource_type, {"_tag": f"{reports.STUDY_TAG_SYSTEM}|{study_id}"})


def test_report_becomes_diagnostic_report_and_goes_away_with_its_instance(services: Services, fhir: FhirClient) -> None:
    study, images, sr_series, sr = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    who = patient(f"P-{generate_uid()[-8:]}")
    put(
        services,
        image("CT", study=study, series=images, sop=generate_uid(), patient=who),
        structured_report(study=study, series=sr_series, sop=sr, patient=who, findings="Nodule.", impression="Benign."),
    )
    assert sync(services, fhir, study) is SyncOutcome.CREATED
    (report,) = fhir.search("DiagnosticReport", {"identifier": f"urn:dicom:uid|urn:oid:{sr}"})
    study_id = resource_id("study", BASE, DEFAULT_PARTITION, study)
    assert report["id"] == resource_id("report", BASE, DEFAULT_PARTITION, study, sr)
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{study_id}"}]
    imaging_study = fhir.read("ImagingStudy", study_id)
    assert imaging_study is not None and report["subject"] == imaging_study["subject"]
    assert (report["status"], report["conclusion"]) == ("final", "Benign.")
    assert report["presentedForm"][0]["url"] == f"{BASE}/studies/{study}/series/{sr_series}/instances/{sr}"
    version = report["meta"]["versionId"]
    assert sync(services, fhir, study) is SyncOutcome.UNCHANGED
    assert fhir.read("DiagnosticReport", report["id"])["meta"]["versionId"] == version  # type: ignore[index]

    asyncio.run(
        delete.delete_instance(
            blobs=services.blobs,
            index=services.index,
            sync_queue=services.sync_queue,
            key=InstanceKey(DEFAULT_PARTITION, study, sr_series, sr),
        )
    )
    assert sync(services, fhir, study) is SyncOutcome.UPDATED
    assert fhir.read("DiagnosticReport", report["id"]) is None
    assert fhir.read("ImagingStudy", study_id) is not None


def test_dose_report_gives_observations_deleted_with_the_study(services: Services, fhir: FhirClient) -> None:
    study, dose_sop = generate_uid(), generate_uid()
    who = patient(f"P-{generate_uid()[-8:]}")
    events = [DoseEvent(generate_uid(), "3.2", "120.5"), DoseEvent(generate_uid(), "4.1", "160.25")]
    put(
        services,
        image("CT", study=study, series=generate_uid(), sop=generate_uid(), patient=who),
        dose_report(study=study, series=generate_uid(), sop=dose_sop, patient=who, events=events),
    )
    assert sync(services, fhir, study) is SyncOutcome.CREATED
    observations = tagged(fhir, "Observation", study)
    codes = sorted(o["code"]["coding"][0]["code"] for o in observations)
    assert codes == ["113852", "113852", "73569-6"]
    assert tagged(fhir, "DiagnosticReport", study) == []  # a dose report is not a DiagnosticReport
    study_id = resource_id("study", BASE, DEFAULT_PARTITION, study)
    assert all(o["partOf"] == [{"reference": f"ImagingStudy/{study_id}"}] for o in observations)
    summary = next(o for o in observations if o["code"]["coding"][0]["code"] == "73569-6")
    dlp_total = next(c for c in summary["component"] if c["code"]["coding"][0]["code"] == "113813")
    assert dlp_total["valueQuantity"]["value"] == 280.75

    asyncio.run(
        delete.delete_study(
            blobs=services.blobs,
            index=services.index,
            sync_queue=services.sync_queue,
            study=StudyKey(DEFAULT_PARTITION, study),
        )
    )
    assert sync(services, fhir, study) is SyncOutcome.DELETED
    assert tagged(fhir, "Observation", study) == []


def test_segmentations_and_key_objects_appear_in_the_imaging_study(services: Services, fhir: FhirClient) -> None:
    study, images, source = generate_uid(), generate_uid(), generate_uid()
    who = patient(f"P-{generate_uid()[-8:]}")
    seg_series, ko_series = generate_uid(), generate_uid()
    put(
        services,
        image("CT", study=study, series=images, sop=source, patient=who),
        segmentation(study=study, series=seg_series, sop=generate_uid(), patient=who, source=(images, source)),
        key_object(study=study, series=ko_series, sop=generate_uid(), patient=who, selected=(images, source)),
    )
    sync(services, fhir, study)
    (resource,) = fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)})
    by_uid = {s["uid"]: s for s in resource["series"]}
    assert by_uid[seg_series]["modality"]["code"] == "SEG"
    assert by_uid[seg_series]["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.66.4"
    assert by_uid[ko_series]["modality"]["code"] == "KO"
    assert [m["code"] for m in resource["modality"]] == ["CT", "KO", "SEG"]
    assert tagged(fhir, "DiagnosticReport", study) == []  # a KO is not a report


def test_sync_reads_one_metadata_per_report_and_none_for_images(services: Services, fhir: FhirClient) -> None:
    study = generate_uid()
    who = patient(f"P-{generate_uid()[-8:]}")
    images = generate_uid()
    parts = [image("CT", study=study, series=images, sop=generate_uid(), patient=who, number=i) for i in range(6)]
    put(services, *parts)
    sync(services, fhir, study)
    with opcount.counting() as plain:
        assert sync(services, fhir, study) is SyncOutcome.UNCHANGED
    put(
        services,
        structured_report(
            study=study, series=generate_uid(), sop=generate_uid(), patient=who, findings="a", impression="b"
        ),
        dose_report(
            study=study,
            series=generate_uid(),
            sop=generate_uid(),
            patient=who,
            events=[DoseEvent(generate_uid(), "1", "2")],
        ),
    )
    sync(services, fhir, study)
    with opcount.counting() as with_reports:
        assert sync(services, fhir, study) is SyncOutcome.UNCHANGED
    print(f"sync round trips: images only {plain.header_value()}, with two reports {with_reports.header_value()}")
    # Two reports: one index point read each (their metadata is small enough to be inline), no blob read.
    assert with_reports.blob == plain.blob
    assert with_reports.index == plain.index + 2
    assert plain.total <= 6, plain.header_value()


def test_corrected_patient_name_reaches_fhir_and_clinic_fields_stay(services: Services, fhir: FhirClient) -> None:
    pid = f"P-{generate_uid()[-8:]}"
    clinic = fhir.update(
        {
            "resourceType": "Patient",
            "id": f"clinic-{pid}",
            "identifier": [{"system": SYSTEM, "value": pid}],
            "telecom": [{"system": "phone", "value": "+44 20 7946 0999"}],
            "gender": "female",
        }
    )
    first, second = generate_uid(), generate_uid()
    put(
        services,
        image(
            "CT", study=first, series=generate_uid(), sop=generate_uid(), patient=patient(pid, "Doe^Jnae", "20240101")
        ),
    )
    sync(services, fhir, first)
    put(
        services,
        image(
            "CT",
            study=second,
            series=generate_uid(),
            sop=generate_uid(),
            patient=patient(pid, "Doe^Jane", "20250101", sex="M"),
        ),
    )
    sync(services, fhir, second)
    sync(services, fhir, first)  # an older study synced again changes nothing
    now = fhir.read("Patient", clinic["id"])
    assert now is not None
    assert now["name"] == [{"use": "usual", "family": "Doe", "given": ["Jane"]}]
    assert now["telecom"] == clinic["telecom"] and now["gender"] == "female"  # set by the clinic
    assert now["birthDate"] == "1970-01-01"
