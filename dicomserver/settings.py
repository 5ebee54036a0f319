"""Service settings: the one place that reads the environment.

Every setting the service understands is a field of :class:`Settings` and is
named in :data:`SETTING_NAMES`; ``local.settings.example.json``, the README
table and the Bicep app settings use exactly these names.

Connections follow the Azure Functions convention for identity-based
connections: a setting ``DICOM_STORAGE`` holding a connection string (local
emulators only) or ``DICOM_STORAGE__blobServiceUri`` /
``DICOM_STORAGE__queueServiceUri`` (Azure, with managed identity).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: The storage connection used for DICOM data and the fhir-sync queue. Queue
#: and blob triggers name it in their ``connection=`` argument.
STORAGE_CONNECTION = "DICOM_STORAGE"

SETTING_NAMES: tuple[str, ...] = (
    STORAGE_CONNECTION,
    f"{STORAGE_CONNECTION}__blobServiceUri",
    f"{STORAGE_CONNECTION}__queueServiceUri",
    f"{STORAGE_CONNECTION}__clientId",
    f"{STORAGE_CONNECTION}__credential",
    "DICOM_COSMOS_ENDPOINT",
    "DICOM_COSMOS_KEY",
    "DICOM_COSMOS_DATABASE",
    "DICOM_COSMOS_EMULATOR",
    "DICOM_INSTANCE_CONTAINER",
    "DICOM_METADATA_CONTAINER",
    "DICOM_IMPORT_CONTAINER",
    "DICOM_IMPORT_ERRORS_CONTAINER",
    "DICOM_FHIR_SYNC_QUEUE",
    "DICOM_EVENTS_TOPIC_ENDPOINT",
    "DICOM_EVENTS_QUEUE",
    "DICOM_OPERATIONS_QUEUE",
    "DICOM_EXPIRY_SCHEDULE",
    "DICOM_PUBLIC_BASE_URL",
    "DICOM_MAX_INSTANCE_BYTES",
    "DICOM_MAX_DECODED_BYTES",
    "DICOM_MAX_DECODED_FRAME_BYTES",
    "DICOM_MAX_FRAMES_PER_REQUEST",
    "DICOM_PROVISION_RESOURCES",
    "FHIR_URL",
    "DICOM_AUTH_MODE",
    "DICOM_AUTH_TENANT_ID",
    "DICOM_AUTH_AUDIENCE",
    "DICOM_AUTH_AUTHORITY",
    "DICOM_AUTH_OWNER_ROLES",
    "DICOM_AUTH_READER_ROLES",
    "DICOM_AUTH_LOCAL_KEY_DIR",
    "FHIR_BEARER_TOKEN",
    "FHIR_PATIENT_IDENTIFIER_SYSTEM",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "DICOM_TELEMETRY_CONSOLE",
    "DICOM_TELEMETRY_FILE",
    "DICOM_AUDIT_FILE",
    "DICOM_SEARCH_ANY_ATTRIBUTE",
    "DICOM_DATA_PARTITIONS_ENABLED",
)


#: Variables the App Service platform sets on every Azure Functions plan (the Functions host itself
#: treats ``WEBSITE_INSTANCE_ID`` as "running in App Service"; ``WEBSITE_SITE_NAME`` is set on the
#: Linux and Flex Consumption plans as well).  They are not settings: nobody sets them by hand, and
#: Core Tools and the local host set neither (Core Tools sets ``WEBSITE_HOSTNAME``, so that one is
#: not used).
AZURE_INSTANCE_VARIABLES: tuple[str, ...] = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")


def running_in_azure(environ: Mapping[str, str]) -> bool:
    """Whether the platform's instance variables say this process runs in Azure."""
    return any(environ.get(name) for name in AZURE_INSTANCE_VARIABLES)


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _auth_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("entra", "local", "none"):
        raise ValueError(f"DICOM_AUTH_MODE must be entra, local or none, got {value!r}")
    return mode


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed view of the service's configuration."""

    storage_connection_string: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    managed_identity_client_id: str | None = None
    cosmos_endpoint: str = "http://127.0.0.1:8081/"
    cosmos_key: str | None = None
    cosmos_database: str = "dicom"
    cosmos_emulator: bool = False
    instance_container: str = "dicom"
    metadata_container: str = "dicom-metadata"
    import_container: str = "dicom-import"
    import_errors_container: str = "dicom-import-errors"
    fhir_sync_queue: str = "fhir-sync"
    #: Event Grid topic endpoint that DicomImageCreated/Updated/Deleted events are published to (Azure).
    events_topic_endpoint: str | None = None
    #: Without a topic endpoint, events go to this Storage queue instead (local development and tests).
    events_queue: str = "dicom-events"
    #: Steps of long-running operations (extended query tag reindex, bulk update): one message each.
    operations_queue: str = "dicom-operations"
    #: NCRONTAB schedule of the timer that deletes expired studies (read by the Functions host).
    expiry_schedule: str = "0 */5 * * * *"
    public_base_url: str | None = None
    max_instance_bytes: int = 2 * 1024**3
    #: Parts of one STOW request at most (413 beyond).
    max_parts_per_request: int = 10_000
    #: Decoded bytes one retrieve may produce (whole-instance transcode, or a frame list): 406 beyond,
    #: checked before decoding.  1 GiB: twice a 1,000-frame 512 × 512 16-bit CT (see transcode.py).
    max_decoded_bytes: int = 1024**3
    #: Decoded bytes of one frame (frames, rendered, and each frame of a transcode): 406 beyond.
    max_decoded_frame_bytes: int = 128 * 1024**2
    #: Entries of one frame list (WADO-RS frames): 400 beyond, and for a repeated frame.
    max_frames_per_request: int = 1000
    #: Seconds a fhir-sync message stays invisible after the write that scheduled it (see stores/azure/queue.py).
    fhir_sync_delay_seconds: int = 10
    provision_resources: bool = False
    #: ``entra`` (default), ``local`` (tokens from python -m scripts.token) or ``none``.
    auth_mode: str = "entra"
    auth_tenant_id: str | None = None
    #: Accepted ``aud`` values: the API's app ID URI and its client ID.  :meth:`from_env` leaves it
    #: empty when running in Azure without ``DICOM_AUTH_AUDIENCE`` (no guessable default there).
    auth_audiences: tuple[str, ...] = ("api://dicomserver-local",)
    auth_authority: str = "https://login.microsoftonline.com"
    #: App role values (and display names) that grant everything / reading.
    auth_owner_roles: tuple[str, ...] = ("DICOM.Data.Owner", "DICOM Data Owner")
    auth_reader_roles: tuple[str, ...] = ("DICOM.Data.Reader", "DICOM Data Reader")
    auth_local_key_dir: str = ".local/auth"
    #: True when the platform's instance variables are set (:data:`AZURE_INSTANCE_VARIABLES`):
    #: ``DICOM_AUTH_MODE=none`` and an ``entra`` mode without ``DICOM_AUTH_AUDIENCE`` are refused.
    running_in_azure: bool = False
    #: FHIR R4 base URL; empty disables the FHIR sync (messages are consumed and logged).
    fhir_url: str | None = None
    #: Static bearer token for a local FHIR server; in Azure the managed identity is used.
    fhir_bearer_token: str | None = None
    #: Identifier system of Patient.identifier when the instance has no IssuerOfPatientID.
    fhir_patient_identifier_system: str = "urn:dicomserver:patient-id"
    #: Application Insights connection string (set by the platform in Azure): request spans and audit
    #: records are exported there through the Azure Monitor OpenTelemetry distro (dicomserver/telemetry.py).
    appinsights_connection_string: str | None = None
    #: Print every request span to stdout (OpenTelemetry's ConsoleSpanExporter; local use).
    telemetry_console: bool = False
    #: Append every request span, one JSON object a line, to this file (local use and tests).
    telemetry_file: str | None = None
    #: Append every audit record, one JSON object a line, to this file (dicomserver/audit.py).
    audit_file: str | None = None
    #: QIDO on any top-level attribute (not only the core keys): every instance document keeps the
    #: normalised values of its simple-VR attributes (``x``); off, undeclared keys are a 400.
    search_any_attribute: bool = True
    #: Data partitions (Azure v2): STOW/WADO/QIDO/DELETE paths are ``/v2/partitions/{name}/...``
    #: (dicomserver/partitions.py); off, those paths are a 400 and everything is in Microsoft.Default.
    data_partitions_enabled: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``).

        Raises
        ------
        ValueError
            If a numeric setting does not parse, quoting the value.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        conn = env.get(STORAGE_CONNECTION) or None
        client_id = env.get(f"{STORAGE_CONNECTION}__clientId") or env.get("AZURE_CLIENT_ID") or None
        max_bytes_text = env.get("DICOM_MAX_INSTANCE_BYTES", "")
        try:
            max_bytes = int(max_bytes_text) if max_bytes_text else defaults.max_instance_bytes
        except ValueError:
            raise ValueError(f"DICOM_MAX_INSTANCE_BYTES must be an integer, got {max_bytes_text!r}") from None
        max_parts = _int(env, "DICOM_MAX_PARTS_PER_REQUEST", defaults.max_parts_per_request, minimum=1)
        max_decoded = _int(env, "DICOM_MAX_DECODED_BYTES", defaults.max_decoded_bytes, minimum=1)
        max_frame = _int(env, "DICOM_MAX_DECODED_FRAME_BYTES", defaults.max_decoded_frame_bytes, minimum=1)
        max_frames = _int(env, "DICOM_MAX_FRAMES_PER_REQUEST", defaults.max_frames_per_request, minimum=1)
        sync_delay = _int(env, "DICOM_FHIR_SYNC_DELAY_SECONDS", defaults.fhir_sync_delay_seconds, minimum=1)
        public = env.get("DICOM_PUBLIC_BASE_URL") or None
        in_azure = running_in_azure(env)
        return cls(
            storage_connection_string=conn,
            blob_service_uri=env.get(f"{STORAGE_CONNECTION}__blobServiceUri") or None,
            queue_service_uri=env.get(f"{STORAGE_CONNECTION}__queueServiceUri") or None,
            managed_identity_client_id=client_id,
            cosmos_endpoint=env.get("DICOM_COSMOS_ENDPOINT", defaults.cosmos_endpoint),
            cosmos_key=env.get("DICOM_COSMOS_KEY") or None,
            cosmos_database=env.get("DICOM_COSMOS_DATABASE", defaults.cosmos_database),
            cosmos_emulator=_flag(env.get("DICOM_COSMOS_EMULATOR")),
            instance_container=env.get("DICOM_INSTANCE_CONTAINER", defaults.instance_container),
            metadata_container=env.get("DICOM_METADATA_CONTAINER", defaults.metadata_container),
            import_container=env.get("DICOM_IMPORT_CONTAINER", defaults.import_container),
            import_errors_container=env.get("DICOM_IMPORT_ERRORS_CONTAINER", defaults.import_errors_container),
            fhir_sync_queue=env.get("DICOM_FHIR_SYNC_QUEUE", defaults.fhir_sync_queue),
            events_topic_endpoint=env.get("DICOM_EVENTS_TOPIC_ENDPOINT") or None,
            events_queue=env.get("DICOM_EVENTS_QUEUE") or defaults.events_queue,
            operations_queue=env.get("DICOM_OPERATIONS_QUEUE") or defaults.operations_queue,
            expiry_schedule=env.get("DICOM_EXPIRY_SCHEDULE") or defaults.expiry_schedule,
            public_base_url=public.rstrip("/") if public else None,
            max_instance_bytes=max_bytes,
            max_parts_per_request=max_parts,
            max_decoded_bytes=max_decoded,
            max_decoded_frame_bytes=max_frame,
            max_frames_per_request=max_frames,
            fhir_sync_delay_seconds=sync_delay,
            provision_resources=_flag(env.get("DICOM_PROVISION_RESOURCES")),
            auth_mode=_auth_mode(env.get("DICOM_AUTH_MODE") or defaults.auth_mode),
            auth_tenant_id=env.get("DICOM_AUTH_TENANT_ID") or None,
            auth_audiences=_list(env.get("DICOM_AUTH_AUDIENCE")) or (() if in_azure else defaults.auth_audiences),
            auth_authority=env.get("DICOM_AUTH_AUTHORITY") or defaults.auth_authority,
            auth_owner_roles=_list(env.get("DICOM_AUTH_OWNER_ROLES")) or defaults.auth_owner_roles,
            auth_reader_roles=_list(env.get("DICOM_AUTH_READER_ROLES")) or defaults.auth_reader_roles,
            auth_local_key_dir=env.get("DICOM_AUTH_LOCAL_KEY_DIR") or defaults.auth_local_key_dir,
            running_in_azure=in_azure,
            fhir_url=(env.get("FHIR_URL") or "").rstrip("/") or None,
            fhir_bearer_token=env.get("FHIR_BEARER_TOKEN") or None,
            fhir_patient_identifier_system=env.get(
                "FHIR_PATIENT_IDENTIFIER_SYSTEM", defaults.fhir_patient_identifier_system
            ),
            appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
            telemetry_console=_flag(env.get("DICOM_TELEMETRY_CONSOLE")),
            telemetry_file=env.get("DICOM_TELEMETRY_FILE") or None,
            audit_file=env.get("DICOM_AUDIT_FILE") or None,
            search_any_attribute=_flag(env.get("DICOM_SEARCH_ANY_ATTRIBUTE"), True),
            data_partitions_enabled=_flag(env.get("DICOM_DATA_PARTITIONS_ENABLED")),
        )


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value
