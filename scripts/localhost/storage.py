"""Storage connections of queue and blob triggers, resolved as the Functions host resolves them.

A trigger's ``connection`` names an app setting (``AzureWebJobsStorage`` when empty) holding either
a connection string or, for identity-based connections, ``<name>__*ServiceUri`` / ``__accountName``
(with ``DefaultAzureCredential``); Azure SDK clients are imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConnectionMissing(RuntimeError):
    """The app setting named by a trigger's ``connection`` is not set."""


@dataclass(frozen=True)
class StorageConnection:
    """A trigger's storage account, from the app setting its ``connection`` names.

    As in the host: the setting itself (or ``AzureWebJobs<name>``) holds a connection string, or
    ``<name>__blobServiceUri`` / ``__queueServiceUri`` / ``__serviceUri`` / ``__accountName`` name
    the account for an identity-based connection (DefaultAzureCredential, ``<name>__clientId``).
    """

    setting: str
    connection_string: str | None = None
    blob_url: str | None = None
    queue_url: str | None = None
    client_id: str | None = None

    @classmethod
    def from_setting(cls, name: str | None, environ: Mapping[str, str]) -> StorageConnection:
        setting = name or "AzureWebJobsStorage"
        value = environ.get(setting) or environ.get(f"AzureWebJobs{setting}")
        if value:
            return cls(setting, connection_string=value)
        account = environ.get(f"{setting}__accountName")
        blob = environ.get(f"{setting}__blobServiceUri") or environ.get(f"{setting}__serviceUri")
        queue = environ.get(f"{setting}__queueServiceUri")
        if account:
            blob = blob or f"https://{account}.blob.core.windows.net"
            queue = queue or f"https://{account}.queue.core.windows.net"
        if blob or queue:
            return cls(setting, blob_url=blob, queue_url=queue, client_id=environ.get(f"{setting}__clientId"))
        raise ConnectionMissing(f"the app setting {setting} (a storage connection) is not set")

    def _credential(self) -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def queue(self, name: str) -> Any:
        """A QueueClient without encode/decode policies: the host handles base64 itself."""
        from azure.storage.queue import QueueClient

        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, name)
        if not self.queue_url:
            raise ConnectionMissing(f"{self.setting}__queueServiceUri is not set")
        return QueueClient(self.queue_url, name, credential=self._credential())

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string)
        if not self.blob_url:
            raise ConnectionMissing(f"{self.setting}__blobServiceUri is not set")
        return BlobServiceClient(self.blob_url, credential=self._credential())


def _is_status(exc: BaseException, *statuses: int) -> bool:
    return getattr(exc, "status_code", None) in statuses
