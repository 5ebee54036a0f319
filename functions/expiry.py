"""Timer trigger: delete the studies whose expiry has passed (msdicom-expiry-* headers) → :mod:`dicomserver.expiry`."""

import logging

import azure.functions as func

from dicomserver import expiry
from dicomserver.wiring import services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%DICOM_EXPIRY_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def delete_expired_studies(timer: func.TimerRequest) -> None:
    """Every DICOM_EXPIRY_SCHEDULE (NCRONTAB, default every 5 minutes): expired studies through the delete path."""
    svc = services()
    deleted = await expiry.delete_expired_studies(blobs=svc.blobs, index=svc.index, sync_queue=svc.sync_queue)
    if deleted or timer.past_due:
        log.info("expiry run deleted=%d past_due=%s", len(deleted), timer.past_due)
