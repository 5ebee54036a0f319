"""Transcoding to Explicit VR Little Endian or JPEG 2000 lossless, and rendering to JPEG/PNG (Azure v2).

Retrieve never changes what was stored: transcoding rewrites the pixel data and
the transfer syntax, and nothing else — every UID (pydicom's ``decompress`` and
``compress`` would make a new SOP Instance UID by default) and every other
attribute is kept.

Decoding is budgeted before anything is decoded (:class:`DecodeBudget`): the
decoded size Rows × Columns × SamplesPerPixel × ⌈BitsAllocated / 8⌉ of one frame,
and of all the frames a request decodes, is compared with the budget and a
406 quoting the sizes answers anything over it, so a few hundred bytes of
JPEG 2000 declaring a huge image cannot exhaust a worker.

Whole instances are read in memory, so, as in Azure, instances larger than
:data:`MAX_TRANSCODE_BYTES` (100 MB) stored are refused with 406; their pixel
data is decoded and re-encoded one frame at a time and written out as it goes
(:func:`transcode_stream`), so memory holds the stored file and one frame.  Frames
and rendered frames are decoded one at a time from the frame's own bytes (read by
a ranged blob read) and a small header built from the stored metadata, so they
work for instances of any size.  Decoding uses pydicom with the pylibjpeg plugins
(JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE); Deflated files are
inflated within the budget; encoding JPEG 2000 lossless uses pylibjpeg-openjpeg
(images of at least 32 × 32 pixels, its six wavelet resolutions); rendering crops the
frame to the source region of PS3.18's ``viewport`` (:class:`Viewport`), windows it a few
rows at a time (PS3.18's ``window``, :class:`Window`, else the instance's VOI), then scales
it with Pillow to fit the viewport (at most :data:`MAX_VIEWPORT` pixels a side).
"""

from __future__ import annotations

import copy
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import iter_pixels, pack_bits
from pydicom.pixels.utils import pixel_array as decode_pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless

from .dicomjson import keyword_key
from .errors import BadRequest, NotAcceptable, NotFound

MAX_TRANSCODE_BYTES = 100 * 1024 * 1024

#: Default decoded-size budget of a request that decodes a whole instance (or many frames): 1 GiB,
#: twice a 1,000-frame 512 × 512 16-bit CT (500 MiB).  Frames are decoded one at a time and written
#: out as they go, so this bounds the work and the response size, not the memory.
DEFAULT_MAX_DECODED_BYTES = 1024**3
#: Default decoded-size budget of one frame: 128 MiB, an 8192 × 8192 16-bit frame, three times the
#: largest common frames (a 4096 × 5120 16-bit mammogram is 40 MiB, a 24-megapixel RGB photo 69 MiB).
#: Decoding needs up to five times the decoded size (openjpeg's 32-bit planes), so one frame costs
#: at most about 640 MB of a worker's 2 GB.
DEFAULT_MAX_DECODED_FRAME_BYTES = 128 * 1024**2


@dataclass(frozen=True, slots=True)
class DecodeBudget:
    """How many decoded bytes one request may produce, checked before anything is decoded."""

    #: All the frames one request decodes (a whole instance, or a frame list): ``DICOM_MAX_DECODED_BYTES``.
    instance_bytes: int = DEFAULT_MAX_DECODED_BYTES
    #: One decoded frame: ``DICOM_MAX_DECODED_FRAME_BYTES``.
    frame_bytes: int = DEFAULT_MAX_DECODED_FRAME_BYTES


DEFAULT_BUDGET = DecodeBudget()

#: Sources Azure v2 transcodes from (its conformance statement), plus JPEG-LS which pylibjpeg decodes
#: and Deflated Explicit VR Little Endian (inflated within the budget).
TRANSCODABLE = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
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


# -- the decoded-size budget ---------------------------------------------------------------------


