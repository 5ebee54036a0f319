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


def sync_message(study: StudyKey, attempt: int = 0) -> str:
    """The fhir-sync message body for ``study`` (``attempt`` counts back-off retries)."""
    body: dict[str, object] = {"partition": study.partition, "study": study.study_instance_uid}
    if attempt:
        body["attempt"] = attempt
    return json.dumps(body, separators=(",", ":"))


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

    def retry_later(self, study: StudyKey, attempt: int, delay_seconds: int) -> None:
        """Queue the study again, invisible for ``delay_seconds`` (back-off)."""
        try:
            self._queue.send_message(sync_message(study, attempt), visibility_timeout=delay_seconds)
        except AzureError as exc:
            raise DependencyUnavailable("The fhir-sync queue is unavailable.") from exc

    def send_to_poison(self, body: str) -> None:
        """Park a message in the ``-poison`` queue for the resync tool."""
        try:
            self._poison.send_message(body)
        except AzureError as exc:
            raise DependencyUnavailable("The fhir-sync poison queue is unavailable.") from exc

    def drain_poison(self) -> list[str]:
        """Remove and return every message of the poison queue."""
        bodies: list[str] = []
        try:
            for message in self._poison.receive_messages(max_messages=32, visibility_timeout=60):
                content = message.content
                bodies.append(content.decode() if isinstance(content, bytes) else str(content))
                self._poison.delete_message(message)
        except AzureError as exc:
            raise DependencyUnavailable("The fhir-sync poison queue is unavailable.") from exc
        return bodies
