"""Bulk data: located byte-exact against pydicom, paths, URIs, ranges and byte order."""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomserver import bulkdata
from dicomserver.dicomjson import dataset_to_json
from dicomserver.errors import BadRequest, RangeNotSatisfiable
from dicomserver.ingest import ParsedInstance, read_instance
from dicomserver.mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from tests.dicomfiles import bundled, element_at, make_instance

#: Explicit/implicit VR, big endian, nested binary attributes (icon image, LUTs), overlays,
#: private OB elements, waveforms, encapsulated Pixel Data.
FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "rtplan.dcm",  # no binary attribute at all
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
]

BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def binary_paths(ds: Dataset, prefix: str = "") -> set[str]:
    """Every binary attribute pydicom sees, at any depth (at the top, up to Pixel Data: the metadata's reach)."""
    found = set()
    for elem in ds:
        if not prefix and elem.tag > 0x7FE00010:
            break
        path = f"{prefix}{int(elem.tag):08X}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                found |= binary_paths(item, f"{path}/{i}/")
        elif elem.VR in BINARY and elem.tag.element != 0:
            found.add(path)
    return found


def parsed(data: bytes) -> ParsedInstance:
    result = read_instance(io.BytesIO(data), len(data), None, "Microsoft.Default")
    assert isinstance(result, ParsedInstance), result
    return result


@pytest.mark.parametrize("name", FILES)
def test_every_binary_attribute_is_located_byte_exact(name: str) -> None:
    data = bundled(name).read_bytes()
    full = pydicom.dcmread(io.BytesIO(data))
    result = parsed(data)
    # Every binary attribute pydicom reads is offered as bulk data, and nothing else is.
    assert set(result.bulkdata or {}) == binary_paths(full)
    for path, (offset, length, vr) in (result.bulkdata or {}).items():
        elem = element_at(full, path)
        if length == bulkdata.ENCAPSULATED:
            assert full.file_meta.TransferSyntaxUID.is_encapsulated and path == "7FE00010"
            continue
        assert data[offset : offset + length] == elem.value, path  # pydicom keeps the file's byte order
        assert vr in bulkdata.BULK_VRS


@pytest.mark.parametrize("name", FILES)
def test_metadata_refers_to_bulk_data_and_never_inlines_it(name: str) -> None:
    result = parsed(bundled(name).read_bytes())
    text = json.dumps(result.metadata)
    assert "InlineBinary" not in text
    assert set(bulkdata.referenced(result.metadata)) == set(result.bulkdata or {})
    if "7FE00010" not in (result.bulkdata or {}):
        return
    pixel = result.metadata["7FE00010"]
    assert pixel == {"vr": pixel["vr"], "BulkDataURI": bulkdata.PLACEHOLDER + "7FE00010"}


def test_nested_paths_follow_the_json_item_indexes() -> None:
    result = parsed(bundled("examples_overlay.dcm").read_bytes())
    icon = result.metadata["00880200"]["Value"][0]
    assert icon["7FE00010"]["BulkDataURI"] == bulkdata.PLACEHOLDER + "00880200/0/7FE00010"
    assert icon["00281201"]["vr"] == "OW"


def test_without_a_table_binary_attributes_are_left_out() -> None:
    ds = pydicom.dcmread(bundled("examples_overlay.dcm"))
    out = dataset_to_json(ds)
    assert "60003000" not in out and "00291110" not in out
    assert "7FE00010" not in out["00880200"]["Value"][0]


def test_deflated_files_offer_no_bulk_data() -> None:
    data = bundled("image_dfl.dcm").read_bytes()
    assert bulkdata.locate(io.BytesIO(data), len(data), DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) == {}


def test_a_walk_that_runs_off_the_file_offers_nothing() -> None:
    data = make_instance()
    assert bulkdata.locate(io.BytesIO(data), len(data), "1.2.840.10008.1.2.1")
    cut = data[:-10]
    assert bulkdata.locate(io.BytesIO(cut), len(cut), "1.2.840.10008.1.2.1") == {}


