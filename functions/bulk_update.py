"""Bulk update (Azure v2): POST /v2/studies/$bulkUpdate → :func:`dicomserver.bulk_update.bulk_update_studies`."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import bulk_update
from dicomserver.auth import Action
from dicomserver.errors import PayloadTooLarge

from ._http import DicomWebRequest, dicomweb, plain_json

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/studies/$bulkUpdate", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def bulk_update_studies(r: DicomWebRequest) -> Response:
    reference = await bulk_update.bulk_update_studies(
        operations=r.svc.operations,
        body=await r.read_body(bulk_update.MAX_BODY_BYTES, PayloadTooLarge),
        content_type=r.header("content-type"),
        base_url=r.url.base,
        partition=r.url.partition,
    )
    response = plain_json(reference)
    response.status_code = 202
    return response
