"""Retrieve never changes identity: instance, series and study retrieves that transcode keep every UID.

Instances of several stored transfer syntaxes are stored in one study (two series) through STOW;
each retrieve asks for a transfer syntax other than the stored one, so every instance is transcoded,
and what comes back must be what was stored but for the pixel data and its description.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.dicomfiles import TRANSCODED_META_TAGS, bundled, identity_view
from tests.stowhttp import stored as store_parts

#: Stored transfer syntaxes: JPEG baseline (YBR), RLE (2 frames), JPEG 2000, JPEG-LS, big endian, deflated.
SERIES_A = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm"]
SERIES_B = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def stored_study(base_url: str) -> tuple[str, dict[str, pydicom.Dataset]]:
    """Store the files under one new study (two series); returns it and the stored datasets by SOP Instance UID."""
    study = generate_uid()
    parts, stored = [], {}
    for names in (SERIES_A, SERIES_B):
        series = generate_uid()
        for name in names:
            ds = pydicom.dcmread(bundled(name))
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = ds.get("PatientID") or "IDENTITY"
            out = io.BytesIO()
            ds.save_as(out)
            parts.append(out.getvalue())
            stored[ds.SOPInstanceUID] = pydicom.dcmread(io.BytesIO(out.getvalue()))
    store_parts(base_url, parts)
    return study, stored


def assert_same_instance(got: pydicom.Dataset, stored: pydicom.Dataset, transfer_syntax: str) -> None:
    assert got.file_meta.TransferSyntaxUID == transfer_syntax
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert got[keyword].value == stored[keyword].value
    assert got.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID
    assert identity_view(got) == identity_view(stored)
    assert identity_view(got.file_meta, TRANSCODED_META_TAGS) == identity_view(stored.file_meta, TRANSCODED_META_TAGS)
    assert np.array_equal(got.pixel_array, stored.pixel_array)


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_LE, JPEG2000_LOSSLESS])
def test_transcoding_retrieves_return_the_stored_instances(base_url: str, transfer_syntax: str) -> None:
    client = DICOMwebClient(url=base_url)
    study, stored = stored_study(base_url)
    media = (("application/dicom", transfer_syntax),)
    whole = client.retrieve_study(study, media_types=media)
    assert sorted(ds.SOPInstanceUID for ds in whole) == sorted(stored)
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for ds in whole:
        assert_same_instance(ds, stored[ds.SOPInstanceUID], transfer_syntax)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for series, members in by_series.items():
        got = client.retrieve_series(study, series, media_types=media)
        assert sorted(ds.SOPInstanceUID for ds in got) == sorted(ds.SOPInstanceUID for ds in members)
        for ds in got:
            assert_same_instance(ds, stored[ds.SOPInstanceUID], transfer_syntax)
        first = members[0]
        one = client.retrieve_instance(study, series, first.SOPInstanceUID, media_types=media)
        assert_same_instance(one, stored[first.SOPInstanceUID], transfer_syntax)
    # The default Accept of an instance is Explicit VR Little Endian: transcoded, same identity.
    sop = next(uid for uid, ds in stored.items() if ds.file_meta.TransferSyntaxUID.is_compressed)
    url = f"{base_url}/studies/{study}/series/{stored[sop].SeriesInstanceUID}/instances/{sop}"
    default = httpx.get(url, headers={"Accept": "application/dicom"}, timeout=60)
    assert default.status_code == 200, default.text
    assert_same_instance(pydicom.dcmread(io.BytesIO(default.content)), stored[sop], EXPLICIT_LE)
