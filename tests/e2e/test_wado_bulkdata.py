"""BulkDataURI in metadata and the bulkdata resource, over HTTP with dicomweb-client."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

from tests.dicomfiles import bundled, element_at, fragmented_multiframe
from tests.stowhttp import stored

#: Explicit and implicit VR, big endian, nested binary attributes, overlays, private OB, waveforms,
#: native and encapsulated Pixel Data.
FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
]
BIG_ENDIAN_WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def store_bytes(base_url: str, data: bytes) -> pydicom.Dataset:
    stored(base_url, [data], replace=True, ok=(200, 202))
    return pydicom.dcmread(io.BytesIO(data))


def uris(metadata: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, vr, BulkDataURI) of every bulk data attribute, at any depth."""
    for key, value in metadata.items():
        if "BulkDataURI" in value:
            yield prefix + key, value["vr"], value["BulkDataURI"]
        for i, item in enumerate(value.get("Value") or [] if value.get("vr") == "SQ" else []):
            yield from uris(item, f"{prefix}{key}/{i}/")


def little_endian(value: bytes, vr: str, ds: pydicom.Dataset) -> bytes:
    """The value as bulk data carries it: little endian words whatever the file's byte order."""
    word = BIG_ENDIAN_WORDS.get(vr, 1)
    if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2" or word == 1:
        return value
    return np.frombuffer(value, f">u{word}").astype(f"<u{word}").tobytes()


@pytest.mark.parametrize("name", FILES)
def test_every_bulk_data_uri_returns_the_value(base_url: str, name: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store_bytes(base_url, bundled(name).read_bytes())
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    found = list(uris(metadata))
    assert found, "no BulkDataURI in the metadata"
    assert "InlineBinary" not in str(metadata)
    instance = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    for path, vr, uri in found:
        assert uri == f"{instance}/bulkdata/{path}"
        got = client.retrieve_bulkdata(uri)
        elem = element_at(ds, path)
        if path == "7FE00010" and ds.file_meta.TransferSyntaxUID.is_encapsulated:
            count = int(ds.get("NumberOfFrames", 1) or 1)
            assert got == list(generate_frames(ds.PixelData, number_of_frames=count))  # one part per frame
        else:
            assert got == [little_endian(elem.value, vr, ds)], path


def test_big_endian_pixel_data_comes_back_little_endian(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store_bytes(base_url, bundled("MR_small_bigendian.dcm").read_bytes())
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    (pixels,) = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"])
    assert np.array_equal(np.frombuffer(pixels, "<i2").reshape(ds.Rows, ds.Columns), ds.pixel_array)
    # A range starting inside a word is cut from the swapped words.
    (part,) = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"], byte_range=(3, 10))
    assert part == pixels[3:11]


def test_metadata_round_trips_through_pydicom_with_bulk_data(base_url: str) -> None:
    """A client rebuilds the dataset from metadata + bulk data, as PS3.18 intends."""
    client = DICOMwebClient(url=base_url)
    ds = store_bytes(base_url, bundled("examples_overlay.dcm").read_bytes())
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    # dicomweb-client returns bytearrays; pydicom wants bytes for OB/OW values.
    rebuilt = pydicom.Dataset.from_json(metadata, lambda tag, vr, uri: bytes(client.retrieve_bulkdata(uri)[0]))
    assert rebuilt.PixelData == ds.PixelData
    assert rebuilt[0x60003000].value == ds[0x60003000].value  # overlay data (a repeating group)
    icon_rebuilt, icon = rebuilt.IconImageSequence[0], ds.IconImageSequence[0]
    assert icon_rebuilt.PixelData == icon.PixelData
    assert icon_rebuilt.RedPaletteColorLookupTableData == icon.RedPaletteColorLookupTableData


def test_study_and_series_metadata_carry_bulk_data_uris(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store_bytes(base_url, bundled("CT_small.dcm").read_bytes())
    for metadata in (
        client.retrieve_study_metadata(ds.StudyInstanceUID),
        client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID),
    ):
        (pixel_uri,) = [uri for path, _, uri in uris(metadata[0]) if path == "7FE00010"]
        assert client.retrieve_bulkdata(pixel_uri) == [ds.PixelData]


def test_ranges_media_types_and_errors(base_url: str) -> None:
    ds = store_bytes(base_url, bundled("CT_small.dcm").read_bytes())
    uri = (
        f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"
    )
    client = DICOMwebClient(url=base_url)
    assert client.retrieve_bulkdata(uri, byte_range=(100, 199)) == [ds.PixelData[100:200]]

    single = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=-16"})
    assert single.status_code == 206
    assert single.content == ds.PixelData[-16:]
    assert (
        single.headers["content-range"] == f"bytes {len(ds.PixelData) - 16}-{len(ds.PixelData) - 1}/{len(ds.PixelData)}"
    )

    whole = httpx.get(uri, headers={"Accept": "application/octet-stream"})
    assert whole.status_code == 200 and whole.content == ds.PixelData
    assert whole.headers["content-length"] == str(len(ds.PixelData))

    beyond = httpx.get(uri, headers={"Range": f"bytes={len(ds.PixelData)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(ds.PixelData)}"
    assert httpx.get(uri, headers={"Accept": "image/png"}).status_code == 406
    assert httpx.get(uri.replace("7FE00010", "00100010")).status_code == 404  # not a binary attribute
    assert httpx.get(uri.replace("7FE00010", "7FE0001G")).status_code == 400
    assert httpx.get(uri.replace("7FE00010", "00880200/0/7FE00010")).status_code == 404
    missing = uri.replace(ds.SOPInstanceUID, ds.SOPInstanceUID + ".9")
    response = httpx.get(missing)
    assert response.status_code == 404 and "not found" in response.json()["message"]


@pytest.mark.parametrize("codec", ["jpeg2000", "jpeg"])
def test_frames_spanning_fragments_without_offset_table(base_url: str, codec: str) -> None:
    data, expected = fragmented_multiframe(codec, frames=3, fragments_per_frame=3)
    ds = store_bytes(base_url, data)
    client = DICOMwebClient(url=base_url)
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[3, 1],
        media_types=(("application/octet-stream", "*"),),
    )
    assert got == [expected[2], expected[0]]
    rendered = client.retrieve_instance_frames_rendered(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[2], media_types=("image/png",)
    )
    assert rendered.startswith(b"\x89PNG")
