"""DICOM → FHIR R4 mapping (pure; no I/O).

Built from the index's view of a study (:class:`StudySnapshot`), never from
DICOM files.  Differences from Microsoft's DICOM cast, on purpose (HL7 R4
ImagingStudy and its DICOM mapping):

* modality Codings use the system ``http://dicom.nema.org/resources/ontology/DCM``
  (cast: ``DCM``), and the study-level modality list is ModalitiesInStudy as
  computed by the index (cast: usually empty);
* sopClass is ``urn:ietf:rfc:3986`` | ``urn:oid:{uid}`` (cast: no system);
* numberOfSeries, numberOfInstances and series.numberOfInstances are set;
* description (StudyDescription), referrer (ReferringPhysicianName as
  display), basedOn (the accession number as a ServiceRequest identifier),
  series.bodySite (BodyPartExamined) and series.laterality are set;
* ``started`` is a dateTime with a timezone when TimezoneOffsetFromUTC is
  known, else only the date (FHIR requires a timezone on any time).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fhirclient.models.endpoint import Endpoint
from fhirclient.models.imagingstudy import ImagingStudy
from fhirclient.models.patient import Patient
from pydicom.datadict import tag_for_keyword

from ..dicomjson import first_value
from ..stores.model import StudySnapshot

DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
RFC3986 = "urn:ietf:rfc:3986"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_IDENTIFIER_SYSTEM = "urn:dicomserver:endpoint"
SNOMED = "http://snomed.info/sct"
_LATERALITY = {"R": ("24028007", "Right"), "L": ("7771000", "Left")}
_GENDER = {"M": "male", "F": "female", "O": "other"}


def _json_key(keyword: str) -> str:
    """The DICOM JSON key of a pydicom keyword: ``"SeriesInstanceUID"`` → ``"0020000E"``."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"not a DICOM keyword: {keyword}")
    return f"{tag:08X}"


#: The DICOM JSON key of every attribute the mapping reads, by pydicom keyword (computed once).
_KEYS = {
    keyword: _json_key(keyword)
    for keyword in (
        # Patient
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientSex",
        "PatientBirthDate",
        # Study
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "TimezoneOffsetFromUTC",
        "StudyDescription",
        "ReferringPhysicianName",
        # Series
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "BodyPartExamined",
        "Laterality",
        "SeriesDate",
        "SeriesTime",
        # Instance
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
    )
}


def _value(attrs: dict[str, Any], keyword: str) -> Any:
    """The first value of the attribute ``keyword`` (one of :data:`_KEYS`) in DICOM JSON ``attrs``."""
    return first_value(attrs.get(_KEYS[keyword]))


def _text(attrs: dict[str, Any], keyword: str) -> str | None:
    value = _value(attrs, keyword)
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    text = str(value).strip()
    return text or None


def _date(da: str | None) -> str | None:
    if not da or not re.fullmatch(r"\d{8}", da):
        return None
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def _started(da: str | None, tm: str | None, tz: str | None) -> str | None:
    """FHIR dateTime from DA + TM (+ TimezoneOffsetFromUTC); date only without a timezone."""
    day = _date(da)
    if day is None:
        return None
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?", (tm or "").split(".")[0])
    zone = re.fullmatch(r"([+-])(\d{2})(\d{2})", tz or "")
    if not match or not zone:
        return day
    hh, mm, ss = match.group(1), match.group(2) or "00", match.group(3) or "00"
    return f"{day}T{hh}:{mm}:{ss}{zone.group(1)}{zone.group(2)}:{zone.group(3)}"


def study_identifier(study_instance_uid: str) -> str:
    """The search token of an ImagingStudy: ``urn:dicom:uid|urn:oid:{uid}``."""
    return f"{DICOM_UID_SYSTEM}|urn:oid:{study_instance_uid}"


def patient_identifier(snapshot: StudySnapshot, default_system: str) -> tuple[str, str] | None:
    """``(system, value)`` of the Patient, from IssuerOfPatientID or the default system."""
    patient_id = _text(snapshot.attrs, "PatientID")
    if not patient_id:
        return None
    issuer = _text(snapshot.attrs, "IssuerOfPatientID")
    if issuer is None:
        system = default_system
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$", issuer):
        system = issuer  # already a URI
    else:
        system = f"urn:dicomserver:issuer:{quote(issuer, safe='')}"
    return system, patient_id


