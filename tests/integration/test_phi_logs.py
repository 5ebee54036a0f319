"""No patient data in logs: only reason codes, UIDs and counts (hardening issue).

Everything a deployment logs at INFO and above is captured while data carrying a
marker PatientID and PatientName is stored, refused, imported, searched, synced
to FHIR (including a FHIR refusal) and deleted; no record may contain the marker.
"""

from __future__ import annotations

import asyncio
import io
import logging

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomserver import delete, qido
from dicomserver.fhir.client import FhirClient
from dicomserver.fhir.sync import handle_sync_message
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey
from dicomserver.ingest import import_instance
from dicomserver.stores.layout import sync_message
from dicomserver.wiring import Services
from tests.dicomfiles import make_instance, multipart_body
from tests.importdrop import list_imports, put_import
from tests.integration.test_stow import store

MARKER = "PHIMARKER7Q"
SYSTEM = "urn:test:phi-patient-id"


def test_no_record_mentions_the_patient_whatever_happens_to_the_data(
    services: Services, fhir_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    study = generate_uid()
    patient_id, patient_name = f"{MARKER}-ID", f"{MARKER}^Name"
    good = make_instance(study=study, patient_id=patient_id, patient_name=patient_name)
    assert store(services, *multipart_body([good])).status == 200
    too_long = make_instance(patient_id=MARKER * 7, patient_name=patient_name)  # 77 characters: not LO
    assert store(services, *multipart_body([too_long])).status == 409
    ds = pydicom.dcmread(io.BytesIO(make_instance(patient_name=patient_name)))
    ds.PatientID = [patient_id, f"{MARKER}-OTHER"]
    twice = io.BytesIO()
    ds.save_as(twice)
    put_import(services.settings, f"drop/{generate_uid()}.dcm", twice.getvalue())
    for name in list_imports(services.settings):
        import_instance(services.blobs, services.index, services.sync_queue, services.imports, name)
    found = asyncio.run(qido.search_for_studies(index=services.index, params=[("PatientID", patient_id)]))
    assert len(found) == 1
    fhir = FhirClient(fhir_url)
    try:
        kwargs = {
            "index": services.index,
            "blobs": services.blobs,
            "fhir": fhir,
            "queue": services.sync_queue,
            "dicomweb_base_url": "http://dicom.test/v2",
            "patient_identifier_system": SYSTEM,
        }
        handle_sync_message(body=sync_message(StudyKey(DEFAULT_PARTITION, study)), **kwargs)
        for copy in ("a", "b"):  # two Patients with the identifier: the sync is refused, and logs it
            fhir.update(
                {
                    "resourceType": "Patient",
                    "id": f"phi-dup-{copy}-{study[-12:].replace('.', '')}",
                    "identifier": [{"system": SYSTEM, "value": f"{patient_id}-dup"}],
                }
            )
        dup = make_instance(patient_id=f"{patient_id}-dup", patient_name=patient_name)
        assert store(services, *multipart_body([dup])).status == 200
        dup_study = str(pydicom.dcmread(io.BytesIO(dup)).StudyInstanceUID)
        assert handle_sync_message(body=sync_message(StudyKey(DEFAULT_PARTITION, dup_study)), **kwargs) is None
    finally:
        fhir.close()
    kw = {"blobs": services.blobs, "index": services.index, "sync_queue": services.sync_queue}
    asyncio.run(delete.delete_study(**kw, study=StudyKey(DEFAULT_PARTITION, study)))
    assert any("fhir-sync refused" in r.getMessage() for r in caplog.records)  # the refusal was logged
    leaking = [r for r in caplog.records if MARKER in r.getMessage() or MARKER in str(r.exc_text or "")]
    assert not leaking, [f"{r.name}: {r.getMessage()[:200]}" for r in leaking]
