"""FHIR sync against the sekmet-fhir R4 server: mapping, idempotency, ordering, deletes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import delete
from dicomserver.fhir import mapping
from dicomserver.fhir.client import FhirClient, TransientFhirError
from dicomserver.fhir.sync import QUIET_SECONDS, SyncOutcome, handle_sync_message, sync_study
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey
from dicomserver.stores.layout import sync_message
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_stow import store

BASE = "https://dicom.example.org/v2"
SYSTEM = "urn:test:patient-id"


@pytest.fixture
def fhir(fhir_url: str) -> Iterator[FhirClient]:
    client = FhirClient(fhir_url)
    yield client
    client.close()


def sync(services: Services, fhir: FhirClient, study: str, quiet: float = QUIET_SECONDS) -> SyncOutcome:
    return sync_study(
        index=services.index,
        blobs=services.blobs,
        fhir=fhir,
        study=StudyKey(DEFAULT_PARTITION, study),
        dicomweb_base_url=BASE,
        patient_identifier_system=SYSTEM,
        quiet_seconds=quiet,
    )


def stored_study(services: Services, study: str, patient: str, **extra: object) -> list[pydicom.Dataset]:
    series_ct, series_mr = generate_uid(), generate_uid()
    parts = [
        make_instance(study=study, series=series_ct, modality="CT", patient_id=patient, InstanceNumber=1, **extra),
        make_instance(study=study, series=series_ct, modality="CT", patient_id=patient, InstanceNumber=2, **extra),
        make_instance(study=study, series=series_mr, modality="MR", patient_id=patient, SeriesNumber=2, **extra),
    ]
    assert store(services, *multipart_body(parts)).status == 200
    return [pydicom.dcmread(io.BytesIO(p)) for p in parts]


def imaging_study(fhir: FhirClient, study: str) -> dict:  # type: ignore[type-arg]
    (found,) = fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)})
    return found


def test_study_becomes_imaging_study_with_patient_and_endpoint(services: Services, fhir: FhirClient) -> None:
    study, patient = generate_uid(), f"P-{generate_uid()[-8:]}"
    stored_study(
        services,
        study,
        patient,
        PatientSex="F",
        TimezoneOffsetFromUTC="+0100",
        BodyPartExamined="CHEST",
        Laterality="R",
        SeriesDescription="Axial",
    )
    assert sync(services, fhir, study) is SyncOutcome.CREATED
    resource = imaging_study(fhir, study)
    assert resource["status"] == "available"
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"} in resource["identifier"]
    assert any(i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN" for i in resource["identifier"])
    assert (resource["numberOfSeries"], resource["numberOfInstances"]) == (2, 3)
    assert [m["code"] for m in resource["modality"]] == ["CT", "MR"]
    assert resource["modality"][0]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
    assert resource["started"] == "2024-01-15T10:15:00+01:00"
    assert resource["description"] == "Generated study"
    ct = next(s for s in resource["series"] if s["modality"]["code"] == "CT")
    assert ct["numberOfInstances"] == 2 and ct["bodySite"]["display"] == "CHEST"
    assert ct["laterality"]["code"] == "24028007"
    assert sorted(i["number"] for i in ct["instance"]) == [1, 2]
    assert ct["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}

    pat = fhir.search("Patient", {"identifier": f"{SYSTEM}|{patient}"})[0]
    assert resource["subject"]["reference"] == f"Patient/{pat['id']}"
    assert pat["name"][0] == {"use": "usual", "family": "Doe", "given": ["John"]}
    assert (pat["gender"], pat["birthDate"]) == ("female", "1970-01-01")
    endpoint = fhir.search("Endpoint", {"identifier": f"{mapping.ENDPOINT_IDENTIFIER_SYSTEM}|{BASE}"})[0]
    assert resource["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert endpoint["address"] == BASE and endpoint["connectionType"]["code"] == "dicom-wado-rs"


def test_repeated_and_parallel_syncs_are_idempotent(services: Services, fhir: FhirClient) -> None:
    study, patient = generate_uid(), f"P-{generate_uid()[-8:]}"
    stored_study(services, study, patient)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: sync(services, fhir, study), range(6)))
    assert outcomes.count(SyncOutcome.CREATED) >= 1
    assert set(outcomes) <= {SyncOutcome.CREATED, SyncOutcome.UNCHANGED, SyncOutcome.UPDATED}
    assert len(fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)})) == 1
    assert len(fhir.search("Patient", {"identifier": f"{SYSTEM}|{patient}"})) == 1
    version = imaging_study(fhir, study)["meta"]["versionId"]
    assert sync(services, fhir, study) is SyncOutcome.UNCHANGED
    assert imaging_study(fhir, study)["meta"]["versionId"] == version  # nothing sent


def test_changes_and_deletes_follow_the_index(services: Services, fhir: FhirClient) -> None:
    study, patient = generate_uid(), f"P-{generate_uid()[-8:]}"
    datasets = stored_study(services, study, patient)
    sync(services, fhir, study)
    extra = make_instance(study=study, series=datasets[2].SeriesInstanceUID, modality="MR", patient_id=patient)
    assert store(services, *multipart_body([extra])).status == 200
    assert sync(services, fhir, study) is SyncOutcome.UPDATED
    assert imaging_study(fhir, study)["numberOfInstances"] == 4

    asyncio.run(
        delete.delete_study(
            blobs=services.blobs,
            index=services.index,
            sync_queue=services.sync_queue,
            study=StudyKey(DEFAULT_PARTITION, study),
        )
    )
    assert sync(services, fhir, study) is SyncOutcome.DELETED
    assert fhir.search("ImagingStudy", {"identifier": mapping.study_identifier(study)}) == []
    assert sync(services, fhir, study) is SyncOutcome.ABSENT
    assert len(fhir.search("Patient", {"identifier": f"{SYSTEM}|{patient}"})) == 1  # patients are kept


def test_transient_failures_back_off_and_finally_park_in_poison(services: Services) -> None:
    study = StudyKey(DEFAULT_PARTITION, generate_uid())
    stored_study(services, study.study_instance_uid, "P-BACKOFF")
    unreachable = FhirClient("http://127.0.0.1:9/fhir", timeout=2)  # nothing listens on port 9
    queue = services.sync_queue

    def handle(attempt: int) -> None:
        handle_sync_message(
            body=sync_message(study, attempt),
            index=services.index,
            blobs=services.blobs,
            fhir=unreachable,
            queue=queue,
            dicomweb_base_url=BASE,
            patient_identifier_system=SYSTEM,
        )

    with unreachable:
        handle(0)
        assert queue.drain_poison() == []
        handle(7)  # the last attempt
        assert queue.drain_poison() == [sync_message(study, 8)]
        with pytest.raises(TransientFhirError):
            sync(services, unreachable, study.study_instance_uid)


def test_mapping_produces_valid_r4_resources_for_edge_values() -> None:
    assert mapping.human_name("Doe^John^Q^Dr^Jr") == {
        "use": "usual",
        "family": "Doe",
        "given": ["John", "Q"],
        "prefix": ["Dr"],
        "suffix": ["Jr"],
    }
    assert mapping.human_name("") is None
    assert mapping._started("20240115", "1015", None) == "2024-01-15"
    assert mapping._started("20240115", "101530.123", "-0500") == "2024-01-15T10:15:30-05:00"
    assert mapping._started("2024", "1015", "+0000") is None


def test_sekmet_contract_conditional_create_and_if_match(fhir_url: str) -> None:
    """The FHIR server behaviours the sync relies on (sekmet-fhir is young: keep this contract)."""
    value = generate_uid()
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}]}
    headers = {"Content-Type": "application/fhir+json", "If-None-Exist": f"identifier={SYSTEM}|{value}"}
    first = httpx.post(f"{fhir_url}/Patient", json=body, headers=headers)
    second = httpx.post(f"{fhir_url}/Patient", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    created = first.json()
    stale = httpx.put(
        f"{fhir_url}/Patient/{created['id']}",
        json={**body, "id": created["id"]},
        headers={"Content-Type": "application/fhir+json", "If-Match": 'W/"999"'},
    )
    assert stale.status_code == 412
