"""Content negotiation (dicomserver/negotiation.py): every Accept/Content-Type choice, no HTTP."""

from __future__ import annotations

import pytest

from dicomserver import negotiation
from dicomserver.errors import NotAcceptable, UnsupportedMediaType
from dicomserver.mediatypes import EXPLICIT_VR_LITTLE_ENDIAN as EVRLE
from dicomserver.mediatypes import IMPLICIT_VR_LITTLE_ENDIAN as IVRLE
from dicomserver.mediatypes import JPEG2000
from dicomserver.negotiation import Representation

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"


class TestStoreRequest:
    def test_multipart_with_boundary(self) -> None:
        chosen = negotiation.store_request('multipart/related; type="application/dicom"; boundary=abc')
        assert chosen == Representation("application/dicom", multipart=True, boundary="abc")

    def test_multipart_type_defaults_to_dicom(self) -> None:
        assert negotiation.store_request("multipart/related; boundary=x").boundary == "x"

    def test_single_instance(self) -> None:
        assert negotiation.store_request("application/dicom") == Representation("application/dicom")

    @pytest.mark.parametrize(
        "content_type",
        [None, "", "application/json", 'multipart/related; type="application/dicom+json"; boundary=x',
         'multipart/related; type="application/dicom"'],
    )
    def test_anything_else_is_415(self, content_type: str | None) -> None:
        with pytest.raises(UnsupportedMediaType):
            negotiation.store_request(content_type)

    def test_parts_without_a_type_are_dicom(self) -> None:
        assert negotiation.is_dicom_part(None)
        assert negotiation.is_dicom_part("Application/DICOM")
        assert not negotiation.is_dicom_part("application/json")


class TestDicomJson:
    @pytest.mark.parametrize(
        "accept", [None, "", "*/*", "application/dicom+json", "application/json", "application/*", "text/html, */*"]
    )
    def test_allowed(self, accept: str | None) -> None:
        assert negotiation.dicom_json(accept, "QIDO-RS").media_type == "application/dicom+json"

    def test_refused_quotes_the_header(self) -> None:
        with pytest.raises(NotAcceptable, match="'application/dicom'"):
            negotiation.dicom_json("application/dicom", "QIDO-RS")


class TestInstance:
    def test_no_accept_is_the_stored_instance(self) -> None:
        assert negotiation.instance(None, JPEG_BASELINE) == Representation("application/dicom", JPEG_BASELINE)

    def test_no_transfer_syntax_parameter_means_explicit_vr_little_endian(self) -> None:
        chosen = negotiation.instance("application/dicom", IVRLE)
        assert chosen == Representation("application/dicom", EVRLE)
        assert chosen.part_content_type == f"application/dicom; transfer-syntax={EVRLE}"

    def test_star_means_as_stored_and_multipart_is_kept(self) -> None:
        chosen = negotiation.instance('multipart/related; type="application/dicom"; transfer-syntax=*', RLE)
        assert chosen == Representation("application/dicom", RLE, multipart=True)

    def test_transcoding_target(self) -> None:
        assert negotiation.instance(f"application/dicom; transfer-syntax={JPEG2000}", EVRLE).transfer_syntax == JPEG2000

    def test_quality_order_decides(self) -> None:
        accept = "application/dicom; transfer-syntax=*; q=0.5, multipart/related; type=\"application/dicom\""
        assert negotiation.instance(accept, EVRLE).multipart

    def test_untranscodable_is_406_naming_both_syntaxes(self) -> None:
        with pytest.raises(NotAcceptable, match=JPEG_BASELINE):
            negotiation.instance(f"application/dicom; transfer-syntax={JPEG_BASELINE}", EVRLE)

    def test_other_types_are_406(self) -> None:
        with pytest.raises(NotAcceptable):
            negotiation.instance("image/png", EVRLE)


class TestStudy:
    def test_any_is_as_stored(self) -> None:
        assert negotiation.study("*/*") == Representation("application/dicom", "*", multipart=True)

    def test_default_transfer_syntax(self) -> None:
        assert negotiation.study('multipart/related; type="application/dicom"').transfer_syntax == EVRLE

    def test_single_part_is_406(self) -> None:
        with pytest.raises(NotAcceptable):
            negotiation.study("application/dicom")

    def test_as_stored_resolves_the_star(self) -> None:
        assert negotiation.study(None).as_stored(RLE).transfer_syntax == RLE
        assert negotiation.study(None).as_stored(RLE).multipart


class TestFrames:
    def test_any_is_multipart_octet_stream_as_stored(self) -> None:
        assert negotiation.frames(None, RLE, 3) == Representation("application/octet-stream", RLE, True)

    def test_octet_stream_single_part_only_for_one_frame(self) -> None:
        assert negotiation.frames("application/octet-stream", EVRLE, 1) == Representation(
            "application/octet-stream", EVRLE, False
        )
        with pytest.raises(NotAcceptable):
            negotiation.frames("application/octet-stream", EVRLE, 2)

    def test_implicit_vr_frames_are_the_same_bytes_as_explicit(self) -> None:
        chosen = negotiation.frames('multipart/related; type="application/octet-stream"', IVRLE, 2)
        assert chosen.transfer_syntax == EVRLE
        assert negotiation.same_frame_bytes(IVRLE, chosen.transfer_syntax)
        assert not negotiation.same_frame_bytes(RLE, EVRLE)

    def test_jpeg2000_encoded_from_uncompressed(self) -> None:
        assert negotiation.frames('multipart/related; type="image/jp2"', EVRLE, 1) == Representation(
            "image/jp2", JPEG2000, True
        )

    def test_stored_image_type_beyond_azure(self) -> None:
        assert negotiation.frames('multipart/related; type="image/jpeg"', JPEG_BASELINE, 1).media_type == "image/jpeg"
        with pytest.raises(NotAcceptable):
            negotiation.frames('multipart/related; type="image/jpeg"', RLE, 1)


class TestRenderedAndBulkData:
    @pytest.mark.parametrize(("accept", "chosen"), [(None, "image/jpeg"), ("image/*", "image/jpeg"),
                                                     ("image/png", "image/png"), ("image/gif, image/png", "image/png")])
    def test_rendered(self, accept: str | None, chosen: str) -> None:
        assert negotiation.rendered(accept).media_type == chosen

    def test_rendered_refuses_other_types(self) -> None:
        with pytest.raises(NotAcceptable):
            negotiation.rendered("application/dicom")

    def test_bulkdata_multipart_by_default(self) -> None:
        assert negotiation.bulkdata(None).multipart
        assert not negotiation.bulkdata("application/octet-stream").multipart
        with pytest.raises(NotAcceptable):
            negotiation.bulkdata("application/dicom")

    def test_encapsulated_pixel_data_as_stored_unless_a_syntax_is_named(self) -> None:
        assert negotiation.pixel_data_bulkdata(None, RLE, 2) == Representation("application/octet-stream", RLE, True)
        plain = 'multipart/related; type="application/octet-stream"'
        assert negotiation.pixel_data_bulkdata(plain, RLE, 2).transfer_syntax == RLE
        with pytest.raises(NotAcceptable):
            # JPEG 2000 is not a transfer syntax of octet-stream frames
            negotiation.pixel_data_bulkdata(f"{plain}; transfer-syntax={JPEG2000}", RLE, 2)
        decoded = negotiation.pixel_data_bulkdata(f"{plain}; transfer-syntax={EVRLE}", RLE, 2)
        assert decoded == Representation("application/octet-stream", EVRLE, True)
