"""STOW-RS: POST /v2/studies and POST /v2/studies/{study}."""

import json

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver.mediatypes import APPLICATION_DICOM_JSON, require_dicom_json
from dicomserver.stow import store_instances as store
from dicomserver.wiring import Services

from . import _http

bp = func.Blueprint()

async def _store(req: Request, svc: Services) -> Response:
    require_dicom_json(req.headers.get("accept"), "STOW-RS")
    result = await store(
        blobs=svc.blobs,
        index=svc.index,
        sync_queue=svc.sync_queue,
        body=req.stream(),
        content_type=req.headers.get("content-type"),
        study_instance_uid=_http.path_uids(req).get("study"),
        base_url=_http.base_url(req, svc),
        max_instance_bytes=svc.settings.max_instance_bytes,
        max_parts=svc.settings.max_parts_per_request,
    )
    return Response(json.dumps(result.body), status_code=result.status, media_type=APPLICATION_DICOM_JSON)


@bp.route(route="v2/studies", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def store_instances(req: Request) -> Response:
    return await _http.handle(req, lambda svc: _store(req, svc))


@bp.route(route="v2/studies/{study}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def store_instances_in_study(req: Request) -> Response:
    return await _http.handle(req, lambda svc: _store(req, svc))
