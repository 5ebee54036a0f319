"""DICOM test instances: pydicom's bundled files, plus generated ones for what they lack."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def bundled(name: str) -> Path:
    """Path of a file bundled with pydicom (never downloads; raises if missing)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(name)
    return Path(str(path))


def make_instance(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^John",
    study_date: str = "20240115",
    modality: str = "CT",
    accession: str = "ACC-1",
    rows: int = 8,
    columns: int = 8,
    birth_date: str = "19700101",
    **extra: object,
) -> bytes:
    """A small valid CT instance as Part 10 bytes (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.StudyDescription = "Generated study"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart_body(parts: list[bytes], boundary: str = "test-boundary-1234") -> tuple[bytes, str]:
    """A multipart/related body of application/dicom parts and its Content-Type."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def zero_preamble(data: bytes) -> bytes:
    """What the service stores: the file with its 128-byte preamble zeroed."""
    if data[128:132] == b"DICM":
        return b"\x00" * 128 + data[128:]
    return data


def fragmented_multiframe(codec: str, frames: int = 3, fragments_per_frame: int = 3) -> tuple[bytes, list[bytes]]:
    """A multi-frame encapsulated instance whose frames span several fragments and that has no offset table.

    ``codec`` ``"jpeg2000"`` encodes distinct frames (JPEG 2000 lossless); ``"jpeg"`` repeats the
    frame of pydicom's JPEG baseline sample.  Returns the Part 10 bytes and the expected frames.
    """
    if codec == "jpeg2000":
        ds = pydicom.dcmread(io.BytesIO(make_instance(rows=64, columns=64)))
        ds.NumberOfFrames = frames
        pixels = (np.arange(frames * 64 * 64, dtype=np.uint16).reshape(frames, 64, 64) * 7) % 4096
        ds.compress(JPEG2000Lossless, pixels)
        expected = list(generate_frames(ds.PixelData, number_of_frames=frames))
    else:
        source = pydicom.dcmread(bundled("SC_rgb_jpeg.dcm"))
        ds = pydicom.dcmread(io.BytesIO(make_instance(rows=source.Rows, columns=source.Columns)))
        for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit"):
            setattr(ds, keyword, source[keyword].value)
        ds.PlanarConfiguration = 0
        ds.file_meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
        ds.NumberOfFrames = frames
        expected = list(generate_frames(source.PixelData, number_of_frames=1)) * frames
    ds.PixelData = encapsulate(expected, fragments_per_frame=fragments_per_frame, has_bot=False)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), expected


def element_at(ds: Dataset, path: str) -> DataElement:
    """The element at a bulk data path (``tag`` or ``tag/item/tag/...``, items 0-based)."""
    parts = path.split("/")
    while len(parts) > 1:
        ds = ds[int(parts[0], 16)].value[int(parts[1])]
        parts = parts[2:]
    return ds[int(parts[0], 16)]


def deeply_nested(depth: int, **kwargs: object) -> bytes:
    """A valid instance followed by ``depth`` nested undefined-length ContentSequence items (hostile input)."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(**kwargs)))  # type: ignore[arg-type]
    del ds.PixelData
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    sq = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"  # (0040,A730) SQ, undefined length
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return out.getvalue() + (sq + item) * depth + (item_end + sq_end) * depth


def multipart_with_types(parts: list[tuple[str, bytes]], boundary: str = "test-boundary-5678") -> tuple[bytes, str]:
    """A multipart/related body whose parts carry the given Content-Types."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + p + b"\r\n"
        for ctype, p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


# -- transcoding sources and hostile pixel data -------------------------------------------------

import struct  # noqa: E402 - appended section


def relabelled(name: str, transfer_syntax: str) -> bytes:
    """A bundled file under another transfer syntax its codestream also satisfies.

    ``relabelled("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.57")``: JPEG lossless, first-order
    prediction (4.70) is a case of JPEG lossless process 14 (4.57), of which pydicom bundles no file.
    """
    ds = pydicom.dcmread(bundled(name))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def with_pixels(
    *,
    rows: int,
    columns: int,
    transfer_syntax: str,
    pixel_data: bytes,
    frames: int = 1,
    samples: int = 1,
    bits: int = 16,
    study: str | None = None,
    series: str | None = None,
) -> bytes:
    """A :func:`make_instance` CT whose pixel description and Pixel Data are given (encapsulated or not)."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(study=study, series=series)))
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if samples == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB" if bits <= 8 or pydicom.uid.UID(transfer_syntax).is_encapsulated else "OW"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def jpeg2000_zeros(side: int, bits: int = 16) -> bytes:
    """A JPEG 2000 lossless codestream of a ``side`` × ``side`` image of zeros (4096², 16 bit: 196 bytes)."""
    ds = Dataset()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(JPEG2000Lossless, np.zeros((side, side), np.uint16 if bits > 8 else np.uint8))
    return bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))


def _markers(codestream: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a one-tile JPEG 2000 codestream into (SIZ segment, other main header segments, tile-part body)."""
    assert codestream[:2] == b"\xff\x4f", "no SOC"
    pos, siz, rest = 2, b"", b""
    while True:
        marker = codestream[pos : pos + 2]
        (length,) = struct.unpack(">H", codestream[pos + 2 : pos + 4])
        if marker == b"\xff\x90":  # SOT: the tile-part runs to Psot (0: to EOC)
            (psot,) = struct.unpack(">L", codestream[pos + 6 : pos + 10])
            end = pos + psot if psot else len(codestream) - 2
            return siz, rest, codestream[pos + 2 + length : end]
        segment = codestream[pos : pos + 2 + length]
        if marker == b"\xff\x51":
            siz = segment
        else:
            rest += segment
        pos += 2 + length


