"""Content negotiation: every Accept and Content-Type decision of STOW, WADO and QIDO, in one place.

Each function reads a header (parsed by :mod:`.mediatypes`) and returns a small
:class:`Representation` saying what the response (or the request body) is, or
raises the DICOM-style error: 406 (:class:`NotAcceptable`) when no acceptable
representation can be produced, 415 (:class:`UnsupportedMediaType`) for a request
body of the wrong type.  Media types are tried best quality first; an absent
Accept header means ``*/*``.  The rules are the Azure DICOM service v2's
("Retrieve (WADO-RS)": supported Accept headers) and PS3.18 §8.7, where Azure is
silent or narrower PS3.18 (frames as any stored image type, bulk data).

=====================  ==========================================================
transaction            function
=====================  ==========================================================
STOW request body      :func:`store_request`
STOW, QIDO, metadata   :func:`dicom_json`
change feed            :func:`plain_json`
instance               :func:`instance`
study / series         :func:`study`
frames                 :func:`frames`
rendered               :func:`rendered` (study and series: :func:`rendered_multipart`)
bulk data              :func:`bulkdata` (encapsulated Pixel Data: :func:`pixel_data_bulkdata`)
=====================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import NotAcceptable, UnsupportedMediaType
from .mediatypes import (
    ANY,
    APPLICATION_DICOM,
    APPLICATION_DICOM_JSON,
    APPLICATION_JSON,
    APPLICATION_OCTET_STREAM,
    EXPLICIT_VR_LITTLE_ENDIAN,
    FRAME_IMAGE_TYPES,
    IMAGE_JP2,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG2000,
    JPEG2000_LOSSY,
    MULTIPART_RELATED,
    ORIGINAL_TRANSFER_SYNTAX,
    parse_accept,
    parse_media_type,
)
from .transcode import TARGETS, TRANSCODABLE

#: Transfer syntaxes whose frames are the same little-endian pixel bytes.
UNCOMPRESSED_LE = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
#: What a client may accept for a DICOM JSON response.
_DICOM_JSON_ACCEPTABLE = frozenset({APPLICATION_DICOM_JSON, APPLICATION_JSON, ANY, "application/*"})


@dataclass(frozen=True, slots=True)
class Representation:
    """What goes out (or comes in): a media type, a transfer syntax, single part or multipart.

    ``media_type`` is the type of the body, or of each part when ``multipart``;
    ``transfer_syntax`` is a UID, ``*`` (:data:`ORIGINAL_TRANSFER_SYNTAX`: as stored)
    or empty (not a DICOM payload).
    """

    media_type: str
    transfer_syntax: str = ""
    multipart: bool = False
    #: The multipart boundary of a request body (:func:`store_request` only).
    boundary: str = ""

    @property
    def part_content_type(self) -> str:
        """The Content-Type of the body (single part) or of each part: ``type[; transfer-syntax=uid]``."""
        if self.transfer_syntax:
            return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"
        return self.media_type

    def as_stored(self, stored_ts: str) -> Representation:
        """The same representation with ``*`` resolved to the stored transfer syntax."""
        if self.transfer_syntax != ORIGINAL_TRANSFER_SYNTAX:
            return self
        return Representation(self.media_type, stored_ts, self.multipart, self.boundary)


def store_request(content_type: str | None) -> Representation:
    """The STOW-RS request body: ``multipart/related; type="application/dicom"`` or ``application/dicom``.

    Raises
    ------
    UnsupportedMediaType
        For a missing or other Content-Type, another multipart type, or no boundary.
    """
    if not content_type:
        raise UnsupportedMediaType('The request has no Content-Type; use multipart/related; type="application/dicom".')
    media = parse_media_type(content_type)
    if media.type == APPLICATION_DICOM:
        return Representation(APPLICATION_DICOM)
    if media.type != MULTIPART_RELATED:
        raise UnsupportedMediaType(
            f"The Content-Type '{media.type}' is not supported; use multipart/related; type=\"application/dicom\"."
        )
    declared = (media.param("type") or APPLICATION_DICOM).lower()
    if declared != APPLICATION_DICOM:
        raise UnsupportedMediaType(f"The multipart type '{declared}' is not supported; use type=\"application/dicom\".")
    boundary = media.param("boundary")
    if not boundary:
        raise UnsupportedMediaType("The multipart/related Content-Type has no boundary parameter.")
    return Representation(APPLICATION_DICOM, multipart=True, boundary=boundary)


def is_dicom_part(content_type: str | None) -> bool:
    """Whether a STOW part's own Content-Type (absent: the request's type) is ``application/dicom``."""
    return content_type is None or parse_media_type(content_type).type == APPLICATION_DICOM


def dicom_json(accept: str | None, what: str) -> Representation:
    """``application/dicom+json`` for STOW-RS and QIDO-RS responses and metadata, or 406.

    Raises
    ------
    NotAcceptable
        Quoting the header, when it does not allow DICOM JSON.
    """
    if not any(m.type in _DICOM_JSON_ACCEPTABLE for m in parse_accept(accept)):
        raise NotAcceptable(
            f"{what} responses are application/dicom+json; the Accept header '{accept}' does not allow it."
        )
    return Representation(APPLICATION_DICOM_JSON)


def plain_json(accept: str | None, what: str) -> Representation:
    """``application/json`` (the change feed), or 406."""
    if not any(m.type in (APPLICATION_JSON, ANY, "application/*") for m in parse_accept(accept)):
        raise NotAcceptable(f"{what} responses are application/json; the Accept header '{accept}' does not allow it.")
    return Representation(APPLICATION_JSON)


def instance(accept: str | None, stored_ts: str) -> Representation:
    """One instance: ``application/dicom`` or multipart, as stored or transcoded, or 406.

    No ``transfer-syntax`` parameter means Explicit VR Little Endian; ``*/*`` the
    stored instance as ``application/dicom``; another transfer syntax than the
    stored one must be one :mod:`.transcode` produces from a transcodable source.
    The result's transfer syntax is always a UID (``*`` resolved).
    """
    wanted = []
    for media in parse_accept(accept):
        if media.type == ANY:
            return Representation(APPLICATION_DICOM, stored_ts)
        if media.type == MULTIPART_RELATED:
            if (media.param("type") or APPLICATION_DICOM).lower() != APPLICATION_DICOM:
                continue
            multipart = True
        elif media.type == APPLICATION_DICOM:
            multipart = False
        else:
            continue
        ts = media.param("transfer-syntax") or EXPLICIT_VR_LITTLE_ENDIAN
        if ts == ORIGINAL_TRANSFER_SYNTAX or ts == stored_ts:
            return Representation(APPLICATION_DICOM, stored_ts, multipart)
        if ts in TARGETS and stored_ts in TRANSCODABLE:
            return Representation(APPLICATION_DICOM, ts, multipart)  # transcoded
        wanted.append(ts)
    if wanted:
        raise NotAcceptable(
            f"The instance is stored with transfer syntax {stored_ts} and cannot be transcoded to "
            f"{', '.join(wanted)} (only to {' or '.join(sorted(TARGETS))}). Ask for transfer-syntax=*."
        )
    raise NotAcceptable(
        f"The Accept header '{accept}' is not supported; use application/dicom or "
        'multipart/related; type="application/dicom".'
    )


def study(accept: str | None) -> Representation:
    """A study or series: multipart ``application/dicom`` parts, ``*`` (as stored) or one transfer syntax, or 406."""
    for media in parse_accept(accept):
        if media.type == ANY:
            return Representation(APPLICATION_DICOM, ORIGINAL_TRANSFER_SYNTAX, True)
        if media.type == MULTIPART_RELATED and (media.param("type") or APPLICATION_DICOM).lower() == APPLICATION_DICOM:
            return Representation(APPLICATION_DICOM, media.param("transfer-syntax") or EXPLICIT_VR_LITTLE_ENDIAN, True)
    raise NotAcceptable(
        f"The Accept header '{accept}' is not supported for a study or series; use "
        'multipart/related; type="application/dicom".'
    )


def frames(accept: str | None, stored_ts: str, count: int) -> Representation:
    """Frames: octet-stream (as stored, or decoded to Explicit VR LE), JPEG 2000, or the stored image type; or 406.

    A single ``application/octet-stream`` body only for one frame (Azure v2); the
    result's transfer syntax is always a UID.
    """
    for media in parse_accept(accept):
        if media.type == ANY or (media.type == MULTIPART_RELATED and media.param("type") == ANY):
            return Representation(APPLICATION_OCTET_STREAM, stored_ts, True)
        if media.type == MULTIPART_RELATED:
            part = (media.param("type") or APPLICATION_OCTET_STREAM).lower()
            multipart = True
        elif media.type == APPLICATION_OCTET_STREAM and count == 1:
            part, multipart = APPLICATION_OCTET_STREAM, False
        else:
            continue
        if part == APPLICATION_OCTET_STREAM:
            ts = media.param("transfer-syntax") or EXPLICIT_VR_LITTLE_ENDIAN
            if ts == ORIGINAL_TRANSFER_SYNTAX:
                return Representation(part, stored_ts, multipart)
            if ts == EXPLICIT_VR_LITTLE_ENDIAN and (stored_ts in UNCOMPRESSED_LE or stored_ts in TRANSCODABLE):
                return Representation(part, ts, multipart)  # same pixel bytes, or each frame decoded
        elif part == IMAGE_JP2:  # PS3.18 Table 8.7.3-2: JPEG 2000 (4.90 by default, or 4.91)
            ts = media.param("transfer-syntax") or JPEG2000
            if ts == stored_ts and ts in (JPEG2000, JPEG2000_LOSSY):
                return Representation(part, ts, multipart)
            if ts == JPEG2000 and stored_ts in TRANSCODABLE:
                return Representation(part, ts, multipart)  # each frame encoded
        elif part in FRAME_IMAGE_TYPES and multipart:  # beyond Azure: the other image types, as stored
            ts = media.param("transfer-syntax") or stored_ts
            if ts == stored_ts and ts in FRAME_IMAGE_TYPES[part]:
                return Representation(part, ts, multipart)
    raise NotAcceptable(
        f"The frames are stored with transfer syntax {stored_ts} and cannot be returned as '{accept}'; "
        'ask for multipart/related; type="application/octet-stream"; transfer-syntax=*.'
    )


def same_frame_bytes(stored_ts: str, ts: str) -> bool:
    """Whether frames in ``ts`` are the stored bytes (no decoding or encoding)."""
    return ts == stored_ts or {ts, stored_ts} <= UNCOMPRESSED_LE


def rendered(accept: str | None) -> Representation:
    """A rendered frame: ``image/jpeg`` (the default) or ``image/png``, or 406."""
    for media in parse_accept(accept):
        if media.type in (ANY, "image/*", "image/jpeg"):
            return Representation("image/jpeg")
        if media.type == "image/png":
            return Representation("image/png")
    raise NotAcceptable(f"The Accept header '{accept}' is not supported for rendering; use image/jpeg or image/png.")


def rendered_multipart(accept: str | None) -> Representation:
    """A rendered study or series: multipart of ``image/jpeg`` (default) or ``image/png`` parts, or 406.

    ``multipart/related; type="image/jpeg"`` (or ``image/png``), ``multipart/*`` or ``*/*``; a bare
    ``image/jpeg`` or ``image/png`` (e.g. PS3.18's ``accept`` query parameter) names the parts' type.
    """
    for media in parse_accept(accept):
        if media.type == MULTIPART_RELATED:
            part = (media.param("type") or "image/jpeg").lower()
        elif media.type in (ANY, "multipart/*"):
            part = "image/jpeg"
        else:
            part = media.type
        if part in (ANY, "image/*", "image/jpeg"):
            return Representation("image/jpeg", multipart=True)
        if part == "image/png":
            return Representation("image/png", multipart=True)
    raise NotAcceptable(
        f"The Accept header '{accept}' is not supported for rendered studies and series; use "
        'multipart/related; type="image/jpeg" or type="image/png".'
    )


def bulkdata(accept: str | None) -> Representation:
    """A binary attribute's value: multipart ``application/octet-stream`` (default) or one octet-stream body."""
    for media in parse_accept(accept):
        if media.type in (ANY, "multipart/*"):
            return Representation(APPLICATION_OCTET_STREAM, multipart=True)
        if media.type == MULTIPART_RELATED and (media.param("type") or APPLICATION_OCTET_STREAM).lower() in (
            APPLICATION_OCTET_STREAM,
            ANY,
        ):
            return Representation(APPLICATION_OCTET_STREAM, multipart=True)
        if media.type in (APPLICATION_OCTET_STREAM, "application/*"):
            return Representation(APPLICATION_OCTET_STREAM)
    raise NotAcceptable(
        f"The Accept header '{accept}' is not supported for bulk data; use "
        'multipart/related; type="application/octet-stream".'
    )


def pixel_data_bulkdata(accept: str | None, stored_ts: str, count: int) -> Representation:
    """Encapsulated Pixel Data as bulk data: its frames, as stored unless the Accept header names a transfer syntax.

    Any type, or multipart octet-stream without a ``transfer-syntax``, means the
    frames as stored; anything else is negotiated as for the frames resource.
    """
    for media in parse_accept(accept):
        part = (media.param("type") or APPLICATION_OCTET_STREAM).lower()
        if media.type == ANY or (media.type == MULTIPART_RELATED and part == ANY):
            break
        if media.type == MULTIPART_RELATED and part == APPLICATION_OCTET_STREAM and not media.param("transfer-syntax"):
            break
        return frames(accept or "", stored_ts, count)
    return Representation(APPLICATION_OCTET_STREAM, stored_ts, True)
