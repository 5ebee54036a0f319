"""Study expiry (Azure v2): the ``msdicom-expiry-*`` headers of STOW and PUT, and the timer that deletes.

A STOW or PUT may carry::

    msdicom-expiry-time-milliseconds: 86400000   (required with the others; an integer > 0)
    msdicom-expiry-option: RelativeToNow          (the only option)
    msdicom-expiry-level: Study                   (the only level)

Every instance the request stores records the resulting expiry time in its index document
(``expiresAt``), and the study document carries it as well, so the timer finds candidates with one
query. The last store of a study decides: a later store without the headers cancels the expiry. The
timer (:func:`delete_expired_studies`) therefore re-reads the expiry of the study's most recently
stored instance before deleting: cancelled (no expiry) or extended (later time) studies are left in
place and their study document is corrected. Expired studies go through the normal delete path
(:func:`dicomserver.delete.delete_study`): blobs, index, FHIR sync and change feed ``delete`` entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import delete
from .errors import BadRequest, DicomServerError, NotFound
from .identifiers import StudyKey
from .stores import BlobStore, IndexStore, SyncQueue

log = logging.getLogger(__name__)

EXPIRY_TIME_HEADER = "msdicom-expiry-time-milliseconds"
EXPIRY_OPTION_HEADER = "msdicom-expiry-option"
EXPIRY_LEVEL_HEADER = "msdicom-expiry-level"
#: Longest expiry accepted (about 100 years): beyond it the timestamp would not be meaningful.
MAX_EXPIRY_MILLISECONDS = 100 * 365 * 24 * 3600 * 1000
#: Studies deleted per timer run at most (the next run continues).
STUDIES_PER_RUN = 100


def timestamp(when: datetime) -> str:
    """UTC ISO 8601 with ``Z`` and microseconds: ordered as strings."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_expiry(header: Callable[[str], str | None], now: datetime | None = None) -> str | None:
    """The expiry time the request's headers give, or None when they carry none.

    Raises
    ------
    BadRequest
        A missing or non-positive time, an option other than ``RelativeToNow`` or a level other
        than ``Study`` (case-insensitive, as Azure).
    """
    raw_time, option, level = header(EXPIRY_TIME_HEADER), header(EXPIRY_OPTION_HEADER), header(EXPIRY_LEVEL_HEADER)
    if raw_time is None and option is None and level is None:
        return None
    if raw_time is None or not raw_time.strip():
        raise BadRequest(f"The header {EXPIRY_TIME_HEADER} is required with the other expiry headers.")
    try:
        milliseconds = int(raw_time.strip())
    except ValueError:
        raise BadRequest(f"The header {EXPIRY_TIME_HEADER} must be an integer, got {raw_time!r}.") from None
    if milliseconds <= 0 or milliseconds > MAX_EXPIRY_MILLISECONDS:
        raise BadRequest(
            f"The header {EXPIRY_TIME_HEADER} must be between 1 and {MAX_EXPIRY_MILLISECONDS}, got {milliseconds}."
        )
    if option is not None and option.strip().lower() != "relativetonow":
        raise BadRequest(f"The header {EXPIRY_OPTION_HEADER} supports only RelativeToNow, got {option!r}.")
    if level is not None and level.strip().lower() != "study":
        raise BadRequest(f"The header {EXPIRY_LEVEL_HEADER} supports only Study, got {level!r}.")
    return timestamp((now or datetime.now(UTC)) + timedelta(milliseconds=milliseconds))


async def delete_expired_studies(
    *, blobs: BlobStore, index: IndexStore, sync_queue: SyncQueue, now: datetime | None = None
) -> list[StudyKey]:
    """Delete the studies whose last store set an expiry that has passed; returns them.

    One query for the candidates, then per candidate one query for its last store's expiry and
    the delete path. A failure on one study is logged and the others go on (the next run retries).
    """
    at = timestamp(now or datetime.now(UTC))
    deleted: list[StudyKey] = []
    for study in index.expired_studies(at, STUDIES_PER_RUN):
        try:
            stored, expires_at = index.last_store_expiry(study)
            if not stored:
                index.set_study_expiry(study, None)
                continue
            if expires_at is None or expires_at > at:  # cancelled or extended by a later store
                index.set_study_expiry(study, expires_at)
                log.info(
                    "expiry of study %s %s by a later store",
                    study.study_instance_uid,
                    "cancelled" if expires_at is None else "extended",
                )
                continue
            await delete.delete_study(blobs=blobs, index=index, sync_queue=sync_queue, study=study)
            deleted.append(study)
            log.info("expired study deleted partition=%s study=%s", study.partition, study.study_instance_uid)
        except NotFound:
            index.set_study_expiry(study, None)
        except DicomServerError as exc:
            log.warning("expired study %s not deleted (next run retries): %s", study.study_instance_uid, exc.message)
    return deleted
