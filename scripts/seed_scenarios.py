"""Seed the README's scenarios into a running ``make run``: FHIR clinical data and DICOM studies.

``python -m scripts.seed_scenarios [--dicomweb URL] [--fhir URL] [--token TOKEN]``

FHIR (written by "the clinic", before any study): six Patients with ages relative to today,
each with a Condition (a lung nodule, onset dates relative to today) and an Encounter.  The
Patients carry the identifier the FHIR sync matches (``FHIR_PATIENT_IDENTIFIER_SYSTEM`` |
PatientID), so the sync links the studies to them and never overwrites what the clinic wrote.

DICOM (through STOW-RS): CT and MR images, Comprehensive SR reports, an X-Ray Radiation Dose
SR and a Segmentation, built with pydicom.  UIDs derive from the patient and study names, so
seeding twice stores nothing new (STOW answers 409 for instances already stored).

The dataset builders (:func:`image`, :func:`structured_report`, :func:`dose_report`,
:func:`segmentation`, :func:`key_object`) are used by the tests too.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
PATIENT_SYSTEM = "urn:dicomserver:patient-id"
SNOMED = "http://snomed.info/sct"
LUNG_NODULE = ("427359005", "Solitary nodule of lung")
UID_ROOT = "1.2.826.0.1.3680043.10.1407."  # a UUID-derived-style root used only for seeded data


def uid(*parts: str) -> str:
    """A deterministic UID for the seeded object named by ``parts``."""
    digest = int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:24], 16)
    return f"{UID_ROOT}{digest}"[:64]


# -- DICOM builders ---------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(sop_class: str, modality: str, *, study: str, series: str, sop: str, patient: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID = patient["id"]
    ds.PatientName = patient["name"]
    ds.PatientBirthDate = patient.get("birth_date", "")
    ds.PatientSex = patient.get("sex", "")
    ds.StudyDate = patient.get("study_date", "20240115")
    ds.StudyTime = patient.get("study_time", "101500")
    ds.AccessionNumber = patient.get("accession", "")
    ds.StudyDescription = patient.get("description", "")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = {"CT": 1, "MR": 1, "SR": 100, "SEG": 200, "KO": 300}.get(modality, 1)
    ds.InstanceNumber = 1
    return ds


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def image(modality: str, *, study: str, series: str, sop: str, patient: dict[str, str], number: int = 1) -> bytes:
    """A small CT or MR image (16×16, 12 bits) as Part 10 bytes."""
    ds = _base(
        CT_IMAGE if modality == "CT" else MR_IMAGE, modality, study=study, series=series, sop=sop, patient=patient
    )
    ds.InstanceNumber = number
    ds.BodyPartExamined = "CHEST"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = ((np.arange(256, dtype=np.uint16) * (number + 1)) % 4096).tobytes()
    return _part10(ds)


def _sr_item(value_type: str, concept: tuple[str, str, str], relationship: str = "CONTAINS", **values: Any) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([_code(*concept)])
    if value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _num(concept: tuple[str, str, str], value: str, unit: str) -> Dataset:
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = DicomSequence([_code(unit, "UCUM", unit)])
    return _sr_item("NUM", concept, MeasuredValueSequence=DicomSequence([measured]))


def _sr_document(sop_class: str, title: tuple[str, str, str], content: list[Dataset], **common: Any) -> Dataset:
    ds = _base(sop_class, "SR", **common)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code(*title)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentDate = common["patient"].get("study_date", "20240115")
    ds.ContentTime = "120000"
    ds.ContentSequence = DicomSequence(content)
    return ds


def structured_report(
    *,
    study: str,
    series: str,
    sop: str,
    patient: dict[str, str],
    findings: str,
    impression: str,
    verified: bool = True,
    sop_class: str = COMPREHENSIVE_SR,
) -> bytes:
    """A radiology report SR (title LOINC 18748-4) with a Findings and an Impression text."""
    content = [
        _sr_item("TEXT", ("121071", "DCM", "Finding"), TextValue=findings),
        _sr_item("TEXT", ("121073", "DCM", "Impression"), TextValue=impression),
    ]
    ds = _sr_document(
        sop_class,
        ("18748-4", "LN", "Diagnostic imaging report"),
        content,
        study=study,
        series=series,
        sop=sop,
        patient=patient,
    )
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"
    if verified:
        observer = Dataset()
        observer.VerifyingObserverName = "Radiologist^Rita"
        observer.VerifyingOrganization = "Seed Hospital"
        observer.VerificationDateTime = f"{ds.ContentDate}120500"
        observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
        ds.VerifyingObserverSequence = DicomSequence([observer])
    return _part10(ds)


@dataclass(frozen=True)
class DoseEvent:
    """One CT acquisition of a dose report."""

    event_uid: str
    ctdivol: str
    dlp: str
    region: tuple[str, str, str] = ("43799004", "SCT", "Chest")


def dose_report(*, study: str, series: str, sop: str, patient: dict[str, str], events: Sequence[DoseEvent]) -> bytes:
    """An X-Ray Radiation Dose SR (TID 10011 CT Radiation Dose) with CT acquisitions."""
    total = sum(float(e.dlp) for e in events)
    accumulated = _sr_item(
        "CONTAINER",
        ("113811", "DCM", "CT Accumulated Dose Data"),
        ContentSequence=DicomSequence(
            [
                _num(("113812", "DCM", "Total Number of Irradiation Events"), str(len(events)), "{events}"),
                _num(("113813", "DCM", "CT Dose Length Product Total"), f"{total:g}", "mGy.cm"),
            ]
        ),
    )
    acquisitions = []
    for event in events:
        dose = _sr_item(
            "CONTAINER",
            ("113829", "DCM", "CT Dose"),
            ContentSequence=DicomSequence(
                [
                    _num(("113830", "DCM", "Mean CTDIvol"), event.ctdivol, "mGy"),
                    _num(("113838", "DCM", "DLP"), event.dlp, "mGy.cm"),
                    _sr_item(
                        "CODE",
                        ("113835", "DCM", "CTDIw Phantom Type"),
                        ConceptCodeSequence=DicomSequence([_code("113691", "DCM", "IEC Body Dosimetry Phantom")]),
                    ),
                ]
            ),
        )
        acquisitions.append(
            _sr_item(
                "CONTAINER",
                ("113819", "DCM", "CT Acquisition"),
                ContentSequence=DicomSequence(
                    [
                        _sr_item(
                            "CODE",
                            ("123014", "DCM", "Target Region"),
                            ConceptCodeSequence=DicomSequence([_code(*event.region)]),
                        ),
                        _sr_item("UIDREF", ("113769", "DCM", "Irradiation Event UID"), UID=event.event_uid),
                        dose,
                    ]
                ),
            )
        )
    ds = _sr_document(
        XRAY_DOSE_SR,
        ("113701", "DCM", "X-Ray Radiation Dose Report"),
        [accumulated, *acquisitions],
        study=study,
        series=series,
        sop=sop,
        patient=patient,
    )
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    return _part10(ds)


def segmentation(*, study: str, series: str, sop: str, patient: dict[str, str], source: tuple[str, str]) -> bytes:
    """A binary Segmentation (one 16×16 frame, one segment) of the image ``source`` = (series, sop)."""
    ds = _base(SEGMENTATION, "SEG", study=study, series=series, sop=sop, patient=patient)
    ds.SeriesDescription = "AI nodule segmentation"
    ds.Manufacturer = "Seed AI Vendor"
    ds.ContentLabel = "NODULE"
    ds.SegmentationType = "BINARY"
    ds.Rows = ds.Columns = 16
    ds.NumberOfFrames = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = "Nodule"
    segment.SegmentAlgorithmType = "AUTOMATIC"
    segment.SegmentAlgorithmName = "seed-detector"
    segment.SegmentedPropertyCategoryCodeSequence = DicomSequence(
        [_code("49755003", "SCT", "Morphologically Abnormal Structure")]
    )
    segment.SegmentedPropertyTypeCodeSequence = DicomSequence([_code("27925004", "SCT", "Nodule")])
    ds.SegmentSequence = DicomSequence([segment])
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = CT_IMAGE, source[1]
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = source[0]
    referenced_series.ReferencedInstanceSequence = DicomSequence([reference])
    ds.ReferencedSeriesSequence = DicomSequence([referenced_series])
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[5:10, 6:11] = 1
    ds.PixelData = np.packbits(mask.ravel(), bitorder="little").tobytes()
    return _part10(ds)


def key_object(*, study: str, series: str, sop: str, patient: dict[str, str], selected: tuple[str, str]) -> bytes:
    """A Key Object Selection document (title "Of Interest") flagging the image ``selected`` = (series, sop)."""
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = CT_IMAGE, selected[1]
    ds = _sr_document(
        KEY_OBJECT_SELECTION,
        ("113000", "DCM", "Of Interest"),
        [_sr_item("IMAGE", ("113000", "DCM", "Of Interest"), ReferencedSOPSequence=DicomSequence([reference]))],
        study=study,
        series=series,
        sop=sop,
        patient=patient,
    )
    ds.Modality = "KO"
    return _part10(ds)


# -- the seeded scenario data -----------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPatient:
    """A patient of the seeded scenarios, with what the clinic records and which studies exist."""

    key: str
    family: str
    given: str
    gender: str
    age: int
    onset_days_ago: int
    #: Study modalities; "SR" adds a report, "DOSE" a dose SR, "SEG" an AI segmentation.
    studies: tuple[tuple[str, ...], ...] = ()
    phone: str = ""
    in_cohort: bool = field(default=False, compare=False)


#: The research cohort "patients over 45 with a CT and its report, diagnosed in the last two years"
#: is exactly the patients with ``in_cohort``.
PATIENTS = (
    SeedPatient("anna", "Berg", "Anna", "female", 62, 300, (("CT", "SR", "DOSE"),), "+44 20 7946 0001", True),
    SeedPatient("bruno", "Costa", "Bruno", "male", 51, 5 * 365, (("CT", "SR"),), "+44 20 7946 0002"),
    SeedPatient("chiara", "Dini", "Chiara", "female", 38, 180, (("CT", "SR"),), "+44 20 7946 0003"),
    SeedPatient("david", "Evans", "David", "male", 70, 400, (("MR", "SR"),), "+44 20 7946 0004"),
    SeedPatient("eva", "Fischer", "Eva", "female", 48, 90, (("CT",),), "+44 20 7946 0005"),
    SeedPatient("farid", "Ghani", "Farid", "male", 55, 200, (("CT", "SR", "SEG"),), "+44 20 7946 0006", True),
)


def _years_ago(years: int, today: date) -> date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def birth_date(patient: SeedPatient, today: date) -> date:
    """A birth date that makes the patient ``age`` today (half a year before the birthday)."""
    return _years_ago(patient.age, today) - timedelta(days=182)


def patient_id(patient: SeedPatient) -> str:
    return f"SEED-{patient.key.upper()}"


def fhir_resources(today: date, system: str = PATIENT_SYSTEM) -> list[dict[str, Any]]:
    """The clinic's FHIR data: a Patient, an Encounter and a Condition per seeded patient (client ids)."""
    out: list[dict[str, Any]] = []
    for p in PATIENTS:
        pid = f"seed-{p.key}"
        onset = today - timedelta(days=p.onset_days_ago)
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": system, "value": patient_id(p)}],
            "name": [{"use": "official", "family": p.family, "given": [p.given]}],
            "gender": p.gender,
            "birthDate": birth_date(p, today).isoformat(),
        }
        if p.phone:
            patient["telecom"] = [{"system": "phone", "value": p.phone, "use": "mobile"}]
        encounter = {
            "resourceType": "Encounter",
            "id": f"seed-{p.key}-visit",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": onset.isoformat(), "end": onset.isoformat()},
        }
        condition = {
            "resourceType": "Condition",
            "id": f"seed-{p.key}-nodule",
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "code": {"coding": [{"system": SNOMED, "code": LUNG_NODULE[0], "display": LUNG_NODULE[1]}]},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/seed-{p.key}-visit"},
            "onsetDateTime": onset.isoformat(),
        }
        out += [patient, encounter, condition]
    return out


