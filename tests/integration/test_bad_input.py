"""Bad input never causes a 500 and never disturbs what is stored."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable

import pydicom
import pytest

from dicomserver import wado
from dicomserver.errors import DicomServerError
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey
from dicomserver.wado import Retrieved
from dicomserver.wiring import Services
from tests.badinput import malformed_parts, malformed_requests
from tests.dicomfiles import make_instance, multipart_body
from tests.integration.test_stow import failures, referenced, store

PARTS = malformed_parts()
REQUESTS = malformed_requests()


@pytest.mark.parametrize(("name", "data"), PARTS, ids=[p[0] for p in PARTS])
def test_malformed_part_gets_a_reason_or_is_stored(services: Services, name: str, data: bytes) -> None:
    body, ctype = multipart_body([data])
    response = store(services, body, ctype)
    assert response.status in (200, 202, 409), name
    if response.status == 409:
        assert failures(response) and all(code in (272, 43264) for code in failures(response))
    else:
        (ref,) = referenced(response)
        assert ref["00081190"]["Value"][0].startswith("http://dicom.test/v2/studies/")


@pytest.mark.parametrize(("name", "body", "ctype"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_malformed_request_is_a_4xx(services: Services, name: str, body: bytes, ctype: str) -> None:
    try:
        response = store(services, body, ctype)
    except DicomServerError as exc:
        assert 400 <= exc.status < 500, name
    else:
        assert response.status == 409, name


def test_invalid_optional_attributes_are_stored_with_warnings_and_not_indexed(services: Services) -> None:
    data = make_instance(InstitutionName="x" * 70, patient_id="WARN-1")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyDate = "NotADate"
    out = io.BytesIO()
    ds.save_as(out)
    response = store(services, *multipart_body([out.getvalue()]))
    assert response.status == 202
    (ref,) = referenced(response)
    assert ref["00081196"]["Value"] == [1]
    comments = [item["00000902"]["Value"][0] for item in ref["00741048"]["Value"]]
    assert comments == [
        'DICOM100: (0008,0020) - Content "NotADate" does not validate VR DA: '
        "the value does not have the form of a DA value",
        'DICOM100: (0008,0080) - Content "' + "x" * 70 + '" does not validate VR LO: '
        "The value length (70) exceeds the maximum length of 64 allowed for VR LO",
    ]
    key = InstanceKey(DEFAULT_PARTITION, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    metadata = (services.index.get_instance(key).metadata_json or "").encode()  # type: ignore[union-attr]
    assert b'"00080020"' not in metadata and b'"00100020"' in metadata
    assert b"".join(services.blobs.iter_instance(key))[132:] == out.getvalue()[132:]  # stored as sent


def test_null_padded_values_are_not_warned(services: Services) -> None:
    data = make_instance()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.AccessionNumber = "ACC\x00"
    out = io.BytesIO()
    ds.save_as(out)
    assert store(services, *multipart_body([out.getvalue()])).status == 200


def test_bad_input_does_not_disturb_stored_instances(services: Services) -> None:
    good = make_instance()
    assert store(services, *multipart_body([good])).status == 200
    for _, data in PARTS:
        store(services, *multipart_body([data]))
    again = store(services, *multipart_body([good]))
    assert failures(again) == [45070]


async def _drain(call: Awaitable[Retrieved]) -> int:
    """The status of a WADO call, its body read to the end; a service error's status."""
    try:
        result = await call
        async for _ in result.body:
            pass
        return result.status
    except DicomServerError as exc:
        return exc.status


