"""Data partitions (Azure v2): GET /v2/partitions → :func:`dicomserver.partitions.get_partitions`.

The partitioned twins of the DICOMweb functions (``/v2/partitions/{partition}/studies...``) are
built by :func:`functions._http.in_partitions`.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import partitions
from dicomserver.auth import Action

from ._http import DicomWebRequest, dicomweb, plain_json

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


@bp.route(route="v2/partitions", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def get_partitions(r: DicomWebRequest) -> Response:
    found = await partitions.get_partitions(catalog=r.svc.partitions, enabled=r.svc.settings.data_partitions_enabled)
    return plain_json(found)
