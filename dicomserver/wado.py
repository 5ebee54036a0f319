"""WADO-RS: retrieve instances and metadata (PS3.18 §10.4; Azure v2 "Retrieve (WADO-RS)").

Instances stream from Blob Storage chunk by chunk; metadata is the DICOM JSON
precomputed at store time, so no DICOM file is opened to answer it.

Negotiation (Azure v2): ``application/dicom`` and ``multipart/related;
type="application/dicom"`` with ``transfer-syntax=*`` (as stored) or a
transfer syntax UID; no ``transfer-syntax`` parameter means Explicit VR Little
Endian; ``*/*`` means the stored instance as ``application/dicom``.  Another
transfer syntax than the stored one is transcoded (:mod:`.transcode`: to
Explicit VR Little Endian or JPEG 2000 lossless); anything else is a 406.
Frames are served by ranged reads of the frame table, and decoded or encoded
one frame at a time when the Accept header asks for another transfer syntax.

Limits (see the README's "Limits"): whatever decodes pixel data is checked against a
:class:`~.transcode.DecodeBudget` before anything is decoded (406 quoting the sizes);
a frame list has at most ``DICOM_MAX_FRAMES_PER_REQUEST`` entries, none repeated (400);
a Range header number has at most :data:`MAX_RANGE_DIGITS` digits (416); a rendered
``viewport`` is at most 4096 x 4096 pixels (400); a rendered study or series has at most
:data:`MAX_RENDERED_INSTANCES` images (400), their first frames within ``DICOM_MAX_DECODED_BYTES`` (406).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from . import bulkdata, negotiation
from .dicomjson import keyword_key
from .errors import BadRequest, DicomServerError, NotAcceptable, NotFound, RangeNotSatisfiable
from .identifiers import InstanceKey, SeriesKey, StudyKey
from .mediatypes import (
    APPLICATION_DICOM,
    APPLICATION_DICOM_JSON,
    APPLICATION_OCTET_STREAM,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MULTIPART_RELATED,
    ORIGINAL_TRANSFER_SYNTAX,
)
from .multipart import iter_multipart, new_boundary
from .settings import Settings
from .stores import BlobStore, IndexedInstance, IndexStore, OpenedInstance
from .stores.model import SeriesSnapshot
from .transcode import (
    DEFAULT_BUDGET,
    MAX_TRANSCODE_BYTES,
    MAX_VIEWPORT,
    TARGETS,
    TRANSCODABLE,
    WINDOW_FUNCTIONS,
    DecodeBudget,
    Viewport,
    Window,
    check_budget,
    check_size,
    frame_header,
    render,
    render_frame,
    transcode_frame,
    transcode_stream,
)
from .urls import DicomWebUrl

#: Frames one frame list may name (``DICOM_MAX_FRAMES_PER_REQUEST``): a 1,000-frame CT in one request.
DEFAULT_MAX_FRAMES_PER_REQUEST = 1000
#: Digits of a number in a Range header: values are at most 4 GiB (10 digits); more is a 416, never a parse error.
MAX_RANGE_DIGITS = 18

log = logging.getLogger(__name__)


def decode_budget(settings: Settings) -> DecodeBudget:
    """The decoded-size budget of one request (``DICOM_MAX_DECODED_BYTES``, ``DICOM_MAX_DECODED_FRAME_BYTES``)."""
    return DecodeBudget(settings.max_decoded_bytes, settings.max_decoded_frame_bytes)


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


async def _transcoded(
    blobs: BlobStore,
    index: IndexStore,
    opened: OpenedInstance,
    key: InstanceKey,
    stored_ts: str,
    target: str,
    budget: DecodeBudget,
) -> AsyncIterator[bytes]:
    """The instance in ``target``: the stored file (at most 100 MB) is read, its frames decoded one by one.

    The decoded-size budget is checked before anything is decoded; a Deflated file, which must be
    inflated to be read, is checked first against the pixel description in the stored metadata.
    Raises (406) before the returned iterator is used when the first frame cannot be produced.
    """
    try:
        check_size(opened.size)
        if stored_ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            await _check_declared_size(blobs, index, key, budget)
        data = await asyncio.to_thread(lambda: b"".join(opened.chunks))
    except BaseException:
        opened.chunks.close()  # type: ignore[attr-defined]
        raise
    return aiter_blocking(await asyncio.to_thread(transcode_stream, data, target, budget))


async def _check_declared_size(blobs: BlobStore, index: IndexStore, key: InstanceKey, budget: DecodeBudget) -> None:
    """406 when the stored metadata describes pixel data over the budget (nothing is read or decoded)."""
    stored = await asyncio.to_thread(index.get_instance, key)
    if stored is not None:
        _check_metadata_budget(json.loads(await _instance_metadata(blobs, stored)), budget)


def _check_metadata_budget(metadata: dict[str, Any], budget: DecodeBudget) -> None:
    """406 when an instance's DICOM JSON describes pixel data over the budget (quiet when it cannot tell)."""
    header = frame_header(metadata)
    if header is None:
        return
    frames = (metadata.get(keyword_key("NumberOfFrames"), {}).get("Value") or [1])[0]
    try:
        count = max(int(frames), 1)
    except (TypeError, ValueError):
        count = 1
    check_budget(header, count, budget)


