"""Streaming ``multipart/related`` (RFC 2387) reading and writing.

Reading is an incremental state machine: :class:`MultipartReader` is fed the
request body chunk by chunk and returns events (:class:`PartStart`,
:class:`PartData`, :class:`PartEnd`).  It keeps at most one delimiter's worth
of bytes beyond what it has emitted, so a multi-GB body passes through in
bounded memory; the caller decides where part bytes go (STOW spools each part
to a temporary file).

Writing (:func:`iter_multipart`) yields the boundary lines and each part's
bytes as they come from their sources, so a study streams out part by part.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from .errors import BadRequest

_CRLF = b"\r\n"
_MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; ``headers`` maps lower-cased names to values."""

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """Bytes of the current part's body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part ended."""


Event = PartStart | PartData | PartEnd


class MultipartReader:
    """Incremental parser of a multipart body with a known boundary.

    Parameters
    ----------
    boundary:
        The ``boundary`` parameter of the Content-Type, without the ``--``.
    """

    _PREAMBLE, _HEADERS, _BODY, _DONE = range(4)

    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 200:
            raise BadRequest(f"The multipart boundary '{boundary}' is invalid.")
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        self._delimiter = _CRLF + self._dash_boundary
        self._buffer = bytearray()
        self._state = self._PREAMBLE
        self.parts_seen = 0

    @property
    def finished(self) -> bool:
        """Whether the closing delimiter was seen."""
        return self._state == self._DONE

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data`` and return the events it completes."""
        if self._state == self._DONE:
            return []  # epilogue is ignored (RFC 2046 §5.1.1)
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._state == self._PREAMBLE:
                if not self._consume_preamble():
                    break
            elif self._state == self._HEADERS:
                if not self._consume_headers(events):
                    break
            elif self._state == self._BODY:
                if not self._consume_body(events):
                    break
            else:
                self._buffer.clear()
                break
        return events

    def close(self) -> list[Event]:
        """Signal the end of input.

        Raises
        ------
        BadRequest
            If the body ended before the closing delimiter.
        """
        if self._state != self._DONE:
            raise BadRequest("The multipart body ended before its closing boundary.")
        return []

    # -- states -----------------------------------------------------------

    def _after_delimiter(self, pos: int) -> bool:
        """Handle what follows a delimiter at ``pos``; False if more bytes are needed."""
        rest = self._buffer[pos:]
        if len(rest) < 2:
            return False
        if rest[:2] == b"--":
            self._state = self._DONE
            self._buffer.clear()
            return True
        line_end = rest.find(_CRLF)
        if line_end < 0:
            if len(rest) > 1024:
                raise BadRequest("The multipart delimiter line is malformed.")
            return False
        if rest[:line_end].strip(b" \t"):
            raise BadRequest("The multipart delimiter line is followed by unexpected characters.")
        del self._buffer[: pos + line_end + 2]
        self._state = self._HEADERS
        return True

    def _consume_preamble(self) -> bool:
        if self._buffer.startswith(self._dash_boundary):
            return self._after_delimiter(len(self._dash_boundary))
        idx = self._buffer.find(self._delimiter)
        if idx < 0:
            keep = len(self._delimiter)
            if len(self._buffer) > keep:
                del self._buffer[: len(self._buffer) - keep]
            return False
        return self._after_delimiter(idx + len(self._delimiter))

    def _consume_headers(self, events: list[Event]) -> bool:
        if self._buffer.startswith(_CRLF):
            block = b""
            del self._buffer[:2]
        else:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEADER_BYTES:
                    raise BadRequest("A multipart part has headers longer than 16 KiB.")
                return False
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in block.split(_CRLF):
            if not line:
                continue
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise BadRequest(f"The multipart part header '{line[:80]!r}' is malformed.")
            headers[name.strip().lower()] = value.strip()
        self.parts_seen += 1
        events.append(PartStart(headers))
        self._state = self._BODY
        return True

    def _consume_body(self, events: list[Event]) -> bool:
        idx = self._buffer.find(self._delimiter)
        if idx < 0:
            safe = len(self._buffer) - (len(self._delimiter) - 1)
            if safe > 0:
                events.append(PartData(bytes(self._buffer[:safe])))
                del self._buffer[:safe]
            return False
        if idx:
            events.append(PartData(bytes(self._buffer[:idx])))
        events.append(PartEnd())
        del self._buffer[:idx]
        # The buffer now starts with the delimiter.
        if not self._after_delimiter(len(self._delimiter)):
            self._state = self._PREAMBLE  # wait for the rest of the delimiter line
            return False
        return True


def new_boundary() -> str:
    """Return a random boundary that will not occur in DICOM data by chance."""
    return f"dicomserver-{secrets.token_hex(16)}"


async def iter_multipart(parts: AsyncIterable[tuple[str, AsyncIterable[bytes]]], boundary: str) -> AsyncIterator[bytes]:
    """Yield a multipart body from ``(content_type, body_chunks)`` parts.

    Each part's chunks are passed through as they arrive.
    """
    dash = b"--" + boundary.encode("latin-1")
    async for content_type, chunks in parts:
        yield dash + _CRLF + b"Content-Type: " + content_type.encode("latin-1") + _CRLF + _CRLF
        async for chunk in chunks:
            if chunk:
                yield chunk
        yield _CRLF
    yield dash + b"--" + _CRLF
