"""Bulk data: where each binary attribute's value lies in the stored file, and its BulkDataURI.

At store time :func:`locate` walks the element headers of the whole file (seeking
only, never reading a value) and records, for every binary attribute (VR OB, OD,
OF, OL, OV, OW or UN, at any sequence depth, and Pixel Data), the byte range of
its value in the instance blob.  The metadata JSON then carries
``{"vr": "OB", "BulkDataURI": ...}`` for them instead of leaving them out
(PS3.18 §F.2.6), and ``GET .../instances/{i}/bulkdata/{path}`` serves a value
by one ranged blob read.

A path names an attribute by its tag, and a nested one by the tags and item
indexes (0-based, as in the DICOM JSON arrays) that lead to it:
``00291110``, ``00880200/0/7FE00010``.  The stored metadata holds the path behind
:data:`PLACEHOLDER`; :func:`resolve_uris` turns it into the absolute URI of the
deployment answering the request, so the stored JSON does not depend on the
host name it was stored under.

The Azure DICOM service v2 leaves binary attributes out of metadata and has no
bulkdata resource; this is the PS3.18 behaviour on top of it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import IO, Any

from pydicom.datadict import dictionary_VR

from .errors import BadRequest, RangeNotSatisfiable
from .mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

#: ``[offset, length, vr]`` of a value in the instance blob; ``length`` -1 = encapsulated Pixel Data.
BulkEntry = list[Any]
BulkTable = dict[str, BulkEntry]

ENCAPSULATED = -1
#: What stored metadata carries instead of the absolute BulkDataURI (see :func:`resolve_uris`).
PLACEHOLDER = "dicomserver-bulkdata:"
_PLACEHOLDER_JSON = b'"BulkDataURI":"' + PLACEHOLDER.encode()

#: Value representations served as bulk data.
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Byte-swap word size of each VR, for Explicit VR Big Endian files (bulk data is little endian on the wire).
WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

#: Explicit VR value representations with a 4-byte length (PS3.5 §7.1.2); every header walker uses these.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 32
_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*")


class _Unparseable(Exception):
    """The walk met something it cannot follow; no bulk data is offered for the file."""


def locate(f: IO[bytes], size: int, transfer_syntax_uid: str) -> BulkTable:
    """The byte ranges of every binary attribute of a Part 10 file (``{}`` when they cannot be found).

    Deflated files get ``{}``: their values have no place in the stored bytes.
    """
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return {}
    walker = _Walker(f, size, ">" if transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN else "<")
    walker.implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    try:
        walker.dataset(walker.dataset_start(), size, "", 0)
    except (_Unparseable, struct.error):
        return {}
    return walker.found


class _Walker:
    def __init__(self, f: IO[bytes], size: int, endian: str) -> None:
        self.f, self.size, self.endian = f, size, endian
        self.implicit = False
        self.found: BulkTable = {}

    def read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > self.size:
            raise _Unparseable(f"{n} bytes at {pos} are beyond the end of the file")
        self.f.seek(pos)
        data = self.f.read(n)
        if len(data) < n:
            raise _Unparseable(f"{n} bytes at {pos} cannot be read")
        return data

    def dataset_start(self) -> int:
        """The position after the preamble and the File Meta Information (always Explicit VR LE)."""
        pos = 132 if self.size >= 132 and self.read(128, 4) == b"DICM" else 0
        while pos + 8 <= self.size:
            header = self.read(pos, 8)
            (group,) = struct.unpack("<H", header[:2])
            if group != 0x0002:
                break
            if header[4:6] in LONG_VRS:
                (length,) = struct.unpack("<L", self.read(pos + 8, 4))
                pos += 12 + length
            else:
                (length,) = struct.unpack("<H", header[6:8])
                pos += 8 + length
        return pos

    def dataset(self, pos: int, end: int, prefix: str, depth: int) -> int:
        """Walk elements from ``pos`` to ``end``, or to an Item Delimitation; return the position after."""
        if depth > _MAX_DEPTH:
            raise _Unparseable("sequences nested too deep")
        while pos < end:
            header = self.read(pos, 8)
            group, element = struct.unpack(self.endian + "HH", header[:4])
            tag = group << 16 | element
            if tag == _ITEM_END:
                return pos + 8
            if group == 0xFFFE:
                raise _Unparseable(f"unexpected ({group:04X},{element:04X}) at {pos}")
            vr_bytes = header[4:6]
            if self.implicit or not (vr_bytes.isalpha() and vr_bytes.isupper()):
                (length,) = struct.unpack(self.endian + "L", header[4:8])
                start = pos + 8
                vr = _dictionary_vr(tag)
            elif vr_bytes in LONG_VRS:
                (length,) = struct.unpack(self.endian + "L", self.read(pos + 8, 4))
                start = pos + 12
                vr = vr_bytes.decode()
            else:
                (length,) = struct.unpack(self.endian + "H", header[6:8])
                start = pos + 8
                vr = vr_bytes.decode()
            path = f"{prefix}{tag:08X}"
            if length == _UNDEFINED:
                if tag == 0x7FE00010:  # encapsulated; served by frame, so only at the top level
                    if depth == 0:
                        self.found[path] = [start, ENCAPSULATED, "OB"]
                    pos = self.fragments(start)
                elif vr in ("SQ", "UN") or self.implicit:
                    pos = self.sequence(start, None, path + "/", depth)
                else:
                    raise _Unparseable(f"undefined length for {vr} element {path}")
                continue
            if start + length > self.size:
                raise _Unparseable(f"element {path} runs past the end of the file")
            if vr == "SQ":
                self.sequence(start, start + length, path + "/", depth)
            elif vr in BULK_VRS and element != 0:
                self.found[path] = [start, length, vr]
            pos = start + length
        return pos

    def sequence(self, pos: int, end: int | None, prefix: str, depth: int) -> int:
        index = 0
        while end is None or pos < end:
            group, element, length = struct.unpack(self.endian + "HHL", self.read(pos, 8))
            tag = group << 16 | element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                raise _Unparseable(f"({group:04X},{element:04X}) where a sequence item was expected at {pos}")
            item_prefix = f"{prefix}{index}/"
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, self.size, item_prefix, depth + 1)
            else:
                self.dataset(pos + 8, pos + 8 + length, item_prefix, depth + 1)
                pos += 8 + length
            index += 1
        return pos

    def fragments(self, pos: int) -> int:
        while True:
            group, element, length = struct.unpack(self.endian + "HHL", self.read(pos, 8))
            if group << 16 | element == _SEQUENCE_END:
                return pos + 8
            if group << 16 | element != _ITEM or length == _UNDEFINED:
                raise _Unparseable(f"bad Pixel Data fragment at {pos}")
            pos += 8 + length


def _dictionary_vr(tag: int) -> str:
    """The VR of an implicit-VR element: the dictionary's (ambiguous binary ones as OW), else UN."""
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if "OW" in vr:
        return "OW"  # "OB or OW", "US or OW", "US or SS or OW": words in implicit VR files
    return vr


