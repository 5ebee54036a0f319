"""A Deflated data set is inflated once, bounded, before pydicom would inflate it whole (hardening)."""

from __future__ import annotations

import io
import zlib

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomserver.ingest import _deflated_size_problem, read_instance
from tests.dicomfiles import make_instance


def _deflated_file(zeros: int) -> bytes:
    """A Part 10 header for Deflated Explicit VR LE, then ``zeros`` zero bytes deflated (streamed)."""
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = Dataset()
    header.file_meta = meta
    out = io.BytesIO()
    header.save_as(out, enforce_file_format=True)
    raw = out.getvalue()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")  # preamble, DICM, group length, the group
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    body = b"".join(compressor.compress(chunk) for _ in range(zeros // len(chunk)))
    return raw[:meta_end] + body + compressor.flush()


def test_a_deflate_bomb_is_refused_without_being_inflated_whole() -> None:
    data = _deflated_file(64 * 1024 * 1024)  # 64 MiB of zeros in about 64 KB
    assert len(data) < 200_000
    problem = _deflated_size_problem(io.BytesIO(data), len(data), limit=16 * 1024 * 1024)
    assert problem is not None and "inflates to more than" in problem


def test_a_deflated_file_within_the_limit_passes_and_garbage_is_refused() -> None:
    data = _deflated_file(2 * 1024 * 1024)
    assert _deflated_size_problem(io.BytesIO(data), len(data), limit=16 * 1024 * 1024) is None
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    broken = data[:meta_end] + b"\xff" * 64  # a first deflate block of the reserved type 3
    assert "not valid deflate data" in str(_deflated_size_problem(io.BytesIO(broken), len(broken)))


def test_other_transfer_syntaxes_are_not_inflated() -> None:
    data = make_instance()
    assert _deflated_size_problem(io.BytesIO(data), len(data)) is None
    assert not hasattr(read_instance(io.BytesIO(data), len(data), None, "p"), "reason")