@dataclass(frozen=True)
class SeedStudy:
    """A seeded study: its UID, patient and the Part 10 instances."""

    study_instance_uid: str
    patient: SeedPatient
    modalities: tuple[str, ...]
    instances: list[bytes]


def dicom_studies(today: date) -> list[SeedStudy]:
    """The seeded studies (deterministic UIDs), one or more per patient."""
    out = []
    for p in PATIENTS:
        for number, kinds in enumerate(p.studies, start=1):
            study = uid(p.key, "study", str(number))
            day = (today - timedelta(days=max(p.onset_days_ago - 7, 1))).strftime("%Y%m%d")
            attrs = {
                "id": patient_id(p),
                "name": f"{p.family}^{p.given}",
                "birth_date": birth_date(p, today).strftime("%Y%m%d"),
                "sex": p.gender[0].upper(),
                "study_date": day,
                "accession": f"ACC-{p.key.upper()}-{number}",
                "description": "CT chest" if "CT" in kinds else "MR chest",
            }
            modality = "CT" if "CT" in kinds else "MR"
            image_series = uid(p.key, study, "images")
            images = [
                image(
                    modality, study=study, series=image_series, sop=uid(study, "image", str(i)), patient=attrs, number=i
                )
                for i in (1, 2, 3)
            ]
            instances = list(images)
            if "SR" in kinds:
                instances.append(
                    structured_report(
                        study=study,
                        series=uid(study, "report"),
                        sop=uid(study, "report", "1"),
                        patient=attrs,
                        findings=f"{modality} of the chest: a 9 mm solid nodule in the right upper lobe.",
                        impression="Solitary pulmonary nodule; follow-up CT in 3 months.",
                    )
                )
            if "DOSE" in kinds:
                events = [
                    DoseEvent(uid(study, "event", "1"), "3.2", "120.5"),
                    DoseEvent(uid(study, "event", "2"), "4.1", "160.25"),
                ]
                instances.append(
                    dose_report(
                        study=study,
                        series=uid(study, "dose"),
                        sop=uid(study, "dose", "1"),
                        patient=attrs,
                        events=events,
                    )
                )
            if "SEG" in kinds:
                instances.append(
                    segmentation(
                        study=study,
                        series=uid(study, "seg"),
                        sop=uid(study, "seg", "1"),
                        patient=attrs,
                        source=(image_series, uid(study, "image", "1")),
                    )
                )
            out.append(SeedStudy(study, p, tuple(kinds), instances))
    return out