def _count(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """A non-negative count from the pixel description; 406 when absent (without default) or unreadable."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise NotAcceptable(f"The pixel data cannot be decoded: {keyword} is missing.")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise NotAcceptable(f"The pixel data cannot be decoded: {keyword} is '{value}'.") from None
    if number < 0:
        raise NotAcceptable(f"The pixel data cannot be decoded: {keyword} is {number}.")
    return number


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent or zero; 406 when unreadable)."""
    return max(_count(ds, "NumberOfFrames", 1), 1)


def decoded_frame_bytes(ds: Dataset) -> int:
    """Rows × Columns × SamplesPerPixel × ⌈BitsAllocated / 8⌉: one frame, decoded (before any decode)."""
    rows, columns = _count(ds, "Rows"), _count(ds, "Columns")
    samples = max(_count(ds, "SamplesPerPixel", 1), 1)
    bits = _count(ds, "BitsAllocated")
    return rows * columns * samples * max((bits + 7) // 8, 1)


def _describe(ds: Dataset) -> str:
    return (
        f"{ds.get('Columns')} x {ds.get('Rows')} pixels x {ds.get('SamplesPerPixel', 1)} sample(s) x "
        f"{ds.get('BitsAllocated')} bits"
    )


def check_budget(ds: Dataset, frames: int, budget: DecodeBudget) -> int:
    """Raise 406 when one frame, or ``frames`` frames, of ``ds`` decode to more than the budget.

    Returns the decoded size of one frame.  Only the pixel description is read: nothing is decoded.
    """
    one = decoded_frame_bytes(ds)
    if one > budget.frame_bytes:
        raise NotAcceptable(
            f"A frame of this instance decodes to {one} bytes ({_describe(ds)}), over the budget of "
            f"{budget.frame_bytes} bytes per decoded frame (DICOM_MAX_DECODED_FRAME_BYTES). "
            "Ask for transfer-syntax=* to get the frames as stored."
        )
    if one * frames > budget.instance_bytes:
        raise NotAcceptable(
            f"The {frames} frame(s) asked for decode to {one * frames} bytes ({_describe(ds)} each), over the "
            f"budget of {budget.instance_bytes} decoded bytes per request (DICOM_MAX_DECODED_BYTES). "
            "Ask for transfer-syntax=*, or for fewer frames."
        )
    return one


# -- whole instances -----------------------------------------------------------------------------

_PIXEL_DATA = Tag("PixelData")
#: Elements that describe the stored encapsulation, not the image: dropped when the pixel data is rewritten.
_ENCAPSULATION_TAGS = frozenset({Tag("ExtendedOffsetTable"), Tag("ExtendedOffsetTableLengths")})
_CHUNK = 1024 * 1024


def _read(data: bytes, budget: DecodeBudget) -> tuple[Dataset, UID]:
    """Parse a stored Part 10 file; Deflated data sets are inflated to at most ``budget.instance_bytes``.

    Returns the data set (its transfer syntax set to what its bytes now are) and the stored transfer syntax.
    """
    fp = io.BytesIO(data)
    try:
        preamble = read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as exc:  # pydicom raises many types for unreadable files
        raise NotAcceptable(f"The stored file cannot be read for transcoding: {exc}") from None
    source = UID(str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    try:
        if source != DeflatedExplicitVRLittleEndian:
            ds: Dataset = pydicom.dcmread(io.BytesIO(data))
            return ds, source
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = inflater.decompress(data[fp.tell() :], budget.instance_bytes)
        if inflater.unconsumed_tail:
            raise NotAcceptable(
                f"The Deflated data set inflates to more than {budget.instance_bytes} bytes, the budget of decoded "
                "bytes per request (DICOM_MAX_DECODED_BYTES). Ask for transfer-syntax=*."
            )
        ds = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True)
    except NotAcceptable:
        raise
    except Exception as exc:  # pydicom and zlib raise many types for unreadable files
        raise NotAcceptable(f"The stored file cannot be read for transcoding: {exc}") from None
    ds.file_meta = meta
    ds.preamble = preamble
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated bytes are
    return ds, source


def transcode(data: bytes, target: str, budget: DecodeBudget = DEFAULT_BUDGET) -> bytes:
    """Re-encode a Part 10 file in ``target`` (one of :data:`TARGETS`); see :func:`transcode_stream`."""
    return b"".join(transcode_stream(data, target, budget))


def transcode_stream(data: bytes, target: str, budget: DecodeBudget = DEFAULT_BUDGET) -> Iterator[bytes]:
    """Re-encode a Part 10 file in ``target`` (one of :data:`TARGETS`), one frame at a time.

    Only the pixel data and the transfer syntax change (and, for colour decoded to RGB, the
    Photometric Interpretation and Planar Configuration): every UID and every other attribute is
    kept.  Everything that can fail before the first frame is written — reading, the decoded-size
    budget, decoding and encoding the first frame — fails here, before the returned iterator is used.

    Raises
    ------
    NotAcceptable
        When the pixel data is over the budget, or cannot be decoded, or encoded in ``target``.
    """
    ds, source = _read(data, budget)
    pixels = ds.get(_PIXEL_DATA)
    working = UID(str(ds.file_meta.TransferSyntaxUID))
    native_le = not working.is_compressed and working.is_little_endian
    decode = pixels is not None and (not native_le or target == JPEG2000Lossless)
    frames = number_of_frames(ds) if pixels is not None else 0
    if decode:
        check_budget(ds, frames, budget)
        if target == JPEG2000Lossless:
            _check_jpeg2000_size(ds)
    head, tail = Dataset(), Dataset()
    for element in ds:
        if element.tag < _PIXEL_DATA and element.tag not in _ENCAPSULATION_TAGS:
            head.add(copy.copy(element) if element.tag.group == 0x0028 else element)
        elif element.tag > _PIXEL_DATA:
            tail.add(element)
    for element in head.iterall():  # decode every raw element so all are re-encoded, not copied
        _ = element.value
    for element in tail.iterall():
        _ = element.value
    head.file_meta = copy.deepcopy(ds.file_meta)
    head.preamble = getattr(ds, "preamble", None)
    head.file_meta.TransferSyntaxUID = UID(target)
    if pixels is None:
        return iter([_write_head(head) + _write_tail(tail)])
    if not decode:  # native little endian to Explicit VR Little Endian: the stored bytes
        value = pixels.value if isinstance(pixels.value, bytes) else b""
        bits = _count(ds, "BitsAllocated", 8)
        body = _native_body(bits, [value], len(value))
        return _with_tail(_write_head(head), body, tail)
    if target == JPEG2000Lossless:
        body = _encapsulated_body(_encoded_frames(ds, head, source))
    else:
        body = _decoded_body(ds, head, frames, source)
    first = next(body)  # decodes (and encodes) the first frame: a failure is still a 406
    return _with_tail(_write_head(head) + first, body, tail)


def _write_head(head: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, head, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _write_tail(tail: Dataset) -> bytes:
    if not len(tail):
        return b""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, tail)
    return bytes(fp.getvalue())


def _with_tail(first: bytes, body: Iterator[bytes], tail: Dataset) -> Iterator[bytes]:
    yield first
    yield from body
    rest = _write_tail(tail)
    if rest:
        yield rest


def _pixel_element_header(vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2sHL", 0x7FE0, 0x0010, vr, 0, length)


def _native_body(bits: int, chunks: list[bytes] | Iterator[memoryview], length: int) -> Iterator[bytes]:
    """Native Pixel Data of ``length`` bytes from ``chunks`` (padded to even length), in pieces of 1 MiB."""
    if length > 0xFFFFFFFE:
        raise NotAcceptable(f"The decoded pixel data ({length} bytes) does not fit one native Pixel Data element.")
    padded = length + length % 2
    yield _pixel_element_header(b"OW" if bits > 8 else b"OB", padded)
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _CHUNK):
            yield bytes(view[start : start + _CHUNK])
        del view, chunk  # let this frame go before the next is decoded
    if length % 2:
        yield b"\x00"


def _set_rgb(head: Dataset, samples: int) -> None:
    """Colour is decoded to RGB, interleaved (as :func:`decode_frame` describes it)."""
    if samples == 3:
        head.PhotometricInterpretation = "RGB"
        head.PlanarConfiguration = 0


def _iter_decoded(ds: Dataset, source: UID) -> Iterator[np.ndarray]:
    try:
        yield from iter_pixels(ds)
    except Exception as exc:  # the decoders raise many types
        raise NotAcceptable(f"The pixel data ({source}) cannot be decoded for transcoding: {exc}") from None


def _decoded_body(ds: Dataset, head: Dataset, frames: int, source: UID) -> Iterator[bytes]:
    """Each frame decoded to native little endian, written as it is decoded."""
    bits = _count(ds, "BitsAllocated")
    samples = max(_count(ds, "SamplesPerPixel", 1), 1)
    _set_rgb(head, samples)
    decoded = _iter_decoded(ds, source)
    if bits == 1:  # bit-packed across frames: pack them together (the budget counted a byte per pixel)
        packed = bytes(pack_bits(np.stack(list(decoded))))
        yield from _native_body(bits, [packed], len(packed))
        return
    frame_bytes = decoded_frame_bytes(ds)

    def native_frames() -> Iterator[memoryview]:
        for pixels in decoded:
            data = _native_frame(pixels, frame_bytes)
            del pixels  # one decoded frame alive at a time
            yield data

    body = _native_body(bits, native_frames(), frame_bytes * frames)
    yield next(body) + next(body, b"")  # the element header and the first frame together
    yield from body


def _native_frame(pixels: np.ndarray, expected: int) -> memoryview:
    """The frame's bytes, little endian, without copying them when they already are."""
    data = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)).data.cast("B")
    if data.nbytes != expected:
        raise NotAcceptable(f"A frame decoded to {data.nbytes} bytes where {expected} were expected.")
    return data


