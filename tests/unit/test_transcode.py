"""Frames decoded from their own bytes give what decoding the whole file gives."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from dicomserver.errors import NotAcceptable
from dicomserver.ingest import ParsedInstance, read_instance
from dicomserver.transcode import frame_header, render, render_frame, transcode, transcode_frame
from tests.dicomfiles import bundled, make_instance

FILES = [
    "CT_small.dcm",  # native, rescale + window
    "rtdose.dcm",  # native, 15 frames, 32 bit
    "MR_small_bigendian.dcm",
    "SC_rgb_rle_2frame.dcm",  # RLE colour
    "SC_rgb_jpeg.dcm",  # JPEG baseline colour
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


def parsed(data: bytes) -> ParsedInstance:
    result = read_instance(io.BytesIO(data), len(data), None, "Microsoft.Default")
    assert isinstance(result, ParsedInstance)
    return result


@pytest.mark.parametrize("name", FILES)
def test_rendering_one_frame_matches_rendering_the_whole_file(name: str) -> None:
    data = bundled(name).read_bytes()
    instance = parsed(data)
    header = frame_header(instance.metadata)
    assert header is not None and instance.frames
    for number in sorted({1, len(instance.frames)}):
        frame = b"".join(data[o : o + n] for o, n in instance.frames[number - 1])
        one = render_frame(header, instance.transfer_syntax_uid, frame, "image/png", 100)
        assert one == render(data, number, "image/png", 100), number


@pytest.mark.parametrize("name", FILES)
def test_decoded_frames_equal_pydicom_pixels(name: str) -> None:
    data = bundled(name).read_bytes()
    instance = parsed(data)
    header = frame_header(instance.metadata)
    assert header is not None and instance.frames
    pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
    expected = list(pixels) if len(instance.frames) > 1 else [pixels]
    for ranges, want in zip(instance.frames, expected, strict=True):
        frame = b"".join(data[o : o + n] for o, n in ranges)
        got = transcode_frame(header, instance.transfer_syntax_uid, frame, "1.2.840.10008.1.2.1")
        assert np.array_equal(np.frombuffer(got, want.dtype.newbyteorder("<")).reshape(want.shape), want)


def test_headers_needing_bulk_data_are_refused() -> None:
    metadata = parsed(bundled("CT_small.dcm").read_bytes()).metadata
    with_lut = dict(metadata)
    with_lut["00283010"] = {"vr": "SQ", "Value": [{"00283006": {"vr": "OW", "BulkDataURI": "x"}}]}
    assert frame_header(with_lut) is None
    assert frame_header({"00280010": {"vr": "US", "Value": [8]}}) is None  # no Columns, BitsAllocated


def test_small_images_are_not_encoded_as_jpeg_2000() -> None:
    with pytest.raises(NotAcceptable, match="32 x 32"):
        transcode(make_instance(rows=8, columns=8), "1.2.840.10008.1.2.4.90")
    out = pydicom.dcmread(io.BytesIO(transcode(make_instance(rows=32, columns=40), "1.2.840.10008.1.2.4.90")))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert out.pixel_array.shape == (32, 40)