def stow(client: httpx.Client, dicomweb: str, instances: Sequence[bytes]) -> int:
    """STOW-RS ``instances`` in one request; returns the HTTP status (409: all already stored)."""
    boundary = "seed-scenarios-boundary"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for part in instances
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    response = client.post(
        f"{dicomweb}/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    if response.status_code not in (200, 202, 409):
        raise RuntimeError(f"STOW to {dicomweb} answered {response.status_code}: {response.text[:300]}")
    return response.status_code


def seed(
    dicomweb: str, fhir: str, *, token: str | None = None, today: date | None = None, system: str = PATIENT_SYSTEM
) -> list[SeedStudy]:
    """Write the FHIR resources (PUT by id), then STOW the studies; returns the studies."""
    today = today or date.today()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=60, headers=headers) as dicom, httpx.Client(timeout=30) as fhir_http:
        for resource in fhir_resources(today, system):
            response = fhir_http.put(
                f"{fhir}/{resource['resourceType']}/{resource['id']}",
                json=resource,
                headers={"Content-Type": "application/fhir+json"},
            )
            if response.status_code >= 400:
                raise RuntimeError(f"FHIR PUT {resource['resourceType']} answered {response.status_code}")
        studies = dicom_studies(today)
        for study in studies:
            stow(dicom, dicomweb, study.instances)
    return studies


