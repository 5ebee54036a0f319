"""Extended query tags (Azure v2): /v2/extendedquerytags[/{tagPath}[/errors]].

Each function is :mod:`dicomserver.extended_query_tags`'s function of the same name; reading needs
Action.READ, declaring, changing and deleting Action.WRITE (the owner role).  The reindex a POST starts
runs on the operations queue (functions/operations.py).
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import extended_query_tags as eqt
from dicomserver.auth import Action
from dicomserver.errors import BadRequest

from ._http import DicomWebRequest, dicomweb, plain_json

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


async def _body(r: DicomWebRequest) -> bytes:
    """The request body, refused (400) past :data:`eqt.MAX_BODY_BYTES`."""
    return await r.read_body(eqt.MAX_BODY_BYTES, BadRequest)


def _tag_path(r: DicomWebRequest, suffix: str = "") -> str:
    """The ``{tagPath}`` segment (the path ends with it, or with it and ``suffix``)."""
    path = r.req.url.path.rstrip("/").removesuffix(suffix)
    return path.rsplit("/", 1)[-1]


@bp.route(route="v2/extendedquerytags", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def add_extended_query_tags(r: DicomWebRequest) -> Response:
    reference = eqt.add_extended_query_tags(
        tags=r.svc.extended_tags, operations=r.svc.operations, body=await _body(r), base_url=r.url.base
    )
    response = plain_json(reference)
    response.status_code = 202
    return response


@bp.route(route="v2/extendedquerytags", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def list_extended_query_tags(r: DicomWebRequest) -> Response:
    return plain_json(eqt.list_extended_query_tags(tags=r.svc.extended_tags, params=r.params, base_url=r.url.base))


@bp.route(route="v2/extendedquerytags/{tagPath}", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def get_extended_query_tag(r: DicomWebRequest) -> Response:
    return plain_json(eqt.get_extended_query_tag(tags=r.svc.extended_tags, tag_path=_tag_path(r), base_url=r.url.base))


@bp.route(route="v2/extendedquerytags/{tagPath}", methods=["DELETE"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def delete_extended_query_tag(r: DicomWebRequest) -> None:
    eqt.delete_extended_query_tag(tags=r.svc.extended_tags, tag_path=_tag_path(r))


@bp.route(route="v2/extendedquerytags/{tagPath}", methods=["PATCH"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def update_extended_query_tag(r: DicomWebRequest) -> Response:
    body = await _body(r)
    tag = eqt.update_extended_query_tag(tags=r.svc.extended_tags, tag_path=_tag_path(r), body=body, base_url=r.url.base)
    return plain_json(tag)


@bp.route(route="v2/extendedquerytags/{tagPath}/errors", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def list_extended_query_tag_errors(r: DicomWebRequest) -> Response:
    tag_path = _tag_path(r, "/errors")
    return plain_json(eqt.list_extended_query_tag_errors(tags=r.svc.extended_tags, tag_path=tag_path, params=r.params))
