"""QIDO-RS: GET /v2/studies, /v2/series, /v2/instances and their study/series-scoped forms."""

import json

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import qido
from dicomserver.mediatypes import APPLICATION_DICOM_JSON

from . import _http

bp = func.Blueprint()


def _respond(results: list[dict[str, object]]) -> Response:
    if not results:
        return Response(status_code=204)
    return Response(json.dumps(results), media_type=APPLICATION_DICOM_JSON)


@bp.route(route="v2/studies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_studies(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_studies(index=svc.index, params=req.query_params.multi_items()))

    return await _http.handle(req, call)


@bp.route(route="v2/series", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_series(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_series(index=svc.index, params=req.query_params.multi_items()))

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/series", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_series_in_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = _http.path_uids(req)["study"]
        params = req.query_params.multi_items()
        return _respond(await qido.search_for_series(index=svc.index, params=params, study_instance_uid=study))

    return await _http.handle(req, call)


@bp.route(route="v2/instances", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_instances(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        return _respond(await qido.search_for_instances(index=svc.index, params=req.query_params.multi_items()))

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/instances", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def search_for_instances_in_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = _http.path_uids(req)["study"]
        params = req.query_params.multi_items()
        return _respond(await qido.search_for_instances(index=svc.index, params=params, study_instance_uid=study))

    return await _http.handle(req, call)


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

    return await _http.handle(req, call)
