"""Builds the Azure SDK clients and stores from :class:`Settings`, once per process.

The one core module, outside :mod:`dicomserver.stores.azure`, that imports the
Azure SDK: it picks the implementations of the ports (:mod:`dicomserver.stores`)
and hands them, typed as the Protocols, to the services.

Clients are created lazily on first use (never at import time) and shared by
every invocation in the worker process.  Connection strings are used only for
the local emulators; in Azure every client authenticates with
``DefaultAzureCredential`` (the function app's managed identity).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, TextBase64EncodePolicy

from .auth import Authenticator, build_authenticator
from .errors import DependencyUnavailable, DicomServerError
from .fhir.client import FhirClient
from .partitions import PartitionCatalog
from .settings import Settings
from .stores import (
    BlobStore,
    ChangeFeed,
    EventPublisher,
    ExtendedQueryTagStore,
    ImportStore,
    IndexStore,
    OperationStore,
    SyncQueue,
)
from .stores.azure.blob import CHUNK_SIZE, AzureBlobStore, AzureImportStore
from .stores.azure.changefeed import CosmosChangeFeed
from .stores.azure.cosmos import make_cosmos_client
from .stores.azure.counting import CountingTransport
from .stores.azure.events import EventGridPublisher, QueueEventPublisher
from .stores.azure.extended_tags import CosmosExtendedQueryTagStore
from .stores.azure.index import CosmosIndexStore
from .stores.azure.operations import CosmosOperationStore
from .stores.azure.partitions import CosmosPartitionStore
from .stores.azure.queue import BLOB_POISON_QUEUE, AzureBlobPoisonQueue, AzureSyncQueue

log = logging.getLogger(__name__)


def _retry() -> ExponentialRetry:
    """Storage retries: about 9 s in all, not the SDK default of about a minute,
    so an outage becomes a prompt 503 the client can retry."""
    return ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler needs."""

    settings: Settings
    blobs: BlobStore
    imports: ImportStore
    index: IndexStore
    sync_queue: SyncQueue
    changes: ChangeFeed
    events: EventPublisher
    operations: OperationStore
    #: The data partitions that exist (dicomserver/partitions.py; used when DICOM_DATA_PARTITIONS_ENABLED).
    partitions: PartitionCatalog
    #: Declared extended query tags and their errors (dicomserver/extended_query_tags.py).
    extended_tags: ExtendedQueryTagStore


def _credential(settings: Settings) -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


def credential(settings: Settings) -> Any:
    """The Entra credential the service (and its command-line tools) use: DefaultAzureCredential."""
    return _credential(settings)


def _queue_client(settings: Settings, name: str, credential: Any) -> QueueClient:
    policies: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": BinaryBase64DecodePolicy(),
        "retry_policy": _retry(),
        "transport": CountingTransport("queue"),
    }
    if settings.storage_connection_string:
        return QueueClient.from_connection_string(settings.storage_connection_string, name, **policies)
    if not settings.queue_service_uri:
        raise ValueError("Set DICOM_STORAGE (emulator) or DICOM_STORAGE__queueServiceUri (Azure).")
    return QueueClient(settings.queue_service_uri, name, credential=credential, **policies)


def build_services(settings: Settings) -> Services:
    """Create the stores for ``settings`` (no network calls are made)."""
    credential = None
    if not settings.storage_connection_string or not (settings.cosmos_emulator or settings.cosmos_key):
        credential = _credential(settings)
    if settings.storage_connection_string:
        blob_service = BlobServiceClient.from_connection_string(
            settings.storage_connection_string,
            max_chunk_get_size=CHUNK_SIZE,
            max_single_put_size=8 * 1024 * 1024,
            retry_policy=_retry(),
            transport=CountingTransport("blob"),
        )
    elif settings.blob_service_uri:
        blob_service = BlobServiceClient(
            settings.blob_service_uri,
            credential=credential,
            max_chunk_get_size=CHUNK_SIZE,
            max_single_put_size=8 * 1024 * 1024,
            retry_policy=_retry(),
            transport=CountingTransport("blob"),
        )
    else:
        raise ValueError("Set DICOM_STORAGE (emulator) or DICOM_STORAGE__blobServiceUri (Azure).")
    blobs = AzureBlobStore(blob_service, settings.instance_container, settings.metadata_container)
    imports = AzureImportStore(blob_service, settings.import_container, settings.import_errors_container)
    try:
        cosmos = make_cosmos_client(settings, credential)  # reads the account: network I/O
    except AzureError as exc:
        raise DependencyUnavailable("Cosmos DB is unavailable.") from exc
    changes = CosmosChangeFeed(cosmos, settings.cosmos_database, emulator=settings.cosmos_emulator)
    index = CosmosIndexStore(
        cosmos,
        settings.cosmos_database,
        emulator=settings.cosmos_emulator,
        changes=changes,
        any_attribute=settings.search_any_attribute,
    )
    queue = AzureSyncQueue(
        _queue_client(settings, settings.fhir_sync_queue, credential),
        _queue_client(settings, settings.fhir_sync_queue + "-poison", credential),
        settings.fhir_sync_delay_seconds,
    )
    events: EventPublisher
    if settings.events_topic_endpoint:
        events = EventGridPublisher(settings.events_topic_endpoint, credential or _credential(settings))
    else:
        events = QueueEventPublisher(_queue_client(settings, settings.events_queue, credential))
    operations = CosmosOperationStore(
        cosmos,
        settings.cosmos_database,
        _queue_client(settings, settings.operations_queue, credential),
        emulator=settings.cosmos_emulator,
    )
    partitions = PartitionCatalog(
        CosmosPartitionStore(cosmos, settings.cosmos_database, emulator=settings.cosmos_emulator)
    )
    extended_tags = CosmosExtendedQueryTagStore(cosmos, settings.cosmos_database, emulator=settings.cosmos_emulator)
    index.extended_tags = extended_tags  # new instances are indexed on the declared tags
    return Services(
        settings,
        blobs,
        imports,
        index,
        queue,
        changes,
        events,
        operations,
        partitions=partitions,
        extended_tags=extended_tags,
    )


