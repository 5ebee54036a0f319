"""Rebuild one study in FHIR from the index's current state.

The sync is idempotent and order-insensitive: it reads the ImagingStudy from
FHIR *first*, then the study from the index, then writes with ``If-Match`` on
the version it read.  If another sync wrote in between, the write fails with
412 and the whole step repeats with fresh reads, so the last successful write
always reflects an index state read after every earlier write: duplicated or
reordered ``fhir-sync`` messages can never leave FHIR behind the index.
Nothing is written when FHIR already matches.

Resource ids are deterministic (a hash of the DICOMweb base URL, partition
and StudyInstanceUID; of the identifier for a Patient; of the base URL for
the Endpoint) and written with PUT-as-create, so parallel syncs create one
resource: conditional create (If-None-Exist) is not atomic on every server.

The index is checked against the instance blobs first (one blob listing per
sync), so FHIR never shrinks or loses a study because the index is
incomplete (a store still committing, a restart re-indexing from storage):

* a blob the index does not list yet → :class:`IndexIncomplete`, and the
  message is retried later with back-off instead of syncing a partial study;
* an index entry whose blob is gone and that is older than ``quiet_seconds``
  (a DELETE that raced a STOW) is removed from the index first;
* the ImagingStudy is deleted only when the listing confirms that no blob of
  the study is left.  DICOM cast instead deletes when ``meta.source``
  matches; here the id ties the resource to this service.

After the write, the study's aggregates are reconciled with its instances
(:meth:`IndexStore.reconcile_study`), which repairs counts left short by a
writer that died between its index write and its aggregate update.  Patients and the Endpoint are never deleted.

Patient: found by identifier, created when absent; name, gender and birth date follow the newest
study but only where absent or still what the sync wrote (:func:`mapping.follow_demographics`),
so values from the clinical system are never overwritten.

Structured reports and dose reports (SOP class from the index) also become DiagnosticReports and
Observations (:mod:`.reports`), tagged with the ImagingStudy's id and reconciled by two tag searches
whenever the study has reports or its ImagingStudy in FHIR lists some (so deletes are seen).  Their
metadata costs one index read per report instance (a blob read more when it is too large for the
index document); images cost nothing extra.  Deletions of derived resources happen before the
ImagingStudy write, so a crash in between leaves an ImagingStudy that still lists the report and the
retry finishes the job; creations happen once the ImagingStudy exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from ..changefeed import process_study
from ..dicomjson import first_value
from ..errors import DependencyUnavailable, NotFound
from ..identifiers import InstanceKey, StudyKey
from ..stores import BlobStore, ChangeFeed, EventPublisher, IndexStore, SyncQueue
from ..stores.layout import parse_sync_message, sync_message
from ..stores.model import StudySnapshot
from ..urls import DicomWebUrl
from . import mapping, reports
from .client import FhirClient, FhirError, PreconditionFailed, TransientFhirError

log = logging.getLogger(__name__)

_ATTEMPTS = 8
#: A study with no instance stored for this long has no writer between its index and aggregate writes.
QUIET_SECONDS = 30.0


_SERIES_UID, _SOP_CLASS_UID, _SOP_INSTANCE_UID = "0020000E", "00080016", "00080018"


class IndexIncomplete(TransientFhirError):
    """Instance blobs of the study are not indexed yet: sync later rather than shrink FHIR."""


class SyncOutcome(Enum):
    """What :func:`sync_study` did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"  # not in the index and not in FHIR
    SKIPPED = "skipped"  # no PatientID: an ImagingStudy needs a subject


_endpoint_lock = threading.Lock()
_endpoint_ids: dict[tuple[str, str], str] = {}


def resource_id(kind: str, *parts: str) -> str:
    """A deterministic FHIR id, so parallel syncs create one resource (PUT as create)."""
    return f"dicom-{kind}-" + hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()


def ensure_endpoint(fhir: FhirClient, dicomweb_base_url: str) -> str:
    """The id of this service's Endpoint, written once per process."""
    cache_key = (fhir.base_url, dicomweb_base_url)
    with _endpoint_lock:
        if cache_key not in _endpoint_ids:
            resource = {**mapping.endpoint(dicomweb_base_url), "id": resource_id("ep", dicomweb_base_url)}
            _endpoint_ids[cache_key] = str(fhir.update(resource)["id"])
        return _endpoint_ids[cache_key]


