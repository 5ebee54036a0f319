from __future__ import annotations

import asyncio

import pytest

from dicomserver.errors import BadRequest
from dicomserver.multipart import MultipartReader, PartData, PartEnd, PartStart, iter_multipart


def parse(body: bytes, boundary: str, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    reader = MultipartReader(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    current: list[bytes] | None = None
    headers: dict[str, str] = {}
    for i in range(0, len(body), chunk):
        for event in reader.feed(body[i : i + chunk]):
            if isinstance(event, PartStart):
                headers, current = event.headers, []
            elif isinstance(event, PartData):
                assert current is not None
                current.append(event.data)
            elif isinstance(event, PartEnd):
                assert current is not None
                parts.append((headers, b"".join(current)))
                current = None
    reader.close()
    return parts


BODY = (
    b"preamble to ignore\r\n"
    b"--abc\r\nContent-Type: application/dicom\r\n\r\n"
    b"first\r\n--ab not a boundary\r\n"
    b"\r\n--abc  \r\ncontent-type: application/dicom\r\nX-Other: 1\r\n\r\n"
    b"\x00\x01second\r\n"
    b"\r\n--abc--\r\nepilogue"
)


class TestMultipartReader:
    @pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, 64, 4096])
    def test_parts_are_identical_whatever_the_chunking(self, chunk: int) -> None:
        parts = parse(BODY, "abc", chunk)
        assert [p[1] for p in parts] == [b"first\r\n--ab not a boundary\r\n", b"\x00\x01second\r\n"]
        assert parts[0][0] == {"content-type": "application/dicom"}
        assert parts[1][0] == {"content-type": "application/dicom", "x-other": "1"}

    def test_body_without_closing_boundary_is_rejected(self) -> None:
        reader = MultipartReader("abc")
        reader.feed(b"--abc\r\nContent-Type: application/dicom\r\n\r\ndata")
        with pytest.raises(BadRequest, match="closing boundary"):
            reader.close()

    def test_part_without_headers_is_allowed(self) -> None:
        assert parse(b"--b\r\n\r\npayload\r\n--b--", "b", 4) == [({}, b"payload")]

    def test_empty_part(self) -> None:
        assert parse(b"--b\r\nContent-Type: application/dicom\r\n\r\n\r\n--b--\r\n", "b", 3)[0][1] == b""

    def test_malformed_header_line_is_a_bad_request(self) -> None:
        with pytest.raises(BadRequest, match="malformed"):
            parse(b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "b", 100)

    def test_memory_is_bounded_for_a_large_part(self) -> None:
        reader = MultipartReader("bnd")
        reader.feed(b"--bnd\r\n\r\n")
        emitted = 0
        for _ in range(200):
            for event in reader.feed(b"x" * 65536):
                if isinstance(event, PartData):
                    emitted += len(event.data)
            assert len(reader._buffer) < 64
        assert emitted > 200 * 65536 - 64


def test_written_multipart_parses_back() -> None:
    async def parts():  # type: ignore[no-untyped-def]
        for payload in (b"one", b"two\r\n--x"):

            async def chunks(p: bytes = payload):  # type: ignore[no-untyped-def]
                yield p[:2]
                yield p[2:]

            yield "application/dicom", chunks()

    async def collect() -> bytes:
        return b"".join([c async for c in iter_multipart(parts(), "x-boundary")])

    body = asyncio.run(collect())
    assert [p[1] for p in parse(body, "x-boundary", 5)] == [b"one", b"two\r\n--x"]