def tiled_jpeg2000_zeros(tiles: int, tile_side: int = 4096, bits: int = 8) -> bytes:
    """A valid JPEG 2000 codestream of a (``tiles`` × ``tile_side``)² image of zeros, a few KB long.

    One tile of zeros is encoded; its tile-part (identical for every tile of an all-zero image whose
    tiles are a power of two) is repeated ``tiles``² times under a SIZ marker for the whole image.
    """
    siz, rest, body = _markers(jpeg2000_zeros(tile_side, bits))
    side = tiles * tile_side
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz, then the components.
    head = struct.pack(">HHLLLLLLLL", len(siz) - 2, 0, side, side, 0, 0, tile_side, tile_side, 0, 0)
    out = b"\xff\x4f" + b"\xff\x51" + head + siz[38:] + rest
    for index in range(tiles * tiles):
        out += b"\xff\x90" + struct.pack(">HHLBB", 10, index, 12 + len(body), 0, 1) + body
    return out + b"\xff\xd9"


def rle_zeros(rows: int, columns: int, samples: int = 1, bits: int = 8) -> bytes:
    """An RLE Lossless frame of zeros (PS3.5 G): a segment per sample byte, each row a run of 128s."""
    full, tail = divmod(columns, 128)
    row = b"\x81\x00" * full + (b"" if not tail else bytes([257 - tail, 0]) if tail > 1 else b"\x00\x00")
    segment = row * rows
    segment += b"\x00" * (len(segment) % 2)
    count = samples * ((bits + 7) // 8)
    offsets = [64 + i * len(segment) for i in range(count)]
    return struct.pack("<16L", count, *offsets, *([0] * (15 - count))) + segment * count


def jpeg_ls_declaring(side: int) -> bytes:
    """pydicom's 64 × 64 JPEG-LS lossless codestream with its frame header (SOF55) declaring ``side`` × ``side``."""
    source = pydicom.dcmread(bundled("MR_small_jpeg_ls_lossless.dcm"))
    frame = bytearray(next(generate_frames(source.PixelData, number_of_frames=1)))
    sof = frame.index(b"\xff\xf7")
    frame[sof + 5 : sof + 9] = struct.pack(">HH", side, side)  # Y (lines), X (samples per line)
    return bytes(frame)


def deflated_declaring(rows: int, columns: int, pixel_bytes: int, study: str | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian instance declaring ``rows`` × ``columns`` 16-bit pixels
    whose Pixel Data holds only ``pixel_bytes`` zeros."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(study=study)))
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = bytes(pixel_bytes)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


#: What a retrieve may change when it transcodes: the pixel data and its encapsulation, and colour
#: decoded to RGB.  Everything else (every UID included) must come back as stored.
TRANSCODED_TAGS = frozenset(
    {
        0x7FE00010,  # PixelData
        0x7FE00001,  # ExtendedOffsetTable
        0x7FE00002,  # ExtendedOffsetTableLengths
        0x00280004,  # PhotometricInterpretation
        0x00280006,  # PlanarConfiguration
    }
)
#: And in the file meta information: the transfer syntax and the group length.
TRANSCODED_META_TAGS = frozenset({0x00020000, 0x00020010})


def identity_view(ds: Dataset, skip: frozenset[int] = TRANSCODED_TAGS) -> dict[int, object]:
    """Every attribute's value but ``skip`` (sequences item by item, group lengths left out), without VRs."""
    out: dict[int, object] = {}
    for element in ds:
        if int(element.tag) in skip or element.tag.element == 0:
            continue
        if element.VR == "SQ":
            out[int(element.tag)] = [identity_view(item, frozenset()) for item in element.value]
        elif isinstance(element.value, pydicom.multival.MultiValue):
            out[int(element.tag)] = list(element.value)
        else:
            out[int(element.tag)] = element.value
    return out
