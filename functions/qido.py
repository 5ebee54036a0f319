"""QIDO-RS: GET /v2/studies, /v2/series, /v2/instances and their study/series-scoped forms."""

import json
from collections.abc import Awaitable

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import qido
from dicomserver.mediatypes import APPLICATION_DICOM_JSON, require_dicom_json

from . import _http

bp = func.Blueprint()


def _handle(req: Request, call: _http.Handler) -> Awaitable[Response]:
    """As ``_http.handle``, refusing first (406) an Accept header that excludes DICOM JSON."""

    async def checked(svc: _http.Services) -> Response:
        require_dicom_json(req.headers.get("accept"), "QIDO-RS")
        return await call(svc)

    return _http.handle(req, checked)


def _respond(results: list[dict[str, object]]) -> Response:
    if not results:
        return Response(status_code=204)
    return Response(json.dumps(results), media_type=APPLICATION_DICOM_JSON)


@bp.route(route="v2/studies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_studies(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_studies(index=svc.index, params=req.query_params.multi_items()))

    return await _handle(req, call)


@bp.route(route="v2/series", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_series(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_series(index=svc.index, params=req.query_params.multi_items()))

    return await _handle(req, call)


@bp.route(route="v2/studies/{study}/series", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_series_in_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = _http.path_uids(req)["study"]
        params = req.query_params.multi_items()
        return _respond(await qido.search_for_series(index=svc.index, params=params, study_instance_uid=study))

    return await _handle(req, call)


@bp.route(route="v2/instances", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_instances(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_instances(index=svc.index, params=req.query_params.multi_items()))

    return await _handle(req, call)


@bp.route(route="v2/studies/{study}/instances", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_instances_in_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = _http.path_uids(req)["study"]
        params = req.query_params.multi_items()
        return _respond(await qido.search_for_instances(index=svc.index, params=params, study_instance_uid=study))

    return await _handle(req, call)


@bp.route(route="v2/studies/{study}/series/{series}/instances", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_instances_in_series(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        uids = _http.path_uids(req)
        results = await qido.search_for_instances(
            index=svc.index,
            params=req.query_params.multi_items(),
            study_instance_uid=uids["study"],
            series_instance_uid=uids["series"],
        )
        return _respond(results)

    return await _handle(req, call)
