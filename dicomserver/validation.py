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

from pydicom.dataset import Dataset

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


def _text(ds: Dataset, keyword: str) -> str | None:
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
    sop_class = _text(ds, "SOPClassUID")
    sop_instance = _text(ds, "SOPInstanceUID")

    def fail(reason: FailureReason, message: str) -> ValidationResult:
        return ValidationResult(reason, message, sop_class, sop_instance)

    for keyword in REQUIRED_UIDS:
        value = _text(ds, keyword)
        if not value:
            return fail(FailureReason.VALIDATION_FAILURE, f"The required attribute {keyword} is missing or empty.")
        if not is_valid_uid(value):
            return fail(FailureReason.VALIDATION_FAILURE, f"The {keyword} '{value}' is not a valid UID.")
    if "PatientID" not in ds:
        return fail(FailureReason.VALIDATION_FAILURE, "The required attribute PatientID is missing.")
    patient_id = _text(ds, "PatientID") or ""
    if len(patient_id) > 64 or "\\" in patient_id or any(ord(c) < 32 and c != "\x1b" for c in patient_id):
        return fail(FailureReason.VALIDATION_FAILURE, f"The PatientID '{patient_id}' is not a valid LO value.")
    study = _text(ds, "StudyInstanceUID") or ""
    if study_in_path is not None and study.upper() != study_in_path.strip().upper():
        return fail(
            FailureReason.MISMATCH_STUDY_INSTANCE_UID,
            f"The StudyInstanceUID '{study}' does not match the study '{study_in_path}' in the request URL.",
        )
    return ValidationResult(None, "", sop_class, sop_instance)


def instance_key(ds: Dataset, partition: str) -> InstanceKey:
    """Return the key of a dataset that passed :func:`validate_dataset`."""
    return InstanceKey(
        partition,
        _text(ds, "StudyInstanceUID") or "",
        _text(ds, "SeriesInstanceUID") or "",
        _text(ds, "SOPInstanceUID") or "",
    )
