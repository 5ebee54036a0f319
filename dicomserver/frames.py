"""Frame offset tables: where each frame's bytes are in the stored file, computed at store time.

A frame is a list of byte ranges ``[offset, length]`` in the instance blob:

* native Pixel Data: frame *i* is one range of ``Rows × Columns × SamplesPerPixel
  × BitsAllocated / 8`` bytes (frames that do not end on a byte boundary, e.g.
  odd-sized 1-bit frames, are not supported and yield no table);
* encapsulated Pixel Data (PS3.5 Annex A.4): the item values after the Basic
  Offset Table; one fragment per frame, all fragments for a single frame, or
  fragments grouped by a non-empty Basic Offset Table or an Extended Offset
  Table.  With neither, and more fragments than frames, a frame starts at each
  fragment that opens a JPEG or JPEG 2000 codestream (SOI ``FFD8``, SOC+SIZ
  ``FF4FFF51`` or a JP2 signature box) right after a fragment that closed one
  (EOI/EOC ``FFD9``, maybe padded with one zero byte) — used only when that finds
  exactly the number of frames.  Otherwise no table is stored (frame retrieval
  then answers 404 with a message).

Frame retrieval reads exactly these ranges (ranged blob reads); the rest of
the file is never read.
"""

from __future__ import annotations

import struct
from typing import IO

from pydicom.dataset import Dataset

from .bulkdata import LONG_VRS

FrameTable = list[list[list[int]]]


def _int(ds: Dataset, keyword: str, default: int = 0) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def frame_table(f: IO[bytes], size: int, ds: Dataset, pixel_data_position: int) -> FrameTable | None:
    """The frames of the Pixel Data element that starts at ``pixel_data_position``, or None."""
    endian = "<" if ds.is_little_endian in (True, None) else ">"
    f.seek(pixel_data_position)
    header = f.read(8)
    if len(header) < 8:
        return None
    group, element = struct.unpack(endian + "HH", header[:4])
    if (group, element) != (0x7FE0, 0x0010):
        return None
    vr = header[4:6]
    if ds.is_implicit_VR or not vr.isalpha() or not vr.isupper():
        (length,) = struct.unpack(endian + "L", header[4:8])
        start = pixel_data_position + 8
    elif vr in LONG_VRS:
        (length,) = struct.unpack(endian + "L", f.read(4))
        start = pixel_data_position + 12
    else:
        (length,) = struct.unpack(endian + "H", header[6:8])
        start = pixel_data_position + 8
    frames = max(_int(ds, "NumberOfFrames", 1), 1)
    if length != 0xFFFFFFFF:
        bits = _int(ds, "Rows") * _int(ds, "Columns") * _int(ds, "SamplesPerPixel", 1) * _int(ds, "BitsAllocated")
        if bits == 0 or bits % 8 or (bits // 8) * frames > length:
            return None
        frame_size = bits // 8
        return [[[start + i * frame_size, frame_size]] for i in range(frames)]
    extended = ds.get("ExtendedOffsetTable")
    return _encapsulated(f, size, start, frames, endian, bytes(extended) if extended else None)


def _encapsulated(
    f: IO[bytes], size: int, pos: int, frames: int, endian: str, extended_offsets: bytes | None = None
) -> FrameTable | None:
    items: list[tuple[int, int]] = []  # (item tag position, value length)
    while pos + 8 <= size:
        f.seek(pos)
        group, element, length = struct.unpack(endian + "HHL", f.read(8))
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        if (group, element) != (0xFFFE, 0xE000) or pos + 8 + length > size:
            return None
        items.append((pos, length))
        pos += 8 + length
    if not items:
        return None
    (bot_pos, bot_length), fragments = items[0], items[1:]
    ranges = [[p + 8, n] for p, n in fragments]
    if not fragments:
        return None
    if frames == 1:
        return [ranges]
    if len(fragments) == frames:
        return [[r] for r in ranges]
    offsets: list[int] | None = None
    if bot_length >= 4 * frames:
        f.seek(bot_pos + 8)
        offsets = list(struct.unpack(f"{endian}{frames}L", f.read(4 * frames)))
    elif extended_offsets is not None and len(extended_offsets) >= 8 * frames:
        offsets = list(struct.unpack(f"<{frames}Q", extended_offsets[: 8 * frames]))
    if offsets is not None:
        first = fragments[0][0]
        starts = {p - first: i for i, (p, _) in enumerate(fragments)}
        if any(o not in starts for o in offsets):
            return None
        bounds = [starts[o] for o in offsets] + [len(fragments)]
        return [ranges[bounds[i] : bounds[i + 1]] for i in range(frames)]
    return _by_markers(f, ranges, frames)


_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")
_FRAME_ENDS = (b"\xff\xd9", b"\xff\xd9\x00")


def _by_markers(f: IO[bytes], ranges: list[list[int]], frames: int) -> FrameTable | None:
    """Group fragments into frames by codestream start/end markers; None unless exactly ``frames`` found."""
    bounds: list[int] = []
    previous_ends = True
    for i, (offset, length) in enumerate(ranges):
        f.seek(offset)
        head = f.read(min(length, 12))
        f.seek(offset + max(length - 3, 0))
        tail = f.read(min(length, 3))
        if previous_ends and head.startswith(_FRAME_STARTS):
            bounds.append(i)
        previous_ends = tail.endswith(_FRAME_ENDS)
    if len(bounds) != frames or bounds[0] != 0:
        return None
    bounds.append(len(ranges))
    return [ranges[bounds[i] : bounds[i + 1]] for i in range(frames)]
