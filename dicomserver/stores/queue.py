"""Azure Storage Queue implementation of :class:`~dicomserver.stores.SyncQueue`.

Messages are JSON ``{"partition": ..., "study": ...}``, base64-encoded as the
Azure Functions queue trigger expects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient

from ..errors import DependencyUnavailable
from ..identifiers import StudyKey

log = logging.getLogger(__name__)


def sync_message(study: StudyKey) -> str:
    """The fhir-sync message body for ``study``."""
    return json.dumps({"partition": study.partition, "study": study.study_instance_uid}, separators=(",", ":"))


class AzureSyncQueue:
    """The fhir-sync queue (and its ``-poison`` twin, created alongside)."""

    def __init__(self, queue: QueueClient, poison: QueueClient) -> None:
        self._queue = queue
        self._poison = poison

    def ensure_queue(self) -> None:
        for q in (self._queue, self._poison):
            try:
                q.create_queue()
            except ResourceExistsError:
                pass

    def enqueue_studies(self, studies: Sequence[StudyKey]) -> None:
        for study in dict.fromkeys(studies):
            try:
                self._queue.send_message(sync_message(study))
            except AzureError as exc:
                log.warning("fhir-sync enqueue failed study=%s: %s", study.study_instance_uid, exc)
                raise DependencyUnavailable("The fhir-sync queue is unavailable.") from exc