def blob_poison_queue(settings: Settings) -> AzureBlobPoisonQueue:
    """The blob triggers' poison queue on the service's storage account (operations tools)."""
    credential = None if settings.storage_connection_string else _credential(settings)
    return AzureBlobPoisonQueue(_queue_client(settings, BLOB_POISON_QUEUE, credential))


_lock = threading.Lock()
_services: Services | None = None
#: Set once :func:`provision` ran in this process (the local host calls it before loading the app).
_provisioned = False


def services() -> Services:
    """The process-wide :class:`Services`, built from the environment on first use.

    When ``DICOM_PROVISION_RESOURCES`` is true (local emulators), containers,
    queues and the Cosmos database are created on first use as well.
    """
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                built = build_services(Settings.from_env())
                if built.settings.provision_resources and not _provisioned:
                    try:
                        provision_services(built)
                    except AzureError as exc:
                        raise DependencyUnavailable("Storage or Cosmos DB is unavailable.") from exc
                _services = built
    return _services


def provision_services(built: Services) -> None:
    """Create containers, queues, the Cosmos database and container (idempotent)."""
    built.blobs.ensure_containers()
    built.imports.ensure_containers()
    built.sync_queue.ensure_queue()
    built.index.ensure_schema()
    built.changes.ensure_schema()
    built.events.ensure_destination()
    built.operations.ensure_schema()
    built.extended_tags.ensure_schema()
    built.partitions.ensure_schema()
    log.info("provisioned storage containers, queues and the Cosmos index")


def provision() -> None:
    """Provision the resources named by the environment's settings (local host hook)."""
    global _provisioned
    provision_services(build_services(Settings.from_env()))
    _provisioned = True


def fhir_client(settings: Settings) -> FhirClient | None:
    """The FHIR client for ``settings`` (None when FHIR_URL is not set).

    Token: ``FHIR_BEARER_TOKEN`` when set (local servers), otherwise the
    managed identity for scope ``{FHIR_URL}/.default`` (Azure Health Data
    Services); a plain ``http://`` URL on loopback gets no token at all.
    """
    if not settings.fhir_url:
        return None
    if settings.fhir_bearer_token:
        static = settings.fhir_bearer_token
        return FhirClient(settings.fhir_url, lambda: static)
    if settings.fhir_url.startswith(("http://127.0.0.1", "http://localhost")):
        return FhirClient(settings.fhir_url)
    credential = _credential(settings)
    scope = f"{settings.fhir_url}/.default"
    return FhirClient(settings.fhir_url, lambda: str(credential.get_token(scope).token))


_fhir_lock = threading.Lock()
_fhir: list[FhirClient | None] = []


def fhir() -> FhirClient | None:
    """The process-wide FHIR client (None when FHIR_URL is not set)."""
    with _fhir_lock:
        if not _fhir:
            _fhir.append(fhir_client(services().settings))
        return _fhir[0]


def dicomweb_base_url(settings: Settings) -> str:
    """The public DICOMweb base URL (``.../v2``) that FHIR Endpoints point at."""
    if not settings.public_base_url:
        log.warning("DICOM_PUBLIC_BASE_URL is not set; FHIR Endpoint.address uses http://127.0.0.1:7071")
    return f"{settings.public_base_url or 'http://127.0.0.1:7071'}/v2"


_auth_lock = threading.Lock()
_authenticators: list[Authenticator] = []


def authenticator() -> Authenticator:
    """The process-wide authenticator for ``DICOM_AUTH_MODE`` (built on first use).

    Raises
    ------
    DicomServerError
        500 when the authentication settings are incomplete or refused (e.g. ``DICOM_AUTH_MODE=none``
        in Azure): the details (setting names, paths) go to the log only.  Every request retries.
    """
    with _auth_lock:
        if not _authenticators:
            try:
                _authenticators.append(build_authenticator(Settings.from_env()))
            except (ValueError, OSError) as exc:
                log.error("authentication is misconfigured: %s", exc)
                raise DicomServerError("Authentication is misconfigured (details logged above).") from exc
        return _authenticators[0]


def reset_authenticator_for_tests() -> None:
    """Forget the process-wide authenticator (tests that change the environment)."""
    with _auth_lock:
        _authenticators.clear()
