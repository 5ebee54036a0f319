"""Rendered resources: the ``quality``, ``viewport`` and ``window`` parameters (PS3.18 §8.3.5.1) and their effect.

Parsing is checked value by value (400 for anything malformed); rendering is checked on small
generated frames decoded back with Pillow: the image is the viewport fit of its source region,
a narrow window saturates, the region crops and flips.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicomserver.errors import BadRequest, NotAcceptable
from dicomserver.negotiation import rendered_multipart
from dicomserver.stores.model import SeriesSnapshot
from dicomserver.transcode import MAX_VIEWPORT, Viewport, Window, fitted_size, render, render_frame
from dicomserver.wado import (
    _thumbnail_candidates,
    parse_quality,
    parse_viewport,
    parse_window,
)
from tests.dicomfiles import bundled, make_instance

EXPLICIT_LE = "1.2.840.10008.1.2.1"


# -- parsing ------------------------------------------------------------------------------------


def test_viewport_values() -> None:
    assert parse_viewport(None) is None
    assert parse_viewport("256,128") == Viewport(256, 128)
    assert parse_viewport(" 64 , 64 ") == Viewport(64, 64)
    assert parse_viewport("512,512,10,20,100,-50") == Viewport(512, 512, (10, 20, 100, -50))
    assert parse_viewport(f"{MAX_VIEWPORT},1") == Viewport(MAX_VIEWPORT, 1)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "256",
        "256,",
        "256,128,1",
        "256,128,0,0,10",
        "256,128,0,0,10,10,1",
        "a,b",
        "1.5,2",
        "1e3,10",
        "0,10",
        "10,0",
        "-1,10",
        f"{MAX_VIEWPORT + 1},10",
        "10,99999999999",
        "10,10,-1,0,5,5",
        "10,10,0,0,0,5",
        "10,10,0,0,5,0",
    ],
)
def test_malformed_viewports_are_a_400(value: str) -> None:
    with pytest.raises(BadRequest, match="viewport"):
        parse_viewport(value)


def test_window_values() -> None:
    assert parse_window(None) is None
    assert parse_window("40,400,linear") == Window(40.0, 400.0, "linear")
    assert parse_window("40,400") == Window(40.0, 400.0, "linear")
    assert parse_window("-600,1500,SIGMOID") == Window(-600.0, 1500.0, "sigmoid")
    assert parse_window("0.5,.25,linear-exact") == Window(0.5, 0.25, "linear-exact")
    assert parse_window("1e2,1,linear") == Window(100.0, 1.0, "linear")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "40",
        "40,400,linear,1",
        "40,400,cubic",
        "a,400,linear",
        "40,,linear",
        "40,0.5,linear",
        "40,0,sigmoid",
        "40,-1,linear-exact",
        "1e999,10,linear",
        "nan,10,linear",
        "inf,10",
    ],
)
def test_malformed_windows_are_a_400(value: str) -> None:
    with pytest.raises(BadRequest, match="window"):
        parse_window(value)


def test_quality_values() -> None:
    assert parse_quality(None) == 100
    assert parse_quality("1") == 1 and parse_quality("100") == 100
    for value in ("0", "101", "x", "", "50.5"):
        with pytest.raises(BadRequest):
            parse_quality(value)


def test_rendered_studies_and_series_negotiate_the_parts_type() -> None:
    def rendered_parts(accept: str | None) -> str:
        return rendered_multipart(accept).media_type

    assert rendered_parts(None) == "image/jpeg"
    assert rendered_parts("*/*") == "image/jpeg"
    assert rendered_parts('multipart/related; type="image/png"') == "image/png"
    assert rendered_parts('multipart/related; type="image/jpeg"') == "image/jpeg"
    assert rendered_parts("multipart/related") == "image/jpeg"
    assert rendered_parts("image/png") == "image/png"
    assert rendered_parts('multipart/related; type="application/dicom", image/png;q=0.5') == "image/png"
    for refused in ('multipart/related; type="application/dicom"', "application/dicom", "image/gif"):
        with pytest.raises(NotAcceptable):
            rendered_multipart(refused)


# -- rendering ----------------------------------------------------------------------------------


def header(rows: int, columns: int, samples: int = 1, photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if samples == 3:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PlanarConfiguration = 8, 8, 7, 0
    return ds


def ramp(rows: int, columns: int) -> np.ndarray:
    """Values 0 to 1000 rising left to right, the same on every row."""
    return np.tile(np.linspace(0, 1000, columns).round().astype(np.uint16), (rows, 1))


def rendered(
    pixels: np.ndarray,
    ds: Dataset,
    media_type: str = "image/png",
    viewport: Viewport | None = None,
    window: Window | None = None,
) -> Image.Image:
    data = render_frame(ds, EXPLICIT_LE, pixels.tobytes(), media_type, 90, viewport=viewport, window=window)
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("viewport", "size"),
    [
        (Viewport(50, 50), (50, 25)),  # 128 x 64 down to fit the width
        (Viewport(256, 16), (32, 16)),  # fit the height
        (Viewport(300, 300), (300, 150)),  # scaled up to fit
        (Viewport(128, 64), (128, 64)),  # the native size
        (Viewport(64, 64, (10, 10, 32, 16)), (64, 32)),  # the region, scaled to fit
        (Viewport(64, 64, (100, 40, 500, 500)), (64, 55)),  # the region clipped to 28 x 24
    ],
)
@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg"])
def test_the_image_is_the_viewport_fit_of_its_region(
    viewport: Viewport, size: tuple[int, int], media_type: str
) -> None:
    image = rendered(ramp(64, 128), header(64, 128), media_type, viewport)
    assert image.format == ("PNG" if media_type == "image/png" else "JPEG")
    assert image.size == size
    assert image.width <= viewport.width and image.height <= viewport.height


def test_fitted_sizes_keep_the_aspect_ratio_and_at_least_a_pixel() -> None:
    assert fitted_size(512, 512, Viewport(128, 128)) == (128, 128)
    assert fitted_size(4000, 10, Viewport(100, 100)) == (100, 1)
    assert fitted_size(10, 30, Viewport(100, 100)) == (33, 100)


def test_without_a_viewport_the_image_keeps_its_size() -> None:
    assert rendered(ramp(64, 128), header(64, 128)).size == (128, 64)


def test_a_narrow_window_saturates_and_replaces_the_instance_voi() -> None:
    ds = header(8, 101)
    ds.WindowCenter, ds.WindowWidth = "0", "10"  # the instance's own VOI: everything white
    pixels = np.tile(np.arange(0, 1010, 10, dtype=np.uint16), (8, 1))  # 0, 10, ..., 1000
    own = np.asarray(rendered(pixels, ds))
    assert (own[:, 2:] == 255).all()
    narrow = np.asarray(rendered(pixels, ds, window=Window(500, 2, "linear")))
    assert (narrow[:, :50] == 0).all() and (narrow[:, 51:] == 255).all()  # 0..490 black, 510..1000 white
    assert set(np.unique(narrow)) <= {0, 127, 128, 255}
    wide = np.asarray(rendered(pixels, ds, window=Window(500, 1001, "linear-exact")))
    assert wide[0, 0] == 0 and wide[0, -1] == 255 and len(np.unique(wide)) > 90  # a full ramp
    sigmoid = np.asarray(rendered(pixels, ds, window=Window(500, 100, "sigmoid")))
    assert (np.diff(sigmoid[0].astype(int)) >= 0).all() and sigmoid[0, 0] < 5 and sigmoid[0, -1] > 250
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = np.asarray(rendered(pixels, ds, window=Window(500, 2, "linear")))
    assert np.array_equal(inverted, 255 - narrow)


def test_the_window_applies_to_modality_values() -> None:
    ds = header(4, 4)
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    pixels = np.full((4, 4), 1024 + 40, dtype=np.uint16)  # 40 HU
    assert (np.asarray(rendered(pixels, ds, window=Window(40, 400, "linear-exact"))) == 128).all()
    assert (np.asarray(rendered(pixels, ds, window=Window(300, 100, "linear"))) == 0).all()


def test_a_negative_region_size_flips_the_image() -> None:
    ds = header(64, 128)
    pixels = ramp(64, 128)
    pixels[:32] //= 2  # top half darker
    straight = np.asarray(rendered(pixels, ds, viewport=Viewport(128, 64, (0, 0, 128, 64))))
    mirrored = np.asarray(rendered(pixels, ds, viewport=Viewport(128, 64, (0, 0, -128, 64))))
    upside_down = np.asarray(rendered(pixels, ds, viewport=Viewport(128, 64, (0, 0, 128, -64))))
    assert np.array_equal(mirrored, straight[:, ::-1])
    assert np.array_equal(upside_down, straight[::-1])


def test_a_region_outside_the_image_is_a_400_before_decoding() -> None:
    with pytest.raises(BadRequest, match="outside the image"):
        render_frame(
            header(64, 128), EXPLICIT_LE, b"not a frame", "image/png", 90, viewport=Viewport(8, 8, (128, 0, 10, 10))
        )


def test_colour_frames_are_scaled_too() -> None:
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    image = rendered(pixels, header(40, 80, samples=3, photometric="RGB"), viewport=Viewport(20, 20))
    assert image.mode == "RGB" and image.size == (20, 10)
    assert image.getpixel((5, 5))[0] > 240  # type: ignore[index]


def test_whole_file_rendering_takes_the_viewport_and_window() -> None:
    data = bundled("CT_small.dcm").read_bytes()  # 128 x 128
    image = Image.open(io.BytesIO(render(data, 1, "image/jpeg", 80, viewport=Viewport(48, 32))))
    assert image.format == "JPEG" and image.size == (32, 32)
    dark = Image.open(io.BytesIO(render(data, 1, "image/png", 100, window=Window(100000, 2))))
    assert set(np.unique(np.asarray(dark))) == {0}
    generated = make_instance(rows=16, columns=32)
    assert Image.open(io.BytesIO(render(generated, 1, "image/png", 100, viewport=Viewport(8, 8)))).size == (8, 4)


# -- the representative instance of a thumbnail --------------------------------------------------


def attrs(**values: object) -> dict[str, dict[str, object]]:
    tags = {
        "SeriesInstanceUID": ("0020000E", "UI"),
        "SeriesNumber": ("00200011", "IS"),
        "SOPInstanceUID": ("00080018", "UI"),
        "InstanceNumber": ("00200013", "IS"),
        "Rows": ("00280010", "US"),
    }
    return {tags[k][0]: {"vr": tags[k][1], "Value": [v]} for k, v in values.items()}


def test_the_thumbnail_is_the_middle_image_of_the_first_series() -> None:
    report = SeriesSnapshot(attrs(SeriesInstanceUID="1.9", SeriesNumber=1), 1, [attrs(SOPInstanceUID="9.1")])
    ct = SeriesSnapshot(
        attrs(SeriesInstanceUID="1.2", SeriesNumber=2),
        4,
        [attrs(SOPInstanceUID=f"2.{n}", InstanceNumber=n, Rows=512) for n in (4, 1, 3, 2)],
    )
    scout = SeriesSnapshot(
        attrs(SeriesInstanceUID="1.3", SeriesNumber=3), 1, [attrs(SOPInstanceUID="3.1", InstanceNumber=1, Rows=256)]
    )
    series = [scout, report, ct]
    assert _thumbnail_candidates(series, None) == [("1.2", "2.3"), ("1.3", "3.1")]  # 1, 2, [3], 4
    assert _thumbnail_candidates(series, "1.3") == [("1.3", "3.1")]
    assert _thumbnail_candidates(series, "1.9") == []  # a series without images
    assert _thumbnail_candidates(series, "1.4") is None  # no such series
