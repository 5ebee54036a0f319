"""Queue trigger: keep FHIR in step with the index, one study per fhir-sync message."""

import logging

import azure.functions as func

from dicomserver.fhir.sync import handle_sync_message
from dicomserver.settings import STORAGE_CONNECTION
from dicomserver.wiring import dicomweb_base_url, fhir, services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name="%DICOM_FHIR_SYNC_QUEUE%", connection=STORAGE_CONNECTION)
def sync_study_to_fhir(msg: func.QueueMessage) -> None:
    svc, client = services(), fhir()
    if client is None:
        log.info("FHIR_URL is not set; fhir-sync message consumed without syncing")
        return
    handle_sync_message(
        body=msg.get_body(),
        index=svc.index,
        blobs=svc.blobs,
        fhir=client,
        queue=svc.sync_queue,
        dicomweb_base_url=dicomweb_base_url(svc.settings),
        patient_identifier_system=svc.settings.fhir_patient_identifier_system,
    )
