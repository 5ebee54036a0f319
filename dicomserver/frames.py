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

The Pixel Data header and its items are found by :mod:`dicomserver.part10`.
Frame retrieval reads exactly these ranges (ranged blob reads); the rest of
the file is never read.
"""

from __future__ import annotations

import struct
from typing import IO

from pydicom.dataset import Dataset

from . import part10

FrameTable = list[list[list[int]]]


def _int(ds: Dataset, keyword: str, default: int = 0) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def frame_table(f: IO[bytes], size: int, ds: Dataset, pixel_data_position: int) -> FrameTable | None:
    """The frames of the Pixel Data element that starts at ``pixel_data_position``, or None."""
    little_endian = ds.is_little_endian in (True, None)
    implicit = bool(ds.is_implicit_VR)
    items: list[part10.Element] = []
    try:
        pixels = next(part10.walk(f, size, pixel_data_position, little_endian=little_endian, implicit=implicit), None)
        if pixels is None or pixels.tag != part10.PIXEL_DATA:
            return None
        if pixels.length == part10.UNDEFINED:
            # Lenient: a file that ends where the Sequence Delimitation Item belongs still has its fragments.
            items = list(part10.fragments(f, size, pixels.offset, little_endian=little_endian, strict=False))
    except part10.Part10Error:
        return None
    frames = max(_int(ds, "NumberOfFrames", 1), 1)
    if pixels.length == part10.UNDEFINED:
        extended = ds.get("ExtendedOffsetTable")
        return _encapsulated(f, items, frames, "<" if little_endian else ">", bytes(extended) if extended else None)
    bits = _int(ds, "Rows") * _int(ds, "Columns") * _int(ds, "SamplesPerPixel", 1) * _int(ds, "BitsAllocated")
    if bits == 0 or bits % 8 or (bits // 8) * frames > pixels.length:
        return None
    frame_size = bits // 8
    return [[[pixels.offset + i * frame_size, frame_size]] for i in range(frames)]


def _encapsulated(
    f: IO[bytes], items: list[part10.Element], frames: int, endian: str, extended_offsets: bytes | None = None
) -> FrameTable | None:
    """Group the items of encapsulated Pixel Data (the Basic Offset Table, then the fragments) into frames."""
    if len(items) < 2 or any(item.tag != part10.ITEM or item.length == part10.UNDEFINED for item in items):
        return None
    table, fragments = items[0], items[1:]
    ranges = [[fragment.offset, fragment.length] for fragment in fragments]
    if frames == 1:
        return [ranges]
    if len(fragments) == frames:
        return [[r] for r in ranges]
    offsets: list[int] | None = None
    if table.length >= 4 * frames:
        f.seek(table.offset)
        offsets = list(struct.unpack(f"{endian}{frames}L", f.read(4 * frames)))
    elif extended_offsets is not None and len(extended_offsets) >= 8 * frames:
        offsets = list(struct.unpack(f"<{frames}Q", extended_offsets[: 8 * frames]))
    if offsets is not None:
        # An offset counts from the first fragment's item tag to a frame's first fragment's item tag.
        first = fragments[0].position
        starts = {fragment.position - first: i for i, fragment in enumerate(fragments)}
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
