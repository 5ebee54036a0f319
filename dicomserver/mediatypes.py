"""Media types, transfer syntaxes, and the parsing of Content-Type and Accept headers.

The choices made from them (what a response is) live in :mod:`.negotiation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadRequest

APPLICATION_DICOM = "application/dicom"
APPLICATION_DICOM_JSON = "application/dicom+json"
APPLICATION_JSON = "application/json"
APPLICATION_OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
ANY = "*/*"

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
JPEG2000 = "1.2.840.10008.1.2.4.90"
JPEG2000_LOSSY = "1.2.840.10008.1.2.4.91"
IMAGE_JP2 = "image/jp2"

#: PS3.18 Table 8.7.3-2: the image media types of compressed frames and the transfer syntaxes each carries
#: (``x-`` variants as dicomweb-client sends them).  Frames go out as stored in these; only JPEG 2000
#: lossless is also produced by encoding (see :mod:`dicomserver.transcode`).
FRAME_IMAGE_TYPES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset(
        {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
    ),
    "image/jls": frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}),
    "image/x-jls": frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}),
    "image/jp2": frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}),
    "image/jpx": frozenset({"1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"}),
    "image/dicom-rle": frozenset({"1.2.840.10008.1.2.5"}),
    "image/x-dicom-rle": frozenset({"1.2.840.10008.1.2.5"}),
}
#: ``transfer-syntax=*``: return the instance as stored.
ORIGINAL_TRANSFER_SYNTAX = "*"


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed media type with lower-cased type and parameter names."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())

    def __str__(self) -> str:
        rendered = "".join(
            f'; {k}="{v}"' if any(c in v for c in ' ;,"/=') else f"; {k}={v}" for k, v in self.params.items()
        )
        return f"{self.type}{rendered}"


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_media_type(text: str) -> MediaType:
    """Parse one media type such as ``multipart/related; type="application/dicom"``.

    Raises
    ------
    BadRequest
        If the text has no ``type/subtype``.
    """
    pieces = _split_outside_quotes(text, ";")
    mtype = pieces[0].strip().lower()
    if "/" not in mtype or " " in mtype:
        raise BadRequest(f"The media type '{text.strip()}' is malformed.")
    params: dict[str, str] = {}
    quality = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        name, eq, value = piece.partition("=")
        if not eq:
            raise BadRequest(f"The media type parameter '{piece.strip()}' in '{text.strip()}' is malformed.")
        key = name.strip().lower()
        val = _unquote(value)
        if key == "q":
            try:
                quality = float(val)
            except ValueError:
                raise BadRequest(f"The quality value '{val}' in '{text.strip()}' is not a number.") from None
            continue
        params[key] = val
    return MediaType(mtype, params, quality)


def parse_accept(header: str | None) -> list[MediaType]:
    """Parse an Accept header into media types, best quality first.

    An absent or empty header is treated as ``*/*``.
    """
    if header is None or not header.strip():
        return [MediaType(ANY)]
    types = [parse_media_type(p) for p in _split_outside_quotes(header, ",") if p.strip()]
    return sorted(types, key=lambda m: -m.quality)
