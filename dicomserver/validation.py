"""STOW-RS dataset validation: returns reasons, never raises.

Rules (Azure DICOM service v2 conformance statement, "Store (STOW-RS)"):

* StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and SOPClassUID must be
  present with a value that is a valid UI (digits and dots, ≤ 64 characters);
  the three instance UIDs may be equal.
* PatientID must be present (it may be empty) and must be a valid LO value
  (≤ 64 characters, no backslash or control characters).
* When the request path names a study, the dataset's StudyInstanceUID must be
  the same (compared ignoring case and trailing spaces) → 43265.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import validate_value

from .errors import FailureReason
from .identifiers import InstanceKey, is_valid_uid

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Outcome of validating one dataset: ``reason`` is None when it passed."""

    reason: FailureReason | None
    message: str = ""
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def first_text(ds: Dataset, keyword: str) -> str | None:
    """The first value of an attribute as text, padding stripped; None when absent or empty."""
    if keyword not in ds:
        return None
    elem = ds[keyword]
    if elem.value is None:
        return None
    value = elem.value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else ""
    return str(value).strip(" \x00")


def validate_dataset(ds: Dataset, study_in_path: str | None) -> ValidationResult:
    """Check the attributes a STOW needs before anything is written.

    Parameters
    ----------
    ds:
        The parsed dataset (pixel data need not be loaded).
    study_in_path:
        The StudyInstanceUID from ``POST /studies/{study}``, if any.

    Returns
    -------
    ValidationResult
        With ``reason`` None when the instance may be stored.
    """
    sop_class = first_text(ds, "SOPClassUID")
    sop_instance = first_text(ds, "SOPInstanceUID")

    def fail(reason: FailureReason, message: str) -> ValidationResult:
        return ValidationResult(reason, message, sop_class, sop_instance)

    for keyword in (*REQUIRED_UIDS, "PatientID"):
        if _value_count(ds, keyword) > 1:  # values not quoted: PatientID is patient data
            return fail(FailureReason.VALIDATION_FAILURE, f"The {keyword} has more than one value (VM 1).")
    for keyword in REQUIRED_UIDS:
        value = first_text(ds, keyword)
        if not value:
            return fail(FailureReason.VALIDATION_FAILURE, f"The required attribute {keyword} is missing or empty.")
        if not is_valid_uid(value):
            return fail(FailureReason.VALIDATION_FAILURE, f"The {keyword} '{value}' is not a valid UID.")
    if "PatientID" not in ds:
        return fail(FailureReason.VALIDATION_FAILURE, "The required attribute PatientID is missing.")
    patient_id = first_text(ds, "PatientID") or ""
    if len(patient_id) > 64 or "\\" in patient_id or any(ord(c) < 32 and c != "\x1b" for c in patient_id):
        return fail(  # the value is not quoted: it is patient data
            FailureReason.VALIDATION_FAILURE,
            "The PatientID is not a valid LO value (at most 64 characters, no backslash or control characters).",
        )
    study = first_text(ds, "StudyInstanceUID") or ""
    if study_in_path is not None and study.upper() != study_in_path.strip().upper():
        return fail(
            FailureReason.MISMATCH_STUDY_INSTANCE_UID,
            f"The StudyInstanceUID '{study}' does not match the study '{study_in_path}' in the request URL.",
        )
    return ValidationResult(None, "", sop_class, sop_instance)


def _value_count(ds: Dataset, keyword: str) -> int:
    if keyword not in ds or ds[keyword].value is None:
        return 0
    return len(_values(ds[keyword].value))


def instance_key(ds: Dataset, partition: str) -> InstanceKey:
    """Return the key of a dataset that passed :func:`validate_dataset`."""
    return InstanceKey(
        partition,
        first_text(ds, "StudyInstanceUID") or "",
        first_text(ds, "SeriesInstanceUID") or "",
        first_text(ds, "SOPInstanceUID") or "",
    )


#: String VRs whose values are checked against PS3.5 §6.2 (binary VRs are always well-formed).
_CHECKED_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UR"})


def _values(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _element_problem(ds: Dataset, tag: BaseTag) -> tuple[int, str] | None:
    """The first problem in one element (searching sequence items recursively)."""
    raw = ds.get_item(tag)
    raw_vr = getattr(raw, "VR", None)
    if raw_vr is not None and raw_vr not in _CHECKED_VRS and raw_vr != "SQ":
        return None
    if getattr(raw, "value", b"") is None and int(getattr(raw, "length", 0) or 0) > 0:
        return None  # deferred large value (LT/UT over the defer size): not read, not checked
    try:
        elem = ds[tag]
    except Exception as exc:  # pydicom raises many types for values it cannot convert
        return int(tag), f"- Content cannot be read: {exc}"
    if elem.VR == "SQ":
        for item in elem.value or []:
            for inner in item.keys():
                problem = _element_problem(item, inner)
                if problem is not None:
                    return problem
        return None
    if elem.VR not in _CHECKED_VRS or elem.value is None:
        return None
    for value in _values(elem.value):
        text = str(value).rstrip("\x00")  # null padding alone is not a problem (Azure v2)
        try:
            validate_value(elem.VR, text, config.RAISE)
        except ValueError as exc:
            detail = str(exc).split(". Please see")[0].rstrip(".")
            if detail.startswith("Invalid value for VR"):
                detail = f"the value does not have the form of a {elem.VR} value"
            return int(tag), f'- Content "{text}" does not validate VR {elem.VR}: {detail}'
    return None


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def find_invalid_attributes(ds: Dataset) -> dict[int, str]:
    """Attributes (other than the required ones) whose values fail VR validation.

    Azure v2 stores such an instance with WarningReason 1 and one ErrorComment
    per attribute in FailedAttributesSequence; only the first problem per
    attribute (and per sequence) is reported, and values that fail only
    because of trailing NUL padding pass.

    Returns
    -------
    dict[int, str]
        Top-level tag → ``DICOM100: (gggg,eeee) - Content "..." does not validate VR XX: ...``.
    """
    required = {int(Tag(k)) for k in (*REQUIRED_UIDS, "PatientID")}
    problems: dict[int, str] = {}
    for tag in ds.keys():
        if int(tag) in required or tag.element == 0:
            continue
        problem = _element_problem(ds, tag)
        if problem is not None:
            problems[int(tag)] = f"DICOM100: {_tag_text(problem[0])} {problem[1]}"
    return problems
