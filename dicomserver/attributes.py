"""Which attributes belong to which level, and which are searchable.

Lists from the Azure DICOM service v2 conformance statement ("Search
(QIDO-RS)": searchable attributes, default and ``includefield=all``
attributes per level).
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from .identifiers import Level


def _tags(*keywords: str) -> tuple[int, ...]:
    out = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown keyword {keyword!r}")
        out.append(int(tag))
    return tuple(out)


STUDY_DEFAULT = _tags(
    "StudyDate",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyInstanceUID",
)
STUDY_ALL_EXTRA = _tags(
    "SpecificCharacterSet",
    "StudyTime",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "AnatomicRegionsInStudyCodeSequence",
    "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
    "ReferencedStudySequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientSex",
    "StudyID",
    "IssuerOfPatientID",
)
SERIES_DEFAULT = _tags("Modality", "ManufacturerModelName", "SeriesInstanceUID", "PerformedProcedureStepStartDate")
SERIES_ALL_EXTRA = _tags(
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "SeriesNumber",
    "Laterality",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
INSTANCE_DEFAULT = _tags("SOPInstanceUID")
INSTANCE_ALL_EXTRA = _tags(
    "SpecificCharacterSet",
    "SOPClassUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

#: Kept for the FHIR ImagingStudy (series.bodySite), returned only when asked for by includefield.
SERIES_FHIR_EXTRA = _tags("BodyPartExamined")

#: Attributes kept in the index for each level (default ∪ includefield=all ∪ FHIR needs).
LEVEL_ATTRIBUTES: dict[Level, tuple[int, ...]] = {
    Level.STUDY: STUDY_DEFAULT + STUDY_ALL_EXTRA,
    Level.SERIES: SERIES_DEFAULT + SERIES_ALL_EXTRA + SERIES_FHIR_EXTRA,
    Level.INSTANCE: INSTANCE_DEFAULT + INSTANCE_ALL_EXTRA,
}

#: Searchable attributes per level (Azure v2 conformance statement, "Searchable attributes").
STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyDescription",
    "ModalitiesInStudy",
)
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "PerformedProcedureStepStartDate", "ManufacturerModelName")
INSTANCE_KEYS = ("SOPInstanceUID",)

#: Attributes matched as person names (case- and accent-insensitive, fuzzy-capable).
PERSON_NAME_ATTRIBUTES = frozenset({"PatientName", "ReferringPhysicianName"})
#: Attributes matched by inclusive date range.
DATE_ATTRIBUTES = frozenset({"StudyDate", "PatientBirthDate", "PerformedProcedureStepStartDate"})
#: Attributes matched as UIDs (exact, comma-separated list allowed).
UID_ATTRIBUTES = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


def all_index_tags() -> tuple[int, ...]:
    """Every attribute copied into an instance's index document."""
    seen: dict[int, None] = {}
    for tags in LEVEL_ATTRIBUTES.values():
        for tag in tags:
            seen[tag] = None
    return tuple(seen)
