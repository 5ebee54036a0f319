"""Structured reports → FHIR DiagnosticReport and radiation-dose Observations (pure; no I/O).

Input is an instance's DICOM JSON metadata (what ``/metadata`` returns), read
by the sync only for instances whose SOP Class (from the index) is a report
(:data:`REPORT_SOP_CLASSES`) or a dose report (:data:`DOSE_SOP_CLASSES`).

A report becomes one DiagnosticReport:

* ``status`` from CompletionFlag / VerificationFlag: COMPLETE + VERIFIED →
  ``final``, PARTIAL → ``partial``, anything else → ``preliminary``;
* ``code`` from the document root's ConceptNameCodeSequence (the document title);
* ``effectiveDateTime`` from ContentDate / ContentTime, else the study date;
* ``conclusion`` from the TEXT items of the content tree: those under a
  Conclusion / Impression concept when there are any, else every TEXT item;
* ``presentedForm`` links the instance's WADO-RS URL (``application/dicom``);
* ``identifier`` is the SOP Instance UID (``urn:dicom:uid`` | ``urn:oid:...``).

A radiation dose report gives the Observations DICOM cast produced (its
``ObservationParser``; codes in ``ObservationConstants``): one dose summary
for each X-Ray (DCM 113701) or Radiopharmaceutical (DCM 113500) Radiation
Dose Report container, coded LOINC 73569-6, and one Observation per
irradiation event (DCM 113706, 113819, 113502) with an Irradiation Event UID,
coded DCM 113852, each with the cast's components (CTDIvol, DLP, DAP, fluoro
time, ...).  Differences, on purpose: ids are deterministic (cast POSTed new
Observations on every change), events are ``partOf`` the ImagingStudy too and
carry their Irradiation Event UID as an identifier, the summary lists its
events in ``hasMember``, a component is taken once (the first in document
order; cast added it once per matching item), and ``status`` follows the
report's flags like the DiagnosticReport (cast: always ``preliminary``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fhirclient.models.diagnosticreport import DiagnosticReport
from fhirclient.models.observation import Observation

from ..dicomjson import first_value
from .mapping import DCM_SYSTEM, DICOM_UID_SYSTEM, SNOMED, V2_0203, _started

#: Basic Text, Enhanced, Comprehensive and Comprehensive 3D SR: each becomes a DiagnosticReport.
REPORT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.840.10008.5.1.4.1.1.88.33",
        "1.2.840.10008.5.1.4.1.1.88.34",
    }
)
#: X-Ray Radiation Dose SR, Radiopharmaceutical Radiation Dose SR, Enhanced X-Ray Radiation Dose SR.
DOSE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.67",
        "1.2.840.10008.5.1.4.1.1.88.68",
        "1.2.840.10008.5.1.4.1.1.88.76",
    }
)
#: The SOP classes whose metadata the sync reads.
SR_SOP_CLASSES = REPORT_SOP_CLASSES | DOSE_SOP_CLASSES

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: Marks every resource the sync derives from a study's instances: code = the ImagingStudy's id.
STUDY_TAG_SYSTEM = "urn:dicomserver:imagingstudy"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_SCHEMES = {"DCM": DCM_SYSTEM, "SCT": SNOMED, "SRT": SNOMED, "LN": LOINC, "UCUM": UCUM}

# DICOM JSON keys (tags) of the SR attributes read here.
_CONTENT_SEQUENCE = "0040A730"
_VALUE_TYPE = "0040A040"
_CONCEPT_NAME = "0040A043"
_CONCEPT_CODE = "0040A168"
_TEXT_VALUE = "0040A160"
_UID = "0040A124"
_DATETIME = "0040A120"
_MEASURED_VALUE = "0040A300"
_NUMERIC_VALUE = "0040A30A"
_UNITS = "004008EA"
_CODE_VALUE = "00080100"
_SCHEME = "00080102"
_MEANING = "00080104"
_COMPLETION = "0040A491"
_VERIFICATION = "0040A493"
_CONTENT_DATE = "00080023"
_CONTENT_TIME = "00080033"
_STUDY_DATE = "00080020"
_STUDY_TIME = "00080030"
_TZ = "00080201"
_ACCESSION = "00080050"

Code = tuple[str, str]  # (CodeValue, CodingSchemeDesignator)

_CONCLUSION_CODES: frozenset[Code] = frozenset(
    {("121077", "DCM"), ("121076", "DCM"), ("121073", "DCM"), ("121072", "DCM"), ("19005-8", "LN")}
)
_CONCLUSION_MEANINGS = frozenset({"conclusion", "conclusions", "impression", "impressions"})

DOSE_REPORTS: frozenset[Code] = frozenset({("113701", "DCM"), ("113500", "DCM")})
IRRADIATION_EVENTS: frozenset[Code] = frozenset({("113706", "DCM"), ("113819", "DCM"), ("113502", "DCM")})
_IRRADIATION_EVENT_UID: Code = ("113769", "DCM")
_TARGET_REGION: Code = ("123014", "DCM")
_ACCESSION_ITEM: Code = ("121022", "DCM")
_START_OF_IRRADIATION: Code = ("113809", "DCM")

#: Components of the dose summary and of an irradiation event, as in DICOM cast: code → value kind.
SUMMARY_COMPONENTS: dict[Code, str] = {
    ("113725", "DCM"): "num",  # Dose (RP) Total
    ("111637", "DCM"): "num",  # Accumulated Average Glandular Dose
    ("113722", "DCM"): "num",  # Dose Area Product Total
    ("113726", "DCM"): "num",  # Fluoro Dose Area Product Total
    ("113727", "DCM"): "num",  # Acquisition Dose Area Product Total
    ("113730", "DCM"): "num",  # Total Fluoro Time
    ("113731", "DCM"): "int",  # Total Number of Radiographic Frames
    ("113507", "DCM"): "num",  # Administered activity
    ("113813", "DCM"): "num",  # CT Dose Length Product Total
    ("113812", "DCM"): "int",  # Total Number of Irradiation Events
    ("113830", "DCM"): "num",  # Mean CTDIvol
    ("349358000", "SCT"): "text",  # Radiopharmaceutical agent
    ("123005", "DCM"): "num",  # Radiopharmaceutical Volume
    ("89457008", "SCT"): "text",  # Radionuclide
    ("410675002", "SCT"): "code",  # Route of administration
}
EVENT_COMPONENTS: dict[Code, str] = {
    ("113830", "DCM"): "num",  # Mean CTDIvol
    ("113838", "DCM"): "num",  # DLP
    ("113835", "DCM"): "code",  # CTDIw Phantom Type
}
RADIATION_EXPOSURE = {"system": LOINC, "code": "73569-6", "display": "Radiation exposure and protection information"}
IRRADIATION_EVENT = {"system": DCM_SYSTEM, "code": "113852", "display": "Irradiation Event"}


@dataclass(frozen=True, slots=True)
class ReportContext:
    """Where a report's resources point: its instance, the Patient, the ImagingStudy and the WADO-RS URL."""

    study_instance_uid: str
    sop_instance_uid: str
    patient_id: str
    imaging_study_id: str
    instance_url: str