def _encoded_frames(ds: Dataset, head: Dataset, source: UID) -> Iterator[bytes]:
    """Each frame decoded, then encoded as a JPEG 2000 lossless codestream."""
    described = Dataset()
    for element in head:
        if element.tag.group == 0x0028:
            described.add(copy.copy(element))
    _set_rgb(head, max(_count(ds, "SamplesPerPixel", 1), 1))
    _set_rgb(described, max(_count(ds, "SamplesPerPixel", 1), 1))
    for pixels in _iter_decoded(ds, source):
        yield _encode_jpeg2000(described, pixels)


def _encapsulated_body(codestreams: Iterator[bytes]) -> Iterator[bytes]:
    """Encapsulated Pixel Data (PS3.5 A.4): an empty Basic Offset Table, one fragment per frame."""
    first = True
    for codestream in codestreams:
        if len(codestream) % 2:
            codestream += b"\x00"
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(codestream)) + codestream
        if first:
            yield _pixel_element_header(b"OB", 0xFFFFFFFF) + struct.pack("<HHL", 0xFFFE, 0xE000, 0) + item
            first = False
        else:
            yield item
    yield struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _encode_jpeg2000(described: Dataset, pixels: np.ndarray) -> bytes:
    ds = copy.deepcopy(described)
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        ds.compress(JPEG2000Lossless, pixels, generate_instance_uid=False)
    except Exception as exc:  # the encoders raise many types
        raise NotAcceptable(f"The pixel data cannot be encoded as JPEG 2000 lossless: {exc}") from None
    return bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))


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


