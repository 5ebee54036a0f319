"""The one reader of DICOM Part 10 structure: where each element, item and fragment lies in a file.

What it reads (PS3.10 §7.1, PS3.5 §7): an optional 128-byte preamble and ``DICM``, the File
Meta Information (group 0002, always Explicit VR Little Endian), then the data set in its
transfer syntax's encoding: Explicit or Implicit VR, Little or Big Endian.  Elements of defined
length; sequences and items of defined or undefined length with their Item and Sequence
Delimitation Items; encapsulated Pixel Data (PS3.5 §A.4: items — the Basic Offset Table, then
the fragments — up to a Sequence Delimitation Item).  An Explicit VR element whose VR is not two
upper-case letters is read as Implicit VR (some files switch to it for Pixel Data; pydicom
accepts that).  A Deflated data set has no element headers in the stored bytes and is not walked.

:func:`walk` is a generator over the headers (:class:`Element`: tag, VR, where the header and the
value are, the value length, the nesting depth and the bulk data path); :func:`fragments` walks
the items of encapsulated Pixel Data alone; :func:`file_meta` reads the file meta group.

What it guarantees, for any bytes at all:

* seeks only: values are skipped, never read — a header costs a ``seek`` and an 8-byte ``read``
  (and a 4-byte one for the long Explicit VR headers);
* bounded work: every header read lies after the previous one — the walk never goes back, so
  no length can make it loop — so a file of N bytes costs at most N / 8 header reads, and the
  memory it holds grows with the nesting depth only, which is limited (``max_depth``);
* an element is yielded only when its header, and its value when the length is defined, lie
  inside the file (and, in a strict walk, inside the item or sequence that holds it);
* refusals are :class:`Part10Error` (:class:`Truncated` when the file ends too soon,
  :class:`Malformed` for anything else), never another exception.

A *strict* walk refuses anything that is not well-formed structure: an item or delimiter out of
place, a data element where an item belongs, an element running past the end of its item or
sequence, an undefined length on an element that is neither a sequence nor Pixel Data, a file
that ends before the delimiter of an undefined-length sequence or item.  A lenient walk
(``strict=False``) steps over all that the way a plain header-by-header scan does — a stray item
or delimiter is an 8-byte marker, a stray element is walked like any other, an element running
past the end of its item is followed to where it ends, the end of the file ends everything still
open — and refuses only what runs past the end of the file, and nesting deeper than ``max_depth``.

Who uses it: :func:`dicomserver.ingest.check_structure` (a lenient walk: does every header and
value lie inside the file) and ``_deflated_size_problem`` (where the data set starts);
:func:`dicomserver.bulkdata.locate` (a strict walk: the byte range of every binary attribute at
any depth); :func:`dicomserver.frames.frame_table` (the Pixel Data header, then its fragments).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO

from pydicom.datadict import dictionary_VR
from pydicom.tag import ItemDelimiterTag, ItemTag, SequenceDelimiterTag, Tag

ITEM = int(ItemTag)
ITEM_DELIMITER = int(ItemDelimiterTag)
SEQUENCE_DELIMITER = int(SequenceDelimiterTag)
PIXEL_DATA = int(Tag("PixelData"))
GROUP_LENGTH = int(Tag("FileMetaInformationGroupLength"))
FILE_META_GROUP = Tag("FileMetaInformationGroupLength").group
#: The value length that means "undefined: up to the matching delimiter".
UNDEFINED = 0xFFFFFFFF
#: Explicit VR value representations with a 4-byte length (PS3.5 §7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
#: Default nesting limit: deeper than pydicom itself reads (it runs out of stack at about 200).
MAX_DEPTH = 512
#: Where the first file meta element is after the preamble and ``DICM``.
PREAMBLE_END = 132

_ITEMS_GROUP = ITEM >> 16
_DATASET, _SEQUENCE, _FRAGMENTS = "data set", "sequence", "encapsulated Pixel Data"


class Part10Error(Exception):
    """The file cannot be walked any further; the message says what and where."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        #: Where the header that could not be followed starts.
        self.position = position