def ensure_patient(fhir: FhirClient, resource: dict[str, Any], snapshot: StudySnapshot) -> str:
    """The id of the Patient with ``resource``'s identifier, created when absent, its demographics followed.

    Name, gender and birth date follow the newest study (:func:`mapping.follow_demographics`):
    a field is changed only when it is absent or still holds what the sync last wrote, so values
    set by the clinical system are never overwritten.  An existing Patient is written with
    ``If-Match`` (a concurrent change raises :class:`PreconditionFailed` and the sync re-reads).
    """
    identifier = resource["identifier"][0]
    token = f"{identifier['system']}|{identifier['value']}"
    found = fhir.search("Patient", {"identifier": token})
    if len(found) > 1:
        # The identifier value is patient data: the message names only its system.
        raise FhirError(
            f"{len(found)} Patients have this study's identifier (system {identifier['system']}); merge them in FHIR"
        )
    if found:
        current = found[0]
        followed = mapping.follow_demographics(current, snapshot)
        if not _same(current, followed):
            fhir.update(followed, current.get("meta", {}).get("versionId"))
        return str(current["id"])
    new_id = resource_id("pat", identifier["system"], identifier["value"])
    base = {"resourceType": "Patient", "identifier": resource["identifier"]}
    return str(fhir.update({**mapping.follow_demographics(base, snapshot), "id": new_id})["id"])


def _same(current: dict[str, Any], new: dict[str, Any]) -> bool:
    ignore = {"id", "meta", "text"}
    return {k: v for k, v in current.items() if k not in ignore} == {k: v for k, v in new.items() if k not in ignore}


def sync_study(
    *,
    index: IndexStore,
    blobs: BlobStore,
    fhir: FhirClient,
    study: StudyKey,
    dicomweb_base_url: str,
    patient_identifier_system: str,
    quiet_seconds: float = QUIET_SECONDS,
) -> SyncOutcome:
    """Make FHIR match the index for one study.

    The ImagingStudy's id is derived from the DICOMweb base URL, partition and
    StudyInstanceUID.  Each round reads FHIR, then the index, then writes with
    If-Match (a create is verified by one more round).

    Raises
    ------
    IndexIncomplete
        When instance blobs of the study are not indexed yet (retry later).
    TransientFhirError
        When the server is busy or unreachable, or writes keep conflicting (retry later).
    FhirError
        When the server refuses a request.
    """
    study_id = resource_id("study", dicomweb_base_url, study.partition, study.study_instance_uid)
    outcome = _sync(index, blobs, fhir, study, study_id, dicomweb_base_url, patient_identifier_system, quiet_seconds)
    if outcome is not SyncOutcome.ABSENT:
        index.reconcile_study(study, quiet_seconds)
    return outcome


def _checked_snapshot(index: IndexStore, blobs: BlobStore, study: StudyKey, quiet_seconds: float) -> Any:
    """The study as indexed, once the index is known to match the instance blobs (see the module docstring)."""
    snapshot = index.study_snapshot(study)
    indexed = snapshot.stored_at if snapshot is not None else {}
    stored = set(blobs.list_instances(study))
    unindexed = stored - set(indexed)
    if unindexed:
        raise IndexIncomplete(f"{len(unindexed)} instance(s) of the study are stored but not indexed yet")
    orphans = [key for key in indexed if key not in stored]
    if orphans:
        cutoff = datetime.now(UTC).timestamp() - quiet_seconds
        if any(not indexed[k] or datetime.fromisoformat(indexed[k]).timestamp() > cutoff for k in orphans):
            raise IndexIncomplete(f"{len(orphans)} indexed instance(s) have no blob; waiting for the study to settle")
        log.warning("removing %d index entries without a blob study=%s", len(orphans), study.study_instance_uid)
        index.remove_instances(orphans)
        snapshot = index.study_snapshot(study)
    return snapshot