#: Without these the pixels of a frame cannot be described.
_REQUIRED_HEADER_KEYS = frozenset(keyword_key(k) for k in ("Rows", "Columns", "BitsAllocated"))


def frame_header(metadata: dict[str, Any]) -> Dataset | None:
    """A dataset with the pixel description and windowing of an instance, from its stored DICOM JSON.

    None when a needed attribute lives in bulk data (LUT Data of modality or VOI LUTs), or the
    pixel description is incomplete: the caller then works from the whole file.
    """
    selected = {key: value for key, value in metadata.items() if key in _HEADER_KEYS}
    if "BulkDataURI" in repr(selected) or not _REQUIRED_HEADER_KEYS <= selected.keys():
        return None
    try:
        return Dataset.from_json(selected)
    except Exception:  # a value pydicom cannot read back: work from the file
        return None


def decode_frame(
    header: Dataset, transfer_syntax: str, frame: bytes, budget: DecodeBudget = DEFAULT_BUDGET
) -> tuple[np.ndarray, Dataset]:
    """Decode one frame's bytes; returns the pixels and the header describing them (colour as RGB).

    Raises
    ------
    NotAcceptable
        When the frame is over the budget, or cannot be decoded.
    """
    check_budget(header, 1, budget)
    source = UID(transfer_syntax)
    ds = copy.deepcopy(header)  # decoding YBR as RGB rewrites the Photometric Interpretation it is given
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
    described = copy.deepcopy(header)  # never the caller's elements: the header serves every frame
    if int(header.get("SamplesPerPixel", 1)) == 3:
        described.PhotometricInterpretation = "RGB"  # pydicom converts YBR to RGB when decoding
        described.PlanarConfiguration = 0
    return pixels, described