class Truncated(Part10Error):
    """The file ends inside a header (``in_header``), inside a value, or before a delimiter."""

    def __init__(self, message: str, position: int, *, in_header: bool) -> None:
        super().__init__(message, position)
        self.in_header = in_header


class Malformed(Part10Error):
    """What is there is not Part 10 structure (a strict walk), or it nests deeper than allowed."""


class _Path:
    """A bulk data path, shared by everything under it and spelled out only when asked for."""

    __slots__ = ("parent", "name")

    def __init__(self, parent: _Path | None, name: str) -> None:
        self.parent, self.name = parent, name

    def __str__(self) -> str:
        names: list[str] = []
        node: _Path | None = self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(reversed(names))


@dataclass(slots=True)  # not frozen: that costs a microsecond more per header, and a hostile file has millions
class Element:
    """One header met by a walk: a data element, a sequence item or fragment, or a delimiter."""

    tag: int
    #: The VR: as written (Explicit VR), else the dictionary's (OW for the ambiguous binary ones,
    #: UN for unknown and private tags); ``""`` for items and delimiters.
    vr: str
    #: Where the header (the tag) starts.
    position: int
    #: Where the value starts: after the 8- or 12-byte header.
    offset: int
    #: The value length; :data:`UNDEFINED` for a sequence, item or Pixel Data of undefined length.
    length: int
    #: 0 for the top-level data set; the items, fragments and delimiters of a sequence or Pixel
    #: Data element at depth d, and the elements in those items, are at d + 1.
    depth: int
    _scope: _Path | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        """The bulk data path: ``7FE00010``, ``00880200/0/7FE00010`` (items 0-based); ``00880200/0``
        for an item or its delimiter, ``00880200`` for a sequence delimiter, ``7FE00010/3`` for a fragment."""
        scope = "" if self._scope is None else str(self._scope)
        if self.tag >> 16 == _ITEMS_GROUP:
            return scope
        return f"{scope}/{self.tag:08X}" if scope else f"{self.tag:08X}"


@dataclass(slots=True)
class _Context:
    """What the walk is inside: a data set (the top level or an item), a sequence, or Pixel Data fragments."""

    kind: str
    #: Where it ends; None for undefined length (it ends at its delimiter).
    end: int | None
    #: The depth of what is in it.
    depth: int
    #: The path of the item (data set) or of the element (sequence, fragments); None at the top level.
    path: _Path | None
    #: An item: an Item Delimitation ends it.
    item: bool = False
    #: The index of the next item.
    items: int = 0


def walk(
    f: IO[bytes],
    size: int,
    start: int,
    *,
    little_endian: bool = True,
    implicit: bool = False,
    strict: bool = True,
    max_depth: int = MAX_DEPTH,
    group: int | None = None,
    vr_switch: bool = True,
) -> Iterator[Element]:
    """The headers of the data set that starts at ``start``, in file order, down to every depth.

    Parameters
    ----------
    f, size
        The file, and how many bytes of it count (nothing at or after ``size`` is read).
    little_endian, implicit
        The data set's encoding (the file meta group is Explicit VR Little Endian).
    strict
        Refuse anything that is not well-formed structure (see the module docstring).
    max_depth
        The deepest item accepted (a sequence or Pixel Data element at depth d holds items at d + 1); a
        sequence or Pixel Data element whose items would be deeper is refused.
    group
        Stop, quietly, before the first top-level element of another group (the file meta group).
    vr_switch
        In an Explicit VR data set, read an element whose VR is not two upper-case letters as Implicit VR.

    Raises
    ------
    Part10Error
        Where the walk cannot go on; the elements before it have been yielded.
    """
    root = _Context(_DATASET, size, 0, None)
    return _walk(f, size, start, root, little_endian, implicit, strict, max_depth, group, vr_switch)