@pytest.mark.parametrize(("name", "data"), PARTS, ids=[p[0] for p in PARTS])
def test_odd_files_that_are_stored_are_retrieved_without_a_500(services: Services, name: str, data: bytes) -> None:
    """Metadata, frames (as stored and decoded), JPEG 2000 frames, rendered and every bulk data value."""
    response = store(services, *multipart_body([data]))
    if response.status == 409:
        return
    (ref,) = referenced(response)
    url = ref["00081190"]["Value"][0]
    study, rest = url.split("/studies/")[1].split("/series/")
    series, sop = rest.split("/instances/")
    key = InstanceKey(DEFAULT_PARTITION, study, series, sop)
    blobs, index = services.blobs, services.index
    stored = index.get_instance(key)
    assert stored is not None

    async def every_retrieve() -> list[int]:
        calls: list[Awaitable[Retrieved]] = [
            wado.retrieve_instance(blobs=blobs, index=index, key=key, accept=None),
            wado.retrieve_instance_metadata(
                blobs=blobs, index=index, key=key, accept=None, if_none_match=None, base_url="http://x"
            ),
            wado.retrieve_rendered(blobs=blobs, index=index, key=key, frame=1, accept=None, quality=90),
        ]
        for accept in (None, 'multipart/related; type="application/octet-stream"; transfer-syntax=*', "image/jp2"):
            accept = f'multipart/related; type="{accept}"' if accept == "image/jp2" else accept
            calls.append(wado.retrieve_frames(blobs=blobs, index=index, key=key, frames=[1], accept=accept))
        for path in stored.bulkdata or {}:
            calls.append(wado.retrieve_bulkdata(blobs=blobs, index=index, key=key, path=path, accept=None))
        return [await _drain(call) for call in calls]

    statuses = asyncio.run(every_retrieve())
    assert all(status < 500 for status in statuses), (name, statuses)
    assert statuses[1] == 200  # metadata is always there


# -- store-time integrity: a damaged file is refused and never holds its UIDs --------------------


def _with_large_text(length: int = 800) -> bytes:
    return make_instance(StudyComments="x" * length)  # an explicit-VR long element before Pixel Data


def _damaged() -> list[tuple[str, bytes, bytes, int]]:
    """(name, damaged bytes, the intact file, expected failure reason)."""
    cases: list[tuple[str, bytes, bytes, int]] = []
    intact = make_instance()
    series_at = intact.index(b"\x20\x00\x0e\x00UI")  # (0020,000E) SeriesInstanceUID
    cases.append(("cut inside SeriesInstanceUID", intact[: series_at + 8 + 10], intact, 272))
    pixel_at = intact.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010)
    cases.append(("cut inside the element before Pixel Data", intact[: pixel_at - 1], intact, 272))
    cases.append(("cut inside Pixel Data", intact[:-20], intact, 272))
    for vr, declared in ((b"UN", 0xFFFFFFF0), (b"OB", 0x7FFFFFFF), (b"UT", 0xFFFFFFF0), (b"SQ", 0x7FFFFFFF)):
        base = _with_large_text()
        at = base.index(b"\x32\x00\x00\x40")  # (0032,4000) StudyComments, LT
        length = int.from_bytes(base[at + 6 : at + 8], "little")
        huge = base[:at] + b"\x32\x00\x00\x40" + vr + b"\x00\x00" + declared.to_bytes(4, "little")
        huge += base[at + 8 : at + 8 + length] + base[at + 8 + length :]
        cases.append((f"{vr.decode()} declaring {declared:#x} bytes before Pixel Data", huge, base, 272))
    for value in (0xFFFFFFFF, 2):
        bad = intact[:140] + value.to_bytes(4, "little") + intact[144:]
        cases.append((f"file meta group length {value:#x}", bad, intact, 272))
    for keyword, values in (("StudyInstanceUID", ["1.2.3.999", "4.5.6"]), ("PatientID", ["PIDA", "PIDB"])):
        ds = pydicom.dcmread(io.BytesIO(intact))
        ds[keyword].value = values
        out = io.BytesIO()
        ds.save_as(out)
        cases.append((f"multi-valued {keyword}", out.getvalue(), intact, 43264))
    return cases


DAMAGED = _damaged()


@pytest.mark.parametrize(("name", "damaged", "intact", "reason"), DAMAGED, ids=[c[0] for c in DAMAGED])
def test_a_damaged_file_is_refused_and_the_intact_file_stores_afterwards(
    services: Services, name: str, damaged: bytes, intact: bytes, reason: int
) -> None:
    response = store(services, *multipart_body([damaged]))
    assert response.status == 409, (name, response.body)
    assert failures(response) == [reason], name
    ds = pydicom.dcmread(io.BytesIO(intact), stop_before_pixels=True)
    study = DEFAULT_PARTITION, ds.StudyInstanceUID
    from dicomserver.identifiers import StudyKey

    assert services.blobs.list_instances(StudyKey(*study)) == []  # nothing stored, no UID held
    assert store(services, *multipart_body([intact])).status == 200
