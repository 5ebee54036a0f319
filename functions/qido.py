"""QIDO-RS: GET /v2/studies."""

import json

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver.mediatypes import APPLICATION_DICOM_JSON
from dicomserver.qido import search_for_studies as search

from . import _http

bp = func.Blueprint()


@bp.route(route="v2/studies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_studies(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        results = await search(index=svc.index, params=req.query_params.multi_items())
        if not results:
            return Response(status_code=204)
        return Response(json.dumps(results), media_type=APPLICATION_DICOM_JSON)

    return await _http.handle(call)
