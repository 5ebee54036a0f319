"""Where DICOM events go: :class:`~dicomserver.stores.EventPublisher` on Event Grid or on a Storage queue.

In Azure the events go to the Event Grid custom topic of ``infra/modules/events.bicep``
(``DICOM_EVENTS_TOPIC_ENDPOINT``), sent with the function app's managed identity
(role EventGrid Data Sender; the topic accepts no keys).  Locally, and wherever no
topic is configured, the same events (one JSON message each, Event Grid schema)
go to the Storage queue ``DICOM_EVENTS_QUEUE`` (``dicom-events``), where tests and
local consumers read them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient

from . import failure

log = logging.getLogger(__name__)

#: Events per Event Grid request (the service takes up to 1 MB per request).
_BATCH = 100


class EventGridPublisher:
    """Events to an Event Grid topic (EventGridSchema) with an Entra credential."""

    def __init__(self, endpoint: str, credential: Any) -> None:
        from azure.eventgrid import EventGridPublisherClient

        self._client = EventGridPublisherClient(endpoint, credential)

    def ensure_destination(self) -> None:
        """The topic is provisioned by infra/ (nothing to create at run time)."""

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        from azure.eventgrid import EventGridEvent

        batch = [
            EventGridEvent(
                subject=e["subject"],
                event_type=e["eventType"],
                data=e["data"],
                data_version=e["dataVersion"],
                id=e["id"],
                event_time=datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")),
            )
            for e in events
        ]
        try:
            for start in range(0, len(batch), _BATCH):
                self._client.send(batch[start : start + _BATCH])
        except AzureError as exc:
            log.warning("event grid publish failed events=%d: %s", len(events), exc)
            raise failure("The Event Grid topic is unavailable.", exc) from exc


class QueueEventPublisher:
    """Events as JSON messages on a Storage queue (local development, tests, or no topic configured)."""

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def ensure_destination(self) -> None:
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        try:
            for e in events:
                self._queue.send_message(json.dumps(e, separators=(",", ":")))
        except AzureError as exc:
            log.warning("event queue publish failed events=%d: %s", len(events), exc)
            raise failure("The event queue is unavailable.", exc) from exc
