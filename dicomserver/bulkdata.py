"""Bulk data: where each binary attribute's value lies in the stored file, and its BulkDataURI.

At store time :func:`locate` walks the element headers of the whole file
(:func:`dicomserver.part10.walk`: seeking only, never reading a value) and
records, for every binary attribute (VR OB, OD, OF, OL, OV, OW or UN, at any
sequence depth, and Pixel Data), the byte range of its value in the instance
blob.  The metadata JSON then carries ``{"vr": "OB", "BulkDataURI": ...}`` for
them instead of leaving them out (PS3.18 §F.2.6), and
``GET .../instances/{i}/bulkdata/{path}`` serves a value by one ranged blob read.

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
from collections.abc import Iterator
from typing import IO, Any

from pydicom.tag import Tag

from . import part10
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
PIXEL_TAGS = frozenset(int(Tag(keyword)) for keyword in ("FloatPixelData", "DoubleFloatPixelData", "PixelData"))

#: Deeper than this, a file offers no bulk data at all.
_MAX_DEPTH = 32
_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*")


def locate(f: IO[bytes], size: int, transfer_syntax_uid: str) -> BulkTable:
    """The byte ranges of every binary attribute of a Part 10 file (``{}`` when they cannot be found).

    A strict :func:`.part10.walk`: a file whose structure is not well-formed anywhere, or that nests
    sequences more than 32 deep, offers no bulk data.  Deflated files get ``{}``: their values have
    no place in the stored bytes.
    """
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return {}
    meta = part10.file_meta(f, size)
    if meta.error is not None:
        return {}
    found: BulkTable = {}
    try:
        elements = part10.walk(
            f,
            size,
            meta.end,
            little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
            implicit=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            max_depth=_MAX_DEPTH,
        )
        for element in elements:
            if element.length == part10.UNDEFINED:
                if element.tag == part10.PIXEL_DATA and element.depth == 0:
                    # encapsulated; served by frame, so only at the top level
                    found[element.path] = [element.offset, ENCAPSULATED, "OB"]
            elif element.vr in BULK_VRS and element.tag & 0xFFFF != 0:  # not a group length
                found[element.path] = [element.offset, element.length, element.vr]
    except part10.Part10Error:
        return {}
    return found


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


def resolve_uris(stored_json: bytes, bulkdata_prefix: str) -> bytes:
    """Stored metadata → served metadata: each placeholder becomes ``{bulkdata_prefix}{path}``.

    ``bulkdata_prefix`` is the instance's :attr:`dicomserver.urls.DicomWebUrl.bulkdata_prefix`
    (``.../instances/{sop}/bulkdata/``).

    Only the ``"BulkDataURI":"`` key is matched, so a string value that happens to
    contain the placeholder text (it would be escaped differently) is never touched.
    """
    if _PLACEHOLDER_JSON not in stored_json:
        return stored_json
    return stored_json.replace(_PLACEHOLDER_JSON, b'"BulkDataURI":"' + bulkdata_prefix.encode())


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
