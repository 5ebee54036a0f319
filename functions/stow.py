"""STOW-RS (PS3.18 §10.5): POST /v2/studies and POST /v2/studies/{study} → :func:`dicomserver.stow.store_instances`."""

import azure.functions as func

from dicomserver import stow
from dicomserver.auth import Action
from dicomserver.stow import StoreResponse

from ._http import DicomWebRequest, dicomweb

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


async def _store(r: DicomWebRequest, study: str | None) -> StoreResponse:
    return await stow.store_instances(
        blobs=r.svc.blobs,
        index=r.svc.index,
        sync_queue=r.svc.sync_queue,
        body=r.body,
        content_type=r.header("content-type"),
        accept=r.accept,
        study_instance_uid=study,
        base_url=r.url.base,
        max_instance_bytes=r.svc.settings.max_instance_bytes,
        max_parts=r.svc.settings.max_parts_per_request,
    )


@bp.route(route="v2/studies", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def store_instances(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, None)


@bp.route(route="v2/studies/{study}", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def store_instances_in_study(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, r.url.require_study().study)
