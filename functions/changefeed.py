"""Change feed (Azure v2): GET /v2/changefeed and GET /v2/changefeed/latest → :mod:`dicomserver.changefeed`."""

from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import changefeed
from dicomserver.auth import Action

from ._http import DicomWebRequest, dicomweb, plain_json

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/changefeed", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def read_change_feed(r: DicomWebRequest) -> Response:
    entries = await changefeed.read_change_feed(
        feed=r.svc.changes, blobs=r.svc.blobs, params=r.params, base_url=r.url.base, accept=r.accept
    )
    return plain_json(entries)


@bp.route(route="v2/changefeed/latest", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def read_latest_change(r: DicomWebRequest) -> Response | None:
    latest: dict[str, Any] | None = await changefeed.read_latest_change(
        feed=r.svc.changes, blobs=r.svc.blobs, params=r.params, base_url=r.url.base, accept=r.accept
    )
    return plain_json(latest) if latest is not None else None
