"""Transcoding to Explicit VR Little Endian, and rendering to JPEG/PNG (Azure v2 "Retrieve (WADO-RS)").

Both need the whole instance in memory, so, as in Azure, instances larger than
:data:`MAX_TRANSCODE_BYTES` (100 MB) are refused with 406.  Decoding uses
pydicom with the pylibjpeg plugins (JPEG baseline/extended/lossless, JPEG-LS,
JPEG 2000, RLE); rendering uses Pillow.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, ExplicitVRLittleEndian

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


def to_explicit_vr_little_endian(data: bytes) -> bytes:
    """Re-encode a Part 10 file as Explicit VR Little Endian (decompressing pixel data).

    Raises
    ------
    NotAcceptable
        When the pixel data cannot be decoded.
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
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


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
    from PIL import Image

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
    image = Image.fromarray(_eight_bit(ds, frame))
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
