"""PS3.18 Table 10.6.1-5 keys, orderby and /count over HTTP, with the Python dicomweb-client."""

from __future__ import annotations

import io

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.dicomfiles import make_instance


def test_new_keys_orderby_and_count(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, series = generate_uid(), generate_uid()
    sid = f"E2E-{study[-8:]}"
    datasets = [
        pydicom.dcmread(
            io.BytesIO(
                make_instance(
                    study=study, series=series, StudyID=sid, StudyTime="071500", SeriesNumber=9, InstanceNumber=n
                )
            )
        )
        for n in (3, 1, 2)
    ]
    assert len(client.store_instances(datasets).ReferencedSOPSequence) == 3
    (found,) = client.search_for_studies(search_filters={"StudyID": sid, "StudyTime": "0700-0730"})
    assert found["0020000D"]["Value"] == [study]
    (found_series,) = client.search_for_series(study, search_filters={"SeriesNumber": "9"})
    assert found_series["0020000E"]["Value"] == [series]
    ordered = client.search_for_instances(study, series, search_filters={"orderby": "-InstanceNumber"})
    assert [r["00200013"]["Value"][0] for r in ordered] == [3, 2, 1]
    for path, expected in [
        (f"/studies/count?StudyID={sid}", 1),
        (f"/studies/{study}/series/count", 1),
        (f"/studies/{study}/series/{series}/instances/count?InstanceNumber=2", 1),
        (f"/instances/count?StudyID={sid}", 3),
    ]:
        response = httpx.get(base_url + path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"count": expected}, path
    assert httpx.get(base_url + "/studies/count?orderby=Nonsense").status_code == 400
