from __future__ import annotations

import pytest

from dicomserver.errors import BadRequest
from dicomserver.mediatypes import parse_accept, parse_media_type


def test_parameters_are_parsed_with_quotes_and_case() -> None:
    media = parse_media_type('Multipart/Related; Type="application/dicom"; boundary="a;b"')
    assert media.type == "multipart/related"
    assert media.param("type") == "application/dicom"
    assert media.param("boundary") == "a;b"


def test_accept_is_ordered_by_quality() -> None:
    types = parse_accept('application/dicom;q=0.5, multipart/related; type="application/dicom"; transfer-syntax=*')
    assert [t.type for t in types] == ["multipart/related", "application/dicom"]
    assert types[0].param("transfer-syntax") == "*"


def test_missing_accept_means_anything() -> None:
    assert parse_accept(None)[0].type == "*/*"


@pytest.mark.parametrize("text", ["application", "application/dicom; broken", "a/b; q=x"])
def test_malformed_media_types_are_bad_requests(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_media_type(text)