def _text(item: dict[str, Any], key: str) -> str | None:
    value = first_value(item.get(key))
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _items(item: dict[str, Any], key: str) -> list[dict[str, Any]]:
    element = item.get(key) or {}
    return [v for v in element.get("Value") or [] if isinstance(v, dict)]


def _code(item: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The first item of a code sequence as a dict with ``value``, ``scheme`` and ``meaning``."""
    codes = _items(item, key)
    if not codes:
        return None
    value = _text(codes[0], _CODE_VALUE)
    scheme = _text(codes[0], _SCHEME) or ""
    if value is None:
        return None
    return {"value": value, "scheme": scheme, "meaning": _text(codes[0], _MEANING)}


def _concept(item: dict[str, Any]) -> Code | None:
    code = _code(item, _CONCEPT_NAME)
    return (code["value"], code["scheme"].upper()) if code else None


def coding(code: dict[str, Any]) -> dict[str, str]:
    """A FHIR Coding for a DICOM code (scheme designators mapped to their FHIR system URIs)."""
    scheme = code["scheme"]
    out = {"system": _SCHEMES.get(scheme.upper(), scheme), "code": code["value"]}
    if code.get("meaning"):
        out["display"] = code["meaning"]
    if not out["system"]:
        del out["system"]
    return out


def _codings(item: dict[str, Any]) -> list[dict[str, str]]:
    """The item's concept name as a one-element Coding list (empty without one)."""
    code = _code(item, _CONCEPT_NAME)
    return [coding(code)] if code else []


def _walk(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every content item under ``item``, depth first in document order."""
    for child in _items(item, _CONTENT_SEQUENCE):
        yield child
        yield from _walk(child)


def _texts(item: dict[str, Any]) -> list[str]:
    """TEXT values of ``item`` and its content tree, in document order."""
    found = [item] + list(_walk(item))
    return [t for i in found if _text(i, _VALUE_TYPE) == "TEXT" and (t := _text(i, _TEXT_VALUE))]


def _is_conclusion(item: dict[str, Any]) -> bool:
    concept = _concept(item)
    code = _code(item, _CONCEPT_NAME)
    meaning = (code or {}).get("meaning") or ""
    return concept in _CONCLUSION_CODES or meaning.strip().lower() in _CONCLUSION_MEANINGS


def conclusion(metadata: dict[str, Any]) -> str | None:
    """The report's conclusion: TEXT under Conclusion/Impression items when present, else every TEXT."""
    preferred: list[str] = []
    stack = list(reversed(_items(metadata, _CONTENT_SEQUENCE)))
    while stack:  # depth first; a conclusion item's subtree is taken whole and not searched again
        item = stack.pop()
        if _is_conclusion(item):
            preferred += _texts(item)
        else:
            stack += reversed(_items(item, _CONTENT_SEQUENCE))
    texts = preferred or _texts(metadata)
    return "\n".join(texts) or None


def report_status(metadata: dict[str, Any]) -> str:
    """DiagnosticReport/Observation status from CompletionFlag and VerificationFlag."""
    completion = (_text(metadata, _COMPLETION) or "").upper()
    verification = (_text(metadata, _VERIFICATION) or "").upper()
    if completion == "COMPLETE" and verification == "VERIFIED":
        return "final"
    if completion == "PARTIAL":
        return "partial"
    return "preliminary"


def _effective(metadata: dict[str, Any]) -> str | None:
    tz = _text(metadata, _TZ)
    return _started(_text(metadata, _CONTENT_DATE), _text(metadata, _CONTENT_TIME), tz) or _started(
        _text(metadata, _STUDY_DATE), _text(metadata, _STUDY_TIME), tz
    )


def _tag(ctx: ReportContext) -> dict[str, Any]:
    return {"tag": [{"system": STUDY_TAG_SYSTEM, "code": ctx.imaging_study_id}]}


def _uid_identifier(uid: str) -> dict[str, str]:
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def diagnostic_report(metadata: dict[str, Any], ctx: ReportContext) -> dict[str, Any]:
    """The DiagnosticReport of a structured report (see the module docstring).

    Raises
    ------
    fhirclient.models.fhirabstractbase.FHIRValidationError
        If the result is not a valid R4 DiagnosticReport (a bug, never data-dependent).
    """
    title = _code(metadata, _CONCEPT_NAME)
    code: dict[str, Any] = {"coding": [coding(title)]} if title else {"text": "Structured report"}
    if title and title.get("meaning"):
        code["text"] = title["meaning"]
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": _tag(ctx),
        "identifier": [_uid_identifier(ctx.sop_instance_uid)],
        "status": report_status(metadata),
        "category": [{"coding": [{"system": _V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": code,
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "imagingStudy": [{"reference": f"ImagingStudy/{ctx.imaging_study_id}"}],
        "presentedForm": [{"contentType": "application/dicom", "url": ctx.instance_url, "title": code.get("text", "")}],
    }
    if not resource["presentedForm"][0]["title"]:
        del resource["presentedForm"][0]["title"]
    effective = _effective(metadata)
    if effective:
        resource["effectiveDateTime"] = effective
    text = conclusion(metadata)
    if text:
        resource["conclusion"] = text
    return DiagnosticReport(resource, strict=True).as_json()  # type: ignore[no-any-return]


# -- radiation dose --------------------------------------------------------------------------------


def _find(root: dict[str, Any], concept: Code) -> dict[str, Any] | None:
    """The first content item named ``concept`` in ``root``'s tree."""
    return next((i for i in _walk(root) if _concept(i) == concept), None)


def _component(item: dict[str, Any], code: Code, kind: str) -> dict[str, Any] | None:
    name = _code(item, _CONCEPT_NAME)
    if name is None:
        return None
    out: dict[str, Any] = {"code": {"coding": [coding(name)]}}
    if kind == "num":
        measured = _items(item, _MEASURED_VALUE)
        number = _text(measured[0], _NUMERIC_VALUE) if measured else None
        if number is None:
            return None
        try:
            real = float(number)
        except ValueError:
            return None
        quantity: dict[str, Any] = {"value": int(real) if real.is_integer() else real}
        unit = _code(measured[0], _UNITS)
        if unit:
            quantity.update({"unit": unit["value"], "code": unit["value"]})
            if unit["scheme"].upper() == "UCUM":
                quantity["system"] = UCUM
        out["valueQuantity"] = quantity
    elif kind == "int":
        measured = _items(item, _MEASURED_VALUE)
        number = _text(measured[0], _NUMERIC_VALUE) if measured else _text(item, _TEXT_VALUE)
        try:
            whole = int(float(number or "0"))
        except ValueError:
            return None
        if whole == 0:
            return None  # as cast: a zero count is left out
        out["valueInteger"] = whole
    elif kind == "text":
        text = _text(item, _TEXT_VALUE)
        if text is None:
            concept = _code(item, _CONCEPT_CODE)
            text = (concept or {}).get("meaning")
        if not text:
            return None
        out["valueString"] = text
    else:
        concept = _code(item, _CONCEPT_CODE)
        if concept is None:
            return None
        out["valueCodeableConcept"] = {"coding": [coding(concept)]}
    return out


def _components(
    root: dict[str, Any], wanted: dict[Code, str], skip: frozenset[Code] = frozenset()
) -> list[dict[str, Any]]:
    """The first value of each wanted concept in ``root``'s tree (not descending into ``skip`` containers)."""
    found: dict[Code, dict[str, Any]] = {}
    stack = list(reversed(_items(root, _CONTENT_SEQUENCE)))
    while stack:
        item = stack.pop()
        concept = _concept(item)
        if concept in skip:
            continue
        if concept in wanted and concept not in found and (component := _component(item, concept, wanted[concept])):
            found[concept] = component
        stack += reversed(_items(item, _CONTENT_SEQUENCE))
    return [found[c] for c in wanted if c in found]


def dose_observations(
    metadata: dict[str, Any], ctx: ReportContext, ids: Callable[[str | None], str]
) -> list[dict[str, Any]]:
    """The dose summary and irradiation event Observations of a radiation dose report.

    ``ids(event_uid)`` returns the deterministic id of an Observation: ``ids(None)`` the
    summary's, ``ids(uid)`` an irradiation event's.  Reports without a dose report container
    or irradiation events give none.

    Raises
    ------
    fhirclient.models.fhirabstractbase.FHIRValidationError
        If a result is not a valid R4 Observation (a bug, never data-dependent).
    """
    status = report_status(metadata)
    roots = [metadata] if _concept(metadata) in DOSE_REPORTS else []
    roots += [i for i in _walk(metadata) if _concept(i) in DOSE_REPORTS]
    events = [i for i in _walk(metadata) if _concept(i) in IRRADIATION_EVENTS]
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": _tag(ctx),
        "status": status,
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "partOf": [{"reference": f"ImagingStudy/{ctx.imaging_study_id}"}],
    }
    study_identifier = _uid_identifier(ctx.study_instance_uid)  # cast's identifier of every dose Observation
    out: list[dict[str, Any]] = []
    event_ids: list[str] = []
    for event in events:
        uid_item = _find(event, _IRRADIATION_EVENT_UID)
        event_uid = _text(uid_item, _UID) if uid_item else None
        if not event_uid:
            continue  # as cast: an event without its UID is not reported
        resource: dict[str, Any] = {
            **base,
            "id": ids(event_uid),
            "identifier": [study_identifier, _uid_identifier(event_uid)],
            "code": {"coding": [IRRADIATION_EVENT, *_codings(event)], "text": "Irradiation Event"},
        }
        region = _find(event, _TARGET_REGION)
        region_code = _code(region, _CONCEPT_CODE) if region else None
        if region_code:
            resource["bodySite"] = {"coding": [coding(region_code)]}
        start = _find(event, _START_OF_IRRADIATION)
        start_value = _text(start, _DATETIME) if start else None
        if start_value:
            started = _started(start_value[:8], start_value[8:14], _tz_of(start_value) or _text(metadata, _TZ))
            if started:
                resource["effectiveDateTime"] = started
        components = _components(event, EVENT_COMPONENTS)
        if components:
            resource["component"] = components
        out.append(Observation(resource, strict=True).as_json())
        event_ids.append(resource["id"])
    for root in roots[:1]:  # one summary per report (a report has one dose report container)
        identifiers: list[dict[str, Any]] = [study_identifier, _uid_identifier(ctx.sop_instance_uid)]
        accession_item = _find(root, _ACCESSION_ITEM)
        accession = (_text(accession_item, _TEXT_VALUE) if accession_item else None) or _text(metadata, _ACCESSION)
        if accession:
            identifiers.append({"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession})
        summary: dict[str, Any] = {
            **base,
            "id": ids(None),
            "identifier": identifiers,
            "code": {"coding": [RADIATION_EXPOSURE, *_codings(root)], "text": RADIATION_EXPOSURE["display"]},
        }
        effective = _effective(metadata)
        if effective:
            summary["effectiveDateTime"] = effective
        if event_ids:
            summary["hasMember"] = [{"reference": f"Observation/{i}"} for i in event_ids]
        components = _components(root, SUMMARY_COMPONENTS, skip=IRRADIATION_EVENTS)
        if components:
            summary["component"] = components
        out.insert(0, Observation(summary, strict=True).as_json())
    return out


def _tz_of(dt: str) -> str | None:
    """The ``&ZZXX`` offset at the end of a DICOM DT value, if any."""
    for sign in "+-":
        head, found, zone = dt.rpartition(sign)
        if found and len(zone) == 4 and zone.isdigit() and len(head) >= 8:
            return sign + zone
    return None
