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
writer that died between its index write and its aggregate update.  Patients and the Endpoint are never deleted.  An
existing Patient with the identifier is used as it is (it may be owned by
the clinical system); a new one gets name, gender and birth date.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from ..changefeed import process_study
from ..errors import DependencyUnavailable
from ..identifiers import StudyKey
from ..stores import BlobStore, ChangeFeed, EventPublisher, IndexStore, SyncQueue
from ..stores.layout import parse_sync_message, sync_message
from . import mapping
from .client import FhirClient, FhirError, PreconditionFailed, TransientFhirError

log = logging.getLogger(__name__)

_ATTEMPTS = 8
#: A study with no instance stored for this long has no writer between its index and aggregate writes.
QUIET_SECONDS = 30.0


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


def ensure_patient(fhir: FhirClient, resource: dict[str, Any]) -> str:
    """The id of the Patient with ``resource``'s identifier, creating it when absent.

    An existing Patient (perhaps owned by the clinical system) is used as it is.
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
        return str(found[0]["id"])
    new_id = resource_id("pat", identifier["system"], identifier["value"])
    return str(fhir.update({**resource, "id": new_id})["id"])


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
    for _ in range(_ATTEMPTS):
        current = fhir.read("ImagingStudy", study_id)
        snapshot = _checked_snapshot(index, blobs, study, quiet_seconds)
        try:
            if snapshot is None:
                if current is None:
                    return SyncOutcome.ABSENT
                fhir.delete("ImagingStudy", study_id, current.get("meta", {}).get("versionId"))
                return SyncOutcome.DELETED
            patient = mapping.patient(snapshot, patient_identifier_system)
            if patient is None:
                log.warning("study=%s has no PatientID; not synced to FHIR", study.study_instance_uid)
                return SyncOutcome.SKIPPED
            resource = mapping.imaging_study(
                snapshot, ensure_patient(fhir, patient), ensure_endpoint(fhir, dicomweb_base_url)
            )
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
