"""Rendered resources and thumbnails over HTTP (PS3.18 §8.3.5, §10.4.1.1.5, §10.4.1.1.6): viewer-ready images.

A bundled CT (128 x 128) and generated series are stored through STOW, then rendered with
``viewport``, ``window`` and ``quality``; thumbnails at the four levels; rendered series and
studies as multipart, one image per instance with pixel data.  Images are decoded with Pillow.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicomserver.mediatypes import parse_media_type
from dicomserver.multipart import MultipartReader, PartData, PartEnd, PartStart
from tests.dicomfiles import bundled, make_instance
from tests.stowhttp import stored

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def store_ct(base_url: str) -> tuple[pydicom.Dataset, str]:
    """CT_small.dcm stored (replacing its study); returns it and its instance URL."""
    (ds,) = stored(base_url, [bundled("CT_small.dcm").read_bytes()], replace=True, ok=(200, 202))
    return ds, f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def without_pixels(study: str, series: str | None = None) -> bytes:
    """A Basic Text SR: an instance with nothing to render."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(study=study, series=series)))
    for keyword in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.Modality = "SR"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def image(response: httpx.Response, fmt: str = "JPEG") -> Image.Image:
    assert response.status_code == 200, response.text
    decoded = Image.open(io.BytesIO(response.content))
    decoded.load()
    assert decoded.format == fmt
    return decoded


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """The ``(Content-Type, body)`` of each part of a multipart response."""
    assert response.status_code == 200, response.text
    boundary = parse_media_type(response.headers["content-type"]).param("boundary")
    assert boundary
    reader = MultipartReader(boundary)
    out: list[tuple[str, bytes]] = []
    current: tuple[str, list[bytes]] = ("", [])
    for event in reader.feed(response.content) + reader.close():
        if isinstance(event, PartStart):
            current = (event.headers.get("content-type", ""), [])
        elif isinstance(event, PartData):
            current[1].append(event.data)
        elif isinstance(event, PartEnd):
            out.append((current[0], b"".join(current[1])))
    return out


def test_rendered_viewport_gives_that_size(base_url: str) -> None:
    ds, url = store_ct(base_url)
    assert (ds.Columns, ds.Rows) == (128, 128)
    assert image(httpx.get(f"{url}/rendered", params={"viewport": "100,50"})).size == (50, 50)
    assert image(httpx.get(f"{url}/rendered", params={"viewport": "256,256"})).size == (256, 256)
    png = httpx.get(f"{url}/frames/1/rendered", params={"viewport": "64,64,32,32,64,32", "accept": "image/png"})
    assert image(png, "PNG").size == (64, 32)
    full = image(httpx.get(f"{url}/rendered", params={"quality": "90"}))
    assert full.size == (128, 128)  # no viewport: the native size


def test_rendered_window_overrides_the_voi(base_url: str) -> None:
    _, url = store_ct(base_url)
    png = {"Accept": "image/png"}
    black = np.asarray(image(httpx.get(f"{url}/rendered", params={"window": "100000,2,linear"}, headers=png), "PNG"))
    assert not black.any()
    white = np.asarray(image(httpx.get(f"{url}/rendered", params={"window": "-100000,2,linear"}, headers=png), "PNG"))
    assert (white == 255).all()
    soft = np.asarray(image(httpx.get(f"{url}/rendered", params={"window": "40,400,sigmoid"}, headers=png), "PNG"))
    assert len(np.unique(soft)) > 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("viewport", "0,10"),
        ("viewport", "10"),
        ("viewport", "a,b"),
        ("viewport", "5000,5000"),
        ("viewport", "10,10,-1,0,5,5"),
        ("window", "40"),
        ("window", "40,400,cubic"),
        ("window", "40,0,linear"),
        ("quality", "0"),
    ],
)
def test_bad_rendered_parameters_are_a_400(base_url: str, name: str, value: str) -> None:
    ds, url = store_ct(base_url)
    study = f"{base_url}/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    for resource in (
        f"{url}/rendered",
        f"{url}/frames/1/rendered",
        f"{url}/thumbnail",
        f"{series}/rendered",
        f"{study}/thumbnail",
    ):
        response = httpx.get(resource, params={name: value})
        assert response.status_code == 400, (resource, response.text)
        assert name in response.json()["message"].lower() or "quality" in response.json()["message"]


def test_a_region_outside_the_image_is_a_400(base_url: str) -> None:
    _, url = store_ct(base_url)
    assert httpx.get(f"{url}/rendered", params={"viewport": "64,64,500,500,10,10"}).status_code == 400


def test_thumbnails_at_every_level(base_url: str) -> None:
    ds, url = store_ct(base_url)
    study = f"{base_url}/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    for resource in (f"{study}/thumbnail", f"{series}/thumbnail", f"{url}/thumbnail", f"{url}/frames/1/thumbnail"):
        response = httpx.get(resource)
        assert response.headers.get("content-type") == "image/jpeg", (resource, response.text)
        thumbnail = image(response)
        assert thumbnail.width <= 128 and thumbnail.height <= 128, resource
        small = image(httpx.get(resource, params={"viewport": "64,32", "quality": "50"}))
        assert small.size == (32, 32), resource
        png = httpx.get(resource, params={"accept": "image/png"})
        assert png.headers["content-type"] == "image/png"
        assert image(png, "PNG").size == thumbnail.size
    assert httpx.get(f"{url}/frames/2/thumbnail").status_code == 404
    assert httpx.get(f"{url}/thumbnail", headers={"Accept": "application/dicom"}).status_code == 406


def test_rendered_series_is_one_image_per_instance(base_url: str) -> None:
    study, series = generate_uid(), generate_uid()
    instances = [make_instance(study=study, series=series, rows=16, columns=32, InstanceNumber=n) for n in (3, 1, 2)]
    stored(base_url, [*instances, without_pixels(study, series)], ok=(200, 202))
    url = f"{base_url}/studies/{study}/series/{series}"
    response = httpx.get(f"{url}/rendered", params={"viewport": "16,16"})
    content_type = parse_media_type(response.headers["content-type"])
    assert content_type.type == "multipart/related" and content_type.param("type") == "image/jpeg"
    got = parts(response)
    assert [part_type for part_type, _ in got] == ["image/jpeg"] * 3  # the SR is left out
    for _, body in got:
        assert Image.open(io.BytesIO(body)).size == (16, 8)
    png = parts(httpx.get(f"{url}/rendered", headers={"Accept": 'multipart/related; type="image/png"'}))
    assert [Image.open(io.BytesIO(body)).format for _, body in png] == ["PNG"] * 3
    whole_study = parts(httpx.get(f"{base_url}/studies/{study}/rendered"))
    assert len(whole_study) == 3
    assert httpx.get(f"{url}/rendered", headers={"Accept": "application/dicom"}).status_code == 406


def test_a_study_without_images_is_a_404(base_url: str) -> None:
    study, series = generate_uid(), generate_uid()
    stored(base_url, [without_pixels(study, series)], ok=(200, 202))
    study_url = f"{base_url}/studies/{study}"
    for resource in (
        f"{study_url}/rendered",
        f"{study_url}/thumbnail",
        f"{study_url}/series/{series}/rendered",
        f"{study_url}/series/{series}/thumbnail",
    ):
        assert httpx.get(resource).status_code == 404, resource
    unknown = f"{base_url}/studies/{generate_uid()}"
    for resource in (f"{unknown}/rendered", f"{unknown}/thumbnail", f"{study_url}/series/{generate_uid()}/thumbnail"):
        assert httpx.get(resource).status_code == 404, resource
