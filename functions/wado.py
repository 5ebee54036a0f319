"""WADO-RS: GET an instance and its metadata."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import wado

from . import _http

bp = func.Blueprint()

_INSTANCE = "v2/studies/{study}/series/{series}/instances/{instance}"


@bp.route(route=_INSTANCE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_instance(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_instance(
            blobs=svc.blobs, index=svc.index, key=_http.instance_key(req), accept=req.headers.get("accept")
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/metadata", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_instance_metadata(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_instance_metadata(
            blobs=svc.blobs,
            key=_http.instance_key(req),
            accept=req.headers.get("accept"),
            if_none_match=req.headers.get("if-none-match"),
        )
        return _http.stream(result)

    return await _http.handle(req, call)
