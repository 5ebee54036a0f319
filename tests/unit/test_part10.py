"""The Part 10 reader: one walk over element headers, against pydicom and against hostile bytes."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.tag import Tag

from dicomserver import part10
from dicomserver.part10 import ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER, UNDEFINED, Element
from tests.dicomfiles import bundled, deeply_nested, make_instance

#: Explicit and implicit VR, big endian, nested sequences (defined and undefined lengths, private ones),
#: icon images and LUTs, overlays, waveforms, native and encapsulated Pixel Data.
FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "nested_priv_SQ.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
]
BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def transfer_syntax(data: bytes) -> pydicom.uid.UID:
    meta = part10.file_meta(io.BytesIO(data), len(data))
    assert meta.error is None
    syntax: pydicom.uid.UID = pydicom.dcmread(io.BytesIO(data[: meta.end])).file_meta.TransferSyntaxUID
    return syntax


def walk_file(data: bytes, *, strict: bool = True, **kwargs: int) -> list[Element]:
    """Every header of a Part 10 file's data set, in the encoding its file meta names."""
    f = io.BytesIO(data)
    meta = part10.file_meta(f, len(data))
    syntax = transfer_syntax(data)
    return list(
        part10.walk(
            f,
            len(data),
            meta.end,
            little_endian=syntax.is_little_endian,
            implicit=syntax.is_implicit_VR,
            strict=strict,
            **kwargs,
        )
    )


def pydicom_elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, pydicom.DataElement]]:
    """Every element pydicom reads, at every depth, by bulk data path."""
    for elem in ds:
        path = f"{prefix}{int(elem.tag):08X}"
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from pydicom_elements(item, f"{path}/{i}/")


