"""Decompression bombs: the decoded size is checked before anything is decoded, and decoding stays small.

Memory is measured with tracemalloc, which sees NumPy's allocations (the decoded frames and every
array built from them); the decoders' own C buffers are not seen, the e2e corpus watches those.
"""

from __future__ import annotations

import io
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from dicomserver.errors import BadRequest, NotAcceptable
from dicomserver.settings import Settings
from dicomserver.transcode import (
    DEFAULT_BUDGET,
    DecodeBudget,
    _eight_bit,
    decoded_frame_bytes,
    render,
    render_frame,
    transcode,
    transcode_frame,
    transcode_stream,
)
from dicomserver.wado import DEFAULT_MAX_FRAMES_PER_REQUEST, decode_budget, parse_frame_list
from tests.dicomfiles import deflated_declaring, jpeg2000_zeros, make_instance, tiled_jpeg2000_zeros, with_pixels

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MiB = 1024 * 1024


def peak_mib(call: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``call``; return its result (or the NotAcceptable it raised) and the peak of traced allocations in MiB."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except NotAcceptable as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()


def refused(call: Callable[[], Any], *fragments: str) -> float:
    """Assert ``call`` raises NotAcceptable quoting each fragment; return the traced peak in MiB."""
    result, peak = peak_mib(call)
    assert isinstance(result, NotAcceptable), result
    for fragment in fragments:
        assert fragment in result.message, (fragment, result.message)
    return peak


def header(side: int, bits: int = 16, samples: int = 1) -> Dataset:
    ds = Dataset()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, "MONOCHROME2" if samples == 1 else "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


def test_defaults_are_the_settings_defaults() -> None:
    assert decode_budget(Settings()) == DEFAULT_BUDGET
    assert Settings().max_frames_per_request == DEFAULT_MAX_FRAMES_PER_REQUEST
    # A 1,000-frame 512 x 512 16-bit CT transcodes; its frames can be asked for in one request.
    assert decoded_frame_bytes(header(512)) * 1000 <= DEFAULT_BUDGET.instance_bytes
    assert DEFAULT_MAX_FRAMES_PER_REQUEST >= 1000


def test_budget_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DICOM_MAX_DECODED_BYTES": "1000",
            "DICOM_MAX_DECODED_FRAME_BYTES": "100",
            "DICOM_MAX_FRAMES_PER_REQUEST": "7",
        }
    )
    assert decode_budget(settings) == DecodeBudget(1000, 100)
    assert settings.max_frames_per_request == 7
    with pytest.raises(ValueError, match="DICOM_MAX_DECODED_BYTES"):
        Settings.from_env({"DICOM_MAX_DECODED_BYTES": "1e9"})


def test_a_frame_over_the_budget_is_refused_before_it_is_decoded() -> None:
    bomb = tiled_jpeg2000_zeros(4, 4096, bits=8)  # 16384 x 16384 zeros: 256 MiB decoded, about 1 KB stored
    assert len(bomb) < 2048
    started = time.perf_counter()
    for call in (
        lambda: transcode_frame(header(16384, 8), JPEG2000_LOSSLESS, bomb, EXPLICIT_LE),
        lambda: render_frame(header(16384, 8), JPEG2000_LOSSLESS, bomb, "image/png", 100),
        lambda: transcode_frame(header(16384, 8), JPEG2000_LOSSLESS, bomb, JPEG2000_LOSSLESS),
    ):
        quoted = ("268435456 bytes", "16384 x 16384", "DICOM_MAX_DECODED_FRAME_BYTES", str(DEFAULT_BUDGET.frame_bytes))
        assert refused(call, *quoted) < 1
    assert time.perf_counter() - started < 1  # decoding it once takes seconds


def test_whole_instance_transcoding_is_refused_over_the_budget_before_decoding() -> None:
    frame = jpeg2000_zeros(4096)  # 32 MiB decoded
    data = with_pixels(
        rows=4096, columns=4096, frames=40, transfer_syntax=JPEG2000_LOSSLESS, pixel_data=encapsulate([frame] * 40)
    )
    for target in (EXPLICIT_LE, JPEG2000_LOSSLESS):
        peak = refused(
            lambda target=target: transcode_stream(data, target),
            "40 frame(s)",
            str(40 * 32 * MiB),
            "DICOM_MAX_DECODED_BYTES",
        )
        assert peak < 2 * len(data) / MiB + 1  # the stored file, parsed: nothing decoded


def test_whole_instance_transcoding_holds_one_frame_at_a_time() -> None:
    side, frames = 1024, 24  # 2 MiB a frame, 48 MiB in all
    data = with_pixels(
        rows=side,
        columns=side,
        frames=frames,
        transfer_syntax=JPEG2000_LOSSLESS,
        pixel_data=encapsulate([jpeg2000_zeros(side)] * frames),
    )

    def drain() -> int:
        return sum(len(chunk) for chunk in transcode_stream(data, EXPLICIT_LE))

    size, peak = peak_mib(drain)
    assert size > frames * 2 * MiB
    assert peak < 12, f"{peak:.1f} MiB traced while transcoding 48 MiB of frames"
    out = pydicom.dcmread(io.BytesIO(transcode(data, EXPLICIT_LE)))
    assert out.pixel_array.shape == (frames, side, side) and not out.pixel_array.any()


