"""Azure Blob Storage implementation of :class:`~dicomserver.stores.BlobStore`.

Blob names come from :func:`instance_blob_name` and :func:`metadata_blob_name`
only.  The instance blob is created with ``If-None-Match: *``
(``overwrite=False``), so of several parallel stores of one instance exactly
one succeeds; the rest get :class:`~dicomserver.errors.DuplicateInstance`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings

from ..errors import DependencyUnavailable, DuplicateInstance, NotFound
from ..identifiers import InstanceKey

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Chunk size of streamed downloads.
CHUNK_SIZE = 4 * 1024 * 1024


def instance_blob_name(key: InstanceKey) -> str:
    """``{partition}/{study}/{series}/{sop}.dcm`` (UIDs are validated UI values)."""
    return f"{key.partition}/{key.study_instance_uid}/{key.series_instance_uid}/{key.sop_instance_uid}.dcm"


def metadata_blob_name(key: InstanceKey) -> str:
    """``{partition}/{study}/{series}/{sop}.json``."""
    return f"{key.partition}/{key.study_instance_uid}/{key.series_instance_uid}/{key.sop_instance_uid}.json"


def _translate(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except (ResourceNotFoundError, ResourceExistsError):
        raise
    except AzureError as exc:
        log.warning("blob storage failed during %s: %s", what, exc)
        raise DependencyUnavailable(f"Blob storage is unavailable ({what}).") from exc


class AzureBlobStore:
    """Instance and metadata blobs in two containers of one storage account."""

    def __init__(self, service: BlobServiceClient, instance_container: str, metadata_container: str) -> None:
        self._service = service
        self._instances = service.get_container_client(instance_container)
        self._metadata = service.get_container_client(metadata_container)

    def ensure_containers(self) -> None:
        for container in (self._instances, self._metadata):
            try:
                container.create_container()
            except ResourceExistsError:
                pass

    def put_instance(self, key: InstanceKey, data: BinaryIO, length: int) -> None:
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            _translate(
                "instance upload",
                lambda: blob.upload_blob(
                    data,
                    length=length,
                    overwrite=False,
                    content_settings=ContentSettings(content_type="application/dicom"),
                    max_concurrency=2,
                ),
            )
        except ResourceExistsError:
            raise DuplicateInstance(
                f"The instance {key.sop_instance_uid} of series {key.series_instance_uid} already exists."
            ) from None

    def delete_instance(self, key: InstanceKey) -> None:
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            _translate("instance delete", lambda: blob.delete_blob(delete_snapshots="include"))
        except ResourceNotFoundError:
            pass

    def instance_size(self, key: InstanceKey) -> int:
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            props = _translate("instance properties", blob.get_blob_properties)
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was not found.") from None
        return int(props.size)

    def iter_instance(self, key: InstanceKey, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            downloader = _translate(
                "instance download",
                lambda: blob.download_blob(offset=offset, length=length, max_concurrency=1),
            )
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was not found.") from None
        chunks = downloader.chunks()
        while True:
            try:
                chunk = _translate("instance download", lambda: next(chunks, None))
            except ResourceNotFoundError:
                raise NotFound(f"The instance {key.sop_instance_uid} was deleted while being read.") from None
            if chunk is None:
                return
            yield chunk

    def put_metadata(self, key: InstanceKey, body: bytes) -> None:
        blob = self._metadata.get_blob_client(metadata_blob_name(key))
        _translate(
            "metadata upload",
            lambda: blob.upload_blob(
                body, overwrite=True, content_settings=ContentSettings(content_type="application/dicom+json")
            ),
        )

    def get_metadata(self, key: InstanceKey) -> tuple[bytes, str]:
        blob = self._metadata.get_blob_client(metadata_blob_name(key))
        try:
            downloader = _translate("metadata download", blob.download_blob)
            body = _translate("metadata download", downloader.readall)
        except ResourceNotFoundError:
            raise NotFound(f"The metadata of instance {key.sop_instance_uid} was not found.") from None
        return body, str(downloader.properties.etag)

    def delete_metadata(self, key: InstanceKey) -> None:
        blob = self._metadata.get_blob_client(metadata_blob_name(key))
        try:
            _translate("metadata delete", blob.delete_blob)
        except ResourceNotFoundError:
            pass