def _sync(
    index: IndexStore,
    blobs: BlobStore,
    fhir: FhirClient,
    study: StudyKey,
    study_id: str,
    dicomweb_base_url: str,
    patient_identifier_system: str,
    quiet_seconds: float,
) -> SyncOutcome:
    created = False
    metadata: dict[InstanceKey, dict[str, Any] | None] = {}
    for _ in range(_ATTEMPTS):
        current = fhir.read("ImagingStudy", study_id)
        snapshot = _checked_snapshot(index, blobs, study, quiet_seconds)
        try:
            if snapshot is None:
                if current is None:
                    return SyncOutcome.ABSENT
                if _lists_reports(current):
                    reconcile_derived(fhir, study_id, [])
                fhir.delete("ImagingStudy", study_id, current.get("meta", {}).get("versionId"))
                return SyncOutcome.DELETED
            patient = mapping.patient(snapshot, patient_identifier_system)
            if patient is None:
                log.warning("study=%s has no PatientID; not synced to FHIR", study.study_instance_uid)
                return SyncOutcome.SKIPPED
            patient_id = ensure_patient(fhir, patient, snapshot)
            resource = mapping.imaging_study(
                snapshot, patient_id, ensure_endpoint(fhir, DicomWebUrl(dicomweb_base_url, study.partition).url)
            )
            reports = _report_instances(snapshot)
            # Derived resources are reconciled before the ImagingStudy write (so a crash in between
            # leaves the old ImagingStudy listing the reports, and the retry reconciles again), and
            # only once the ImagingStudy exists (they reference it).
            if current is not None and (reports or _lists_reports(current)):
                derived = _derived_resources(
                    index, blobs, snapshot, reports, patient_id, study_id, dicomweb_base_url, metadata
                )
                reconcile_derived(fhir, study_id, derived)
            if current is not None and _same(current, resource):
                return SyncOutcome.CREATED if created else SyncOutcome.UNCHANGED
            version = current.get("meta", {}).get("versionId") if current is not None else None
            fhir.update({**resource, "id": study_id}, version)
            if current is None:
                created = True  # PUT-as-create carries no precondition: verify on the next round
                continue
            return SyncOutcome.UPDATED
        except PreconditionFailed:
            log.info("fhir-sync conflict study=%s; re-reading", study.study_instance_uid)
            continue
    raise TransientFhirError(f"FHIR writes for study {study.study_instance_uid} kept conflicting")


def _lists_reports(imaging_study: dict[str, Any]) -> bool:
    """Whether an ImagingStudy in FHIR lists an instance whose SOP class the sync derives resources from."""
    codes = {f"urn:oid:{uid}" for uid in reports.SR_SOP_CLASSES}
    return any(
        instance.get("sopClass", {}).get("code") in codes
        for series in imaging_study.get("series") or []
        for instance in series.get("instance") or []
    )


def _report_instances(snapshot: StudySnapshot) -> list[tuple[InstanceKey, str]]:
    """``(key, SOPClassUID)`` of the study's structured reports (from the index, no extra read)."""
    found = []
    study = snapshot.key
    for series in snapshot.series:
        series_uid = str(first_value(series.attrs.get(_SERIES_UID)) or "")
        for attrs in series.instances:
            sop_class = str(first_value(attrs.get(_SOP_CLASS_UID)) or "")
            if sop_class in reports.SR_SOP_CLASSES:
                sop = str(first_value(attrs.get(_SOP_INSTANCE_UID)) or "")
                found.append((InstanceKey(study.partition, study.study_instance_uid, series_uid, sop), sop_class))
    return found


