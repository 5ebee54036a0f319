"""Store, search and retrieve over HTTP through the local host, with dicomweb-client."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from tests.dicomfiles import bundled, make_instance, multipart_body, zero_preamble
from tests.stowhttp import stored, stow

#: Bundled pydicom files across transfer syntaxes and modalities.
BUNDLED = [
    "CT_small.dcm",  # Explicit VR Little Endian
    "MR_small.dcm",
    "rtplan.dcm",  # Implicit VR Little Endian
    "MR_small_RLE.dcm",  # RLE Lossless
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmd.dcm",  # JPEG baseline
    "rtdose.dcm",  # multi-frame
    "MR_small_implicit.dcm",
]


@pytest.fixture
def client(base_url: str) -> DICOMwebClient:
    return DICOMwebClient(url=base_url)


def post(base_url: str, parts: list[bytes], study: str | None = None) -> httpx.Response:
    return stow(base_url, parts, study=study, headers={"Accept": "application/dicom+json"})


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_file_round_trips_byte_for_byte(base_url: str, client: DICOMwebClient, name: str) -> None:
    data = bundled(name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    # Some bundled files share UIDs (MR_small and its re-encodings): start from a clean study.
    assert httpx.delete(f"{base_url}/studies/{ds.StudyInstanceUID}").status_code in (204, 404)
    response = post(base_url, [data])
    assert response.status_code in (200, 202), response.text  # 202: stored with validation warnings
    instance_url = (
        f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    raw = httpx.get(instance_url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=60)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/dicom")
    assert raw.content == zero_preamble(data)

    got = client.retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=(("application/dicom", "*"),)
    )
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.get("PixelData") == ds.get("PixelData")

    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert metadata["00080018"]["Value"] == [ds.SOPInstanceUID]
    if "PixelData" in ds:
        assert set(metadata["7FE00010"]) == {"vr", "BulkDataURI"}  # never inline pixel data


def test_store_search_retrieve_with_dicomweb_client(client: DICOMwebClient) -> None:
    study = generate_uid()
    patient = f"E2E-{study[-8:]}"
    datasets = [
        pydicom.dcmread(io.BytesIO(make_instance(study=study, patient_id=patient, modality=m, patient_name="Ærø^Åse")))
        for m in ("CT", "MR")
    ]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 2

    studies = client.search_for_studies(
        search_filters={"PatientID": patient}, fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"]
    )
    assert len(studies) == 1
    found = pydicom.Dataset.from_json(studies[0])
    assert found.StudyInstanceUID == study
    assert sorted(found.ModalitiesInStudy) == ["CT", "MR"]
    assert found.NumberOfStudyRelatedInstances == 2

    assert len(client.search_for_studies(search_filters={"PatientName": "aero"}, fuzzymatching=True)) == 0
    assert len(client.search_for_studies(search_filters={"PatientName": "ÆRØ^åse", "PatientID": patient})) == 1
    assert (
        len(client.search_for_studies(search_filters={"PatientName": "ås", "PatientID": patient}, fuzzymatching=True))
        == 1
    )
    assert client.search_for_studies(search_filters={"StudyDate": "20240101-20240131", "PatientID": patient})
    assert client.search_for_studies(search_filters={"StudyDate": "20250101-", "PatientID": patient}) == []
    assert client.search_for_studies(search_filters={"ModalitiesInStudy": "MR", "PatientID": patient})

    instance = client.retrieve_instance(study, datasets[1].SeriesInstanceUID, datasets[1].SOPInstanceUID)
    assert instance.Modality == "MR"


def test_stow_status_codes_over_http(base_url: str) -> None:
    data = make_instance()
    assert post(base_url, [data]).status_code == 200
    duplicate = post(base_url, [data])
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"].startswith("application/dicom+json")
    assert duplicate.json()["00081198"]["Value"][0]["00081197"]["Value"] == [45070]
    mixed = post(base_url, [make_instance(), make_instance(sop="abc.123")])
    assert mixed.status_code == 202
    wrong_study = post(base_url, [make_instance()], study=generate_uid())
    assert wrong_study.status_code == 409
    assert wrong_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [43265]
    assert (
        httpx.post(f"{base_url}/studies", content=b"{}", headers={"Content-Type": "application/json"}).status_code
        == 415
    )
    body, ctype = multipart_body([make_instance()])
    not_acceptable = httpx.post(
        f"{base_url}/studies", content=body, headers={"Content-Type": ctype, "Accept": "image/png"}
    )
    assert not_acceptable.status_code == 406


def test_qido_errors_and_empty_results(base_url: str) -> None:
    bad = httpx.get(f"{base_url}/studies", params={"NotAnAttribute": "1"})
    assert bad.status_code == 400
    assert "NotAnAttribute" in bad.json()["message"]
    assert httpx.get(f"{base_url}/studies", params={"limit": "500"}).status_code == 400
    assert httpx.get(f"{base_url}/studies", params={"PatientID": "no-such-patient"}).status_code == 204


def test_qido_answers_406_when_accept_excludes_dicom_json_and_400_for_unbounded_requests(base_url: str) -> None:
    assert httpx.get(f"{base_url}/studies", headers={"Accept": "application/dicom"}).status_code == 406
    assert httpx.get(f"{base_url}/series", headers={"Accept": "text/html"}).status_code == 406
    for accept in ("application/dicom+json", "application/json", "*/*", "application/*"):
        assert httpx.get(f"{base_url}/studies", headers={"Accept": accept}).status_code in (200, 204)
    assert httpx.get(f"{base_url}/studies", params={"offset": str(10**12)}).status_code == 400
    wildcards = httpx.get(f"{base_url}/studies", params={"StudyDescription": "*a*a*a*a*a*a*a*ab"})
    assert wildcards.status_code == 400 and "wildcards" in wildcards.json()["message"]


def test_retrieve_errors(base_url: str, client: DICOMwebClient) -> None:
    missing = f"{base_url}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    assert httpx.get(missing, headers={"Accept": "application/dicom; transfer-syntax=*"}).status_code == 404
    assert httpx.get(missing + "/metadata").status_code == 404
    bad_uid = f"{base_url}/studies/1.2.3/series/{'9' * 65}/instances/1.2.3.4.5"
    assert httpx.get(bad_uid).status_code == 400
    with pytest.raises(HTTPError):
        client.retrieve_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")


def test_metadata_etag_gives_304(base_url: str) -> None:
    data = make_instance()
    assert post(base_url, [data]).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(data))
    url = (
        f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/metadata"
    )
    first = httpx.get(url, headers={"Accept": "application/dicom+json"})
    assert first.status_code == 200 and first.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304


def test_transcoding_request_that_cannot_be_served_is_406(base_url: str) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    post(base_url, [data])
    ds = pydicom.dcmread(io.BytesIO(data))
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    to_jpeg = {"Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"}  # no encoder: not offered
    assert httpx.get(url, headers=to_jpeg).status_code == 406
    assert httpx.get(url, headers={"Accept": "image/png"}).status_code == 406


TRANSCODED = ["JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPGExtended.dcm"]


@pytest.mark.parametrize("name", TRANSCODED)
def test_default_retrieve_transcodes_to_explicit_vr_little_endian(base_url: str, name: str) -> None:
    data = bundled(name).read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    httpx.delete(f"{base_url}/studies/{original.StudyInstanceUID}")
    assert post(base_url, [data]).status_code in (200, 202)
    client = DICOMwebClient(url=base_url)
    got = client.retrieve_instance(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (got.pixel_array == original.pixel_array).all()  # lossless decode of what was stored
    assert got.PatientName == original.PatientName


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_implicit.dcm", "SC_rgb_rle_2frame.dcm"])
def test_retrieve_transcodes_to_jpeg_2000_lossless(base_url: str, name: str) -> None:
    data = bundled(name).read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    httpx.delete(f"{base_url}/studies/{original.StudyInstanceUID}")
    assert post(base_url, [data]).status_code in (200, 202)
    client = DICOMwebClient(url=base_url)
    jp2 = (("application/dicom", "1.2.840.10008.1.2.4.90"),)
    got = client.retrieve_instance(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID, media_types=jp2
    )
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(got.pixel_array, original.pixel_array)  # lossless
    (in_study,) = client.retrieve_study(original.StudyInstanceUID, media_types=jp2)
    assert in_study.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(in_study.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    ("accept", "magic"), [("image/jpeg", b"\xff\xd8"), ("image/png", b"\x89PNG"), (None, b"\xff\xd8")]
)
def test_rendered_instance_and_frame(base_url: str, accept: str | None, magic: bytes) -> None:
    data = bundled("rtdose.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    post(base_url, [data])
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    headers = {"Accept": accept} if accept else {}
    for path in ("/rendered", "/frames/3/rendered"):
        response = httpx.get(url + path, headers=headers, params={"quality": "80"})
        assert response.status_code == 200, response.text
        assert response.content.startswith(magic)
    from PIL import Image

    image = Image.open(io.BytesIO(httpx.get(url + "/frames/2/rendered", headers={"Accept": "image/png"}).content))
    assert image.size == (ds.Columns, ds.Rows)
    assert httpx.get(url + "/frames/99/rendered").status_code == 404
    assert httpx.get(url + "/rendered", params={"quality": "0"}).status_code == 400


def test_rendered_needs_pixel_data(base_url: str) -> None:
    data = bundled("rtplan.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    post(base_url, [data])
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    assert httpx.get(url + "/rendered").status_code == 404


def test_rendered_with_dicomweb_client(base_url: str, client: DICOMwebClient) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    post(base_url, [data])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    jpeg = client.retrieve_instance_rendered(*uids, media_types=("image/jpeg",), params={"quality": 90})
    assert jpeg.startswith(b"\xff\xd8")
    png = client.retrieve_instance_frames_rendered(*uids, frame_numbers=[1], media_types=("image/png",))
    assert png.startswith(b"\x89PNG")


def test_path_uids_that_are_not_digits_and_dots_are_a_400_everywhere(base_url: str) -> None:
    data = make_instance()
    body, ctype = multipart_body([data])
    headers = {"Content-Type": ctype, "Accept": "application/dicom+json"}
    assert httpx.post(f"{base_url}/studies/1.2.abc", content=body, headers=headers).status_code == 400
    for path in ("studies/abc", "studies/1.2.3/series/x-1", "studies/1.2/series/1.3/instances/1.4a/metadata"):
        assert httpx.get(f"{base_url}/{path}").status_code == 400, path
    assert httpx.delete(f"{base_url}/studies/1.2.abc").status_code == 400
    assert httpx.get(f"{base_url}/studies/1.2.3.4.5.6.7.8.9/metadata").status_code == 404  # well formed, absent


def test_the_accept_query_parameter_takes_priority_over_the_header(base_url: str) -> None:
    """PS3.18 §8.3.3.1 / §8.7.8.1: ``accept`` in the query overrides the Accept header, on every transaction."""
    (ds,) = stored(base_url, [make_instance()])
    instance = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    png = httpx.get(f"{instance}/rendered", params={"accept": "image/png"}, headers={"Accept": "image/jpeg"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    refused = httpx.get(f"{instance}/metadata", params={"accept": "image/png"}, headers={"Accept": "*/*"})
    assert refused.status_code == 406
    found = httpx.get(
        f"{base_url}/studies",
        params={"StudyInstanceUID": ds.StudyInstanceUID, "accept": "application/dicom+json", "charset": "utf-8"},
        headers={"Accept": "text/html"},
    )
    assert found.status_code == 200 and found.json()[0]["0020000D"]["Value"] == [ds.StudyInstanceUID]
    single = httpx.get(instance, params={"accept": "application/dicom; transfer-syntax=*"})
    assert single.status_code == 200 and single.headers["content-type"].startswith("application/dicom")