def test_deflated_data_sets_are_inflated_within_the_budget() -> None:
    declared = deflated_declaring(32768, 32768, 1 << 20)  # declares 2 GiB of pixels, holds 1 MiB
    assert len(declared) < 8192
    for call in (
        lambda: transcode(declared, JPEG2000_LOSSLESS),
        lambda: render(declared, 1, "image/png", 100),
    ):
        assert refused(call, "2147483648 bytes", "DICOM_MAX_DECODED_FRAME_BYTES") < 8
    inflating = deflated_declaring(4096, 4096, 32 * MiB)  # consistent: 32 MiB of zeros, 33 KB deflated
    small = DecodeBudget(instance_bytes=2 * MiB, frame_bytes=2 * MiB)
    peak = refused(lambda: transcode(inflating, EXPLICIT_LE, small), "inflates to more than 2097152 bytes")
    assert peak < 6, f"{peak:.1f} MiB traced inflating with a 2 MiB budget"
    out = pydicom.dcmread(io.BytesIO(transcode(inflating, EXPLICIT_LE)))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_LE and out.pixel_array.shape == (4096, 4096)


def test_rendering_a_large_frame_never_widens_it_whole() -> None:
    side = 4096  # 32 MiB decoded at 16 bit: widening it to float64 at once would take 128 MiB per copy
    frame = jpeg2000_zeros(side)
    png, peak = peak_mib(lambda: render_frame(header(side), JPEG2000_LOSSLESS, frame, "image/png", 100))
    assert png.startswith(b"\x89PNG")
    assert peak < 100, f"{peak:.0f} MiB traced rendering a 32 MiB frame"


def test_windowing_by_rows_equals_windowing_the_whole_frame() -> None:
    ds = header(2048, 16)
    ds.Columns = 1500
    ds.BitsStored, ds.HighBit = 12, 11
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1024"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    frame = np.random.default_rng(7).integers(0, 4096, (2048, 1500), dtype=np.uint16)
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        ds.PhotometricInterpretation = photometric
        values = apply_voi_lut(apply_modality_lut(frame, ds), ds, index=0).astype(np.float64)
        low, high = values.min(), values.max()
        expected = (values - low) / (high - low) * 255.0
        if photometric == "MONOCHROME1":
            expected = 255.0 - expected
        assert np.array_equal(_eight_bit(ds, frame), expected.clip(0, 255).astype(np.uint8))
    colour = header(1500, 16, samples=3)
    rgb = np.random.default_rng(8).integers(0, 65536, (1500, 1500, 3), dtype=np.uint16)
    expected_rgb = (rgb.astype(np.float64) / 65535.0 * 255.0).clip(0, 255).astype(np.uint8)
    assert np.array_equal(_eight_bit(colour, rgb), expected_rgb)


def test_unreadable_pixel_descriptions_are_refused_not_decoded() -> None:
    ds = header(64)
    ds.Rows = None
    with pytest.raises(NotAcceptable, match="Rows"):
        transcode_frame(ds, EXPLICIT_LE, bytes(64 * 64 * 2), EXPLICIT_LE)
    nine = make_instance(rows=64, columns=64, NumberOfFrames=1)
    element = b"\x28\x00\x08\x00IS\x02\x001 "
    assert nine.count(element) == 1
    many = nine.replace(element, b"\x28\x00\x08\x00IS\x04\x00many")
    with pytest.raises(NotAcceptable, match="NumberOfFrames is 'many'"):
        transcode(many, JPEG2000_LOSSLESS)


def test_frame_lists_are_capped_and_have_no_repeats() -> None:
    assert parse_frame_list("3,1,2") == [3, 1, 2]
    assert parse_frame_list(",".join(str(n) for n in range(1, 1001))) == list(range(1, 1001))
    with pytest.raises(BadRequest, match="1001 entries; at most 1000"):
        parse_frame_list(",".join(str(n) for n in range(1, 1002)))
    with pytest.raises(BadRequest, match="5000 entries"):
        parse_frame_list(",".join(["1"] * 5000))
    with pytest.raises(BadRequest, match="frame 1 more than once"):
        parse_frame_list("1,2,1")
    with pytest.raises(BadRequest, match="at most 3 frames"):
        parse_frame_list("1,2,3,4", max_frames=3)
    for bad in ("9" * 5000, "1," + "9" * 10, "1, 2", "+1", "1.0", "١"):
        with pytest.raises(BadRequest, match="not a comma-separated list"):
            parse_frame_list(bad)
