"""Azure Blob Storage implementation of :class:`~dicomserver.stores.BlobStore`.

Blob names come from :func:`instance_blob_name` and :func:`metadata_blob_name`
only.  The instance blob is created with ``If-None-Match: *``
(``overwrite=False``), so of several parallel stores of one instance exactly
one succeeds; the rest get :class:`~dicomserver.errors.DuplicateInstance`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TypeVar

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings

from ...errors import DuplicateInstance, NotFound
from ...identifiers import InstanceKey, StudyKey
from ..layout import instance_blob_name, metadata_blob_name, parse_instance_blob_name
from ..model import OpenedInstance
from . import failure

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Chunk size of streamed downloads.
CHUNK_SIZE = 4 * 1024 * 1024
#: Blob metadata key holding the instance's transfer syntax UID.
TRANSFER_SYNTAX_METADATA = "transfersyntax"


def _translate(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except (ResourceNotFoundError, ResourceExistsError):
        raise
    except AzureError as exc:
        log.warning("blob storage failed during %s: %s", what, exc)
        raise failure(f"Blob storage is unavailable ({what}).", exc) from exc


def _chunks(chunks: Iterator[bytes], key: InstanceKey) -> Iterator[bytes]:
    """An instance download's chunks, as they arrive; a blob deleted meanwhile is :class:`NotFound`."""
    while True:
        try:
            chunk = _translate("instance download", lambda: next(chunks, None))
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was deleted while being read.") from None
        if chunk is None:
            return
        yield chunk