def fragments(
    f: IO[bytes], size: int, offset: int, *, little_endian: bool = True, strict: bool = True
) -> Iterator[Element]:
    """The items of encapsulated Pixel Data whose value starts at ``offset``: the Basic Offset Table, then
    the fragments, up to (and without) the Sequence Delimitation Item.

    A lenient walk (``strict=False``) stops quietly where the file ends instead of the delimiter, and may
    yield headers that are not fragments (anything but an Item of defined length); the caller decides.

    Raises
    ------
    Part10Error
        Where the walk cannot go on; the fragments before it have been yielded.
    """
    root = _Context(_FRAGMENTS, None, 1, _Path(None, f"{PIXEL_DATA:08X}"))
    for element in _walk(f, size, offset, root, little_endian, False, strict, MAX_DEPTH, None, True):
        if element.depth == 1 and element.tag != SEQUENCE_DELIMITER:
            yield element


@dataclass(frozen=True, slots=True)
class FileMeta:
    """The file meta group of a Part 10 file, as far as it could be walked."""

    #: Where its first element is: after the preamble and ``DICM``, or 0 without them.
    start: int
    #: Where its last element ends: the data set starts here (when ``error`` is None).
    end: int
    #: The value of File Meta Information Group Length when it is the first element (as it must be), else None.
    group_length: int | None
    #: Why the group could not be walked to its end (it is cut short, or an element runs past the end of the file).
    error: Part10Error | None = None


def file_meta(f: IO[bytes], size: int) -> FileMeta:
    """Walk the file meta group (strictly) as pydicom reads it: element by element, up to the first element
    of another group, whatever the group length says.  Of the values, only the group length is read.

    Never raises: a group that cannot be walked to its end has an ``error``.
    """
    start = PREAMBLE_END if size >= PREAMBLE_END and _read(f, size, 128, 4) == b"DICM" else 0
    end, group_length = start, None
    # Always Explicit VR Little Endian (PS3.10 §7.1), whatever an element's VR bytes say.
    elements = walk(f, size, start, group=FILE_META_GROUP, vr_switch=False)
    try:
        for element in elements:
            if element.position == start and element.tag == GROUP_LENGTH and element.vr == "UL":
                value = _read(f, size, element.offset, 4) if element.length == 4 else b""
                group_length = int.from_bytes(value, "little") if value else None
            # Walked in order and never back: the group ends where the furthest header or value does.
            end = max(end, element.offset + (0 if element.length == UNDEFINED else element.length))
    except Part10Error as exc:
        return FileMeta(start, end, group_length, exc)
    return FileMeta(start, end, group_length)


