"""QIDO-RS (PS3.18 §10.6): GET /v2/studies, /v2/series, /v2/instances and their study/series-scoped forms.

Each function is :mod:`dicomserver.qido`'s function of the same name (an empty result is a 204); a search
on extended query tags with indexing errors names them in the ``erroneous-dicom-attributes`` header.
The ``.../count`` forms (as dcm4chee) answer ``{"count": N}``; their literal last segment ranks
before a UID parameter in the host's routing (``studies/count`` is not ``studies/{study}``).
"""

from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Response

from dicomserver import qido
from dicomserver.auth import Action
from dicomserver.extended_query_tags import ERRONEOUS_ATTRIBUTES_HEADER

from ._http import DicomWebRequest, dicomweb, respond

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS
Found = Response


def found(results: qido.SearchResults) -> Response:
    """The search's response, with the extended query tags that have indexing errors in its header."""
    response = respond(results)
    if results.erroneous_attributes:
        response.headers[ERRONEOUS_ATTRIBUTES_HEADER] = ",".join(results.erroneous_attributes)
    return response


def _count_arguments(r: DicomWebRequest) -> dict[str, Any]:
    """What every search and count takes from the request: index, query, declared tags, partition."""
    return {
        "index": r.svc.index,
        "params": r.params,
        "extended_tags": r.svc.extended_tags,
        "partition": r.url.partition,
    }


def _search_arguments(r: DicomWebRequest) -> dict[str, Any]:
    """A search's arguments: a count's, and the Accept header and the base of the RetrieveURLs."""
    return {**_count_arguments(r), "accept": r.accept, "base_url": r.url.base}


@bp.route(route="v2/studies", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_studies(r: DicomWebRequest) -> Found:
    return found(await qido.search_for_studies(**_search_arguments(r)))


@bp.route(route="v2/series", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_series(r: DicomWebRequest) -> Found:
    return found(await qido.search_for_series(**_search_arguments(r)))


@bp.route(route="v2/studies/{study}/series", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_series_in_study(r: DicomWebRequest) -> Found:
    study = r.url.require_study().study
    return found(await qido.search_for_series(**_search_arguments(r), study_instance_uid=study))


@bp.route(route="v2/instances", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances(r: DicomWebRequest) -> Found:
    return found(await qido.search_for_instances(**_search_arguments(r)))


@bp.route(route="v2/studies/{study}/instances", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances_in_study(r: DicomWebRequest) -> Found:
    study = r.url.require_study().study
    return found(await qido.search_for_instances(**_search_arguments(r), study_instance_uid=study))


@bp.route(route="v2/studies/{study}/series/{series}/instances", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances_in_series(r: DicomWebRequest) -> Found:
    url = r.url.require_series()
    return found(
        await qido.search_for_instances(
            **_search_arguments(r), study_instance_uid=url.study, series_instance_uid=url.series
        )
    )


# -- counts -------------------------------------------------------------------------------------


Counted = dict[str, int]


@bp.route(route="v2/studies/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_studies_count(r: DicomWebRequest) -> Counted:
    return await qido.search_for_studies_count(**_count_arguments(r))


@bp.route(route="v2/series/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_series_count(r: DicomWebRequest) -> Counted:
    return await qido.search_for_series_count(**_count_arguments(r))


@bp.route(route="v2/studies/{study}/series/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_series_count_in_study(r: DicomWebRequest) -> Counted:
    study = r.url.require_study().study
    return await qido.search_for_series_count(**_count_arguments(r), study_instance_uid=study)


@bp.route(route="v2/instances/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances_count(r: DicomWebRequest) -> Counted:
    return await qido.search_for_instances_count(**_count_arguments(r))


@bp.route(route="v2/studies/{study}/instances/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances_count_in_study(r: DicomWebRequest) -> Counted:
    study = r.url.require_study().study
    return await qido.search_for_instances_count(**_count_arguments(r), study_instance_uid=study)


@bp.route(route="v2/studies/{study}/series/{series}/instances/count", methods=["GET"], auth_level=ANONYMOUS)
@dicomweb(Action.READ)
async def search_for_instances_count_in_series(r: DicomWebRequest) -> Counted:
    url = r.url.require_series()
    return await qido.search_for_instances_count(
        **_count_arguments(r), study_instance_uid=url.study, series_instance_uid=url.series
    )