def test_uris_are_resolved_only_in_bulk_data_uri_values() -> None:
    stored = json.dumps(
        {
            "00081030": {"vr": "LO", "Value": ['"BulkDataURI":"dicomserver-bulkdata:x']},
            "7FE00010": {"vr": "OW", "BulkDataURI": bulkdata.PLACEHOLDER + "7FE00010"},
        },
        separators=(",", ":"),
    ).encode()
    served = json.loads(bulkdata.resolve_uris(stored, "http://h/v2/studies/1/series/2/instances/3/bulkdata/"))
    assert served["7FE00010"]["BulkDataURI"] == "http://h/v2/studies/1/series/2/instances/3/bulkdata/7FE00010"
    assert served["00081030"]["Value"] == ['"BulkDataURI":"dicomserver-bulkdata:x']
    assert bulkdata.resolve_uris(b'{"a":1}', "http://h") == b'{"a":1}'


def test_paths() -> None:
    assert bulkdata.parse_path("7fe00010") == "7FE00010"
    assert bulkdata.parse_path("00880200/00/7fe00010/") == "00880200/0/7FE00010"
    assert bulkdata.parse_path("7FE00010/") == "7FE00010"  # a trailing slash is tolerated
    for bad in ("", "7FE0001", "7FE00010/x/00280010", "../etc", "00880200/0", "7FE00010/1/2"):
        with pytest.raises(BadRequest):
            bulkdata.parse_path(bad)


def test_ranges() -> None:
    assert bulkdata.parse_range(None, 100) is None
    assert bulkdata.parse_range("bytes=0-9", 100) == (0, 10)
    assert bulkdata.parse_range("bytes=90-", 100) == (90, 100)
    assert bulkdata.parse_range("bytes=-5", 100) == (95, 100)
    assert bulkdata.parse_range("bytes=95-500", 100) == (95, 100)
    for bad in ("bytes=100-", "bytes=5-2", "bytes=0-1,5-6", "items=1-2", "bytes=-"):
        with pytest.raises(RangeNotSatisfiable) as caught:
            bulkdata.parse_range(bad, 100)
        assert caught.value.status == 416 and caught.value.headers == {"Content-Range": "bytes */100"}


def test_word_swap_across_unaligned_chunks() -> None:
    words = np.arange(1000, dtype=">u2")
    raw = words.tobytes()
    chunks = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    assert b"".join(bulkdata.swap_words(iter(chunks), 2)) == words.astype("<u2").tobytes()
    floats = np.linspace(0, 1, 100, dtype=">f8").tobytes()
    assert (
        b"".join(bulkdata.swap_words(iter([floats[:13], floats[13:]]), 8))
        == np.frombuffer(floats, ">f8").astype("<f8").tobytes()
    )


def test_empty_binary_attributes_are_present_without_a_uri() -> None:
    result = parsed(make_instance(EncapsulatedDocument=b""))
    assert result.metadata["00420011"] == {"vr": "OB"}
    assert "00420011" not in (result.bulkdata or {})
    assert "7FE00010" in (result.bulkdata or {})


def test_a_file_meta_group_length_that_lies_does_not_move_the_walk() -> None:
    data = make_instance()
    lying = data[:140] + (10**6).to_bytes(4, "little") + data[144:]
    assert bulkdata.locate(io.BytesIO(lying), len(lying), "1.2.840.10008.1.2.1") == bulkdata.locate(
        io.BytesIO(data), len(data), "1.2.840.10008.1.2.1"
    )


def test_malformed_structure_anywhere_offers_nothing() -> None:
    data = bundled("examples_overlay.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert "00880200/0/7FE00010" in bulkdata.locate(io.BytesIO(data), len(data), ds.file_meta.TransferSyntaxUID)
    # The icon image item declares 8 bytes fewer than its elements take.
    item_at = data.index(b"\xfe\xff\x00\xe0", data.index(b"\x88\x00\x00\x02"))
    length = int.from_bytes(data[item_at + 4 : item_at + 8], "little")
    assert length != 0xFFFFFFFF
    short = data[: item_at + 4] + (length - 8).to_bytes(4, "little") + data[item_at + 8 :]
    assert bulkdata.locate(io.BytesIO(short), len(short), ds.file_meta.TransferSyntaxUID) == {}