def _check_study_budget(
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None,
    transcoded: set[InstanceKey],
    budget: DecodeBudget,
) -> None:
    """406, before a study or series response starts, when an instance to transcode is over the budget.

    One paged query of the instances' stored metadata (blob reads only for metadata too large for
    the index), so an instance over the budget is never found half-way through the stream.
    """
    for key, inline in index.iter_metadata(study, series_instance_uid):
        if key not in transcoded:
            continue
        try:
            data = inline.encode() if inline is not None else blobs.get_metadata(key)[0]
        except NotFound:
            continue  # deleted meanwhile
        try:
            _check_metadata_budget(json.loads(data), budget)
        except NotAcceptable as exc:
            raise NotAcceptable(f"The instance {key.sop_instance_uid} cannot be transcoded: {exc.message}") from None


async def retrieve_instance(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    accept: str | None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """Retrieve one instance as stored (PS3.18 §10.4.1.1.3), or transcoded (same UIDs and attributes).

    Raises
    ------
    NotFound
        If the instance is not stored.
    NotAcceptable
        If no acceptable representation can be produced, or decoding it is over ``budget``.
    """
    opened = await asyncio.to_thread(blobs.open_instance, key)  # NotFound before the response starts
    stored_ts = opened.transfer_syntax_uid
    if stored_ts is None:  # stored before the blob carried its transfer syntax
        stored = await asyncio.to_thread(index.get_instance, key)
        stored_ts = stored.transfer_syntax_uid if stored is not None else EXPLICIT_VR_LITTLE_ENDIAN
    try:
        chosen = negotiation.instance(accept, stored_ts)
    except NotAcceptable:
        opened.chunks.close()  # type: ignore[attr-defined]
        raise
    ts = chosen.transfer_syntax
    if ts != stored_ts:
        body = await _transcoded(blobs, index, opened, key, stored_ts, ts, budget)
    else:
        body = aiter_blocking(opened.chunks)
    part_type = chosen.part_content_type
    if not chosen.multipart:
        return Retrieved(part_type, body, {"Content-Length": str(opened.size)} if ts == stored_ts else {})
    boundary = new_boundary()

    async def one_part() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield part_type, body

    return Retrieved(
        f'{MULTIPART_RELATED}; type="{APPLICATION_DICOM}"; boundary={boundary}',
        iter_multipart(one_part(), boundary),
    )


async def _instance_metadata(blobs: BlobStore, stored: IndexedInstance) -> bytes:
    """An instance's DICOM JSON: from its index document, or the metadata blob when too large for it."""
    if stored.metadata_json is not None:
        return stored.metadata_json.encode()
    data, _ = await asyncio.to_thread(blobs.get_metadata, stored.key)
    return data


async def retrieve_instance_metadata(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    accept: str | None,
    if_none_match: str | None,
    base_url: str,
) -> Retrieved:
    """Retrieve an instance's metadata as a DICOM JSON array (PS3.18 §10.4.1.1.2).

    One point read of the index document.  Binary attributes carry a
    BulkDataURI under ``base_url``.  Returns 304 (empty body) when
    ``if_none_match`` equals the current ETag.
    """
    negotiation.dicom_json(accept, "Metadata")
    stored = await _stored_instance(index, key)
    etag = f'"{stored.etag}"'
    headers = {"ETag": etag}
    if if_none_match and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Retrieved(APPLICATION_DICOM_JSON, _empty(), headers, status=304)
    body = await _instance_metadata(blobs, stored)
    payload = b"[" + bulkdata.resolve_uris(body, DicomWebUrl.of_instance(base_url, key).bulkdata_prefix) + b"]"
    headers["Content-Length"] = str(len(payload))
    return Retrieved(APPLICATION_DICOM_JSON, _single(payload), headers)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


async def _instances(index: IndexStore, study: StudyKey, series_instance_uid: str | None) -> list[IndexedInstance]:
    found = await asyncio.to_thread(index.list_instance_details, study, series_instance_uid)
    if not found:
        what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
        raise NotFound(f"The {what} {study.study_instance_uid} was not found.")
    return found


async def retrieve_study(
    *,
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None = None,
    accept: str | None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """Retrieve every instance of a study or series, one part each, streamed (PS3.18 §10.4.1.1.1).

    Instances are opened one after the other as the response is written, so
    memory stays bounded whatever the study size.

    Raises
    ------
    NotFound
        If the study (or the series in it) has no instance.
    NotAcceptable
        If the Accept header asks for another media type, or for a transfer syntax
        that some instance cannot be transcoded to, or decoding one of them is over ``budget``
        (checked against the stored metadata, and the first part prepared, before the response starts).
    """
    wanted = negotiation.study(accept).transfer_syntax
    instances = await _instances(index, study, series_instance_uid)
    if wanted != ORIGINAL_TRANSFER_SYNTAX:
        other = {i.transfer_syntax_uid for i in instances if i.transfer_syntax_uid != wanted}
        if wanted not in TARGETS:
            other_ok: set[str] = set()
        else:
            other_ok = {ts for ts in other if ts in TRANSCODABLE}
        too_big = [i for i in instances if i.transfer_syntax_uid in other_ok and i.size > MAX_TRANSCODE_BYTES]
        if other - other_ok or too_big:
            raise NotAcceptable(
                f"Instances stored as {', '.join(sorted(other - other_ok)) or 'over 100 MB'} cannot be "
                f"transcoded to {wanted}. Ask for transfer-syntax=*."
            )
        transcoded = {i.key for i in instances if i.transfer_syntax_uid in other_ok}
        if transcoded:
            await asyncio.to_thread(_check_study_budget, blobs, index, study, series_instance_uid, transcoded, budget)
    boundary = new_boundary()

    async def part(instance: IndexedInstance) -> tuple[str, AsyncIterator[bytes]] | None:
        try:
            opened = await asyncio.to_thread(blobs.open_instance, instance.key)
        except NotFound:
            return None  # deleted while the response was being written
        ts = opened.transfer_syntax_uid or instance.transfer_syntax_uid
        if wanted not in (ORIGINAL_TRANSFER_SYNTAX, ts):
            data = await _transcoded(blobs, index, opened, instance.key, ts, wanted, budget)
            return f"{APPLICATION_DICOM}; transfer-syntax={wanted}", data
        return f"{APPLICATION_DICOM}; transfer-syntax={ts}", aiter_blocking(opened.chunks)

    # The first part is prepared before the response starts, so a study whose instances cannot be
    # transcoded (e.g. too small for JPEG 2000) gets a 406 rather than a broken stream.
    first = await part(instances[0])

    async def parts() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        if first is not None:
            yield first
        for instance in instances[1:]:
            prepared = await part(instance)
            if prepared is not None:
                yield prepared

    return Retrieved(
        f'{MULTIPART_RELATED}; type="{APPLICATION_DICOM}"; boundary={boundary}', iter_multipart(parts(), boundary)
    )


async def retrieve_series(
    *, blobs: BlobStore, index: IndexStore, series: SeriesKey, accept: str | None, budget: DecodeBudget = DEFAULT_BUDGET
) -> Retrieved:
    """Every instance of a series (PS3.18 §10.4.1.1.1): :func:`retrieve_study` narrowed to it."""
    return await retrieve_study(
        blobs=blobs,
        index=index,
        study=series.study,
        series_instance_uid=series.series_instance_uid,
        accept=accept,
        budget=budget,
    )


async def retrieve_study_metadata(
    *,
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None = None,
    accept: str | None,
    if_none_match: str | None,
    base_url: str,
) -> Retrieved:
    """The metadata of every instance of a study or series, as one streamed DICOM JSON array.

    Two kinds of read: a point read of the study (or series) index document,
    whose etag is the ETag (``If-None-Match`` with it gives 304 after that one
    read), then one paged query of the instance documents, which carry the
    metadata; only instances whose metadata is too large for the index cost a
    blob read.  The body is streamed page by page, so memory stays bounded.
    """
    negotiation.dicom_json(accept, "Metadata")
    version = await asyncio.to_thread(index.metadata_etag, study, series_instance_uid)
    if version is None:
        what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
        raise NotFound(f"The {what} {study.study_instance_uid} was not found.")
    etag = f'W/"{version}"'
    headers = {"ETag": etag}
    if if_none_match and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Retrieved(APPLICATION_DICOM_JSON, _empty(), headers, status=304)
    pages = index.iter_metadata(study, series_instance_uid)

    def next_batch() -> list[tuple[InstanceKey, str | None]]:
        batch: list[tuple[InstanceKey, str | None]] = []
        for item in pages:
            batch.append(item)
            if len(batch) >= _METADATA_BATCH:
                break
        return batch

    async def read(key: InstanceKey, inline: str | None) -> bytes | None:
        if inline is not None:
            data = inline.encode()
        else:
            try:
                data, _ = await asyncio.to_thread(blobs.get_metadata, key)
            except NotFound:
                return None  # deleted meanwhile
        return bulkdata.resolve_uris(data, DicomWebUrl.of_instance(base_url, key).bulkdata_prefix)

    first_batch = await asyncio.to_thread(next_batch)
    if not first_batch:
        what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
        raise NotFound(f"The {what} {study.study_instance_uid} was not found.")

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        first = True
        batch = first_batch
        while batch:
            for data in await asyncio.gather(*(read(key, inline) for key, inline in batch)):
                if data is None:
                    continue
                yield data if first else b"," + data
                first = False
            batch = await asyncio.to_thread(next_batch)
        yield b"]"

    return Retrieved(APPLICATION_DICOM_JSON, body(), headers)


#: Instances whose metadata is taken from the index query per step of the response stream.
_METADATA_BATCH = 100



_FRAME_LIST = re.compile(r"[0-9]{1,9}(?:,[0-9]{1,9})*")


def parse_frame_list(text: str, max_frames: int = DEFAULT_MAX_FRAMES_PER_REQUEST) -> list[int]:
    """``1,3,5`` → ``[1, 3, 5]`` (frame numbers start at 1; at most ``max_frames``, none repeated).

    Raises
    ------
    BadRequest
        For anything else: more than ``max_frames`` entries, a repeated frame, a number of
        more than 9 digits, or what is not a comma-separated list of numbers.
    """
    entries = text.count(",") + 1
    if entries > max_frames:
        raise BadRequest(
            f"The frame list has {entries} entries; at most {max_frames} frames can be asked for in one request "
            "(DICOM_MAX_FRAMES_PER_REQUEST)."
        )
    if not _FRAME_LIST.fullmatch(text):
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise BadRequest(f"The frame list '{shown}' is not a comma-separated list of frame numbers.")
    numbers = [int(part) for part in text.split(",")]
    if any(n < 1 for n in numbers):
        raise BadRequest(f"The frame list '{text}' is invalid: frame numbers start at 1.")
    seen: set[int] = set()
    for number in numbers:
        if number in seen:
            raise BadRequest(f"The frame list asks for frame {number} more than once.")
        seen.add(number)
    return numbers


async def retrieve_frames(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    frames: list[int],
    accept: str | None,
    budget: DecodeBudget = DEFAULT_BUDGET,
    chosen: negotiation.Representation | None = None,
) -> Retrieved:
    """Frames of an instance by ranged blob reads of the offset table computed at store time (PS3.18 §10.4.1.1.4).

    Raises
    ------
    NotFound
        Unknown instance, no pixel data, or a frame number beyond the last frame.
    NotAcceptable
        When the requested media type cannot be produced, the frames cannot be located, or the
        frames to decode are over ``budget`` (checked before any is read or decoded).
    """
    stored = await _stored_instance(index, key)
    table = stored.frames
    if table is None:
        raise NotFound(f"The instance {key.sop_instance_uid} has no frames that can be served (no pixel data?).")
    beyond = [n for n in frames if n > len(table)]
    if beyond:
        raise NotFound(f"The instance has {len(table)} frame(s); frame {beyond[0]} does not exist.")
    stored_ts = stored.transfer_syntax_uid
    chosen = chosen or negotiation.frames(accept, stored_ts, len(frames))
    multipart, part_type, ts = chosen.multipart, chosen.media_type, chosen.transfer_syntax
    content_type = chosen.part_content_type
    same_bytes = negotiation.same_frame_bytes(stored_ts, ts)
    header = None if same_bytes else await _frame_header(blobs, stored)
    if not same_bytes and header is None:
        raise NotAcceptable("The frames of this instance cannot be decoded one by one; ask for transfer-syntax=*.")
    if header is not None:
        check_budget(header, len(frames), budget)

    def transcoded(number: int, header: Dataset) -> bytes:
        encoded = b"".join(_frame_chunks(blobs, key, table[number - 1]))
        return transcode_frame(header, stored_ts, encoded, ts, budget)

    def read(number: int) -> Iterator[bytes]:
        if header is None:
            yield from _frame_chunks(blobs, key, table[number - 1])
        else:
            yield from _pieces(transcoded(number, header))

    # A frame that cannot be decoded or encoded must be a 406, not a broken stream: the first
    # transcoded frame is produced before the response starts.
    first = [] if header is None else [await asyncio.to_thread(transcoded, frames[0], header)]

    def body(i: int) -> AsyncIterator[bytes]:
        return aiter_blocking(_pieces(first.pop())) if i == 0 and first else aiter_blocking(read(frames[i]))

    if not multipart:
        return Retrieved(content_type, body(0))
    boundary = new_boundary()

    async def parts() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        for i in range(len(frames)):
            yield content_type, body(i)

    return Retrieved(f'{MULTIPART_RELATED}; type="{part_type}"; boundary={boundary}', iter_multipart(parts(), boundary))


def _pieces(data: bytes, size: int = 1024 * 1024) -> Iterator[bytes]:
    """``data`` in pieces: only a piece, not a whole decoded frame, lingers while the next frame is decoded."""
    view = memoryview(data)
    del data
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def parse_quality(value: str | None) -> int:
    """The ``quality`` query parameter: 1-100, default 100 (ignored for PNG)."""
    if value is None:
        return 100
    try:
        quality = int(value)
    except ValueError:
        raise BadRequest(f"The quality '{value}' is not an integer between 1 and 100.") from None
    if not 1 <= quality <= 100:
        raise BadRequest(f"The quality {quality} is out of range: it must be between 1 and 100.")
    return quality


async def _stored_instance(index: IndexStore, key: InstanceKey) -> IndexedInstance:
    """The index entry of an instance (404 when it is not stored)."""
    stored = await asyncio.to_thread(index.get_instance, key)
    if stored is None:
        raise NotFound(f"The instance {key.sop_instance_uid} of series {key.series_instance_uid} was not found.")
    return stored


async def _frame_header(blobs: BlobStore, stored: IndexedInstance) -> Dataset | None:
    """The pixel description of an instance from its stored metadata (None when it is not enough)."""
    return frame_header(json.loads(await _instance_metadata(blobs, stored)))


def _frame_chunks(blobs: BlobStore, key: InstanceKey, ranges: list[list[int]]) -> Iterator[bytes]:
    """The bytes of one frame, by ranged reads of its entry in the frame table."""
    for offset, length in ranges:
        yield from blobs.iter_instance(key, offset, length)


async def retrieve_rendered(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    frame: int,
    accept: str | None,
    quality: int,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """A frame rendered as JPEG (default) or PNG, windowed from the instance (PS3.18 §10.4.1.1.5).

    ``viewport`` (PS3.18 §8.3.5.1.3) crops to its source region and scales to fit its size;
    ``window`` (§8.3.5.1.4) replaces the instance's VOI.  The frame is decoded from its own bytes
    (a ranged read of the frame table) when the stored metadata describes the pixels; otherwise
    from the whole file (at most 100 MB, as in Azure), decoding that frame only.  Either way one
    frame over ``budget`` is a 406 before anything is decoded.

    Raises
    ------
    NotFound
        Unknown instance, no pixel data or no such frame.
    NotAcceptable
        Unsupported Accept, pixel data that cannot be decoded, a frame over the decoded-size
        budget, or (whole-file path) an instance over 100 MB.
    BadRequest
        The viewport's source region lies outside the image.
    """
    media_type = negotiation.rendered(accept).media_type
    stored = await asyncio.to_thread(index.get_instance, key)
    image = await _render_one(blobs, key, stored, frame, media_type, quality, viewport, window, budget)
    return Retrieved(media_type, _single(image), {"Content-Length": str(len(image))})


async def retrieve_bulkdata(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    path: str,
    accept: str | None,
    range_header: str | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """The value of one binary attribute, by the BulkDataURI its metadata gave (PS3.18 §8.7.3.5, §10.4).

    ``multipart/related; type="application/octet-stream"`` with one part (the default),
    or a single-part ``application/octet-stream``.  Read by one ranged blob read; values
    of Explicit VR Big Endian files are returned little endian.  One ``Range`` (``bytes=a-b``)
    gives 206 with ``Content-Range``.  Encapsulated Pixel Data is returned as its frames,
    negotiated as for the frames resource (as stored unless the Accept header says otherwise).

    Raises
    ------
    NotFound
        Unknown instance, or no bulk data at ``path``.
    NotAcceptable
        For media types other than the above.
    RangeNotSatisfiable
        For a range outside the value, or with a number of more than :data:`MAX_RANGE_DIGITS` digits.
    """
    stored = await _stored_instance(index, key)
    entry = (stored.bulkdata or {}).get(path)
    if entry is None:
        raise NotFound(f"The instance {key.sop_instance_uid} has no bulk data at '{path}'.")
    offset, length, vr = int(entry[0]), int(entry[1]), str(entry[2])
    if length == bulkdata.ENCAPSULATED:
        count = len(stored.frames or [])
        if not count:
            raise NotAcceptable("The frames of this encapsulated Pixel Data cannot be located without decoding.")
        return await retrieve_frames(
            blobs=blobs,
            index=index,
            key=key,
            frames=list(range(1, count + 1)),
            accept=accept,
            budget=budget,
            chosen=negotiation.pixel_data_bulkdata(accept, stored.transfer_syntax_uid, count),
        )
    multipart = negotiation.bulkdata(accept).multipart
    if range_header and any(len(digits) > MAX_RANGE_DIGITS for digits in re.findall(r"[0-9]+", range_header)):
        raise RangeNotSatisfiable(
            f"The Range header has a number of more than {MAX_RANGE_DIGITS} digits; the value is {length} bytes.",
            length,
        )
    window = bulkdata.parse_range(range_header, length)
    start, stop = window or (0, length)
    word = bulkdata.WORD_SIZES.get(vr, 1) if stored.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN else 1
    # Big endian words are swapped whole: read from the word boundary before start, then trim.
    lead = start % word
    read_stop = min(stop + (-stop % word), length)

    def read() -> Iterator[bytes]:
        if stop <= start:
            return
        chunks = blobs.iter_instance(key, offset + start - lead, read_stop - start + lead)
        if word > 1:
            chunks = bulkdata.swap_words(chunks, word)
        yield from _trimmed(chunks, lead, stop - start)

    headers = {}
    if window is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{length}"
    status = 206 if window is not None else 200
    if not multipart:
        headers["Content-Length"] = str(stop - start)
        return Retrieved(APPLICATION_OCTET_STREAM, aiter_blocking(read()), headers, status)
    boundary = new_boundary()

    async def one_part() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield APPLICATION_OCTET_STREAM, aiter_blocking(read())

    return Retrieved(
        f'{MULTIPART_RELATED}; type="{APPLICATION_OCTET_STREAM}"; boundary={boundary}',
        iter_multipart(one_part(), boundary),
        headers,
        status,
    )


def _trimmed(chunks: Iterator[bytes], skip: int, total: int) -> Iterator[bytes]:
    """Drop the first ``skip`` bytes of a stream and stop after ``total`` more."""
    for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if len(chunk) >= total:
            if total:
                yield chunk[:total]
            return
        if chunk:
            yield chunk
            total -= len(chunk)


async def retrieve_series_metadata(
    *,
    blobs: BlobStore,
    index: IndexStore,
    series: SeriesKey,
    accept: str | None,
    if_none_match: str | None,
    base_url: str,
) -> Retrieved:
    """The metadata of every instance of a series: :func:`retrieve_study_metadata` narrowed to it."""
    return await retrieve_study_metadata(
        blobs=blobs,
        index=index,
        study=series.study,
        series_instance_uid=series.series_instance_uid,
        accept=accept,
        if_none_match=if_none_match,
        base_url=base_url,
    )


# -- rendered resources: parameters, one image, thumbnails, rendered studies and series -----------

#: Instances one rendered study or series may hold (one image each): more is a 400 (render series or instances).
MAX_RENDERED_INSTANCES = 1000
#: The viewport of a thumbnail when the request names none (PS3.18 §10.4.1.1.6 leaves the size to the server).
THUMBNAIL_VIEWPORT = Viewport(128, 128)
#: Instances a study or series thumbnail tries (the representative one first) before it is a 404 (or 406).
THUMBNAIL_ATTEMPTS = 3

_VIEWPORT_NUMBER = re.compile(r"-?[0-9]{1,9}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,16}(?:\.[0-9]{0,16})?|\.[0-9]{1,16})(?:[eE][+-]?[0-9]{1,3})?")


def _shown(value: str) -> str:
    return value if len(value) <= 64 else value[:64] + "..."


def parse_viewport(value: str | None) -> Viewport | None:
    """The ``viewport`` query parameter (PS3.18 §8.3.5.1.3): ``vw,vh`` or ``vw,vh,sx,sy,sw,sh``.

    ``vw`` and ``vh`` are 1 to :data:`~.transcode.MAX_VIEWPORT` (4096) pixels; ``sx``, ``sy`` (the
    source region's top left pixel) are at least 0; ``sw``, ``sh`` (its size) are not 0, and a
    negative one flips the image along that axis.

    Raises
    ------
    BadRequest
        For anything else.
    """
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 6) or not all(_VIEWPORT_NUMBER.fullmatch(part) for part in parts):
        raise BadRequest(
            f"The viewport '{_shown(value)}' is not vw,vh or vw,vh,sx,sy,sw,sh (integers, PS3.18 §8.3.5.1.3)."
        )
    numbers = [int(part) for part in parts]
    width, height = numbers[0], numbers[1]
    if width < 1 or height < 1:
        raise BadRequest(f"The viewport '{value}' is invalid: its width and height must be positive.")
    if width > MAX_VIEWPORT or height > MAX_VIEWPORT:
        raise BadRequest(f"The viewport '{value}' is too large: at most {MAX_VIEWPORT} x {MAX_VIEWPORT} pixels.")
    if len(numbers) == 2:
        return Viewport(width, height)
    sx, sy, sw, sh = numbers[2:]
    if sx < 0 or sy < 0 or sw == 0 or sh == 0:
        raise BadRequest(
            f"The viewport '{value}' is invalid: sx and sy must be at least 0, and sw and sh must not be 0."
        )
    return Viewport(width, height, (sx, sy, sw, sh))


def parse_window(value: str | None) -> Window | None:
    """The ``window`` query parameter (PS3.18 §8.3.5.1.4): ``center,width[,function]``.

    ``center`` and ``width`` are decimal numbers in the modality LUT's output units; ``function`` is
    ``linear`` (the default; ``width`` at least 1), ``linear-exact`` or ``sigmoid`` (``width`` over 0).

    Raises
    ------
    BadRequest
        For anything else.
    """
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 3) or not all(_DECIMAL.fullmatch(part) for part in parts[:2]):
        raise BadRequest(
            f"The window '{_shown(value)}' is not center,width,function (decimal numbers and one of "
            f"{', '.join(WINDOW_FUNCTIONS)}; PS3.18 §8.3.5.1.4)."
        )
    center, width = float(parts[0]), float(parts[1])
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise BadRequest(f"The window function '{_shown(parts[2])}' is not one of {', '.join(WINDOW_FUNCTIONS)}.")
    if not (math.isfinite(center) and math.isfinite(width)):
        raise BadRequest(f"The window '{_shown(value)}' has a number out of range.")
    if width < 1 if function == "linear" else width <= 0:
        least = "at least 1" if function == "linear" else "over 0"
        raise BadRequest(f"The window width {parts[1]} is invalid: for {function} it must be {least}.")
    return Window(center, width, function)


async def _render_one(
    blobs: BlobStore,
    key: InstanceKey,
    stored: IndexedInstance | None,
    frame: int,
    media_type: str,
    quality: int,
    viewport: Viewport | None,
    window: Window | None,
    budget: DecodeBudget,
) -> bytes:
    """One frame of an instance rendered (``stored``: its index entry, or None); see :func:`retrieve_rendered`."""
    if stored is not None and stored.frames and frame > len(stored.frames):
        raise NotFound(f"The instance has {len(stored.frames)} frame(s); frame {frame} does not exist.")
    header = await _frame_header(blobs, stored) if stored is not None else None
    if header is not None:
        check_budget(header, 1, budget)
    if stored is not None and stored.frames and header is not None:
        ranges = stored.frames[frame - 1]
        transfer_syntax = stored.transfer_syntax_uid

        def read_and_render(header: Dataset = header) -> bytes:
            encoded = b"".join(_frame_chunks(blobs, key, ranges))
            return render_frame(
                header, transfer_syntax, encoded, media_type, quality, budget, viewport=viewport, window=window
            )

        return await asyncio.to_thread(read_and_render)
    opened = await asyncio.to_thread(blobs.open_instance, key)
    try:
        check_size(opened.size)
    except NotAcceptable:
        opened.chunks.close()  # type: ignore[attr-defined]
        raise
    data = await asyncio.to_thread(lambda: b"".join(opened.chunks))
    return await asyncio.to_thread(render, data, frame, media_type, quality, budget, viewport=viewport, window=window)


async def retrieve_thumbnail(
    *,
    blobs: BlobStore,
    index: IndexStore,
    key: InstanceKey,
    frame: int = 1,
    accept: str | None,
    quality: int = 100,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """The thumbnail of an instance (its first frame) or of one frame (PS3.18 §10.4.1.1.6).

    A rendered frame (:func:`retrieve_rendered`) scaled to fit ``viewport``, by default
    :data:`THUMBNAIL_VIEWPORT` (128 x 128); JPEG unless PNG is asked for.
    """
    return await retrieve_rendered(
        blobs=blobs,
        index=index,
        key=key,
        frame=frame,
        accept=accept,
        quality=quality,
        viewport=viewport or THUMBNAIL_VIEWPORT,
        window=window,
        budget=budget,
    )


def _attribute(attrs: dict[str, Any], keyword: str) -> Any:
    """The first value of an attribute in DICOM JSON (None when absent or empty)."""
    values = (attrs.get(keyword_key(keyword)) or {}).get("Value") or [None]
    return values[0]


def _number(attrs: dict[str, Any], keyword: str) -> float:
    """A numeric attribute (IS, DS, US) of DICOM JSON; infinity when absent or unreadable (sorts last)."""
    try:
        number = float(_attribute(attrs, keyword))
    except (TypeError, ValueError):
        return math.inf
    return number if math.isfinite(number) else math.inf


def _thumbnail_candidates(
    series: list[SeriesSnapshot], series_instance_uid: str | None
) -> list[tuple[str, str]] | None:
    """The image instances to try for a study or series thumbnail, the representative one first.

    Series in SeriesNumber order (then as stored); in each, the image instances (those with Rows)
    in InstanceNumber order; its middle one represents the series.  The middle instance of the first
    series that has images comes first, then those of the next series.  Returns ``(series UID, SOP
    Instance UID)`` pairs; None when there is no such series.
    """
    chosen = [
        (position, s)
        for position, s in enumerate(series)
        if series_instance_uid is None or _attribute(s.attrs, "SeriesInstanceUID") == series_instance_uid
    ]
    if not chosen:
        return None
    chosen.sort(key=lambda item: (_number(item[1].attrs, "SeriesNumber"), item[0]))
    candidates: list[tuple[str, str]] = []
    for _, s in chosen:
        series_uid = _attribute(s.attrs, "SeriesInstanceUID")
        images = [
            (position, attrs)
            for position, attrs in enumerate(s.instances)
            if _attribute(attrs, "Rows") and _attribute(attrs, "SOPInstanceUID")
        ]
        if not series_uid or not images:
            continue
        images.sort(key=lambda item: (_number(item[1], "InstanceNumber"), item[0]))
        middle = images[len(images) // 2][1]
        candidates.append((str(series_uid), str(_attribute(middle, "SOPInstanceUID"))))
    return candidates


async def retrieve_thumbnail_study(
    *,
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None = None,
    accept: str | None,
    quality: int = 100,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """The thumbnail of a study or series (PS3.18 §10.4.1.1.6): one representative image.

    The representative image is the middle frame of the middle instance (by InstanceNumber) of
    the first series (by SeriesNumber) that has images (:func:`_thumbnail_candidates`); when it
    cannot be rendered, the next series' is tried, :data:`THUMBNAIL_ATTEMPTS` instances at most.
    One read of the study's index documents, then as :func:`retrieve_thumbnail`.

    Raises
    ------
    NotFound
        Unknown study or series, or no instance with pixel data that can be rendered.
    NotAcceptable
        Unsupported Accept, or the instances tried could not be decoded (or are over ``budget``).
    """
    media_type = negotiation.rendered(accept).media_type
    snapshot = await asyncio.to_thread(index.study_snapshot, study)
    what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
    candidates = _thumbnail_candidates(snapshot.series, series_instance_uid) if snapshot is not None else None
    if candidates is None:
        raise NotFound(f"The {what} {study.study_instance_uid} was not found.")
    failures: list[DicomServerError] = []
    for series_uid, sop_uid in candidates[:THUMBNAIL_ATTEMPTS]:
        key = InstanceKey(study.partition, study.study_instance_uid, series_uid, sop_uid)
        stored = await asyncio.to_thread(index.get_instance, key)
        if stored is None:
            continue  # deleted meanwhile
        frame = (len(stored.frames) + 1) // 2 if stored.frames else 1
        try:
            image = await _render_one(
                blobs, key, stored, frame, media_type, quality, viewport or THUMBNAIL_VIEWPORT, window, budget
            )
        except (NotFound, NotAcceptable, BadRequest) as exc:
            failures.append(exc)
            continue
        return Retrieved(media_type, _single(image), {"Content-Length": str(len(image))})
    raise _first_failure(failures, NotFound(f"The {what} {study.study_instance_uid} has no image to render."))


async def retrieve_thumbnail_series(
    *,
    blobs: BlobStore,
    index: IndexStore,
    series: SeriesKey,
    accept: str | None,
    quality: int = 100,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """The thumbnail of a series: :func:`retrieve_thumbnail_study` narrowed to it."""
    return await retrieve_thumbnail_study(
        blobs=blobs,
        index=index,
        study=series.study,
        series_instance_uid=series.series_instance_uid,
        accept=accept,
        quality=quality,
        viewport=viewport,
        window=window,
        budget=budget,
    )


def _first_failure(failures: list[DicomServerError], otherwise: DicomServerError) -> DicomServerError:
    """The first failure that says more than "not found" (400, 406), else ``otherwise``."""
    return next((f for f in failures if not isinstance(f, NotFound)), otherwise)


def _renderable_instances(
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None,
    budget: DecodeBudget,
) -> list[InstanceKey]:
    """The instances of a study or series that have pixel data, in rendering order, within the limits.

    One paged query of the stored metadata (blob reads only for metadata too large for the index).
    Order: SeriesNumber, then InstanceNumber (then UIDs).  Instances without pixel data are left out.

    Raises
    ------
    NotFound
        No instance, or none with pixel data.
    BadRequest
        More than :data:`MAX_RENDERED_INSTANCES` instances with pixel data.
    NotAcceptable
        A frame over ``budget.frame_bytes``, or the first frames of all of them over ``budget.instance_bytes``.
    """
    what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
    found = False
    total = 0
    ranked: list[tuple[tuple[float, str, float, str], InstanceKey]] = []
    for key, inline in index.iter_metadata(study, series_instance_uid):
        found = True
        try:
            data = inline.encode() if inline is not None else blobs.get_metadata(key)[0]
        except NotFound:
            continue  # deleted meanwhile
        metadata = json.loads(data)
        if keyword_key("PixelData") not in metadata and keyword_key("Rows") not in metadata:
            continue
        if len(ranked) >= MAX_RENDERED_INSTANCES:
            raise BadRequest(
                f"The {what} {study.study_instance_uid} has more than {MAX_RENDERED_INSTANCES} images; at most "
                f"{MAX_RENDERED_INSTANCES} can be rendered in one request. Ask for its series or instances."
            )
        header = frame_header(metadata)
        if header is not None:
            try:
                total += check_budget(header, 1, budget)
            except NotAcceptable as exc:
                raise NotAcceptable(f"The instance {key.sop_instance_uid} cannot be rendered: {exc.message}") from None
        rank = (
            _number(metadata, "SeriesNumber"),
            key.series_instance_uid,
            _number(metadata, "InstanceNumber"),
            key.sop_instance_uid,
        )
        ranked.append((rank, key))
    if not found:
        raise NotFound(f"The {what} {study.study_instance_uid} was not found.")
    if not ranked:
        raise NotFound(f"The {what} {study.study_instance_uid} has no image to render.")
    if total > budget.instance_bytes:
        raise NotAcceptable(
            f"The {len(ranked)} images of the {what} {study.study_instance_uid} decode to {total} bytes, over the "
            f"budget of {budget.instance_bytes} decoded bytes per request (DICOM_MAX_DECODED_BYTES). "
            "Ask for its series or instances."
        )
    ranked.sort(key=lambda item: item[0])
    return [key for _, key in ranked]


async def retrieve_rendered_study(
    *,
    blobs: BlobStore,
    index: IndexStore,
    study: StudyKey,
    series_instance_uid: str | None = None,
    accept: str | None,
    quality: int = 100,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """Every image of a study or series rendered, one part each, streamed (PS3.18 §10.4.1.1.5).

    ``multipart/related; type="image/jpeg"`` (or ``image/png``): the first frame of each instance
    with pixel data (others are left out), in SeriesNumber then InstanceNumber order, rendered as
    :func:`retrieve_rendered` renders it (``viewport``, ``window``, ``quality``), one instance at a
    time as the response is written.  At most :data:`MAX_RENDERED_INSTANCES` images; their first
    frames are checked against ``budget`` from the stored metadata before anything is decoded,
    and the first image is rendered before the response starts.  An instance that cannot be
    rendered (deleted meanwhile, undecodable, the viewport's region outside it) is left out.

    Raises
    ------
    NotFound
        Unknown study or series, or no image in it that can be rendered.
    BadRequest
        Over :data:`MAX_RENDERED_INSTANCES` images, or the viewport's region outside all of them.
    NotAcceptable
        Unsupported Accept, images over ``budget``, or none that can be decoded.
    """
    media_type = negotiation.rendered_multipart(accept).media_type
    keys = await asyncio.to_thread(_renderable_instances, blobs, index, study, series_instance_uid, budget)
    failures: list[DicomServerError] = []

    async def image(key: InstanceKey) -> bytes | None:
        stored = await asyncio.to_thread(index.get_instance, key)
        if stored is None:
            return None  # deleted meanwhile
        try:
            return await _render_one(blobs, key, stored, 1, media_type, quality, viewport, window, budget)
        except (NotFound, NotAcceptable, BadRequest) as exc:
            log.info("rendered %s: instance %s left out: %s", media_type, key.sop_instance_uid, exc.message)
            failures.append(exc)
            return None

    # The first image is rendered before the response starts: a series none of whose images can be
    # rendered is a 4xx, not an empty multipart.
    first: bytes | None = None
    position = 0
    while first is None and position < len(keys):
        first = await image(keys[position])
        position += 1
    if first is None:
        what = f"series {series_instance_uid} of study" if series_instance_uid else "study"
        raise _first_failure(failures, NotFound(f"The {what} {study.study_instance_uid} has no image to render."))
    boundary = new_boundary()

    async def parts() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield media_type, _single(first)
        for key in keys[position:]:
            rendered = await image(key)
            if rendered is not None:
                yield media_type, _single(rendered)

    return Retrieved(
        f'{MULTIPART_RELATED}; type="{media_type}"; boundary={boundary}', iter_multipart(parts(), boundary)
    )


async def retrieve_rendered_series(
    *,
    blobs: BlobStore,
    index: IndexStore,
    series: SeriesKey,
    accept: str | None,
    quality: int = 100,
    viewport: Viewport | None = None,
    window: Window | None = None,
    budget: DecodeBudget = DEFAULT_BUDGET,
) -> Retrieved:
    """Every image of a series rendered: :func:`retrieve_rendered_study` narrowed to it."""
    return await retrieve_rendered_study(
        blobs=blobs,
        index=index,
        study=series.study,
        series_instance_uid=series.series_instance_uid,
        accept=accept,
        quality=quality,
        viewport=viewport,
        window=window,
        budget=budget,
    )
