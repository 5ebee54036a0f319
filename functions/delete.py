"""DELETE (Azure v2): /v2/studies/{study}[/series/{series}[/instances/{instance}]] → :mod:`dicomserver.delete`."""

import azure.functions as func

from dicomserver import delete
from dicomserver.auth import Action

from ._http import DicomWebRequest, dicomweb

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/studies/{study}", methods=["DELETE"], auth_level=ANONYMOUS)
@dicomweb(Action.DELETE)
async def delete_study(r: DicomWebRequest) -> None:
    await delete.delete_study(blobs=r.svc.blobs, index=r.svc.index, sync_queue=r.svc.sync_queue, study=r.url.study_key)


@bp.route(route="v2/studies/{study}/series/{series}", methods=["DELETE"], auth_level=ANONYMOUS)
@dicomweb(Action.DELETE)
async def delete_series(r: DicomWebRequest) -> None:
    await delete.delete_series(
        blobs=r.svc.blobs, index=r.svc.index, sync_queue=r.svc.sync_queue, series=r.url.series_key
    )


@bp.route(route="v2/studies/{study}/series/{series}/instances/{instance}", methods=["DELETE"], auth_level=ANONYMOUS)
@dicomweb(Action.DELETE)
async def delete_instance(r: DicomWebRequest) -> None:
    await delete.delete_instance(
        blobs=r.svc.blobs, index=r.svc.index, sync_queue=r.svc.sync_queue, key=r.url.instance_key
    )
