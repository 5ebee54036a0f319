"""Study and series retrieval and metadata over HTTP with dicomweb-client."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from tests.dicomfiles import bundled, make_instance
from tests.stowhttp import stored


def stored_study(base_url: str, count_per_series: tuple[int, ...] = (2, 1)) -> tuple[str, list[bytes]]:
    study = generate_uid()
    parts: list[bytes] = []
    for count in count_per_series:
        series = generate_uid()
        parts += [make_instance(study=study, series=series, InstanceNumber=n + 1) for n in range(count)]
    stored(base_url, parts)
    return study, parts


def test_retrieve_study_and_series_return_every_instance(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, parts = stored_study(base_url)
    sent = {pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID: pydicom.dcmread(io.BytesIO(p)) for p in parts}
    got = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted(sent)
    for ds in got:
        assert ds.PixelData == sent[ds.SOPInstanceUID].PixelData
    series = next(
        ds.SeriesInstanceUID for ds in got if sum(d.SeriesInstanceUID == ds.SeriesInstanceUID for d in got) == 2
    )
    assert len(client.retrieve_series(study, series, media_types=(("application/dicom", "*"),))) == 2
    assert len(client.retrieve_study(study)) == 3  # default: explicit VR little endian, which they are


def test_study_and_series_metadata_with_etag(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, parts = stored_study(base_url)
    metadata = client.retrieve_study_metadata(study)
    assert len(metadata) == 3 and all(set(m["7FE00010"]) == {"vr", "BulkDataURI"} for m in metadata)
    series = metadata[0]["0020000E"]["Value"][0]
    assert all(m["0020000E"]["Value"] == [series] for m in client.retrieve_series_metadata(study, series))
    first = httpx.get(f"{base_url}/studies/{study}/metadata", headers={"Accept": "application/dicom+json"})
    assert first.status_code == 200 and len(first.json()) == 3
    again = httpx.get(f"{base_url}/studies/{study}/metadata", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    stored(base_url, [make_instance(study=study)])
    changed = httpx.get(f"{base_url}/studies/{study}/metadata", headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and len(changed.json()) == 4


def test_study_retrieve_errors(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    with pytest.raises(HTTPError) as missing:
        client.retrieve_study(generate_uid())
    assert missing.value.response.status_code == 404
    study, _ = stored_study(base_url)
    assert httpx.get(f"{base_url}/studies/{study}/series/{generate_uid()}/metadata").status_code == 404
    single = httpx.get(f"{base_url}/studies/{study}", headers={"Accept": "application/dicom"})
    assert single.status_code == 406  # a study is never single-part
    data = bundled("JPEG2000.dcm").read_bytes()
    (ds,) = stored(base_url, [data], replace=True, ok=(200, 202))
    default_ts = httpx.get(
        f"{base_url}/studies/{ds.StudyInstanceUID}", headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert default_ts.status_code == 200  # transcoded from JPEG 2000 to explicit VR little endian
    assert "transfer-syntax=1.2.840.10008.1.2.1" in default_ts.content[:300].decode("latin-1")