def transcode_frame(
    header: Dataset, transfer_syntax: str, frame: bytes, target: str, budget: DecodeBudget = DEFAULT_BUDGET
) -> bytes:
    """One frame's bytes in ``target``: Explicit VR Little Endian (native) or a JPEG 2000 lossless codestream."""
    pixels, described = decode_frame(header, transfer_syntax, frame, budget)
    if target != JPEG2000Lossless:
        return bytes(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes())
    _check_jpeg2000_size(described)
    return _encode_jpeg2000(described, pixels)


# -- rendering -----------------------------------------------------------------------------------

#: Largest viewport width or height a rendered image may ask for (PS3.18 §8.3.5.1.3 ``viewport``): 4096 pixels.
MAX_VIEWPORT = 4096
#: The VOI LUT functions of the ``window`` parameter (PS3.18 §8.3.5.1.4, PS3.3 C.11.2.1.2).
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


@dataclass(frozen=True, slots=True)
class Viewport:
    """PS3.18 §8.3.5.1.3 ``viewport=vw,vh[,sx,sy,sw,sh]``: the rendered size, and the source region.

    The region (``sx``, ``sy``: its top left pixel; ``sw``, ``sh``: its size, a negative one flipping
    the image along that axis) is clipped to the image; without it the whole image is rendered.  The
    region is scaled, up or down, to the largest size that fits ``width`` x ``height`` with its aspect
    ratio kept (pixels are taken as square).
    """

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """PS3.18 §8.3.5.1.4 ``window=center,width,function``: replaces the instance's VOI (monochrome only).

    Applied to the modality LUT output (e.g. Hounsfield units), as PS3.3 C.11.2.1.2.1 defines
    ``LINEAR``, ``LINEAR_EXACT`` and ``SIGMOID``.
    """

    center: float
    width: float
    function: str = "linear"


def render_frame(
    header: Dataset,
    transfer_syntax: str,
    frame: bytes,
    media_type: str,
    quality: int,
    budget: DecodeBudget = DEFAULT_BUDGET,
    *,
    viewport: Viewport | None = None,
    window: Window | None = None,
) -> bytes:
    """Render one frame from its own bytes (see :func:`render`)."""
    region = _region(header, viewport)  # a region outside the image is a 400 before anything is decoded
    pixels, described = decode_frame(header, transfer_syntax, frame, budget)
    return _encode_image(_eight_bit(described, region(pixels), window), media_type, quality, viewport)


#: Pixels windowed at once when rendering: the float64 intermediates stay near 8 MB whatever the frame size.
_RENDER_CHUNK_PIXELS = 1 << 20