def read_instance_metadata(index: IndexStore, blobs: BlobStore, key: InstanceKey) -> dict[str, Any] | None:
    """An instance's DICOM JSON: one index read, plus one blob read when it is too large for the index.

    None when the instance is gone (a delete raced the sync; its next sync sees the new state).
    """
    stored = index.get_instance(key)
    if stored is None:
        return None
    if stored.metadata_json is not None:
        text: str | bytes = stored.metadata_json
    else:
        try:
            text, _ = blobs.get_metadata(key)
        except NotFound:
            return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def _derived_resources(
    index: IndexStore,
    blobs: BlobStore,
    snapshot: StudySnapshot,
    report_instances: list[tuple[InstanceKey, str]],
    patient_id: str,
    study_id: str,
    dicomweb_base_url: str,
    cache: dict[InstanceKey, dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """The DiagnosticReports and dose Observations of the study's reports (one metadata read per report).

    ``cache`` keeps the metadata read in earlier rounds of the same sync.
    """
    out: list[dict[str, Any]] = []
    for key, sop_class in report_instances:
        if key not in cache:
            cache[key] = read_instance_metadata(index, blobs, key)
        metadata = cache[key]
        if metadata is None:
            continue
        parts = (dicomweb_base_url, key.partition, key.study_instance_uid, key.sop_instance_uid)
        ctx = reports.ReportContext(
            study_instance_uid=key.study_instance_uid,
            sop_instance_uid=key.sop_instance_uid,
            patient_id=patient_id,
            imaging_study_id=study_id,
            instance_url=DicomWebUrl.of_instance(dicomweb_base_url, key).url,
        )
        if sop_class in reports.REPORT_SOP_CLASSES:
            out.append({**reports.diagnostic_report(metadata, ctx), "id": resource_id("report", *parts)})

        def observation_id(event_uid: str | None, parts: tuple[str, ...] = parts) -> str:
            return resource_id("obs", *parts, event_uid or "")

        out += reports.dose_observations(metadata, ctx, observation_id)
    return out


def reconcile_derived(fhir: FhirClient, study_id: str, wanted: list[dict[str, Any]]) -> None:
    """Make the DiagnosticReports and Observations tagged with the study match ``wanted``.

    Two searches (by the study tag), then a conditional PUT for each new or changed resource
    and a conditional DELETE for each one no longer derived from the study.
    """
    tag = {"_tag": f"{reports.STUDY_TAG_SYSTEM}|{study_id}"}
    existing = {
        (found["resourceType"], found["id"]): found
        for resource_type in ("DiagnosticReport", "Observation")
        for found in fhir.search_all(resource_type, tag)
    }
    for resource in wanted:
        current = existing.pop((resource["resourceType"], resource["id"]), None)
        if current is not None and _same(current, resource):
            continue
        fhir.update(resource, current.get("meta", {}).get("versionId") if current is not None else None)
    for (resource_type, resource_id_), current in existing.items():
        fhir.delete(resource_type, resource_id_, current.get("meta", {}).get("versionId"))


#: Back-off retries of a transient FHIR failure before the message is parked in ``-poison``.
MAX_ATTEMPTS = 8


def handle_sync_message(
    *,
    body: bytes | str,
    index: IndexStore,
    blobs: BlobStore,
    fhir: FhirClient | None,
    queue: SyncQueue,
    dicomweb_base_url: str,
    patient_identifier_system: str,
    changes: ChangeFeed | None = None,
    events: EventPublisher | None = None,
    service_host: str = "",
) -> SyncOutcome | None:
    """Process one study message: its change feed and events, then its FHIR sync, with back-off.

    Every write into a study schedules this message ahead (write-ahead), so it
    is the trigger that, after any write, (1) logs what a dead writer left
    unlogged and publishes the study's unpublished change feed entries as
    events (:func:`dicomserver.changefeed.process_study`, when ``changes`` and
    ``events`` are given), then (2) syncs the study to FHIR (when ``fhir`` is
    configured).

    A transient failure (FHIR 429, 5xx, timeout; the index or blob storage
    unavailable; the index not complete yet) re-queues the study invisible for
    10 s, 20 s, 40 s ... (at most 10 min); after :data:`MAX_ATTEMPTS` (about
    40 minutes in all) the message goes to ``fhir-sync-poison``.  A FHIR
    refusal (4xx) goes to the poison queue at once.  Anything else (the queue
    itself unreachable) raises, so the Functions host retries it and moves it
    to ``-poison`` after ``maxDequeueCount``.
    """
    parsed = parse_sync_message(body)
    if parsed is None:
        log.error("malformed fhir-sync message dropped: %r", body[:200])
        return None
    study, attempt = parsed
    try:
        if changes is not None and events is not None:
            process_study(
                feed=changes,
                index=index,
                publisher=events,
                study=study,
                service_host=service_host,
                quiet_seconds=QUIET_SECONDS,
            )
        if fhir is None:
            log.info("FHIR_URL is not set; study=%s not synced to FHIR", study.study_instance_uid)
            return None
        outcome = sync_study(
            index=index,
            blobs=blobs,
            fhir=fhir,
            study=study,
            dicomweb_base_url=dicomweb_base_url,
            patient_identifier_system=patient_identifier_system,
        )
    except (TransientFhirError, DependencyUnavailable) as exc:
        # A FHIR server, index or storage outage: back off rather than let the host poison it.
        if attempt + 1 >= MAX_ATTEMPTS:
            log.error("fhir-sync giving up study=%s after %d attempts: %s", study.study_instance_uid, attempt + 1, exc)
            queue.send_to_poison(sync_message(study, attempt + 1))
            return None
        delay = min(10 * 2**attempt, 600)
        log.warning("fhir-sync transient failure study=%s retry_in=%ss: %s", study.study_instance_uid, delay, exc)
        queue.retry_later(study, attempt + 1, delay)
        return None
    except FhirError as exc:
        log.error("fhir-sync refused study=%s: %s", study.study_instance_uid, exc)
        queue.send_to_poison(sync_message(study, attempt + 1))
        return None
    log.info("fhir-sync study=%s outcome=%s", study.study_instance_uid, outcome.value)
    return outcome
