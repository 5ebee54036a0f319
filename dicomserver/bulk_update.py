"""Bulk update (Azure v2): ``POST /v2/studies/$bulkUpdate`` as a long-running operation.

The request names up to 50 studies and a ``changeDataset`` (DICOM JSON of new values for patient
and study attributes). It is validated at once (400 with a message), refused with 409 while another
update runs on one of its studies, and answered with 202 and an operation reference; the ``update``
operation then rewrites each instance of each study, :data:`INSTANCES_PER_STEP` at a time:

1. the instance's first version is kept, once: a blob snapshot (deleted with the blob), recorded in
   its index document *before* the blob changes, so a step run again never keeps an updated version
   as the original. ``msdicom-request-original: true`` on a retrieve reads it;
2. the file is read, the new values set, written back (same transfer syntax, pixel data as stored)
   and the index document replaced from the new file (QIDO, metadata, frames follow);
3. the study's sync is scheduled first, so FHIR (Patient and ImagingStudy) follows, and the change
   feed logs one ``update`` entry per instance.

Each step is idempotent: the update applied again gives the same file. A study that is not found
(or whose instances cannot be rewritten) counts as failed with a message, as Azure reports it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag

from .dicomjson import keyword_tag
from .errors import BadRequest, Conflict, DicomServerError, UnsupportedMediaType
from .identifiers import DEFAULT_PARTITION, InstanceKey, StudyKey, is_valid_uid
from .ingest import PARSE_ERRORS, Rejected, index_entry, overwrite_instance, read_instance
from .mediatypes import parse_media_type
from .operations import operation_handler, operation_reference, start_operation
from .stores import Change, ChangeAction, IndexedInstance, IndexStore, Operation, OperationStatus, OperationStore

if TYPE_CHECKING:
    from .wiring import Services

log = logging.getLogger(__name__)

MAX_STUDIES = 50
INSTANCES_PER_STEP = 50
#: Largest request body read (a change dataset of patient and study attributes is small).
MAX_BODY_BYTES = 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024

#: Attributes a bulk update may change (Azure v2 "Update DICOM files": the patient identification and
#: demographic modules and the general study module's descriptive attributes; not UIDs, not sequences).
UPDATABLE_KEYWORDS: tuple[str, ...] = (
    # Patient identification
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "TypeOfPatientID",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    # Patient demographic
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientTelephoneNumbers",
    "EthnicGroup",
    "Occupation",
    "PatientReligiousPreference",
    "PatientComments",
    "PatientBirthDate",
    "PatientBirthTime",
    "SmokingStatus",
    "PregnancyStatus",
    "LastMenstrualDate",
    "AdditionalPatientHistory",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    # General study
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyDescription",
    "StudyID",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
)
UPDATABLE_TAGS: dict[int, str] = {keyword_tag(k): k for k in UPDATABLE_KEYWORDS}


def _study_resource(partition: str, study: str) -> str:
    prefix = "" if partition == DEFAULT_PARTITION else f"partitions/{partition}/"
    return f"{prefix}studies/{study}"


def parse_request(body: bytes, content_type: str | None) -> tuple[list[str], dict[str, Any]]:
    """The studies and the change dataset of a bulk update request (400/415 with a message)."""
    if content_type and parse_media_type(content_type).type != "application/json":
        raise UnsupportedMediaType(f"The content type {content_type!r} is not supported: use application/json.")
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(request, dict):
        raise BadRequest("The request body must be a JSON object with studyInstanceUids and changeDataset.")
    fields = {k.lower(): v for k, v in request.items()}
    studies, change = fields.get("studyinstanceuids"), fields.get("changedataset")
    if not isinstance(studies, list) or not studies:
        raise BadRequest("studyInstanceUids is required: a non-empty list of Study Instance UIDs.")
    if len(studies) > MAX_STUDIES:
        raise BadRequest(f"At most {MAX_STUDIES} studies can be updated in one operation, got {len(studies)}.")
    for uid in studies:
        if not isinstance(uid, str) or not is_valid_uid(uid):
            raise BadRequest(f"The Study Instance UID {uid!r} is not a valid UID.")
    if len(set(studies)) != len(studies):
        raise BadRequest("studyInstanceUids lists a study more than once.")
    if not isinstance(change, dict) or not change:
        raise BadRequest("changeDataset is required: DICOM JSON of the attributes to change.")
    validate_change(change)
    return [str(s) for s in studies], change


def validate_change(change: dict[str, Any]) -> Dataset:
    """The change dataset as pydicom elements; 400 for anything a bulk update cannot change."""
    for key, element in change.items():
        try:
            tag = int(key, 16)
        except ValueError:
            raise BadRequest(f"The attribute {key!r} of changeDataset is not a tag (8 hexadecimal digits).") from None
        if len(key) != 8 or tag not in UPDATABLE_TAGS:
            name = keyword_for_tag(tag) if len(key) == 8 else ""
            raise BadRequest(
                f"The attribute {key}{f' ({name})' if name else ''} cannot be updated: a bulk update changes "
                "only patient and study attributes (see the README)."
            )
        if not isinstance(element, dict):
            raise BadRequest(f"The attribute {key} of changeDataset must be a DICOM JSON object.")
        vr = element.get("vr")
        if vr != dictionary_VR(tag):
            raise BadRequest(f"The attribute {key} must have VR {dictionary_VR(tag)}, got {vr!r}.")
        values = element.get("Value")
        if not isinstance(values, list) or not values or any(v in (None, "", {}) for v in values):
            raise BadRequest(f"The attribute {key} has no value: a bulk update cannot set an attribute to null.")
    try:
        dataset = Dataset.from_json(change)
        for element in dataset:
            element.value  # noqa: B018 - converts and so validates the values
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"changeDataset is not valid DICOM JSON: {exc}.") from None
    return dataset


async def bulk_update_studies(
    *,
    operations: OperationStore,
    body: bytes,
    content_type: str | None,
    base_url: str,
    partition: str = DEFAULT_PARTITION,
) -> dict[str, str]:
    """Start a bulk update: 202 with ``{"id", "href"}`` of its operation."""
    studies, change = parse_request(body, content_type)
    for study in studies:
        running = operations.find_active("update", _study_resource(partition, study))
        if running is not None:
            raise Conflict(f"The study {study} is being updated by operation {running.id}; retry when it is done.")
    operation = start_operation(
        operations,
        "update",
        [_study_resource(partition, s) for s in studies],
        {"studies": studies, "change": change, "study": 0, "offset": 0},
        partition,
    )
    return operation_reference(operation, base_url)


@operation_handler("update")
def update_step(operation: Operation, services: Services) -> Operation:
    """One step: up to :data:`INSTANCES_PER_STEP` instances of the current study."""
    checkpoint = dict(operation.checkpoint)
    studies: list[str] = checkpoint["studies"]
    results = dict(operation.results or {"studyUpdated": 0, "studyFailed": 0, "instanceUpdated": 0, "errors": []})
    results.setdefault("errors", [])
    position, offset = int(checkpoint.get("study", 0)), int(checkpoint.get("offset", 0))
    if position < len(studies):
        study = StudyKey(operation.partition, studies[position])
        change = Dataset.from_json(checkpoint["change"])
        keys = sorted(services.index.list_instances(study), key=lambda k: (k.series_instance_uid, k.sop_instance_uid))
        batch = keys[offset : offset + INSTANCES_PER_STEP]
        failure: str | None = None
        if not keys:
            failure = f"Failed to update instances for study {study.study_instance_uid}: the study was not found."
        else:
            services.sync_queue.schedule_sync([study])
            try:
                updated = [update_instance(services, key, change) for key in batch]
            except (DicomServerError, *PARSE_ERRORS) as exc:
                if isinstance(exc, DicomServerError) and exc.status in (503, 424):
                    raise
                text = exc.message if isinstance(exc, DicomServerError) else type(exc).__name__
                failure = f"Failed to update instances for study {study.study_instance_uid}: {text}"
            else:
                changed = [entry for entry in updated if entry is not None]
                if changed:
                    services.index.update_aggregates([changed[-1]], count=False)
                    services.index.log_changes([Change(entry.key, ChangeAction.UPDATE) for entry in changed])
                results["instanceUpdated"] = int(results.get("instanceUpdated", 0)) + len(changed)
        if failure is not None:
            log.warning("bulk update %s: %s", operation.id, failure)
            results["studyFailed"] = int(results.get("studyFailed", 0)) + 1
            results["errors"] = [*results["errors"], failure]
            position, offset = position + 1, 0
        elif offset + INSTANCES_PER_STEP >= len(keys):
            results["studyUpdated"] = int(results.get("studyUpdated", 0)) + 1
            position, offset = position + 1, 0
        else:
            offset += INSTANCES_PER_STEP
        done_in_study = 0.0 if offset == 0 else offset / max(1, len(keys))
        percent = int(100 * (position + done_in_study) / len(studies))
    else:
        percent = 100
    checkpoint.update({"study": position, "offset": offset})
    if position >= len(studies):
        status = OperationStatus.FAILED if results.get("studyFailed") else OperationStatus.SUCCEEDED
        percent = 100
    else:
        status = OperationStatus.RUNNING
    return replace(operation, status=status, checkpoint=checkpoint, results=results, percent_complete=percent)


def update_instance(services: Services, key: InstanceKey, change: Dataset) -> IndexedInstance | None:
    """Rewrite one instance with the changed attributes (idempotent); None if it was deleted meanwhile."""
    index: IndexStore = services.index
    blobs = services.blobs
    current = index.get_instance(key)
    if current is None:
        return None
    original = current.original_version
    if original is None:
        original = blobs.snapshot_instance(key)
        index.set_original_version(key, original)  # before the blob changes: a rerun keeps this one
    with (
        tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as source,
        tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as target,
    ):
        for chunk in blobs.iter_instance(key):
            source.write(chunk)
        source.seek(0)
        dataset = pydicom.dcmread(source, force=True)
        for element in change:
            dataset[element.tag] = element
        dataset.save_as(target, enforce_file_format=False)
        size = target.tell()
        target.seek(0)
        parsed = read_instance(target, size, None, key.partition)
        if isinstance(parsed, Rejected):
            raise BadRequest(f"instance {key.sop_instance_uid} would not be valid: {parsed.message}")
        if parsed.key != key:
            raise BadRequest(f"instance {key.sop_instance_uid} changed its identity")
        entry = replace(index_entry(parsed), original_version=original, expires_at=current.expires_at)
        overwrite_instance(blobs, index, target, size, entry)
    return entry
