"""Frame offset tables agree with pydicom's own frame extraction."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.encaps import generate_frames

from dicomserver.frames import frame_table
from dicomserver.wado import parse_frame_list
from tests.dicomfiles import bundled, fragmented_multiframe

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


@pytest.mark.parametrize("codec", ["jpeg2000", "jpeg"])
def test_frames_spanning_fragments_without_offset_table(codec: str) -> None:
    data, expected = fragmented_multiframe(codec, frames=3, fragments_per_frame=3)
    f = io.BytesIO(data)
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    table = frame_table(f, len(data), ds, f.tell())
    assert table is not None
    assert [len(frame) for frame in table] == [3, 3, 3]
    assert [b"".join(data[o : o + n] for o, n in frame) for frame in table] == expected


def test_frames_are_not_guessed_when_markers_do_not_add_up() -> None:
    data, expected = fragmented_multiframe("jpeg2000", frames=3, fragments_per_frame=2)
    f = io.BytesIO(data)
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    ds.NumberOfFrames = 4  # the file says 4 frames, the codestreams say 3
    assert frame_table(f, len(data), ds, f.tell()) is None


def test_extended_offset_table_locates_frames() -> None:
    data, expected = fragmented_multiframe("jpeg2000", frames=3, fragments_per_frame=2)
    ds = pydicom.dcmread(io.BytesIO(data))
    # Frame-start markers spoiled: only the Extended Offset Table can tell where frames begin.
    offsets, position = [], 0
    body = b""
    for frame in expected:
        offsets.append(position)
        for piece in (b"\x00\x01" + frame[2:100], frame[100:]):
            body += b"\xfe\xff\x00\xe0" + len(piece).to_bytes(4, "little") + piece
            position += 8 + len(piece)
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + body + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds["PixelData"].is_undefined_length = True
    ds.ExtendedOffsetTable = b"".join(o.to_bytes(8, "little") for o in offsets)
    ds.ExtendedOffsetTableLengths = b"".join(len(frame).to_bytes(8, "little") for frame in expected)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    stored = out.getvalue()
    f = io.BytesIO(stored)
    header = pydicom.dcmread(f, stop_before_pixels=True)
    table = frame_table(f, len(stored), header, f.tell())
    assert table is not None and [len(frame) for frame in table] == [2, 2, 2]
    got = [b"".join(stored[o : o + n] for o, n in frame) for frame in table]
    assert got == [b"\x00\x01" + frame[2:] for frame in expected]


def test_a_file_that_ends_where_the_sequence_delimiter_belongs_keeps_its_frames() -> None:
    data, expected = fragmented_multiframe("jpeg2000", frames=3, fragments_per_frame=1)
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    cut = data[:-8]  # pydicom reads it too
    f = io.BytesIO(cut)
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    table = frame_table(f, len(cut), ds, f.tell())
    assert table is not None
    assert [b"".join(cut[o : o + n] for o, n in frame) for frame in table] == expected


def test_pixel_data_that_runs_past_the_end_of_the_file_has_no_frames() -> None:
    data = bundled("CT_small.dcm").read_bytes()
    f = io.BytesIO(data[:-1000])
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    assert frame_table(f, len(data) - 1000, ds, f.tell()) is None
    f = io.BytesIO(data)
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    assert frame_table(f, len(data), ds, f.tell() - 2) is None  # not at a Pixel Data header
