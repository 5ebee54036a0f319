"""Frame offset tables agree with pydicom's own frame extraction."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.encaps import generate_frames

from dicomserver.frames import frame_table
from dicomserver.wado import parse_frame_list
from tests.dicomfiles import bundled

FILES = [
    "CT_small.dcm",  # native, one frame
    "rtdose.dcm",  # native, 15 frames
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # big endian
    "SC_rgb_rle_2frame.dcm",  # RLE, one fragment per frame
    "JPEG2000.dcm",  # one fragment
    "SC_rgb_jpeg_dcmd.dcm",  # JPEG baseline
    "JPEG2000-embedded-sequence-delimiter.dcm",
]


def frames_of(name: str) -> tuple[list[bytes], list[bytes]]:
    path = bundled(name)
    data = path.read_bytes()
    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        table = frame_table(f, len(data), ds, f.tell())
    assert table is not None, name
    got = [b"".join(data[o : o + n] for o, n in frame) for frame in table]
    full = pydicom.dcmread(path)
    count = int(full.get("NumberOfFrames", 1) or 1)
    if full.file_meta.TransferSyntaxUID.is_encapsulated:
        expected = list(generate_frames(full.PixelData, number_of_frames=count))
    else:
        size = full.Rows * full.Columns * full.SamplesPerPixel * full.BitsAllocated // 8
        expected = [full.PixelData[i * size : (i + 1) * size] for i in range(count)]
    return got, expected


@pytest.mark.parametrize("name", FILES)
def test_frames_match_pydicom(name: str) -> None:
    got, expected = frames_of(name)
    assert got == expected


def test_frame_lists() -> None:
    assert parse_frame_list("1,3,5") == [1, 3, 5]
    for bad in ("0", "a", "1,,2", "-1", ""):
        with pytest.raises(Exception, match="frame"):
            parse_frame_list(bad)
