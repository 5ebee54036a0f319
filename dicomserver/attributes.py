"""Which attributes belong to which level, and which are searchable.

Searchable attributes and the ``includefield=all`` lists come from the Azure
DICOM service v2 conformance statement ("Search (QIDO-RS)").  The default
(no includefield) lists are PS3.18's required result attributes (Tables
10.6.3-3/-4/-5), a superset of Azure v2's minimal defaults, so a viewer's
study list (OHIF: modalities, instance counts, study time) works without
includefield.
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


def _union(*groups: tuple[int, ...]) -> tuple[int, ...]:
    """The tags of ``groups`` in order, each once."""
    return tuple(dict.fromkeys(tag for group in groups for tag in group))


def _without(tags: tuple[int, ...], *removed: tuple[int, ...]) -> tuple[int, ...]:
    gone = {tag for group in removed for tag in group}
    return tuple(tag for tag in tags if tag not in gone)


#: Azure v2's default (no includefield) attributes per level.
STUDY_AZURE_DEFAULT = _tags(
    "StudyDate",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyInstanceUID",
)
SERIES_AZURE_DEFAULT = _tags(
    "Modality", "ManufacturerModelName", "SeriesInstanceUID", "PerformedProcedureStepStartDate"
)
INSTANCE_AZURE_DEFAULT = _tags("SOPInstanceUID")

#: The stored attributes of PS3.18 Tables 10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5
#: (instance), which every result of the level carries when the instance has them.  The
#: computed ones (ModalitiesInStudy, the Number-of-Related counts, RetrieveURL and
#: InstanceAvailability) are added by :mod:`dicomserver.qido`.
STUDY_PS318 = _tags(
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
)
SERIES_PS318 = _tags(
    "SpecificCharacterSet",
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
INSTANCE_PS318 = _tags(
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "TimezoneOffsetFromUTC",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

#: Returned by default: PS3.18's required attributes, a superset of Azure v2's defaults.
STUDY_DEFAULT = _union(STUDY_AZURE_DEFAULT, STUDY_PS318)
SERIES_DEFAULT = _union(SERIES_AZURE_DEFAULT, SERIES_PS318)
INSTANCE_DEFAULT = _union(INSTANCE_AZURE_DEFAULT, INSTANCE_PS318)

#: Azure v2's ``includefield=all`` attributes per level (a superset of the defaults).
_STUDY_AZURE_ALL = STUDY_AZURE_DEFAULT + _tags(
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
_SERIES_AZURE_ALL = SERIES_AZURE_DEFAULT + _tags(
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
_INSTANCE_AZURE_ALL = INSTANCE_AZURE_DEFAULT + _tags(
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

#: Returned only with ``includefield=all`` (or when named): the rest of Azure's ``all`` set.
STUDY_ALL_EXTRA = _without(_STUDY_AZURE_ALL, STUDY_DEFAULT)
SERIES_ALL_EXTRA = _without(_SERIES_AZURE_ALL, SERIES_DEFAULT)
INSTANCE_ALL_EXTRA = _without(_INSTANCE_AZURE_ALL, INSTANCE_DEFAULT)

#: Kept for the FHIR ImagingStudy (series.bodySite), returned only when asked for by includefield.
SERIES_FHIR_EXTRA = _tags("BodyPartExamined")

#: Attributes kept in the index for each level (default ∪ includefield=all ∪ FHIR needs).
LEVEL_ATTRIBUTES: dict[Level, tuple[int, ...]] = {
    Level.STUDY: _union(STUDY_DEFAULT, STUDY_ALL_EXTRA),
    Level.SERIES: _union(SERIES_DEFAULT, SERIES_ALL_EXTRA, SERIES_FHIR_EXTRA),
    Level.INSTANCE: _union(INSTANCE_DEFAULT, INSTANCE_ALL_EXTRA),
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
    # PS3.18 Table 10.6.1-5 keys beyond Azure's list:
    "StudyTime",
    "StudyID",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "PerformedProcedureStepStartDate",
    "ManufacturerModelName",
    # PS3.18 Table 10.6.1-5 keys beyond Azure's list:
    "SeriesNumber",
    "SeriesDescription",
    "PerformedProcedureStepStartTime",
)
INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")

#: Attributes matched as person names (case- and accent-insensitive, fuzzy-capable).
PERSON_NAME_ATTRIBUTES = frozenset({"PatientName", "ReferringPhysicianName"})
#: Attributes matched by inclusive date range.
DATE_ATTRIBUTES = frozenset({"StudyDate", "PatientBirthDate", "PerformedProcedureStepStartDate"})
#: Attributes matched by inclusive time range (kept as ``HHMMSS.ffffff``).
TIME_ATTRIBUTES = frozenset({"StudyTime", "PerformedProcedureStepStartTime"})
#: Integer String attributes: kept as numbers, matched by numeric equality.
NUMBER_ATTRIBUTES = frozenset({"SeriesNumber", "InstanceNumber"})
#: Attributes matched as UIDs (exact, comma-separated list allowed).
UID_ATTRIBUTES = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"})

#: ``orderby`` keys per result level (each has a composite index with ``sortKey``, see the index).
ORDER_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDescription",
        "StudyID",
        "StudyInstanceUID",
    ),
    Level.SERIES: (
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "SeriesInstanceUID",
    ),
    Level.INSTANCE: ("InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}


def all_index_tags() -> tuple[int, ...]:
    """Every attribute copied into an instance's index document."""
    seen: dict[int, None] = {}
    for tags in LEVEL_ATTRIBUTES.values():
        for tag in tags:
            seen[tag] = None
    return tuple(seen)