# -- metadata ---------------------------------------------------------------------------------


def element(vr: str, path: str) -> dict[str, str]:
    """The stored DICOM JSON of a bulk data attribute (the URI is resolved when served)."""
    return {"vr": vr, "BulkDataURI": PLACEHOLDER + path}


def referenced(metadata: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """The bulk data paths the stored DICOM JSON refers to."""
    for key, value in metadata.items():
        uri = value.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith(PLACEHOLDER):
            yield uri[len(PLACEHOLDER) :]
        if value.get("vr") == "SQ":
            for i, item in enumerate(value.get("Value") or []):
                yield from referenced(item, f"{prefix}{key}/{i}/")


def resolve_uris(stored_json: bytes, instance_url: str) -> bytes:
    """Stored metadata → served metadata: each placeholder becomes ``{instance_url}/bulkdata/{path}``.

    Only the ``"BulkDataURI":"`` key is matched, so a string value that happens to
    contain the placeholder text (it would be escaped differently) is never touched.
    """
    if _PLACEHOLDER_JSON not in stored_json:
        return stored_json
    return stored_json.replace(_PLACEHOLDER_JSON, b'"BulkDataURI":"' + instance_url.encode() + b"/bulkdata/")


def parse_path(text: str) -> str:
    """Validate a bulkdata path from a URL (tags upper-cased); 400 for anything else."""
    text = text.strip("/")
    if not _PATH.fullmatch(text):
        raise BadRequest(
            f"'{text}' is not a bulk data path: a tag (8 hex digits), or tag/item/tag/... for nested attributes."
        )
    return "/".join(part.upper() if len(part) == 8 else str(int(part)) for part in text.split("/"))


# -- serving ----------------------------------------------------------------------------------


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` (one range, end inclusive) → ``(start, stop)``; None for no header.

    Raises
    ------
    RangeNotSatisfiable
        For a range outside the value, or more than one range.
    """
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or not (match[1] or match[2]):
        raise RangeNotSatisfiable(f"The Range header '{header}' is not one byte range (bytes=first-last).", length)
    if not match[1]:  # suffix: the last n bytes
        start, stop = max(length - int(match[2]), 0), length
    else:
        start = int(match[1])
        stop = min(int(match[2]) + 1, length) if match[2] else length
    if start >= length or stop <= start:
        raise RangeNotSatisfiable(f"The range '{header}' is outside the {length} bytes of the value.", length)
    return start, stop


def swap_words(chunks: Iterator[bytes], word: int) -> Iterator[bytes]:
    """Reverse the byte order of each ``word``-byte word of a stream (chunks need not be aligned)."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = len(data) - len(data) % word
        rest = data[cut:]
        if cut:
            yield _swap(data[:cut], word)
    if rest:
        yield rest


def _swap(data: bytes, word: int) -> bytes:
    out = bytearray(len(data))
    for i in range(word):
        out[i::word] = data[word - 1 - i :: word]
    return bytes(out)