@pytest.mark.parametrize("name", FILES)
def test_the_walk_meets_every_element_pydicom_reads_where_it_is(name: str) -> None:
    data = bundled(name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    elements = walk_file(data)
    found = {e.path: e for e in elements if e.tag >> 16 != 0xFFFE}
    expected = dict(pydicom_elements(ds))
    assert set(found) == set(expected)
    for path, elem in expected.items():
        element = found[path]
        assert element.tag == int(elem.tag) and element.depth == path.count("/") // 2
        if elem.VR in BINARY and element.length != UNDEFINED:
            assert data[element.offset : element.offset + element.length] == elem.value, path
    # In file order, never going back, each header after the end of the one before.
    positions = [e.position for e in elements]
    assert positions == sorted(set(positions))
    assert all(e.offset + (0 if e.length == UNDEFINED else e.length) <= len(data) for e in elements)


# -- a hand-made data set, in every encoding ---------------------------------------------------------

SOP_CLASS = int(Tag("SOPClassUID"))
SERIES_SEQUENCE = int(Tag("ReferencedSeriesSequence"))
SERIES_UID = int(Tag("SeriesInstanceUID"))
INSTANCE_SEQUENCE = int(Tag("ReferencedInstanceSequence"))
DOCUMENT = int(Tag("EncapsulatedDocument"))
PIXEL_DATA = int(Tag("PixelData"))


class Encoder:
    """Element, item and delimiter bytes in one of the three uncompressed encodings."""

    def __init__(self, endian: str, implicit: bool) -> None:
        self.endian, self.implicit = endian, implicit

    def element(self, tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
        length = len(value) if length is None else length
        head = struct.pack(self.endian + "HH", tag >> 16, tag & 0xFFFF)
        if self.implicit:
            return head + struct.pack(self.endian + "L", length) + value
        if vr in part10.LONG_VRS:
            return head + vr + b"\0\0" + struct.pack(self.endian + "L", length) + value
        return head + vr + struct.pack(self.endian + "H", length) + value

    def marker(self, tag: int, length: int) -> bytes:
        return struct.pack(self.endian + "HHL", tag >> 16, tag & 0xFFFF, length)

    def item(self, content: bytes, undefined: bool = False) -> bytes:
        if undefined:
            return self.marker(ITEM, UNDEFINED) + content + self.marker(ITEM_DELIMITER, 0)
        return self.marker(ITEM, len(content)) + content

    def dataset(self) -> bytes:
        """A sequence of undefined length holding an undefined-length item (with a defined-length
        sequence in it) and an empty item; then encapsulated Pixel Data."""
        inner = self.element(INSTANCE_SEQUENCE, b"SQ", self.item(self.element(DOCUMENT, b"OB", b"\1\2\3\4")))
        first = self.element(SERIES_UID, b"UI", b"1.3\0") + inner
        series = self.item(first, undefined=True) + self.item(b"")
        pixels = self.marker(ITEM, 0) + self.marker(ITEM, 6) + b"frame1" + self.marker(ITEM, 2) + b"f2"
        return (
            self.element(SOP_CLASS, b"UI", b"1.2\0")
            + self.element(SERIES_SEQUENCE, b"SQ", series + self.marker(SEQUENCE_DELIMITER, 0), UNDEFINED)
            + self.element(PIXEL_DATA, b"OB", pixels + self.marker(SEQUENCE_DELIMITER, 0), UNDEFINED)
        )


ENCODINGS = {
    "explicit little endian": Encoder("<", False),
    "implicit little endian": Encoder("<", True),
    "explicit big endian": Encoder(">", False),
}


def expected(encoder: Encoder) -> list[tuple[str, int, int, int]]:
    """(path, tag, depth, length) of every header of :meth:`Encoder.dataset`, in order."""
    document = 12 if encoder.implicit else 16  # the OB element: 8 (implicit) or 12 bytes of header, 4 of value
    return [
        ("00080016", SOP_CLASS, 0, 4),
        ("00081115", SERIES_SEQUENCE, 0, UNDEFINED),
        ("00081115/0", ITEM, 1, UNDEFINED),
        ("00081115/0/0020000E", SERIES_UID, 1, 4),
        ("00081115/0/0008114A", INSTANCE_SEQUENCE, 1, 8 + document),
        ("00081115/0/0008114A/0", ITEM, 2, document),
        ("00081115/0/0008114A/0/00420011", DOCUMENT, 2, 4),
        ("00081115/0", ITEM_DELIMITER, 1, 0),
        ("00081115/1", ITEM, 1, 0),
        ("00081115", SEQUENCE_DELIMITER, 1, 0),
        ("7FE00010", PIXEL_DATA, 0, UNDEFINED),
        ("7FE00010/0", ITEM, 1, 0),
        ("7FE00010/1", ITEM, 1, 6),
        ("7FE00010/2", ITEM, 1, 2),
        ("7FE00010", SEQUENCE_DELIMITER, 1, 0),
    ]


def walk(data: bytes, encoder: Encoder, **kwargs: bool | int) -> list[Element]:
    little = encoder.endian == "<"
    return list(part10.walk(io.BytesIO(data), len(data), 0, little_endian=little, implicit=encoder.implicit, **kwargs))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sequences_items_delimiters_and_fragments_in_every_encoding(encoding: str) -> None:
    encoder = ENCODINGS[encoding]
    data = encoder.dataset()
    for strict in (True, False):
        elements = walk(data, encoder, strict=strict)
        assert [(e.path, e.tag, e.depth, e.length) for e in elements] == expected(encoder)
    by_path = {e.path: e for e in elements if e.tag >> 16 != 0xFFFE}
    document = by_path["00081115/0/0008114A/0/00420011"]
    assert document.vr == "OB" and data[document.offset : document.offset + 4] == b"\1\2\3\4"
    assert by_path["00081115/0/0008114A"].vr == "SQ"  # from the dictionary in implicit VR
    uid = by_path["00081115/0/0020000E"]
    assert data[uid.offset : uid.offset + uid.length] == b"1.3\0"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fragments_are_the_items_of_encapsulated_pixel_data(encoding: str) -> None:
    encoder = ENCODINGS[encoding]
    data = encoder.dataset()
    (pixels,) = [e for e in walk(data, encoder) if e.tag == PIXEL_DATA]
    found = list(part10.fragments(io.BytesIO(data), len(data), pixels.offset, little_endian=encoder.endian == "<"))
    assert [data[e.offset : e.offset + e.length] for e in found] == [b"", b"frame1", b"f2"]
    assert [e.path for e in found] == ["7FE00010/0", "7FE00010/1", "7FE00010/2"]


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_fragments_agree_with_pydicom(name: str) -> None:
    data = bundled(name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    (pixels,) = [e for e in walk_file(data) if e.tag == PIXEL_DATA and e.depth == 0]
    found = list(part10.fragments(io.BytesIO(data), len(data), pixels.offset))
    assert [data[e.offset : e.offset + e.length] for e in found] == list(generate_fragments(ds.PixelData))


def test_the_file_meta_group_is_walked_whatever_its_group_length_says() -> None:
    data = make_instance()
    meta = part10.file_meta(io.BytesIO(data), len(data))
    assert meta.start == 132 and meta.error is None
    assert meta.group_length == meta.end - 144 == int.from_bytes(data[140:144], "little")
    assert pydicom.dcmread(io.BytesIO(data[meta.end :]), force=True).SOPClassUID  # the data set starts there
    lying = data[:140] + (10**6).to_bytes(4, "little") + data[144:]
    assert part10.file_meta(io.BytesIO(lying), len(lying)).end == meta.end
    cut = part10.file_meta(io.BytesIO(data[:150]), 150)
    assert isinstance(cut.error, part10.Truncated) and cut.error.in_header
    no_preamble = data[132:]
    assert part10.file_meta(io.BytesIO(no_preamble), len(no_preamble)).end == meta.end - 132


# -- refused, cleanly ---------------------------------------------------------------------------------


def headers(data: bytes, encoder: Encoder, strict: bool) -> list[Element]:
    """The headers a walk yields before it stops (any refusal must be a Part10Error)."""
    found: list[Element] = []
    try:
        for element in walk(data, encoder, strict=strict):
            found.append(element)
    except part10.Part10Error:
        pass
    return found


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_truncated_input_is_refused_at_every_cut(encoding: str) -> None:
    encoder = ENCODINGS[encoding]
    data = encoder.dataset()
    boundaries = {e.position for e in walk(data, encoder) if e.depth == 0}
    for cut in range(len(data)):
        piece = data[:cut]
        if cut in boundaries:  # a shorter data set, of whole elements
            continue
        with pytest.raises(part10.Part10Error):
            walk(piece, encoder, strict=True)
        # Lenient: a missing delimiter is no refusal, but a header or value cut short is.
        for e in headers(piece, encoder, strict=False):
            assert e.offset + (0 if e.length == UNDEFINED else e.length) <= cut


def test_absurd_lengths_are_refused_with_what_and_where() -> None:
    encoder = Encoder("<", False)
    huge = encoder.element(int(Tag("StudyComments")), b"UT", b"text", 0xFFFFFFF0)
    with pytest.raises(
        part10.Truncated, match=r"the element \(0032,4000\) declares 4294967280 bytes but only 4 remain"
    ):
        walk(huge, encoder)
    item = encoder.element(SERIES_SEQUENCE, b"SQ", encoder.marker(ITEM, 0x7FFFFFFF), UNDEFINED)
    with pytest.raises(part10.Truncated, match=r"\(FFFE,E000\) declares 2147483647 bytes"):
        walk(item, encoder, strict=False)
    cut_header = encoder.element(SOP_CLASS, b"UI", b"1.2\0") + b"\x08\x00\x18"
    with pytest.raises(part10.Truncated, match="an element header at byte 12 is cut short") as caught:
        walk(cut_header, encoder)
    assert caught.value.in_header and caught.value.position == 12
    long_header = encoder.element(DOCUMENT, b"OB", b"")[:10]
    with pytest.raises(part10.Truncated, match=r"the element \(0042,0011\) header is cut short"):
        walk(long_header, encoder)


def test_deep_nesting_is_refused_before_it_costs_anything() -> None:
    data = deeply_nested(5000)
    with pytest.raises(part10.Malformed, match="nested more than 32 deep"):
        walk_file(data, max_depth=32)
    with pytest.raises(part10.Malformed, match=f"nested more than {part10.MAX_DEPTH} deep"):
        walk_file(data, strict=False)
    assert max(e.depth for e in walk_file(deeply_nested(32), max_depth=32)) == 32


def test_strict_walks_refuse_what_lenient_ones_step_over() -> None:
    encoder = Encoder("<", False)
    uid = encoder.element(SOP_CLASS, b"UI", b"1.2\0")
    undefined_ob = encoder.element(
        DOCUMENT, b"OB", encoder.item(b"ab") + encoder.marker(SEQUENCE_DELIMITER, 0), UNDEFINED
    )
    overrun = encoder.element(  # the item declares 12 bytes; the element in it takes 20
        INSTANCE_SEQUENCE, b"SQ", encoder.marker(ITEM, 12) + encoder.element(DOCUMENT, b"OB", b"12345678")
    )
    unclosed = encoder.element(SERIES_SEQUENCE, b"SQ", encoder.item(uid), UNDEFINED)
    cases = {
        "stray item delimiter": (encoder.marker(ITEM_DELIMITER, 0) + uid, part10.Malformed),
        "stray sequence delimiter": (uid + encoder.marker(SEQUENCE_DELIMITER, 0) + uid, part10.Malformed),
        "undefined-length OB": (undefined_ob + uid, part10.Malformed),
        "element where an item belongs": (encoder.element(SERIES_SEQUENCE, b"SQ", uid, UNDEFINED), part10.Malformed),
        "element running past its item": (overrun + uid, part10.Malformed),
        "sequence the file ends in": (unclosed, part10.Truncated),
    }
    for name, (data, refusal) in cases.items():
        with pytest.raises(refusal):
            walk(data, encoder, strict=True)
        lenient = walk(data, encoder, strict=False)  # steps over it, on to the end of the file
        assert sum(e.tag == SOP_CLASS for e in lenient) == data.count(uid), name


def test_the_group_walk_stops_before_another_group() -> None:
    encoder = Encoder("<", False)
    data = encoder.element(0x00020010, b"UI", b"1.2\0") + encoder.element(SOP_CLASS, b"UI", b"1.2\0")
    assert [e.tag for e in walk(data, encoder, group=2)] == [0x00020010]


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"])
def test_any_damage_is_a_part10_error_and_work_stays_linear(name: str) -> None:
    """Flipped bytes and lengths: never another exception, headers only forward, at most one per 8 bytes."""
    original = bundled(name).read_bytes()
    syntax = transfer_syntax(original)
    rnd = random.Random(name)
    for _ in range(300):
        data = bytearray(original)
        at = rnd.randrange(132, len(data) - 4)
        data[at : at + 4] = rnd.choice(
            [b"\xff\xff\xff\xff", b"\xfe\xff\x00\xe0", bytes(rnd.randrange(256) for _ in "1234")]
        )
        for strict in (True, False):
            f = io.BytesIO(bytes(data))
            meta = part10.file_meta(f, len(data))
            found: list[Element] = []
            try:
                for element in part10.walk(
                    f,
                    len(data),
                    meta.end,
                    little_endian=syntax.is_little_endian,
                    implicit=syntax.is_implicit_VR,
                    strict=strict,
                ):
                    found.append(element)
            except part10.Part10Error:
                pass
            positions = [e.position for e in found]
            assert all(b - a >= 8 for a, b in zip(positions, positions[1:], strict=False))
            assert len(found) <= len(data) // 8
