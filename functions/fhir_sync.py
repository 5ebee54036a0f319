"""Queue trigger, one study per fhir-sync message: its change feed events published, then FHIR kept in step."""

import logging
from urllib.parse import urlsplit

import azure.functions as func

from dicomserver.fhir.sync import handle_sync_message
from dicomserver.settings import STORAGE_CONNECTION
from dicomserver.wiring import dicomweb_base_url, fhir, services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name="%DICOM_FHIR_SYNC_QUEUE%", connection=STORAGE_CONNECTION)
def sync_study_to_fhir(msg: func.QueueMessage) -> None:
    """After any write into a study: its change feed repaired, its events published, then its FHIR sync."""
    svc = services()
    base_url = dicomweb_base_url(svc.settings)
    handle_sync_message(
        body=msg.get_body(),
        index=svc.index,
        blobs=svc.blobs,
        fhir=fhir(),
        queue=svc.sync_queue,
        dicomweb_base_url=base_url,
        patient_identifier_system=svc.settings.fhir_patient_identifier_system,
        changes=svc.changes,
        events=svc.events,
        service_host=urlsplit(base_url).netloc,
    )
