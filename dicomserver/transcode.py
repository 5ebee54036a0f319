"""Transcoding to Explicit VR Little Endian or JPEG 2000 lossless, and rendering to JPEG/PNG (Azure v2).

Whole instances are transcoded in memory, so, as in Azure, instances larger than
:data:`MAX_TRANSCODE_BYTES` (100 MB) are refused with 406.  Frames and rendered
frames are decoded one at a time from the frame's own bytes (read by a ranged
blob read) and a small header built from the stored metadata, so they work for
instances of any size.  Decoding uses pydicom with the pylibjpeg plugins (JPEG
baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE); encoding JPEG 2000
lossless uses pylibjpeg-openjpeg (images of at least 32 × 32 pixels, its six
wavelet resolutions); rendering uses Pillow.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filewriter import dcmwrite
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless

from .errors import NotAcceptable, NotFound

MAX_TRANSCODE_BYTES = 100 * 1024 * 1024

#: Sources Azure v2 transcodes from (its conformance statement), plus JPEG-LS which pylibjpeg decodes.
TRANSCODABLE = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    }
)


def check_size(size: int) -> None:
    """406 for instances too large to transcode or render (Azure: 100 MB)."""
    if size > MAX_TRANSCODE_BYTES:
        raise NotAcceptable(
            f"The instance is {size} bytes; instances over {MAX_TRANSCODE_BYTES} bytes cannot be transcoded, "
            "framed or rendered. Ask for transfer-syntax=*."
        )


#: Transfer syntaxes this service transcodes to (Azure v2: Explicit VR Little Endian and JPEG 2000 lossless).
TARGETS = frozenset({str(ExplicitVRLittleEndian), str(JPEG2000Lossless)})


def transcode(data: bytes, target: str) -> bytes:
    """Re-encode a Part 10 file in ``target`` (one of :data:`TARGETS`).

    Raises
    ------
    NotAcceptable
        When the pixel data cannot be decoded, or encoded in ``target``.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    source = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        if source.is_compressed and "PixelData" in ds:
            ds.decompress(as_rgb=True)
        elif not source.is_little_endian and "PixelData" in ds:
            pixels = ds.pixel_array  # native byte order
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
            ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
    except Exception as exc:  # the decoders raise many types
        raise NotAcceptable(f"The pixel data ({source}) cannot be decoded for transcoding: {exc}") from None
    for element in ds.iterall():  # decode every raw element so all are re-encoded, not copied
        _ = element.value
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if target == JPEG2000Lossless and "PixelData" in ds:
        _check_jpeg2000_size(ds)
        try:
            ds.compress(JPEG2000Lossless)
        except Exception as exc:  # the encoders raise many types
            raise NotAcceptable(f"The pixel data cannot be encoded as JPEG 2000 lossless: {exc}") from None
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _check_jpeg2000_size(ds: Dataset) -> None:
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if min(rows, columns) < 32:
        raise NotAcceptable(
            f"Images of {columns} x {rows} pixels cannot be encoded as JPEG 2000 lossless "
            "(at least 32 x 32 is needed); ask for another transfer syntax."
        )


# -- one frame at a time ------------------------------------------------------------------------

#: The stored-metadata attributes a frame decoder and the renderer need.
FRAME_HEADER_KEYWORDS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "ModalityLUTSequence",
    "VOILUTSequence",
)
_HEADER_KEYS = {f"{int(pydicom.tag.Tag(k)):08X}": k for k in FRAME_HEADER_KEYWORDS}


def frame_header(metadata: dict[str, Any]) -> Dataset | None:
    """A dataset with the pixel description and windowing of an instance, from its stored DICOM JSON.

    None when a needed attribute lives in bulk data (LUT Data of modality or VOI LUTs), or the
    pixel description is incomplete: the caller then works from the whole file.
    """
    selected = {key: value for key, value in metadata.items() if key in _HEADER_KEYS}
    if "BulkDataURI" in repr(selected) or not {"00280010", "00280011", "00280100"} <= selected.keys():
        return None
    try:
        return Dataset.from_json(selected)
    except Exception:  # a value pydicom cannot read back: work from the file
        return None


def decode_frame(header: Dataset, transfer_syntax: str, frame: bytes) -> tuple[np.ndarray, Dataset]:
    """Decode one frame's bytes; returns the pixels and the header describing them (colour as RGB).

    Raises
    ------
    NotAcceptable
        When the frame cannot be decoded.
    """
    source = UID(transfer_syntax)
    ds = Dataset()
    ds.update(header)
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = source
    if source.is_compressed:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = frame
        ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # the decoders raise many types
        raise NotAcceptable(f"The frame ({source}) cannot be decoded: {exc}") from None
    described = Dataset()
    described.update(header)
    if int(header.get("SamplesPerPixel", 1)) == 3:
        described.PhotometricInterpretation = "RGB"  # pydicom converts YBR to RGB when decoding
        described.PlanarConfiguration = 0
    return pixels, described


def transcode_frame(header: Dataset, transfer_syntax: str, frame: bytes, target: str) -> bytes:
    """One frame's bytes in ``target``: Explicit VR Little Endian (native) or a JPEG 2000 lossless codestream."""
    pixels, described = decode_frame(header, transfer_syntax, frame)
    if target != JPEG2000Lossless:
        return bytes(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
    ds = Dataset()
    ds.update(described)
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _check_jpeg2000_size(ds)
    try:
        ds.compress(JPEG2000Lossless, pixels)
    except Exception as exc:  # the encoders raise many types
        raise NotAcceptable(f"The frame cannot be encoded as JPEG 2000 lossless: {exc}") from None
    return bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))


def render_frame(header: Dataset, transfer_syntax: str, frame: bytes, media_type: str, quality: int) -> bytes:
    """Render one frame from its own bytes (see :func:`render`)."""
    pixels, described = decode_frame(header, transfer_syntax, frame)
    return _encode_image(_eight_bit(described, pixels), media_type, quality)


def _eight_bit(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """Window a monochrome frame (VOI LUT, else min/max) or scale a colour one to 8 bits."""
    if ds.get("SamplesPerPixel", 1) == 1:
        values = apply_modality_lut(frame, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            values = apply_voi_lut(values, ds, index=0)
        values = values.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            scaled = 255.0 - scaled
        return scaled.clip(0, 255).astype(np.uint8)
    if frame.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8))
        frame = (frame.astype(np.float64) / float((1 << bits) - 1) * 255.0).clip(0, 255)
    return frame.astype(np.uint8)


def render(data: bytes, frame_number: int, media_type: str, quality: int) -> bytes:
    """Render one frame as ``image/jpeg`` or ``image/png``.

    Raises
    ------
    NotFound
        No pixel data, or no such frame.
    NotAcceptable
        The pixel data cannot be decoded.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise NotFound("The instance has no pixel data to render.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame_number > frames:
        raise NotFound(f"The instance has {frames} frame(s); frame {frame_number} does not exist.")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # the decoders raise many types
        raise NotAcceptable(f"The pixel data cannot be decoded for rendering: {exc}") from None
    frame = pixels[frame_number - 1] if frames > 1 else pixels
    return _encode_image(_eight_bit(ds, frame), media_type, quality)


def _encode_image(pixels: np.ndarray, media_type: str, quality: int) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
