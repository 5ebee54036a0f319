"""Transcoding never changes identity: every stored transfer syntax × every target keeps every UID and attribute.

Only the pixel data, the transfer syntax and (for colour decoded to RGB) the Photometric
Interpretation and Planar Configuration may differ; the pixels themselves are equal after
decoding (both targets are lossless).  The per-frame path (frames and rendered) gives the
frames of the whole-instance result.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from dicomserver.errors import NotAcceptable
from dicomserver.ingest import ParsedInstance, read_instance
from dicomserver.transcode import TARGETS, TRANSCODABLE, frame_header, transcode, transcode_frame
from tests.dicomfiles import TRANSCODED_META_TAGS, bundled, fragmented_multiframe, identity_view, relabelled

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def _bundled(name: str) -> bytes:
    """A bundled file, given the identifying attributes the service requires when it lacks them."""
    ds = pydicom.dcmread(bundled(name))
    if all(keyword in ds for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID")):
        return bundled(name).read_bytes()
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or "1.2.826.0.1.3680043.8.498.2"
    ds.PatientID = ds.get("PatientID") or "IDENTITY"
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def with_trailing_padding(name: str) -> bytes:
    """A bundled file with Data Set Trailing Padding, an element after Pixel Data."""
    ds = pydicom.dcmread(io.BytesIO(_bundled(name)))
    ds.DataSetTrailingPadding = b"\x00" * 6
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


#: (name, Part 10 bytes) covering every stored transfer syntax the service transcodes from.
SOURCES: list[tuple[str, bytes]] = [
    ("implicit-le", _bundled("MR_small_implicit.dcm")),
    ("implicit-le-32bit-15-frames", _bundled("rtdose.dcm")),
    ("explicit-le", _bundled("CT_small.dcm")),
    ("explicit-le-rgb", _bundled("SC_rgb_small_odd.dcm")),
    ("deflated", _bundled("image_dfl.dcm")),
    ("explicit-be", _bundled("MR_small_bigendian.dcm")),
    ("explicit-be-rgb", _bundled("ExplVR_BigEnd.dcm")),
    ("explicit-be-32bit-15-frames", _bundled("rtdose_expb.dcm")),
    ("jpeg-baseline-ybr", _bundled("SC_rgb_jpeg_dcmtk.dcm")),
    ("jpeg-baseline-30-frames", _bundled("examples_ybr_color.dcm")),
    ("jpeg-extended-12bit", _bundled("JPGExtended.dcm")),
    ("jpeg-lossless-4.57", relabelled("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.57")),
    ("jpeg-lossless-sv1", _bundled("SC_rgb_jpeg_gdcm.dcm")),
    ("jpeg-ls-lossless", _bundled("MR_small_jpeg_ls_lossless.dcm")),
    ("jpeg-ls-near-lossless", _bundled("SC_rgb_jls_lossy_line.dcm")),
    ("jpeg2000-lossless", _bundled("MR_small_jp2klossless.dcm")),
    ("jpeg2000-lossless-fragmented-3-frames", fragmented_multiframe("jpeg2000")[0]),
    ("jpeg2000-lossy", _bundled("JPEG2000.dcm")),
    ("rle", _bundled("MR_small_RLE.dcm")),
    ("rle-rgb-2-frames", _bundled("SC_rgb_rle_2frame.dcm")),
    ("rle-with-elements-after-pixel-data", with_trailing_padding("MR_small_RLE.dcm")),
    ("explicit-le-without-pixel-data", _bundled("test-SR.dcm")),
]
CASES = [(name, data, target) for name, data in SOURCES for target in sorted(TARGETS)]


def read(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def parsed(data: bytes) -> ParsedInstance:
    result = read_instance(io.BytesIO(data), len(data), None, "Microsoft.Default")
    assert isinstance(result, ParsedInstance)
    return result


def too_small_for_jpeg2000(ds: Dataset) -> bool:
    return "PixelData" in ds and min(int(ds.Rows), int(ds.Columns)) < 32


def test_every_source_is_transcodable() -> None:
    for _, data in SOURCES:
        assert str(read(data).file_meta.TransferSyntaxUID) in TRANSCODABLE
    covered = {str(read(data).file_meta.TransferSyntaxUID) for _, data in SOURCES}
    assert covered == set(TRANSCODABLE)


@pytest.mark.parametrize(("name", "data", "target"), CASES, ids=[f"{c[0]}-to-{c[2]}" for c in CASES])
def test_transcoding_keeps_every_uid_and_attribute(name: str, data: bytes, target: str) -> None:
    source = read(data)
    if target == JPEG2000_LOSSLESS and too_small_for_jpeg2000(source):
        with pytest.raises(NotAcceptable, match="32 x 32"):
            transcode(data, target)
        return
    out = read(transcode(data, target))
    assert out.file_meta.TransferSyntaxUID == target
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        assert out[keyword].value == source[keyword].value, keyword
    assert out.file_meta.MediaStorageSOPInstanceUID == source.file_meta.MediaStorageSOPInstanceUID
    assert identity_view(out) == identity_view(source)  # all but the pixel data and its description
    assert identity_view(out.file_meta, TRANSCODED_META_TAGS) == identity_view(source.file_meta, TRANSCODED_META_TAGS)
    if "PixelData" not in source:
        assert "PixelData" not in out
        return
    if int(source.SamplesPerPixel) == 3:
        assert (out.PhotometricInterpretation, out.PlanarConfiguration) == ("RGB", 0)
    else:
        assert out.PhotometricInterpretation == source.PhotometricInterpretation
    assert np.array_equal(out.pixel_array, source.pixel_array)


@pytest.mark.parametrize(("name", "data", "target"), CASES, ids=[f"{c[0]}-to-{c[2]}" for c in CASES])
def test_frame_by_frame_transcoding_gives_the_frames_of_the_instance(name: str, data: bytes, target: str) -> None:
    source = read(data)
    if target == JPEG2000_LOSSLESS and too_small_for_jpeg2000(source):
        return  # refused, as the whole instance is
    instance = parsed(data)
    if not instance.frames:  # deflated (no frame table), or no pixel data
        assert source.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99" or "PixelData" not in source
        return
    header = frame_header(instance.metadata)
    assert header is not None
    whole = read(transcode(data, target))
    count = len(instance.frames)
    if target == EXPLICIT_LE:
        size = int(whole.Rows) * int(whole.Columns) * int(whole.SamplesPerPixel) * int(whole.BitsAllocated) // 8
        expected = [whole.PixelData[i * size : (i + 1) * size] for i in range(count)]
    else:
        expected = list(generate_frames(whole.PixelData, number_of_frames=count))
    for number, ranges in enumerate(instance.frames):
        frame = b"".join(data[offset : offset + length] for offset, length in ranges)
        got = transcode_frame(header, instance.transfer_syntax_uid, frame, target)
        assert got == expected[number], number
