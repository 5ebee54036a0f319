"""The bad-input corpus: malformed files and requests that must never cause a 500."""

from __future__ import annotations

import struct

from tests.dicomfiles import bundled, make_instance, multipart_body

#: pydicom's bundled files that are malformed or unusual.
MALFORMED_BUNDLED = [
    "MR_truncated.dcm",  # pixel data cut short
    "rtplan_truncated.dcm",  # dataset cut short
    "badVR.dcm",  # invalid VR
    "no_meta.dcm",  # no preamble, no file meta
    "no_meta_group_length.dcm",
    "ExplVR_BigEndNoMeta.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "meta_missing_tsyntax.dcm",  # file meta without TransferSyntaxUID
    "ExplVR_BigEnd.dcm",  # retired big endian transfer syntax (valid)
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",  # deflated explicit VR (valid)
    "zipMR.gz",  # gzip bytes, not DICOM
    "UN_sequence.dcm",
    "empty_charset_LEI.dcm",
    "reportsi_with_empty_number_tags.dcm",
    "nested_priv_SQ.dcm",
    "J2K_pixelrep_mismatch.dcm",
]


def _huge_length_element() -> bytes:
    """A Part 10 file whose PatientName claims a 4 GB value."""
    data = bytearray(make_instance())
    marker = b"\x10\x00\x10\x00PN"
    at = data.index(marker)
    struct.pack_into("<H", data, at + 6, 0xFFFF)
    return bytes(data[: at + 8]) + b"Doe^John"


def _bad_uid(uid: str) -> bytes:
    return make_instance(sop=uid)


def malformed_parts() -> list[tuple[str, bytes]]:
    """``(name, part bytes)`` for single-part STOW requests."""
    parts = [(name, bundled(name).read_bytes()) for name in MALFORMED_BUNDLED]
    parts += [
        ("empty", b""),
        ("text", b"hello, this is not DICOM" * 10),
        ("preamble-only", b"\x00" * 128 + b"DICM"),
        ("huge-element-length", _huge_length_element()),
        ("uid-dot-dot-slash", _bad_uid("../../etc/passwd")),
        ("uid-slash", _bad_uid("1.2/3")),
        ("uid-65-chars", _bad_uid("1." + "2" * 63)),
        ("uid-letters", _bad_uid("abc.123")),
        ("uid-pipe", _bad_uid("11|")),
    ]
    return parts


def malformed_requests() -> list[tuple[str, bytes, str]]:
    """``(name, body, content type)`` of requests that are broken as a whole."""
    good = make_instance()
    body, ctype = multipart_body([good])
    return [
        ("truncated-multipart", body[: len(body) // 2], ctype),
        ("no-closing-boundary", body[: -len(b"--test-boundary-1234--\r\n")], ctype),
        ("missing-boundary-parameter", body, 'multipart/related; type="application/dicom"'),
        ("wrong-boundary", body, 'multipart/related; type="application/dicom"; boundary=other'),
        ("garbage-multipart", b"\x00\xff" * 500, ctype),
        ("json-content-type", good, "application/json"),
        ("no-content-type", good, ""),
        ("multipart-of-json", body, 'multipart/related; type="application/json"; boundary=test-boundary-1234'),
        ("malformed-content-type", good, "application"),
        ("header-without-colon", b"--b\r\nbroken header\r\n\r\nx\r\n--b--\r\n", "multipart/related; boundary=b"),
    ]
