"""WADO-RS (PS3.18 §10.4): studies, series and instances, their metadata, frames, rendered images and bulk data.

Each function is :mod:`dicomserver.wado`'s function of the same name (the rendered instance and
frame call :func:`dicomserver.wado.retrieve_rendered`, their thumbnails
:func:`dicomserver.wado.retrieve_thumbnail`).  Every rendered resource and thumbnail reads the
``quality``, ``viewport`` and ``window`` query parameters (PS3.18 §8.3.5.1).
"""

import asyncio
from typing import Any

import azure.functions as func

from dicomserver import bulkdata, wado
from dicomserver.auth import Action
from dicomserver.errors import BadRequest
from dicomserver.stores import BlobStore
from dicomserver.wado import Retrieved

from ._http import DicomWebRequest, dicomweb

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS
#: Azure v2: retrieve the version a bulk update kept instead of the updated one.
REQUEST_ORIGINAL_HEADER = "msdicom-request-original"
_STUDY = "v2/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"


async def _blobs(r: DicomWebRequest) -> BlobStore:
    """The blob store to retrieve files from: with ``msdicom-request-original: true``, the versions a
    bulk update kept (one index query; instances never updated read as they are)."""
    if (r.header(REQUEST_ORIGINAL_HEADER) or "").strip().lower() != "true":
        return r.svc.blobs
    versions = await asyncio.to_thread(r.svc.index.original_versions, r.url.study_key, r.url.series)
    return r.svc.blobs.with_versions(versions) if versions else r.svc.blobs


@bp.route(route=_STUDY, methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_study(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_study(
        blobs=await _blobs(r), index=r.svc.index, study=r.url.study_key, accept=r.accept, budget=r.budget
    )


@bp.route(route=_SERIES, methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_series(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_series(
        blobs=await _blobs(r), index=r.svc.index, series=r.url.series_key, accept=r.accept, budget=r.budget
    )


@bp.route(route=_INSTANCE, methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_instance(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_instance(
        blobs=await _blobs(r), index=r.svc.index, key=r.url.instance_key, accept=r.accept, budget=r.budget
    )


@bp.route(route=_STUDY + "/metadata", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_study_metadata(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_study_metadata(
        blobs=r.svc.blobs,
        index=r.svc.index,
        study=r.url.study_key,
        accept=r.accept,
        if_none_match=r.header("if-none-match"),
        base_url=r.url.base,
    )


@bp.route(route=_SERIES + "/metadata", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_series_metadata(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_series_metadata(
        blobs=r.svc.blobs,
        index=r.svc.index,
        series=r.url.series_key,
        accept=r.accept,
        if_none_match=r.header("if-none-match"),
        base_url=r.url.base,
    )


@bp.route(route=_INSTANCE + "/metadata", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_instance_metadata(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_instance_metadata(
        blobs=r.svc.blobs,
        index=r.svc.index,
        key=r.url.instance_key,
        accept=r.accept,
        if_none_match=r.header("if-none-match"),
        base_url=r.url.base,
    )


@bp.route(route=_INSTANCE + "/frames/{frames}", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_frames(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_frames(
        blobs=r.svc.blobs,
        index=r.svc.index,
        key=r.url.instance_key,
        frames=wado.parse_frame_list(r.url.frame_list, r.svc.settings.max_frames_per_request),
        accept=r.accept,
        budget=r.budget,
    )


@bp.route(route=_INSTANCE + "/rendered", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_rendered_instance(r: DicomWebRequest) -> Retrieved:
    return await _rendered(r, 1)


@bp.route(route=_INSTANCE + "/frames/{frame}/rendered", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_rendered_frame(r: DicomWebRequest) -> Retrieved:
    return await _rendered(r, _one_frame(r))


@bp.route(route=_STUDY + "/rendered", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_rendered_study(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_rendered_study(
        blobs=r.svc.blobs, index=r.svc.index, study=r.url.study_key, accept=r.accept, budget=r.budget, **_rendering(r)
    )


@bp.route(route=_SERIES + "/rendered", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_rendered_series(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_rendered_series(
        blobs=r.svc.blobs, index=r.svc.index, series=r.url.series_key, accept=r.accept, budget=r.budget, **_rendering(r)
    )


@bp.route(route=_STUDY + "/thumbnail", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_thumbnail_study(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_thumbnail_study(
        blobs=r.svc.blobs, index=r.svc.index, study=r.url.study_key, accept=r.accept, budget=r.budget, **_rendering(r)
    )


@bp.route(route=_SERIES + "/thumbnail", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_thumbnail_series(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_thumbnail_series(
        blobs=r.svc.blobs, index=r.svc.index, series=r.url.series_key, accept=r.accept, budget=r.budget, **_rendering(r)
    )


@bp.route(route=_INSTANCE + "/thumbnail", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_thumbnail_instance(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_thumbnail(
        blobs=r.svc.blobs, index=r.svc.index, key=r.url.instance_key, accept=r.accept, budget=r.budget, **_rendering(r)
    )


@bp.route(route=_INSTANCE + "/frames/{frame}/thumbnail", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_thumbnail_frame(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_thumbnail(
        blobs=r.svc.blobs,
        index=r.svc.index,
        key=r.url.instance_key,
        frame=_one_frame(r),
        accept=r.accept,
        budget=r.budget,
        **_rendering(r),
    )


@bp.route(route=_INSTANCE + "/bulkdata/{*path}", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def retrieve_bulkdata(r: DicomWebRequest) -> Retrieved:
    return await wado.retrieve_bulkdata(
        blobs=r.svc.blobs,
        index=r.svc.index,
        key=r.url.instance_key,
        path=bulkdata.parse_path(r.url.bulkdata_path),
        accept=r.accept,
        range_header=r.header("range"),
        budget=r.budget,
    )


async def _rendered(r: DicomWebRequest, frame: int) -> Retrieved:
    return await wado.retrieve_rendered(
        blobs=r.svc.blobs,
        index=r.svc.index,
        key=r.url.instance_key,
        frame=frame,
        accept=r.accept,
        budget=r.budget,
        **_rendering(r),
    )


def _rendering(r: DicomWebRequest) -> dict[str, Any]:
    """The rendered query parameters (PS3.18 §8.3.5.1): ``quality``, ``viewport``, ``window`` (400 when malformed)."""
    return {
        "quality": wado.parse_quality(r.param("quality")),
        "viewport": wado.parse_viewport(r.param("viewport")),
        "window": wado.parse_window(r.param("window")),
    }


def _one_frame(r: DicomWebRequest) -> int:
    frames = wado.parse_frame_list(r.url.frame_list, r.svc.settings.max_frames_per_request)
    if len(frames) != 1:
        raise BadRequest("Only one frame can be rendered per request.")
    return frames[0]