def _eight_bit(ds: Dataset, frame: np.ndarray, window: Window | None = None) -> np.ndarray:
    """Window a monochrome frame (``window``, else its VOI LUT, else min/max) or scale a colour one to 8 bits.

    A few rows at a time (:data:`_RENDER_CHUNK_PIXELS`): the frame is never widened to float64 whole.
    """
    rows = frame.shape[0] if frame.ndim else 0
    step = max(1, _RENDER_CHUNK_PIXELS // max(1, frame[0].size if rows else 1))
    out = np.empty(frame.shape, dtype=np.uint8)
    if ds.get("SamplesPerPixel", 1) == 1:
        invert = ds.get("PhotometricInterpretation") == "MONOCHROME1"
        if window is not None:
            for start in range(0, rows, step):
                values = np.asarray(apply_modality_lut(frame[start : start + step], ds), dtype=np.float64)
                scaled = _windowed(values, window) * 255.0
                if invert:
                    scaled = 255.0 - scaled
                out[start : start + step] = np.rint(scaled).clip(0, 255).astype(np.uint8)
            return out

        def windowed(part: np.ndarray) -> np.ndarray:
            values = apply_modality_lut(part, ds)
            if "WindowCenter" in ds or "VOILUTSequence" in ds:
                values = apply_voi_lut(values, ds, index=0)
            return np.asarray(values, dtype=np.float64)

        low, high = np.inf, -np.inf
        for start in range(0, rows, step):
            values = windowed(frame[start : start + step])
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        for start in range(0, rows, step):
            values = windowed(frame[start : start + step])
            scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
            if invert:
                scaled = 255.0 - scaled
            out[start : start + step] = scaled.clip(0, 255).astype(np.uint8)
        return out
    if frame.dtype == np.uint8:
        return frame
    maximum = float((1 << int(ds.get("BitsStored", 8))) - 1)
    for start in range(0, rows, step):
        out[start : start + step] = (frame[start : start + step].astype(np.float64) / maximum * 255.0).clip(0, 255)
    return out


def _windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1: modality values through the window, as fractions of the output range (0 to 1)."""
    center, width = window.center, window.width
    if window.function == "sigmoid":
        with np.errstate(over="ignore"):
            result: np.ndarray = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        return result
    if window.function == "linear-exact":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR: 0 at or below c - 0.5 - (w - 1) / 2, 1 above c - 0.5 + (w - 1) / 2 (a step when w = 1)
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-9) + 0.5, 0.0, 1.0)


def _region(ds: Dataset, viewport: Viewport | None) -> Callable[[np.ndarray], np.ndarray]:
    """What crops (and flips) a decoded frame to the viewport's source region; 400 when it misses the image.

    Only the pixel description is read, so a bad region is refused before anything is decoded.
    """
    if viewport is None or viewport.region is None:
        return lambda pixels: pixels
    rows, columns = _count(ds, "Rows"), _count(ds, "Columns")
    sx, sy, sw, sh = viewport.region
    x0, x1 = min(sx, columns), min(sx + abs(sw), columns)
    y0, y1 = min(sy, rows), min(sy + abs(sh), rows)
    if x1 <= x0 or y1 <= y0:
        raise BadRequest(
            f"The viewport's source region ({sx},{sy},{sw},{sh}) lies outside the image ({columns} x {rows} pixels)."
        )
    columns_step, rows_step = (-1 if sw < 0 else 1), (-1 if sh < 0 else 1)

    def crop(pixels: np.ndarray) -> np.ndarray:
        return pixels[y0:y1, x0:x1][::rows_step, ::columns_step]

    return crop


def fitted_size(width: int, height: int, viewport: Viewport) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image scaled to fit the viewport, its aspect ratio kept."""
    scale = min(viewport.width / width, viewport.height / height)
    return (
        min(max(1, round(width * scale)), viewport.width),
        min(max(1, round(height * scale)), viewport.height),
    )


def render(
    data: bytes,
    frame_number: int,
    media_type: str,
    quality: int,
    budget: DecodeBudget = DEFAULT_BUDGET,
    *,
    viewport: Viewport | None = None,
    window: Window | None = None,
) -> bytes:
    """Render one frame as ``image/jpeg`` or ``image/png``; only that frame is decoded.

    ``viewport`` crops to its source region and scales to fit its size; ``window`` replaces the VOI.

    Raises
    ------
    NotFound
        No pixel data, or no such frame.
    NotAcceptable
        The frame is over the budget, or the pixel data cannot be decoded.
    BadRequest
        The viewport's source region lies outside the image.
    """
    ds, _ = _read(data, budget)
    if "PixelData" not in ds:
        raise NotFound("The instance has no pixel data to render.")
    frames = number_of_frames(ds)
    if frame_number > frames:
        raise NotFound(f"The instance has {frames} frame(s); frame {frame_number} does not exist.")
    check_budget(ds, 1, budget)
    region = _region(ds, viewport)
    try:
        frame = decode_pixel_array(ds, index=frame_number - 1)
    except Exception as exc:  # the decoders raise many types
        raise NotAcceptable(f"The pixel data cannot be decoded for rendering: {exc}") from None
    return _encode_image(_eight_bit(ds, region(frame), window), media_type, quality, viewport)


def _encode_image(pixels: np.ndarray, media_type: str, quality: int, viewport: Viewport | None = None) -> bytes:
    from PIL import Image

    try:
        image = Image.fromarray(np.ascontiguousarray(pixels))
        if viewport is not None:
            size = fitted_size(image.width, image.height, viewport)
            if size != image.size:
                image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        if media_type == "image/png":
            image.save(out, format="PNG")
        else:
            image.save(out, format="JPEG", quality=quality)
    except (TypeError, ValueError, OSError) as exc:  # a pixel layout Pillow cannot write
        raise NotAcceptable(f"The frame cannot be rendered as {media_type}: {exc}") from None
    return out.getvalue()
