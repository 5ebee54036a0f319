"""WADO-RS: GET studies, series and instances, their metadata, frames, rendered images and bulk data."""

from urllib.parse import unquote

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import bulkdata, wado
from dicomserver.errors import BadRequest
from dicomserver.identifiers import DEFAULT_PARTITION, StudyKey

from . import _http

bp = func.Blueprint()

_INSTANCE = "v2/studies/{study}/series/{series}/instances/{instance}"


@bp.route(route=_INSTANCE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_instance(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_instance(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            accept=req.headers.get("accept"),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/metadata", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_instance_metadata(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_instance_metadata(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            accept=req.headers.get("accept"),
            if_none_match=req.headers.get("if-none-match"),
            base_url=_http.base_url(req, svc),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_study(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        study = StudyKey(DEFAULT_PARTITION, _http.path_uids(req)["study"])
        result = await wado.retrieve_study(
            blobs=svc.blobs,
            index=svc.index,
            study=study,
            accept=req.headers.get("accept"),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/series/{series}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_series(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        uids = _http.path_uids(req)
        result = await wado.retrieve_study(
            blobs=svc.blobs,
            index=svc.index,
            study=StudyKey(DEFAULT_PARTITION, uids["study"]),
            series_instance_uid=uids["series"],
            accept=req.headers.get("accept"),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/metadata", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_study_metadata(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_study_metadata(
            blobs=svc.blobs,
            index=svc.index,
            study=StudyKey(DEFAULT_PARTITION, _http.path_uids(req)["study"]),
            accept=req.headers.get("accept"),
            if_none_match=req.headers.get("if-none-match"),
            base_url=_http.base_url(req, svc),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route="v2/studies/{study}/series/{series}/metadata", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_series_metadata(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        uids = _http.path_uids(req)
        result = await wado.retrieve_study_metadata(
            blobs=svc.blobs,
            index=svc.index,
            study=StudyKey(DEFAULT_PARTITION, uids["study"]),
            series_instance_uid=uids["series"],
            accept=req.headers.get("accept"),
            if_none_match=req.headers.get("if-none-match"),
            base_url=_http.base_url(req, svc),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/frames/{frames}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_frames(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        frame_list = req.url.path.rstrip("/").rsplit("/", 1)[-1]
        result = await wado.retrieve_frames(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            frames=wado.parse_frame_list(frame_list, svc.settings.max_frames_per_request),
            accept=req.headers.get("accept"),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/rendered", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_instance_rendered(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        result = await wado.retrieve_rendered(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            frame=1,
            accept=req.headers.get("accept"),
            quality=wado.parse_quality(req.query_params.get("quality")),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/frames/{frame}/rendered", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_frame_rendered(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        frames = wado.parse_frame_list(req.url.path.rstrip("/").split("/")[-2], svc.settings.max_frames_per_request)
        if len(frames) != 1:
            raise BadRequest("Only one frame can be rendered per request.")
        result = await wado.retrieve_rendered(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            frame=frames[0],
            accept=req.headers.get("accept"),
            quality=wado.parse_quality(req.query_params.get("quality")),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)


@bp.route(route=_INSTANCE + "/bulkdata/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def retrieve_bulkdata(req: Request) -> Response:
    async def call(svc: _http.Services) -> Response:
        path = unquote(req.url.path.split("/bulkdata/", 1)[-1])
        result = await wado.retrieve_bulkdata(
            blobs=svc.blobs,
            index=svc.index,
            key=_http.instance_key(req),
            path=bulkdata.parse_path(path),
            accept=req.headers.get("accept"),
            range_header=req.headers.get("range"),
            budget=wado.decode_budget(svc.settings),
        )
        return _http.stream(result)

    return await _http.handle(req, call)
