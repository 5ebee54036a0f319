"""Frames over HTTP with dicomweb-client: byte-exact, served by ranged reads."""

from __future__ import annotations

import io

import httpx
import numpy as np
import openjpeg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

from tests.dicomfiles import bundled
from tests.stowhttp import stored


def store(base_url: str, name: str) -> pydicom.Dataset:
    data = bundled(name).read_bytes()
    stored(base_url, [data], replace=True, ok=(200, 202))
    return pydicom.dcmread(io.BytesIO(data))


def expected_frames(ds: pydicom.Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


@pytest.mark.parametrize("name", ["rtdose.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm"])
def test_frames_are_byte_exact(base_url: str, name: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store(base_url, name)
    frames = expected_frames(ds)
    wanted = [1, len(frames)] if len(frames) > 1 else [1]
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=wanted,
        media_types=(("application/octet-stream", "*"),),
    )
    assert got == [frames[n - 1] for n in wanted]


def test_frame_errors(base_url: str) -> None:
    ds = store(base_url, "rtdose.dcm")
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    octets = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    assert httpx.get(f"{url}/frames/999", headers=octets).status_code == 404
    assert httpx.get(f"{url}/frames/0", headers=octets).status_code == 400
    assert httpx.get(f"{url}/frames/a,b", headers=octets).status_code == 400
    single = httpx.get(f"{url}/frames/2", headers={"Accept": "application/octet-stream; transfer-syntax=*"})
    assert single.status_code == 200 and single.content == expected_frames(ds)[1]
    jp2 = store(base_url, "JPEG2000.dcm")
    jp2_url = f"{base_url}/studies/{jp2.StudyInstanceUID}/series/{jp2.SeriesInstanceUID}/instances/{jp2.SOPInstanceUID}"
    to_jpeg = httpx.get(f"{jp2_url}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert to_jpeg.status_code == 406  # no JPEG baseline encoder
    small = httpx.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert small.status_code == 406 and "JPEG 2000" in small.json()["message"]  # 10 x 10: below 32 x 32
    jp2_accept = f'multipart/related; type="image/jp2"; transfer-syntax={jp2.file_meta.TransferSyntaxUID}'
    as_jp2 = httpx.get(f"{jp2_url}/frames/1", headers={"Accept": jp2_accept})
    assert as_jp2.status_code == 200, as_jp2.text
    assert "image/jp2" in as_jp2.text[:400]


#: Compressed and big-endian instances whose frames are decoded on request (Azure: octet-stream defaults
#: to Explicit VR Little Endian).
DECODED = [
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "SC_rgb_rle_2frame.dcm",  # RLE, colour, 2 frames
    "SC_rgb_jpeg.dcm",  # JPEG baseline, colour
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "JPGExtended.dcm",  # JPEG extended, 12 bit
    "MR_small_bigendian.dcm",  # native, big endian
]


def pixel_frames(ds: pydicom.Dataset) -> list[np.ndarray]:
    pixels = ds.pixel_array
    return list(pixels) if int(ds.get("NumberOfFrames", 1) or 1) > 1 else [pixels]


@pytest.mark.parametrize("name", DECODED)
def test_frames_are_decoded_to_explicit_vr_little_endian(base_url: str, name: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store(base_url, name)
    expected = pixel_frames(ds)
    numbers = list(range(1, len(expected) + 1))
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=numbers,
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert len(got) == len(expected)
    for frame, pixels in zip(got, expected, strict=True):
        decoded = np.frombuffer(frame, dtype=pixels.dtype.newbyteorder("<")).reshape(pixels.shape)
        assert np.array_equal(decoded, pixels)
    # The default Accept of the frames resource is the same thing.
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    default = httpx.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert default.status_code == 200
    assert "transfer-syntax=1.2.840.10008.1.2.1" in default.text[:300]


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "MR_small_implicit.dcm", "JPGExtended.dcm"])
def test_frames_are_encoded_as_jpeg_2000_on_request(base_url: str, name: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store(base_url, name)
    expected = pixel_frames(ds)
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=list(range(1, len(expected) + 1)),
        media_types=(("image/jp2", "1.2.840.10008.1.2.4.90"),),
    )
    for codestream, pixels in zip(got, expected, strict=True):
        assert bytes(codestream[:4]) == b"\xff\x4f\xff\x51"  # a J2K codestream
        assert np.array_equal(openjpeg.decode(bytes(codestream)), pixels)  # lossless


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("SC_rgb_jpeg.dcm", "image/jpeg"),
        ("MR_small_jpeg_ls_lossless.dcm", "image/jls"),
        ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
        ("JPEG2000.dcm", "image/jp2"),
    ],
)
def test_compressed_frames_in_their_image_media_type(base_url: str, name: str, media_type: str) -> None:
    client = DICOMwebClient(url=base_url)
    ds = store(base_url, name)
    frames = expected_frames(ds)
    ts = str(ds.file_meta.TransferSyntaxUID)
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=list(range(1, len(frames) + 1)),
        media_types=((media_type, ts),),
    )
    assert got == frames  # as stored, byte for byte
    url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    plain = httpx.get(f"{url}/frames/1", headers={"Accept": f'multipart/related; type="{media_type}"'})
    assert plain.status_code == 200  # no transfer-syntax: as stored (image/jp2: 4.90, encoded if need be)
    other = "image/jls" if media_type != "image/jls" else "image/jpeg"
    assert httpx.get(f"{url}/frames/1", headers={"Accept": f'multipart/related; type="{other}"'}).status_code == 406
