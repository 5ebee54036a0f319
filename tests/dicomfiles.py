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