def human_name(pn: str) -> dict[str, Any] | None:
    """A FHIR HumanName from the alphabetic group of a DICOM PN value."""
    parts = (pn.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    name: dict[str, Any] = {"use": "usual"}
    if family:
        name["family"] = family
    given_words = given.split() + middle.split()
    if given_words:
        name["given"] = given_words
    if prefix:
        name["prefix"] = prefix.split()
    if suffix:
        name["suffix"] = suffix.split()
    return name if len(name) > 1 else None


def patient(snapshot: StudySnapshot, default_system: str) -> dict[str, Any] | None:
    """The Patient to create when none has the study's identifier (None without PatientID)."""
    identifier = patient_identifier(snapshot, default_system)
    if identifier is None:
        return None
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": identifier[0], "value": identifier[1]}],
    }
    name = human_name(_text(snapshot.attrs, "PatientName") or "")
    if name:
        resource["name"] = [name]
    sex = (_text(snapshot.attrs, "PatientSex") or "").upper()
    if sex:
        resource["gender"] = _GENDER.get(sex, "unknown")
    birth = _date(_text(snapshot.attrs, "PatientBirthDate"))
    if birth:
        resource["birthDate"] = birth
    return Patient(resource, strict=True).as_json()  # type: ignore[no-any-return]


def endpoint(base_url: str) -> dict[str, Any]:
    """The one Endpoint of this service (found again by its identifier)."""
    resource = {
        "resourceType": "Endpoint",
        "identifier": [{"system": ENDPOINT_IDENTIFIER_SYSTEM, "value": base_url}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "name": f"DICOM WADO-RS endpoint {base_url}",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": base_url,
    }
    return Endpoint(resource, strict=True).as_json()  # type: ignore[no-any-return]


def _modality(code: str) -> dict[str, str]:
    return {"system": DCM_SYSTEM, "code": code}


def imaging_study(snapshot: StudySnapshot, patient_id: str, endpoint_id: str) -> dict[str, Any]:
    """The ImagingStudy for a study's current state.

    Raises
    ------
    fhirclient.models.fhirabstractbase.FHIRValidationError
        If the result is not a valid R4 ImagingStudy (a bug, never data-dependent).
    """
    attrs = snapshot.attrs
    uid = snapshot.key.study_instance_uid
    identifiers: list[dict[str, Any]] = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}]
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": identifiers,
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
        "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}],
        "numberOfSeries": snapshot.number_of_series,
        "numberOfInstances": snapshot.number_of_instances,
    }
    accession = _text(attrs, "AccessionNumber")
    if accession:
        acsn = {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession}
        identifiers.append(acsn)
        resource["basedOn"] = [{"type": "ServiceRequest", "identifier": acsn}]
    if snapshot.modalities_in_study:
        resource["modality"] = [_modality(m) for m in snapshot.modalities_in_study]
    started = _started(_text(attrs, "StudyDate"), _text(attrs, "StudyTime"), _text(attrs, "TimezoneOffsetFromUTC"))
    if started:
        resource["started"] = started
    description = _text(attrs, "StudyDescription")
    if description:
        resource["description"] = description
    referrer = _text(attrs, "ReferringPhysicianName")
    if referrer:
        resource["referrer"] = {"display": referrer.replace("^", " ").strip()}
    resource["series"] = [_series(s.attrs, s.number_of_instances, s.instances) for s in snapshot.series]
    return ImagingStudy(resource, strict=True).as_json()  # type: ignore[no-any-return]


def _series(attrs: dict[str, Any], count: int, instances: list[dict[str, Any]]) -> dict[str, Any]:
    series: dict[str, Any] = {
        "uid": _text(attrs, "SeriesInstanceUID"),
        "modality": _modality(_text(attrs, "Modality") or "OT"),
        "numberOfInstances": count,
    }
    number = _value(attrs, "SeriesNumber")
    if isinstance(number, int) or (isinstance(number, str) and number.strip().lstrip("-").isdigit()):
        series["number"] = int(number)
    description = _text(attrs, "SeriesDescription")
    if description:
        series["description"] = description
    body_part = _text(attrs, "BodyPartExamined")
    if body_part:
        series["bodySite"] = {"display": body_part}
    laterality = _LATERALITY.get((_text(attrs, "Laterality") or "").upper())
    if laterality:
        series["laterality"] = {"system": SNOMED, "code": laterality[0], "display": laterality[1]}
    started = _started(_text(attrs, "SeriesDate"), _text(attrs, "SeriesTime"), _text(attrs, "TimezoneOffsetFromUTC"))
    if started:
        series["started"] = started
    series["instance"] = [_instance(i) for i in instances]
    return series


