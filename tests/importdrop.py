"""The bulk-import containers as a user or tool sees them: drop a file, list the drops, read a reject.

The service's :class:`~dicomserver.stores.ImportStore` only reads, deletes and
rejects drops; writing into the drop container is the user's side, done here
with the Azure SDK directly (as ``az storage blob upload`` would).
"""

from __future__ import annotations

import json

from azure.storage.blob import BlobServiceClient

from dicomserver.settings import Settings


def _service(settings: Settings) -> BlobServiceClient:
    assert settings.storage_connection_string, "the import helpers run against the local emulator"
    return BlobServiceClient.from_connection_string(settings.storage_connection_string)


def put_import(settings: Settings, name: str, data: bytes) -> None:
    """Drop a file into the import container."""
    _service(settings).get_blob_client(settings.import_container, name).upload_blob(data, overwrite=True)


def list_imports(settings: Settings) -> list[str]:
    """The names waiting in the import container."""
    return [b.name for b in _service(settings).get_container_client(settings.import_container).list_blobs()]


def read_error(settings: Settings, name: str) -> tuple[bytes, dict[str, object]]:
    """A rejected file and its reason (``{name}.error.json``) from the errors container."""
    errors = _service(settings).get_container_client(settings.import_errors_container)
    data = errors.get_blob_client(name).download_blob().readall()
    reason = json.loads(errors.get_blob_client(f"{name}.error.json").download_blob().readall())
    return data, reason