class AzureBlobStore:
    """Instance and metadata blobs in two containers of one storage account."""

    def __init__(
        self,
        service: BlobServiceClient,
        instance_container: str,
        metadata_container: str,
        versions: Mapping[InstanceKey, str] | None = None,
    ) -> None:
        self._service = service
        self._instance_container = instance_container
        self._metadata_container = metadata_container
        self._instances = service.get_container_client(instance_container)
        self._metadata = service.get_container_client(metadata_container)
        #: Instance → snapshot to read instead of the current blob (:meth:`with_versions`).
        self._versions = dict(versions or {})

    def _instance_blob(self, key: InstanceKey) -> BlobClient:
        return self._instances.get_blob_client(instance_blob_name(key), snapshot=self._versions.get(key))

    def with_versions(self, versions: Mapping[InstanceKey, str]) -> AzureBlobStore:
        """A view of this store that reads the given snapshots of those instances (originals kept by
        a bulk update, ``msdicom-request-original``); other instances read as usual."""
        return AzureBlobStore(self._service, self._instance_container, self._metadata_container, versions)

    def snapshot_instance(self, key: InstanceKey) -> str:
        """Keep the instance blob as it is now (a snapshot, deleted with the blob); returns its id."""
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            taken = _translate("instance snapshot", blob.create_snapshot)
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was not found.") from None
        return str(taken["snapshot"])

    def ensure_containers(self) -> None:
        for container in (self._instances, self._metadata):
            try:
                container.create_container()
            except ResourceExistsError:
                pass

    def put_instance(
        self,
        key: InstanceKey,
        data: IO[bytes],
        length: int,
        transfer_syntax_uid: str | None = None,
        overwrite: bool = False,
    ) -> None:
        blob = self._instances.get_blob_client(instance_blob_name(key))
        metadata = {TRANSFER_SYNTAX_METADATA: transfer_syntax_uid} if transfer_syntax_uid else None
        try:
            _translate(
                "instance upload",
                lambda: blob.upload_blob(
                    data,
                    length=length,
                    overwrite=overwrite,
                    content_settings=ContentSettings(content_type="application/dicom"),
                    metadata=metadata,
                    max_concurrency=2,
                ),
            )
        except ResourceExistsError:
            raise DuplicateInstance(
                f"The instance {key.sop_instance_uid} of series {key.series_instance_uid} already exists."
            ) from None

    def delete_instance(self, key: InstanceKey) -> bool:
        """Delete the instance blob; False when there was none."""
        blob = self._instances.get_blob_client(instance_blob_name(key))
        try:
            _translate("instance delete", lambda: blob.delete_blob(delete_snapshots="include"))
        except ResourceNotFoundError:
            return False
        return True

    def list_instances(self, study: StudyKey, series_instance_uid: str | None = None) -> list[InstanceKey]:
        """The instance blobs of a study or series, indexed or not (one listing per 5,000 blobs)."""
        prefix = f"{study.partition}/{study.study_instance_uid}/"
        if series_instance_uid is not None:
            prefix += f"{series_instance_uid}/"
        names = _translate("instance listing", lambda: list(self._instances.list_blob_names(name_starts_with=prefix)))
        keys = [parse_instance_blob_name(name) for name in names]
        return [key for key in keys if key is not None and key.study == study]

    def instance_size(self, key: InstanceKey) -> int:
        blob = self._instance_blob(key)
        try:
            props = _translate("instance properties", blob.get_blob_properties)
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was not found.") from None
        return int(props.size)

    def iter_instance(self, key: InstanceKey, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        blob = self._instance_blob(key)
        try:
            downloader = _translate(
                "instance download",
                lambda: blob.download_blob(offset=offset, length=length, max_concurrency=1),
            )
        except ResourceNotFoundError:
            raise NotFound(f"The instance {key.sop_instance_uid} was not found.") from None
        yield from _chunks(downloader.chunks(), key)

    def open_instance(self, key: InstanceKey) -> OpenedInstance:
        """Start streaming an instance: one request returns its size, transfer syntax and first chunk.

        WADO needs nothing else, so retrieving an instance costs no index read.
        """
        blob = self._instance_blob(key)
        try:
            downloader = _translate("instance download", lambda: blob.download_blob(max_concurrency=1))
        except ResourceNotFoundError:
            raise NotFound(
                f"The instance {key.sop_instance_uid} of series {key.series_instance_uid} "
                f"in study {key.study_instance_uid} was not found."
            ) from None
        props = downloader.properties
        chunks = _chunks(downloader.chunks(), key)
        return OpenedInstance(int(props.size), (props.metadata or {}).get(TRANSFER_SYNTAX_METADATA), chunks)

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


class AzureImportStore:
    """The bulk-import drop container and the container its rejects move to.

    A rejected file is copied to the errors container under the same name, with
    ``{name}.error.json`` beside it, and only then deleted from the import container.
    """

    def __init__(self, service: BlobServiceClient, import_container: str, errors_container: str) -> None:
        self._imports = service.get_container_client(import_container)
        self._errors = service.get_container_client(errors_container)

    def ensure_containers(self) -> None:
        for container in (self._imports, self._errors):
            try:
                container.create_container()
            except ResourceExistsError:
                pass

    def iter_import(self, name: str) -> Iterator[bytes]:
        blob = self._imports.get_blob_client(name)
        try:
            downloader = _translate("import download", blob.download_blob)
        except ResourceNotFoundError:
            raise NotFound(f"The import blob '{name}' was not found.") from None
        yield from downloader.chunks()

    def delete_import(self, name: str) -> None:
        try:
            _translate("import delete", lambda: self._imports.get_blob_client(name).delete_blob())
        except ResourceNotFoundError:
            pass

    def reject_import(self, name: str, data: IO[bytes], length: int, reason: dict[str, object]) -> None:
        """Move ``name`` (whose bytes the caller holds in ``data``) to the errors container.

        The copy and the JSON reason are written before the import blob is
        deleted, so a crash in between leaves the file in both places, never in none.
        """
        data.seek(0)
        target = self._errors.get_blob_client(name)
        _translate("import reject copy", lambda: target.upload_blob(data, length=length, overwrite=True))
        body = json.dumps(reason, indent=2).encode()
        error_blob = self._errors.get_blob_client(f"{name}.error.json")
        _translate(
            "import reject reason",
            lambda: error_blob.upload_blob(
                body, overwrite=True, content_settings=ContentSettings(content_type="application/json")
            ),
        )
        self.delete_import(name)