def _instance(attrs: dict[str, Any]) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "uid": _text(attrs, "SOPInstanceUID"),
        "sopClass": {"system": RFC3986, "code": f"urn:oid:{_text(attrs, 'SOPClassUID')}"},
    }
    number = _value(attrs, "InstanceNumber")
    if isinstance(number, int) or (isinstance(number, str) and number.strip().lstrip("-").isdigit()):
        instance["number"] = int(number)
    return instance


# -- Patient demographics ---------------------------------------------------------------------------

#: Extension recording what the sync last wrote into a Patient, and from which study.
DEMOGRAPHICS_EXTENSION = "urn:dicomserver:fhir:StructureDefinition:dicom-demographics"
_DEMOGRAPHIC_FIELDS = (("name", "valueHumanName"), ("gender", "valueCode"), ("birthDate", "valueDate"))


def demographics_source(snapshot: StudySnapshot) -> str:
    """The order of a study among a patient's studies: ``YYYYMMDDHHMMSS|StudyInstanceUID``.

    Newer studies sort later; a study without StudyDate sorts first; the UID breaks ties so
    every sync agrees on which study is the newest.
    """
    day = _text(snapshot.attrs, "StudyDate") or ""
    day = day if re.fullmatch(r"\d{8}", day) else "00000000"
    time = (_text(snapshot.attrs, "StudyTime") or "").split(".")[0]
    time = (time + "000000")[:6] if re.fullmatch(r"\d{2,6}", time) else "000000"
    return f"{day}{time}|{snapshot.key.study_instance_uid}"


def _dicom_demographics(snapshot: StudySnapshot) -> dict[str, Any]:
    """Name, gender and birth date as the study states them (absent ones left out)."""
    values: dict[str, Any] = {}
    name = human_name(_text(snapshot.attrs, "PatientName") or "")
    if name:
        values["name"] = name
    sex = (_text(snapshot.attrs, "PatientSex") or "").upper()
    if sex:
        values["gender"] = _GENDER.get(sex, "unknown")
    birth = _date(_text(snapshot.attrs, "PatientBirthDate"))
    if birth:
        values["birthDate"] = birth
    return values


def _recorded(resource: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(source, {field: value})`` of the demographics extension ("" and {} when absent)."""
    for extension in resource.get("extension") or []:
        if extension.get("url") != DEMOGRAPHICS_EXTENSION:
            continue
        source, written = "", {}
        for part in extension.get("extension") or []:
            if part.get("url") == "source":
                source = str(part.get("valueString", ""))
            for field, value_key in _DEMOGRAPHIC_FIELDS:
                if part.get("url") == field and value_key in part:
                    written[field] = part[value_key]
        return source, written
    return "", {}


def follow_demographics(resource: dict[str, Any], snapshot: StudySnapshot) -> dict[str, Any]:
    """``resource`` (a Patient) with the name, gender and birth date of ``snapshot`` where DICOM owns them.

    DICOM owns a field when it is absent or still holds what the sync last wrote (recorded in
    the :data:`DEMOGRAPHICS_EXTENSION` extension with the study it came from); a value set by
    anyone else (the clinical system, a person) is never changed.  The name: the entry equal
    to the one last written is replaced, other names are kept; a Patient without a name gets
    the DICOM one.  Only a study at least as new as the recorded one (:func:`demographics_source`)
    changes anything, so the Patient follows the newest study whatever the order of syncs.
    Unlike DICOM cast, birth date is corrected too.  Returns a new dict (equal to ``resource``
    when nothing changes).
    """
    source, written = _recorded(resource)
    new_source = demographics_source(snapshot)
    if source and _source_key(source) > _source_key(new_source):
        return resource
    out = {k: v for k, v in resource.items() if k != "extension"}
    recorded = dict(written)
    for field, value in _dicom_demographics(snapshot).items():
        if field == "name":
            names = list(out.get("name") or [])
            if not names:
                out["name"] = [value]
            elif field in written and written[field] in names:
                names[names.index(written[field])] = value
                out["name"] = names
            else:
                continue  # names written by someone else
        elif field not in out or (field in written and out[field] == written[field]):
            out[field] = value
        else:
            continue
        recorded[field] = value
    parts: list[dict[str, Any]] = [{"url": "source", "valueString": new_source}]
    parts += [{"url": field, key: recorded[field]} for field, key in _DEMOGRAPHIC_FIELDS if field in recorded]
    others = [e for e in resource.get("extension") or [] if e.get("url") != DEMOGRAPHICS_EXTENSION]
    out["extension"] = [*others, {"url": DEMOGRAPHICS_EXTENSION, "extension": parts}]
    return out


def _source_key(source: str) -> tuple[str, str]:
    moment, _, uid = source.partition("|")
    return moment, uid
