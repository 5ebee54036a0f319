"""Azure Storage Queue implementation of :class:`~dicomserver.stores.SyncQueue`.

Messages are JSON ``{"partition": ..., "study": ...}``, base64-encoded as the
Azure Functions queue trigger expects.

Write-ahead scheduling (why no FHIR sync can be lost)
-----------------------------------------------------
A writer calls :meth:`AzureSyncQueue.schedule_sync` *before* its first index
write into a study.  That sends a message for the study that stays invisible
for ``delay`` seconds, so it runs after the write — even if the request, the
worker or the host dies right after it.  The sync rebuilds the study from
the index (idempotent), so duplicates cost one sync each and change nothing.

To keep that to one queue round trip per study every ``delay / 2`` seconds
rather than one per instance, the process remembers when each message it sent
becomes visible and sends no new one while the pending one is still at least
``delay / 2`` away: a write made before then is already covered, provided it
completes within that margin (an index write takes milliseconds; the
FHIR sync also re-checks the study afterwards, see :mod:`dicomserver.fhir.sync`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from ...identifiers import StudyKey
from ..layout import sync_message
from . import failure

log = logging.getLogger(__name__)


class AzureSyncQueue:
    """The fhir-sync queue (and its ``-poison`` twin, created alongside)."""

    def __init__(
        self,
        queue: QueueClient,
        poison: QueueClient,
        delay_seconds: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._poison = poison
        self.delay_seconds = delay_seconds
        self._clock = clock
        self._lock = threading.Lock()
        #: study -> clock time at which the last message this process sent for it becomes visible
        self._due: dict[StudyKey, float] = {}

    def ensure_queue(self) -> None:
        for q in (self._queue, self._poison):
            try:
                q.create_queue()
            except ResourceExistsError:
                pass

    def schedule_sync(self, studies: Sequence[StudyKey]) -> None:
        """Make sure a sync of each study runs after a write about to be made (see the module docstring)."""
        margin = self.delay_seconds / 2
        # Held while sending, so parallel parts of one study wait for the one message they all
        # rely on instead of each sending their own (a send happens once per study per margin).
        with self._lock:
            now = self._clock()
            needed = [s for s in dict.fromkeys(studies) if self._due.get(s, 0.0) - now < margin]
            if not needed:
                return
            self.enqueue_studies(needed, self.delay_seconds)
            for study in needed:
                self._due[study] = now + self.delay_seconds
            if len(self._due) > 10_000:
                self._due = {s: t for s, t in self._due.items() if t > now}

    def enqueue_studies(self, studies: Sequence[StudyKey], delay_seconds: int = 0) -> None:
        for study in dict.fromkeys(studies):
            try:
                self._queue.send_message(sync_message(study), visibility_timeout=delay_seconds or None)
            except AzureError as exc:
                log.warning("fhir-sync enqueue failed study=%s: %s", study.study_instance_uid, exc)
                raise failure("The fhir-sync queue is unavailable.", exc) from exc

    def retry_later(self, study: StudyKey, attempt: int, delay_seconds: int) -> None:
        """Queue the study again, invisible for ``delay_seconds`` (back-off)."""
        try:
            self._queue.send_message(sync_message(study, attempt), visibility_timeout=delay_seconds)
        except AzureError as exc:
            raise failure("The fhir-sync queue is unavailable.", exc) from exc

    def send_to_poison(self, body: str) -> None:
        """Park a message in the ``-poison`` queue for the resync tool."""
        try:
            self._poison.send_message(body)
        except AzureError as exc:
            raise failure("The fhir-sync poison queue is unavailable.", exc) from exc

    def drain_poison(self) -> list[str]:
        """Remove and return every message of the poison queue."""
        bodies: list[str] = []
        try:
            for message in self._poison.receive_messages(max_messages=32, visibility_timeout=60):
                content = message.content
                bodies.append(content.decode() if isinstance(content, bytes) else str(content))
                self._poison.delete_message(message)
        except AzureError as exc:
            raise failure("The fhir-sync poison queue is unavailable.", exc) from exc
        return bodies


#: The queue where the Functions host parks blobs whose trigger kept failing.
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"


class AzureBlobPoisonQueue:
    """``webjobs-blobtrigger-poison`` of the blob triggers' storage account, for replaying."""

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def drain(self, handle: Callable[[str, str, str], bool]) -> tuple[int, int]:
        """Pass each parked blob to ``handle(function, container, blob_name)``; delete it when that returns True.

        Returns (replayed, kept).  Messages that are not blob-trigger poison messages are kept.
        """
        replayed = 0
        kept: list[QueueMessage] = []
        try:
            while True:
                batch = list(self._queue.receive_messages(max_messages=32, visibility_timeout=300))
                if not batch:
                    break
                for message in batch:
                    try:
                        raw = message.content
                        data = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
                        function = str(data["FunctionId"]).rsplit(".", 1)[-1]
                        container, name = str(data["ContainerName"]), str(data["BlobName"])
                    except (ValueError, KeyError, TypeError):
                        kept.append(message)
                        continue
                    if handle(function, container, name):
                        self._queue.delete_message(message)
                        replayed += 1
                    else:
                        kept.append(message)
            for message in kept:  # visible again for whoever handles them
                self._queue.update_message(message, visibility_timeout=0)
            return replayed, len(kept)
        except ResourceNotFoundError:
            return replayed, len(kept)
        except AzureError as exc:
            raise failure("The blob poison queue is unavailable.", exc) from exc

