"""WADO-RS: retrieve instances and metadata (PS3.18 §10.4; Azure v2 "Retrieve (WADO-RS)").

Instances stream from Blob Storage chunk by chunk; metadata is the DICOM JSON
precomputed at store time, so no DICOM file is opened to answer it.

Negotiation (Azure v2): ``application/dicom`` and ``multipart/related;
type="application/dicom"`` with ``transfer-syntax=*`` (as stored) or a
transfer syntax UID; no ``transfer-syntax`` parameter means Explicit VR Little
Endian; ``*/*`` means the stored instance as ``application/dicom``.  A
transfer syntax other than the stored one needs transcoding, which this
module does not do yet: such a request gets 406.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from .errors import NotAcceptable
from .identifiers import InstanceKey
from .mediatypes import (
    ANY,
    APPLICATION_DICOM,
    APPLICATION_DICOM_JSON,
    APPLICATION_JSON,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MULTIPART_RELATED,
    ORIGINAL_TRANSFER_SYNTAX,
    parse_accept,
)
from .multipart import iter_multipart, new_boundary
from .stores import BlobStore, IndexStore


@dataclass(slots=True)
class Retrieved:
    """A response body to stream, with its Content-Type and extra headers."""

    media_type: str
    body: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


async def aiter_blocking(iterator: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Iterate a blocking iterator from async code, one item per worker-thread hop."""
    while True:
        chunk = await asyncio.to_thread(next, iterator, None)
        if chunk is None:
            return
        yield chunk


def _choose_instance_representation(accept: str | None, stored_ts: str) -> tuple[bool, str]:
    """Return ``(multipart, transfer_syntax_uid)`` for an instance, or raise 406."""
    wanted = []
    for media in parse_accept(accept):
        if media.type == ANY:
            return False, stored_ts
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
            return multipart, stored_ts
        wanted.append(ts)
    if wanted:
        raise NotAcceptable(
            f"The instance is stored with transfer syntax {stored_ts}; transcoding to {', '.join(wanted)} "
            "is not supported. Ask for transfer-syntax=*."
        )
    raise NotAcceptable(
        f"The Accept header '{accept}' is not supported; use application/dicom or "
        'multipart/related; type="application/dicom".'
    )


async def retrieve_instance(*, blobs: BlobStore, index: IndexStore, key: InstanceKey, accept: str | None) -> Retrieved:
    """Retrieve one instance as stored (PS3.18 §10.4.1.1.3).

    Raises
    ------
    NotFound
        If the instance is not stored.
    NotAcceptable
        If no acceptable representation can be produced.
    """
    opened = await asyncio.to_thread(blobs.open_instance, key)  # NotFound before the response starts
    stored_ts = opened.transfer_syntax_uid
    if stored_ts is None:  # stored before the blob carried its transfer syntax
        stored = await asyncio.to_thread(index.get_instance, key)
        stored_ts = stored.transfer_syntax_uid if stored is not None else EXPLICIT_VR_LITTLE_ENDIAN
    try:
        multipart, ts = _choose_instance_representation(accept, stored_ts)
    except NotAcceptable:
        opened.chunks.close()  # type: ignore[attr-defined]
        raise
    body = aiter_blocking(opened.chunks)
    part_type = f"{APPLICATION_DICOM}; transfer-syntax={ts}"
    if not multipart:
        return Retrieved(part_type, body, {"Content-Length": str(opened.size)})
    boundary = new_boundary()

    async def one_part() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield part_type, body

    return Retrieved(
        f'{MULTIPART_RELATED}; type="{APPLICATION_DICOM}"; boundary={boundary}',
        iter_multipart(one_part(), boundary),
    )


def _check_metadata_accept(accept: str | None) -> None:
    for media in parse_accept(accept):
        if media.type in (APPLICATION_DICOM_JSON, APPLICATION_JSON, ANY, "application/*"):
            return
    raise NotAcceptable(f"The Accept header '{accept}' is not supported for metadata; use application/dicom+json.")


async def retrieve_instance_metadata(
    *, blobs: BlobStore, key: InstanceKey, accept: str | None, if_none_match: str | None
) -> Retrieved:
    """Retrieve an instance's metadata as a DICOM JSON array (PS3.18 §10.4.1.1.2).

    Returns 304 (empty body) when ``if_none_match`` equals the current ETag.
    """
    _check_metadata_accept(accept)
    body, etag = await asyncio.to_thread(blobs.get_metadata, key)
    headers = {"ETag": etag}
    if if_none_match and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Retrieved(APPLICATION_DICOM_JSON, _empty(), headers, status=304)
    payload = b"[" + body + b"]"
    headers["Content-Length"] = str(len(payload))
    return Retrieved(APPLICATION_DICOM_JSON, _single(payload), headers)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover
