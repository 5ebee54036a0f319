"""Long-running operations: GET /v2/operations/{operationId}, and the queue trigger that runs their steps."""

import logging

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import operations
from dicomserver.auth import Action
from dicomserver.settings import STORAGE_CONNECTION
from dicomserver.stores.layout import parse_operation_message
from dicomserver.wiring import services

from ._http import DicomWebRequest, dicomweb, plain_json

bp = func.Blueprint()
log = logging.getLogger(__name__)
ANONYMOUS = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/operations/{operationId}", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def get_operation(r: DicomWebRequest) -> Response:
    operation_id = r.req.url.path.rstrip("/").rsplit("/", 1)[-1]
    status, body = operations.get_operation(r.svc.operations, operation_id, r.url.base)
    response = plain_json(body)
    response.status_code = status
    return response


@bp.queue_trigger(arg_name="msg", queue_name="%DICOM_OPERATIONS_QUEUE%", connection=STORAGE_CONNECTION)
def run_operation_step(msg: func.QueueMessage) -> None:
    """One step of a long-running operation; the step queues the next until the operation is done."""
    try:
        operation_id = parse_operation_message(msg.get_body())
    except ValueError as exc:
        log.error("operations message dropped: %s", exc)
        return
    svc = services()
    operations.run_step(svc.operations, operation_id, svc)
