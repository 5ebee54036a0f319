"""DELETE: /v2/studies/{study}[/series/{series}[/instances/{instance}]]."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import delete
from dicomserver.identifiers import DEFAULT_PARTITION, SeriesKey, StudyKey

from . import _http

bp = func.Blueprint()


@bp.route(route="v2/studies/{study}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
async def delete_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = StudyKey(DEFAULT_PARTITION, _http.path_uids(req)["study"])
        await delete.delete_study(blobs=svc.blobs, index=svc.index, sync_queue=svc.sync_queue, study=study)
        return Response(status_code=204)

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/series/{series}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
async def delete_series(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        uids = _http.path_uids(req)
        series = SeriesKey(DEFAULT_PARTITION, uids["study"], uids["series"])
        await delete.delete_series(blobs=svc.blobs, index=svc.index, sync_queue=svc.sync_queue, series=series)
        return Response(status_code=204)

    return await _http.handle(req, call)


@bp.route(
    route="v2/studies/{study}/series/{series}/instances/{instance}",
    methods=["DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def delete_instance(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        key = _http.instance_key(req)
        await delete.delete_instance(blobs=svc.blobs, index=svc.index, sync_queue=svc.sync_queue, key=key)
        return Response(status_code=204)

    return await _http.handle(req, call)