def wait_for_sync(fhir: str, studies: Sequence[SeedStudy], timeout: float = 60.0) -> bool:
    """Wait until FHIR has an ImagingStudy for every seeded study (the sync runs after a short delay)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < deadline:
            missing = 0
            for study in studies:
                bundle = http.get(
                    f"{fhir}/ImagingStudy",
                    params={"identifier": f"urn:dicom:uid|urn:oid:{study.study_instance_uid}", "_summary": "count"},
                ).json()
                missing += bundle.get("total", 0) == 0
            if not missing:
                return True
            time.sleep(1)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed_scenarios", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dicomweb", default="http://127.0.0.1:7071/v2", help="DICOMweb base URL (make run's)")
    parser.add_argument("--fhir", default="http://127.0.0.1:8090/fhir", help="FHIR base URL (make run's)")
    parser.add_argument("--token", help="DICOM bearer token (DICOM_AUTH_MODE=local: python -m scripts.token)")
    parser.add_argument("--patient-system", default=PATIENT_SYSTEM, help="FHIR_PATIENT_IDENTIFIER_SYSTEM of the app")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the FHIR sync")
    args = parser.parse_args(argv)
    studies = seed(args.dicomweb.rstrip("/"), args.fhir.rstrip("/"), token=args.token, system=args.patient_system)
    instances = sum(len(s.instances) for s in studies)
    print(
        f"seeded {len(PATIENTS)} patients with Conditions and Encounters, {len(studies)} studies, {instances} instances"
    )
    if not args.no_wait:
        synced = wait_for_sync(args.fhir.rstrip("/"), studies)
        print("every study is in FHIR" if synced else "the FHIR sync has not caught up yet (is FHIR_URL set?)")
        return 0 if synced else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
