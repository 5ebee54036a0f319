"""The queue trigger, with the Functions host's queue listener semantics, against Azurite or Azure.

Base64 messages (``extensions.queues.messageEncoding``), up to ``batchSize`` messages run
concurrently, each leased while its function runs (:data:`QUEUE_LEASE_SECONDS`, renewed at
half-time); success deletes it; failure makes it visible again after ``visibilityTimeout``; a
failure at ``dequeue_count >= maxDequeueCount``, a message received with
``dequeue_count > maxDequeueCount`` or one that is not valid base64 moves to ``<queue>-poison``
(created on demand).
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import resolve_settings
from .functions import UserFunction
from .storage import StorageConnection, _is_status
from .triggers import TriggerDriver, trigger_driver

if TYPE_CHECKING:
    from .host import LocalHost

#: One logger for the whole host, named as before the split (``python -m`` runs as ``__main__``).
log = logging.getLogger("scripts.localhost")

#: How long a received message stays invisible while its function runs (renewed at half-time).
QUEUE_LEASE_SECONDS = 60


@dataclass
class _Leased:
    """A received queue message, with the pop receipt of its current lease."""

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int
    inserted_on: Any
    expires_on: Any
    next_visible_on: Any


@trigger_driver
class QueueDriver(TriggerDriver):
    """Polls one queue and invokes its function with the Functions host's retry and poison semantics."""

    binding = "queueTrigger"

    def __init__(self, host: LocalHost, function: UserFunction, queue: str, connection: StorageConnection) -> None:
        super().__init__(host, function)
        self.queue_name = queue
        self.queue = connection.queue(queue)
        # No poison queue for a poison queue, or when the name would be too long (as in the host).
        poison_name = f"{queue}-poison"
        self.poison = None if queue.endswith("-poison") or len(poison_name) > 63 else connection.queue(poison_name)

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        queue = resolve_settings(str(trigger.queue_name), host.environ)
        return cls(host, function, queue, StorageConnection.from_setting(trigger.connection, host.environ))

    def describe(self) -> str:
        return f"queue: {self.queue_name}"

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def _decode(self, content: str | None) -> bytes | None:
        raw = (content or "").encode()
        if self.config.message_encoding == "none":
            return raw
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None

    def poll_once(self) -> int:
        """Receive one batch, run it concurrently, then complete each message; returns the batch size."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.functions.queue import QueueMessage  # the worker's class, with dequeue_count

        try:
            received = list(
                self.queue.receive_messages(
                    messages_per_page=self.config.batch_size,
                    max_messages=self.config.batch_size,
                    visibility_timeout=QUEUE_LEASE_SECONDS,
                )
            )
        except ResourceNotFoundError:
            log.debug("queue %s does not exist (yet)", self.queue_name)
            return 0
        pending: dict[concurrent.futures.Future[None], _Leased] = {}
        for message in received:
            leased = _Leased(
                message.id,
                message.pop_receipt,
                message.content or "",
                int(message.dequeue_count or 0),
                message.inserted_on,
                message.expires_on,
                message.next_visible_on,
            )
            body = self._decode(leased.content)
            if body is None:
                log.warning("message %s on %s is not valid base64: moved to poison", leased.id, self.queue_name)
                self._to_poison(leased)
                continue
            if leased.dequeue_count > self.config.max_dequeue_count:
                log.warning("message %s was dequeued %d times: moved to poison", leased.id, leased.dequeue_count)
                self._to_poison(leased)
                continue
            argument = QueueMessage(  # type: ignore[no-untyped-call]
                id=leased.id,
                body=body,
                dequeue_count=leased.dequeue_count,
                pop_receipt=leased.pop_receipt,
                insertion_time=leased.inserted_on,
                expiration_time=leased.expires_on,
                time_next_visible=leased.next_visible_on,
            )
            pending[self.host.submit(self.invoke, argument)] = leased
        self._complete(pending)
        return len(received)

    def _complete(self, pending: dict[concurrent.futures.Future[None], _Leased]) -> None:
        """Wait for the invocations, renewing their leases at half-time, and settle each message."""
        waiting = set(pending)
        renew_at = time.monotonic() + QUEUE_LEASE_SECONDS / 2
        while waiting:
            done, waiting = concurrent.futures.wait(
                waiting, timeout=max(0.0, renew_at - time.monotonic()), return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                leased, error = pending[future], future.exception()
                if error is None:
                    self._delete(leased)
                    continue
                log.error(
                    "function %s failed on message %s (dequeue count %d)",
                    self.name,
                    leased.id,
                    leased.dequeue_count,
                    exc_info=error,
                )
                if self.poison is None:
                    continue  # no poison queue: leave it invisible until its lease ends (as the host does)
                if leased.dequeue_count >= self.config.max_dequeue_count:
                    log.warning(
                        "message %s reached maxDequeueCount %d: moved to %s",
                        leased.id,
                        self.config.max_dequeue_count,
                        self.poison.queue_name,
                    )
                    self._to_poison(leased)
                else:
                    self._update(leased, int(self.config.visibility_timeout))
            if waiting and time.monotonic() >= renew_at:
                for future in waiting:
                    self._update(pending[future], QUEUE_LEASE_SECONDS)
                renew_at = time.monotonic() + QUEUE_LEASE_SECONDS / 2

    def _update(self, leased: _Leased, visibility_timeout: int) -> None:
        """Set a leased message's visibility timeout (renewal or release); keeps the new pop receipt."""
        from azure.core.exceptions import HttpResponseError

        try:
            updated = self.queue.update_message(
                leased.id, pop_receipt=leased.pop_receipt, visibility_timeout=visibility_timeout
            )
            leased.pop_receipt = updated.pop_receipt
        except HttpResponseError as exc:
            if not _is_status(exc, 400, 404, 409):
                raise
            log.debug("message %s: someone else holds it or it is gone (%s)", leased.id, exc.status_code)

    def _delete(self, leased: _Leased) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self.queue.delete_message(leased.id, pop_receipt=leased.pop_receipt)
        except HttpResponseError as exc:
            if not _is_status(exc, 400, 404, 409):
                raise
            log.debug("message %s could not be deleted (%s): its lease was lost", leased.id, exc.status_code)

    def _to_poison(self, leased: _Leased) -> None:
        """Copy the message's original content to ``<queue>-poison`` (created on demand) and delete it."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if self.poison is None:
            return
        try:
            self.poison.send_message(leased.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(leased.content)
        self._delete(leased)
