"""DICOM → FHIR R4 mapping (dicomserver.fhir.mapping) on hand-built index snapshots; no emulator."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicomserver.fhir import mapping
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey
from dicomserver.stores.model import SeriesSnapshot, StudySnapshot

STUDY_UID = "1.2.826.0.1.3680043.8.498.100"
CT_SERIES_UID = "1.2.826.0.1.3680043.8.498.101"
MR_SERIES_UID = "1.2.826.0.1.3680043.8.498.102"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SYSTEM = "urn:test:patient-id"


def dicom_json(**keywords: Any) -> dict[str, Any]:
    """DICOM JSON of the attributes given by pydicom keyword (keys written by pydicom, not by the mapping)."""
    ds = Dataset()
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return ds.to_json_dict()


def snapshot(
    attrs: dict[str, Any],
    series: list[SeriesSnapshot],
    modalities: tuple[str, ...] = (),
    uid: str = STUDY_UID,
) -> StudySnapshot:
    return StudySnapshot(
        key=StudyKey(DEFAULT_PARTITION, uid),
        attrs=attrs,
        modalities_in_study=modalities,
        number_of_series=len(series),
        number_of_instances=sum(s.number_of_instances for s in series),
        series=series,
    )


def instance(sop: str, sop_class: str, number: int | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"SOPInstanceUID": sop, "SOPClassUID": sop_class}
    if number is not None:
        attrs["InstanceNumber"] = number
    return dicom_json(**attrs)


def ct_mr_study() -> StudySnapshot:
    """A CT series of two instances and an MR series of one, with every attribute the mapping reads."""
    ct = SeriesSnapshot(
        attrs=dicom_json(
            SeriesInstanceUID=CT_SERIES_UID,
            Modality="CT",
            SeriesNumber=1,
            SeriesDescription="Axial chest",
            BodyPartExamined="CHEST",
            SeriesDate="20240115",
            SeriesTime="101600",
            TimezoneOffsetFromUTC="-0500",
        ),
        number_of_instances=2,
        instances=[
            instance(f"{CT_SERIES_UID}.1", CT_IMAGE_STORAGE, 1),
            instance(f"{CT_SERIES_UID}.2", CT_IMAGE_STORAGE, 2),
        ],
    )
    mr = SeriesSnapshot(
        attrs=dicom_json(
            SeriesInstanceUID=MR_SERIES_UID,
            Modality="MR",
            SeriesNumber=2,
            BodyPartExamined="KNEE",
            Laterality="L",
            SeriesDate="20240115",
            SeriesTime="1030",
            TimezoneOffsetFromUTC="-0500",
        ),
        number_of_instances=1,
        instances=[instance(f"{MR_SERIES_UID}.1", MR_IMAGE_STORAGE, 1)],
    )
    study = dicom_json(
        PatientID="PID-7",
        PatientName="Doe^Jane",
        AccessionNumber="ACC-42",
        StudyDate="20240115",
        StudyTime="101530.25",
        TimezoneOffsetFromUTC="-0500",
        StudyDescription="CT chest, MR knee",
        ReferringPhysicianName="Smith^Anne",
    )
    return snapshot(study, [ct, mr], modalities=("CT", "MR"))


def test_imaging_study_of_two_series_of_two_modalities() -> None:
    acsn = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
        "value": "ACC-42",
    }
    assert mapping.imaging_study(ct_mr_study(), "pat-1", "ep-1") == {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}, acsn],
        "status": "available",
        "subject": {"reference": "Patient/pat-1"},
        "endpoint": [{"reference": "Endpoint/ep-1"}],
        "basedOn": [{"type": "ServiceRequest", "identifier": acsn}],
        "modality": [{"system": DCM, "code": "CT"}, {"system": DCM, "code": "MR"}],
        "numberOfSeries": 2,
        "numberOfInstances": 3,
        "started": "2024-01-15T10:15:30-05:00",
        "description": "CT chest, MR knee",
        "referrer": {"display": "Smith Anne"},
        "series": [
            {
                "uid": CT_SERIES_UID,
                "number": 1,
                "modality": {"system": DCM, "code": "CT"},
                "description": "Axial chest",
                "numberOfInstances": 2,
                "bodySite": {"display": "CHEST"},
                "started": "2024-01-15T10:16:00-05:00",
                "instance": [
                    {
                        "uid": f"{CT_SERIES_UID}.1",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CT_IMAGE_STORAGE}"},
                        "number": 1,
                    },
                    {
                        "uid": f"{CT_SERIES_UID}.2",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CT_IMAGE_STORAGE}"},
                        "number": 2,
                    },
                ],
            },
            {
                "uid": MR_SERIES_UID,
                "number": 2,
                "modality": {"system": DCM, "code": "MR"},
                "numberOfInstances": 1,
                "bodySite": {"display": "KNEE"},
                "laterality": {"system": "http://snomed.info/sct", "code": "7771000", "display": "Left"},
                "started": "2024-01-15T10:30:00-05:00",
                "instance": [
                    {
                        "uid": f"{MR_SERIES_UID}.1",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{MR_IMAGE_STORAGE}"},
                        "number": 1,
                    }
                ],
            },
        ],
    }


def test_imaging_study_is_found_by_its_study_identifier() -> None:
    resource = mapping.imaging_study(ct_mr_study(), "pat-1", "ep-1")
    system, value = mapping.study_identifier(STUDY_UID).split("|")
    assert {"system": system, "value": value} in resource["identifier"]
    assert value == f"urn:oid:{STUDY_UID}"


def test_imaging_study_without_optional_attributes() -> None:
    """Only the UIDs: no accession, dates, descriptions, numbers, modality or laterality."""
    series = SeriesSnapshot(
        attrs=dicom_json(SeriesInstanceUID=CT_SERIES_UID),
        number_of_instances=1,
        instances=[instance(f"{CT_SERIES_UID}.1", CT_IMAGE_STORAGE)],
    )
    assert mapping.imaging_study(snapshot({}, [series]), "p", "e") == {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}],
        "status": "available",
        "subject": {"reference": "Patient/p"},
        "endpoint": [{"reference": "Endpoint/e"}],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [
            {
                "uid": CT_SERIES_UID,
                "modality": {"system": DCM, "code": "OT"},  # Modality is required by FHIR: "other"
                "numberOfInstances": 1,
                "instance": [
                    {
                        "uid": f"{CT_SERIES_UID}.1",
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CT_IMAGE_STORAGE}"},
                    }
                ],
            }
        ],
    }


def test_empty_values_count_as_missing() -> None:
    """Attributes present without a value (type 2) or with blanks are left out, like absent ones."""
    series = SeriesSnapshot(
        attrs={
            **dicom_json(SeriesInstanceUID=CT_SERIES_UID, Modality="CT", SeriesDescription="  "),
            **dicom_json(SeriesNumber=None, Laterality="X"),
        },
        number_of_instances=0,
        instances=[],
    )
    attrs = dicom_json(AccessionNumber="", StudyDate="", StudyDescription=" ", ReferringPhysicianName="")
    resource = mapping.imaging_study(snapshot(attrs, [series]), "p", "e")
    assert resource["identifier"] == [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}]
    for absent in ("basedOn", "started", "description", "referrer", "modality"):
        assert absent not in resource
    # (fhirclient drops the empty instance list)
    assert resource["series"] == [
        {"uid": CT_SERIES_UID, "modality": {"system": DCM, "code": "CT"}, "numberOfInstances": 0}
    ]


@pytest.mark.parametrize(
    ("date", "time", "zone", "started"),
    [
        ("20240115", "101530.25", "+0100", "2024-01-15T10:15:30+01:00"),
        ("20240115", "10", "+0000", "2024-01-15T10:00:00+00:00"),
        ("20240115", "101530", None, "2024-01-15"),  # FHIR requires a timezone on a time
        ("20240115", None, "+0100", "2024-01-15"),
        ("2024", "1015", "+0000", None),  # not a DA
    ],
)
def test_started_from_study_date_time_and_timezone(
    date: str, time: str | None, zone: str | None, started: str | None
) -> None:
    attrs = dicom_json(StudyDate=date)
    if time is not None:
        attrs.update(dicom_json(StudyTime=time))
    if zone is not None:
        attrs.update(dicom_json(TimezoneOffsetFromUTC=zone))
    resource = mapping.imaging_study(snapshot(attrs, []), "p", "e")
    assert resource.get("started") == started


def test_instance_and_series_numbers_from_strings() -> None:
    """IS values may reach the index as strings: digits become numbers, anything else is left out."""
    series = SeriesSnapshot(
        attrs={
            **dicom_json(SeriesInstanceUID=CT_SERIES_UID, Modality="CT"),
            "00200011": {"vr": "IS", "Value": [" 12"]},
        },
        number_of_instances=2,
        instances=[
            {**instance("1.2.3.1", CT_IMAGE_STORAGE), "00200013": {"vr": "IS", "Value": ["-3"]}},
            {**instance("1.2.3.2", CT_IMAGE_STORAGE), "00200013": {"vr": "IS", "Value": ["4a"]}},
        ],
    )
    (mapped,) = mapping.imaging_study(snapshot({}, [series]), "p", "e")["series"]
    assert mapped["number"] == 12
    assert [i.get("number") for i in mapped["instance"]] == [-3, None]


@pytest.mark.parametrize(("code", "display"), [("R", "Right"), ("l", "Left")])
def test_series_laterality(code: str, display: str) -> None:
    snomed = {"Right": "24028007", "Left": "7771000"}[display]
    series = SeriesSnapshot(dicom_json(SeriesInstanceUID=CT_SERIES_UID, Laterality=code), 0, [])
    (mapped,) = mapping.imaging_study(snapshot({}, [series]), "p", "e")["series"]
    assert mapped["laterality"] == {"system": "http://snomed.info/sct", "code": snomed, "display": display}


def test_patient_name_birth_date_and_sex() -> None:
    attrs = dicom_json(
        PatientID="PID-7",
        PatientName="Doe^Jane^Marie^Dr^PhD",
        PatientBirthDate="19800102",
        PatientSex="F",
    )
    assert mapping.patient(snapshot(attrs, []), SYSTEM) == {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": "PID-7"}],
        "name": [{"use": "usual", "family": "Doe", "given": ["Jane", "Marie"], "prefix": ["Dr"], "suffix": ["PhD"]}],
        "birthDate": "1980-01-02",
        "gender": "female",
    }


@pytest.mark.parametrize(
    ("sex", "gender"), [("M", "male"), ("F", "female"), ("O", "other"), ("m", "male"), ("X", "unknown")]
)
def test_patient_gender(sex: str, gender: str) -> None:
    resource = mapping.patient(snapshot(dicom_json(PatientID="PID-7", PatientSex=sex), []), SYSTEM)
    assert resource is not None
    assert resource["gender"] == gender


def test_patient_with_only_an_id() -> None:
    """No name, sex or birth date (or an unusable one): the Patient has only its identifier."""
    attrs = dicom_json(PatientID="PID-7", PatientName="", PatientSex="", PatientBirthDate="1980")
    assert mapping.patient(snapshot(attrs, []), SYSTEM) == {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": "PID-7"}],
    }


def test_no_patient_without_patient_id() -> None:
    attrs = dicom_json(PatientName="Doe^Jane", PatientSex="F", PatientID="")
    assert mapping.patient_identifier(snapshot(attrs, []), SYSTEM) is None
    assert mapping.patient(snapshot(attrs, []), SYSTEM) is None
    assert mapping.patient(snapshot({}, []), SYSTEM) is None


@pytest.mark.parametrize(
    ("issuer", "system"),
    [
        (None, SYSTEM),
        ("urn:oid:1.2.3.4", "urn:oid:1.2.3.4"),  # already a URI
        ("https://hospital.example/mrn", "https://hospital.example/mrn"),
        ("Hospital A/B", "urn:dicomserver:issuer:Hospital%20A%2FB"),
    ],
)
def test_patient_identifier_system_from_issuer(issuer: str | None, system: str) -> None:
    attrs = dicom_json(PatientID="PID-7")
    if issuer is not None:
        attrs.update(dicom_json(IssuerOfPatientID=issuer))
    assert mapping.patient_identifier(snapshot(attrs, []), SYSTEM) == (system, "PID-7")
    resource = mapping.patient(snapshot(attrs, []), SYSTEM)
    assert resource is not None
    assert resource["identifier"] == [{"system": system, "value": "PID-7"}]


# -- demographics follow the newest study -----------------------------------------------------------


def demo_snapshot(name: str, study_date: str, uid: str = STUDY_UID, **more: Any) -> StudySnapshot:
    attrs = dicom_json(PatientID="PID-7", PatientName=name, StudyDate=study_date, StudyTime="101500", **more)
    return snapshot(attrs, [], uid=uid)


def ours(name: str, study_date: str, uid: str = STUDY_UID, **more: Any) -> dict[str, Any]:
    base = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": "PID-7"}]}
    return mapping.follow_demographics(base, demo_snapshot(name, study_date, uid, **more))


def test_new_patient_records_what_dicom_wrote_and_from_which_study() -> None:
    patient = ours("Doe^Jane", "20240101", PatientSex="F", PatientBirthDate="19800102")
    assert patient["name"] == [{"use": "usual", "family": "Doe", "given": ["Jane"]}]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1980-01-02")
    (extension,) = patient["extension"]
    assert extension["url"] == mapping.DEMOGRAPHICS_EXTENSION
    parts = {p["url"]: p for p in extension["extension"]}
    assert parts["source"]["valueString"] == f"20240101101500|{STUDY_UID}"
    assert parts["name"]["valueHumanName"] == patient["name"][0]
    assert parts["gender"]["valueCode"] == "female"


def test_a_newer_study_corrects_the_fields_dicom_wrote() -> None:
    patient = ours("Doe^Jane", "20240101", PatientBirthDate="19800102")
    newer = mapping.follow_demographics(
        patient, demo_snapshot("Doe-Smith^Jane", "20250101", "1.2.3.4", PatientBirthDate="19800103")
    )
    assert newer["name"] == [{"use": "usual", "family": "Doe-Smith", "given": ["Jane"]}]
    assert newer["birthDate"] == "1980-01-03"  # unlike DICOM cast, birth date is corrected too


def test_an_older_study_changes_nothing_whatever_the_sync_order() -> None:
    patient = ours("Doe-Smith^Jane", "20250101", "1.2.3.4")
    assert mapping.follow_demographics(patient, demo_snapshot("Doe^Jane", "20240101")) == patient


def test_the_same_study_corrected_later_wins() -> None:
    patient = ours("Doe^Jnae", "20240101")
    assert mapping.follow_demographics(patient, demo_snapshot("Doe^Jane", "20240101"))["name"][0]["given"] == ["Jane"]


def test_values_set_by_the_clinic_are_never_overwritten() -> None:
    clinical = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": "PID-7"}],
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Mary"]}],
        "gender": "female",
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
    }
    followed = mapping.follow_demographics(
        clinical, demo_snapshot("Doe^J", "20250101", PatientSex="O", PatientBirthDate="19800102")
    )
    assert followed["name"] == clinical["name"] and followed["gender"] == "female"
    assert followed["telecom"] == clinical["telecom"]
    assert followed["birthDate"] == "1980-01-02"  # absent: DICOM may fill it
    parts = {p["url"] for p in followed["extension"][0]["extension"]}
    assert parts == {"source", "birthDate"}  # only what DICOM wrote is recorded as DICOM's


def test_a_field_changed_by_the_clinic_after_dicom_wrote_it_is_kept() -> None:
    patient = ours("Doe^Jane", "20240101", PatientSex="F")
    patient["gender"] = "other"  # corrected in the clinical system
    patient["name"] = [*patient["name"], {"use": "nickname", "given": ["JJ"]}]
    newer = mapping.follow_demographics(patient, demo_snapshot("Roe^Jane", "20250101", "1.2.3.4", PatientSex="M"))
    assert newer["gender"] == "other"
    assert newer["name"] == [{"use": "usual", "family": "Roe", "given": ["Jane"]}, {"use": "nickname", "given": ["JJ"]}]


def test_demographics_source_orders_by_study_date_time_then_uid() -> None:
    assert mapping.demographics_source(demo_snapshot("A^B", "20240101")) == f"20240101101500|{STUDY_UID}"
    assert mapping.demographics_source(snapshot(dicom_json(PatientID="x"), [])) == f"00000000000000|{STUDY_UID}"
