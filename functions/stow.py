"""STOW-RS (PS3.18 §10.5) and Azure v2 upsert.

POST /v2/studies[/{study}] → :func:`dicomserver.stow.store_instances`;
PUT /v2/studies[/{study}] → :func:`dicomserver.stow.upsert_instances` (replaces stored instances).
Both take the ``msdicom-expiry-*`` headers (:mod:`dicomserver.expiry`).
"""

import azure.functions as func

from dicomserver import expiry, stow
from dicomserver.auth import Action
from dicomserver.stow import StoreResponse

from ._http import DicomWebRequest, dicomweb

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


async def _store(r: DicomWebRequest, study: str | None, upsert: bool = False) -> StoreResponse:
    store = stow.upsert_instances if upsert else stow.store_instances
    return await store(
        blobs=r.svc.blobs,
        index=r.svc.index,
        sync_queue=r.svc.sync_queue,
        body=r.body,
        content_type=r.header("content-type"),
        accept=r.accept,
        study_instance_uid=study,
        base_url=r.url.base,
        partition=r.url.partition,
        max_instance_bytes=r.svc.settings.max_instance_bytes,
        max_parts=r.svc.settings.max_parts_per_request,
        expires_at=expiry.parse_expiry(r.header),
    )


@bp.route(route="v2/studies", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def store_instances(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, None)


@bp.route(route="v2/studies/{study}", methods=["POST"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def store_instances_in_study(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, r.url.require_study().study)


@bp.route(route="v2/studies", methods=["PUT"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def upsert_instances(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, None, upsert=True)


@bp.route(route="v2/studies/{study}", methods=["PUT"], auth_level=ANONYMOUS)
@dicomweb(Action.WRITE)
async def upsert_instances_in_study(r: DicomWebRequest) -> StoreResponse:
    return await _store(r, r.url.require_study().study, upsert=True)
