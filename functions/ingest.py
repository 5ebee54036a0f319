"""Blob triggers: index repair on the instance container, bulk import from the import container.

Both receive an SDK ``BlobClient`` (the blob-extension binding), so the
Functions host never loads the blob's content; the core streams it itself.
Containers come from app settings (``%DICOM_INSTANCE_CONTAINER%``), and in
Azure (Flex Consumption) the triggers are fed by Event Grid.
"""

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from dicomserver import ingest
from dicomserver.settings import STORAGE_CONNECTION
from dicomserver.wiring import services

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _name_in_container(client: blob.BlobClient) -> str:
    return str(client.blob_name)


@bp.blob_trigger(
    arg_name="client", path="%DICOM_INSTANCE_CONTAINER%/{name}", connection=STORAGE_CONNECTION, source="EventGrid"
)
def ensure_indexed(client: blob.BlobClient) -> None:
    svc = services()
    name = _name_in_container(client)
    outcome = ingest.riding_out_outages(lambda: ingest.ensure_indexed(svc.blobs, svc.index, svc.sync_queue, name))
    log.info("ensure_indexed outcome=%s", outcome.value)


@bp.blob_trigger(
    arg_name="client", path="%DICOM_IMPORT_CONTAINER%/{name}", connection=STORAGE_CONNECTION, source="EventGrid"
)
def import_instances(client: blob.BlobClient) -> None:
    svc = services()
    name = _name_in_container(client)
    outcome = ingest.riding_out_outages(
        lambda: ingest.import_instance(svc.blobs, svc.index, svc.sync_queue, svc.imports, name)
    )
    log.info("import outcome=%s", outcome.value)