def _read(f: IO[bytes], size: int, pos: int, n: int) -> bytes:
    """``n`` bytes at ``pos``; b"" when they are not all inside the file."""
    if pos + n > size:
        return b""
    f.seek(pos)
    data = f.read(n)
    return data if len(data) == n else b""


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    """The VR of an implicit-VR element: the dictionary's (ambiguous binary ones as OW), else UN."""
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if "OW" in vr:
        return "OW"  # "OB or OW", "US or OW", "US or SS or OW": words in implicit VR files
    return vr


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _walk(
    f: IO[bytes],
    size: int,
    pos: int,
    root: _Context,
    little_endian: bool,
    implicit: bool,
    strict: bool,
    max_depth: int,
    group: int | None,
    vr_switch: bool,
) -> Iterator[Element]:
    endian = "<" if little_endian else ">"
    tag_and_length, short, long = (struct.Struct(endian + fmt) for fmt in ("HHL", "H", "L"))
    stack = [root]

    def enter(context: _Context) -> None:
        if context.depth > max_depth:
            raise Malformed(f"sequences are nested more than {max_depth} deep", pos)
        stack.append(context)

    def value_fits(tag: int, length: int, offset: int, context: _Context) -> None:
        if offset + length > size:
            raise Truncated(
                f"the element {_name(tag)} declares {length} bytes but only {max(size - offset, 0)} remain",
                pos,
                in_header=False,
            )
        if strict and context.end is not None and offset + length > context.end:
            raise Malformed(f"the element {_name(tag)} at byte {pos} runs past the end of its {context.kind}", pos)

    while stack:
        context = stack[-1]
        if context.end is not None and pos >= context.end:
            if pos > context.end and strict:
                raise Malformed(f"the content of a {context.kind} runs past its end at byte {context.end}", pos)
            stack.pop()  # the walk goes on from pos, never back to context.end
            continue
        if context.end is None and pos >= size:
            if strict:
                raise Truncated(f"the file ends inside an undefined-length {context.kind}", pos, in_header=False)
            return
        header = _read(f, size, pos, 8)
        if not header:
            raise Truncated(f"an element header at byte {pos} is cut short", pos, in_header=True)
        group_number, element_number, length = tag_and_length.unpack(header)
        tag = group_number << 16 | element_number
        if group is not None and len(stack) == 1 and group_number != group:
            return
        if group_number == _ITEMS_GROUP:
            if context.kind != _DATASET and tag == ITEM and (context.kind == _SEQUENCE or length != UNDEFINED):
                scope = _Path(context.path, str(context.items))
                context.items += 1
                if length != UNDEFINED:
                    value_fits(tag, length, pos + 8, context)
                yield Element(tag, "", pos, pos + 8, length, context.depth, scope)
                if context.kind == _FRAGMENTS or length == 0:  # a fragment, or an empty item: nothing to walk in it
                    pos += 8 + length
                    continue
                end = None if length == UNDEFINED else pos + 8 + length
                stack.append(_Context(_DATASET, end, context.depth, scope, item=True))
                pos += 8
                continue
            if (tag == SEQUENCE_DELIMITER and context.kind != _DATASET) or (tag == ITEM_DELIMITER and context.item):
                yield Element(tag, "", pos, pos + 8, length, context.depth, context.path)
                stack.pop()
                pos += 8
                if context.end is not None:  # a delimiter in a defined-length context: go on at its end
                    pos = max(pos, context.end)
                continue
            if strict:
                raise Malformed(f"{_name(tag)} is out of place in a {context.kind} at byte {pos}", pos)
            # A stray item or delimiter: a marker, or (defined length) a value to step over.
            step = 0 if length == UNDEFINED or tag in (ITEM_DELIMITER, SEQUENCE_DELIMITER) else length
            value_fits(tag, step, pos + 8, context)
            yield Element(tag, "", pos, pos + 8, length, context.depth, context.path)
            pos += 8 + step
            continue
        if context.kind != _DATASET and strict:
            raise Malformed(f"{_name(tag)} where an item belongs, in a {context.kind} at byte {pos}", pos)
        vr_bytes = header[4:6]
        if implicit or (vr_switch and not (vr_bytes.isalpha() and vr_bytes.isupper())):
            offset, vr = pos + 8, _dictionary_vr(tag)  # the length is the 4 bytes after the tag
        elif vr_bytes in LONG_VRS:
            extra = _read(f, size, pos + 8, 4)
            if not extra:
                raise Truncated(f"the element {_name(tag)} header is cut short", pos, in_header=True)
            ((length,), offset, vr) = long.unpack(extra), pos + 12, vr_bytes.decode("latin-1")
        else:
            ((length,), offset, vr) = short.unpack(header[6:8]), pos + 8, vr_bytes.decode("latin-1")
        element = Element(tag, vr, pos, offset, length, context.depth, context.path)
        inner: _Context | None = None
        if length == UNDEFINED:
            if tag == PIXEL_DATA:
                kind = _FRAGMENTS
            elif vr in ("SQ", "UN") or implicit:
                kind = _SEQUENCE
            elif strict:
                raise Malformed(f"undefined length for {vr} element {element.path}", pos)
            else:
                kind = _FRAGMENTS  # a scan steps over items of defined length up to a delimiter
            inner = _Context(kind, None, context.depth + 1, _Path(context.path, f"{tag:08X}"))
        else:
            value_fits(tag, length, offset, context)
            if vr == "SQ":
                inner = _Context(_SEQUENCE, offset + length, context.depth + 1, _Path(context.path, f"{tag:08X}"))
        if inner is not None:
            enter(inner)
        yield element
        pos = offset if inner is not None else offset + length
