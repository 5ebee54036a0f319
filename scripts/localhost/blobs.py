"""The blob trigger, in the Functions host's polling mode: container scans and blob receipts.

The host scans the container (in Azure our blob triggers are fed by Event Grid) and keeps a blob
receipt per blob version in ``azure-webjobs-hosts`` (:data:`RECEIPTS_CONTAINER`), so each version
triggers once; after ``maxDequeueCount`` failures a blob goes to ``webjobs-blobtrigger-poison``
(:data:`BLOB_POISON_QUEUE`).  The function's trigger parameter gets what its annotation asks for:
an SDK type (``BlobClient``, ``ContainerClient``, ``StorageStreamDownloader``), ``bytes``, ``str``
or an ``InputStream``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from .config import resolve_settings
from .functions import UserFunction
from .storage import StorageConnection
from .triggers import TriggerDriver, trigger_driver

if TYPE_CHECKING:
    from .host import LocalHost

#: One logger for the whole host, named as before the split (``python -m`` runs as ``__main__``).
log = logging.getLogger("scripts.localhost")

RECEIPTS_CONTAINER = "azure-webjobs-hosts"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"


def _blob_name_pattern(pattern: str) -> re.Pattern[str]:
    """Regex for the blob-name part of a blob trigger path (``{name}``, ``in/{name}.dcm``; ``{{`` escapes)."""
    if not pattern:
        return re.compile(r".+", re.DOTALL)
    regex, position = "", 0
    for match in re.finditer(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", pattern):
        regex += re.escape(pattern[position : match.start()])
        token = match.group(0)
        regex += re.escape(token[0]) if token in ("{{", "}}") else f"(?P<{match.group(1)}>.+)"
        position = match.end()
    return re.compile(regex + re.escape(pattern[position:]), re.DOTALL)


@trigger_driver
class BlobDriver(TriggerDriver):
    """Scans one container and invokes its function once per blob version (blob receipts)."""

    binding = "blobTrigger"

    def __init__(self, host: LocalHost, function: UserFunction, path: str, connection: StorageConnection) -> None:
        super().__init__(host, function)
        self.container_name, _, pattern = path.partition("/")
        self.names = _blob_name_pattern(pattern)
        self.service = connection.blob_service()
        self.container = self.service.get_container_client(self.container_name)
        self.receipts = self.service.get_container_client(RECEIPTS_CONTAINER)
        self.poison = connection.queue(BLOB_POISON_QUEUE)
        self.host_id = host.environ.get("AzureFunctionsWebHost__hostid") or "localhost"
        self.failures: dict[tuple[str, str], int] = {}
        self.receipted: set[tuple[str, str]] = set()  # (blob name, etag) known to have a receipt

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        path = resolve_settings(str(trigger.path), host.environ)
        return cls(host, function, path, StorageConnection.from_setting(trigger.connection, host.environ))

    def describe(self) -> str:
        return f"blob: {self.container_name}/"

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for container in (self.container, self.receipts):
            with contextlib.suppress(ResourceExistsError):
                container.create_container()

    def next_delay(self, handled: int, previous: float) -> float:
        # Each scan lists the whole container: after work, scan again a poll interval later (new
        # blobs batch up meanwhile); when idle, back off up to 10 intervals.
        if handled:
            return self.host.blob_poll_interval
        return min(max(previous * 2, self.host.blob_poll_interval), 10 * self.host.blob_poll_interval)

    def _receipt(self, blob_name: str, etag: str) -> Any:
        return self.receipts.get_blob_client(
            f"blobreceipts/{self.host_id}/Host.Functions.{self.name}/{etag.strip(chr(34))}/"
            f"{self.container_name}/{blob_name}"
        )

    def argument(self, blob: Any) -> Any:
        """What the function's trigger parameter gets, by its annotation (SDK types, bytes, str, InputStream)."""
        annotation = self.function.annotation()
        client = self.container.get_blob_client(blob.name)
        if getattr(annotation, "__module__", "").startswith("azurefunctions.extensions.bindings.blob"):
            kind = getattr(annotation, "__name__", "")
            if kind == "ContainerClient":
                return self.container
            if kind == "StorageStreamDownloader":
                return client.download_blob()
            return client  # BlobClient: the function streams the blob itself
        data = client.download_blob().readall()
        if annotation is bytes:
            return data
        if annotation is str:
            return data.decode()
        from azure.functions.blob import InputStream

        return InputStream(
            data=data,
            name=f"{self.container_name}/{blob.name}",
            uri=client.url,
            length=int(blob.size or 0),
            metadata=dict(blob.metadata or {}),
        )

    def poll_once(self) -> int:
        """Invoke the function for every blob version without a receipt, ``batchSize`` at a time."""
        batch: list[Any] = []
        invoked = 0
        for blob in self.container.list_blobs(include=["metadata"]):
            key = (blob.name, str(blob.etag))
            if key in self.receipted or not self.names.fullmatch(blob.name):
                continue
            if self._receipt(*key).exists():
                self.receipted.add(key)
                continue
            batch.append(blob)
            if len(batch) >= self.config.batch_size:
                invoked += self._run(batch)
                batch = []
                if self.host.stopping.is_set():
                    return invoked
        if batch:
            invoked += self._run(batch)
        return invoked

    def _run(self, blobs: list[Any]) -> int:
        errors = self.run_all([functools.partial(self._invoke_blob, blob) for blob in blobs])
        for blob, error in zip(blobs, errors, strict=True):
            key = (blob.name, str(blob.etag))
            if error is not None:
                self.failures[key] = self.failures.get(key, 0) + 1
                log.error(
                    "function %s failed on blob %s (attempt %d)",
                    self.name,
                    blob.name,
                    self.failures[key],
                    exc_info=error,
                )
                if self.failures[key] < self.config.max_dequeue_count:
                    continue  # retried on a later scan
                self._to_poison(blob)
            self.failures.pop(key, None)
            self._write_receipt(*key)
        return len(blobs)

    def _invoke_blob(self, blob: Any) -> None:
        self.invoke(self.argument(blob))

    def _write_receipt(self, blob_name: str, etag: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self._receipt(blob_name, etag).upload_blob(b"", overwrite=False)
        self.receipted.add((blob_name, etag))

    def _to_poison(self, blob: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self.container_name,
            "BlobName": blob.name,
            "ETag": str(blob.etag),
        }
        content = base64.b64encode(json.dumps(message).encode()).decode()
        try:
            self.poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(content)
        log.warning("blob %s/%s moved to %s", self.container_name, blob.name, BLOB_POISON_QUEUE)
