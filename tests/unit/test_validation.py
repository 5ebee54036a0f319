from __future__ import annotations

import io

import pydicom
import pytest

from dicomserver.errors import FailureReason
from dicomserver.identifiers import is_valid_uid, parse_path_uid
from dicomserver.validation import validate_dataset
from tests.dicomfiles import bundled, make_instance


def load(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def test_bundled_ct_file_is_valid() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"), stop_before_pixels=True)
    assert validate_dataset(ds, None).ok


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_missing_required_uid_fails_with_43264(keyword: str) -> None:
    ds = load(make_instance())
    delattr(ds, keyword)
    result = validate_dataset(ds, None)
    assert result.reason == FailureReason.VALIDATION_FAILURE
    assert keyword in result.message


@pytest.mark.parametrize("bad", ["abc.123", "1.2.03", "1..2", "1.2.", "1" * 65])
def test_invalid_uid_fails_with_43264_and_quotes_the_value(bad: str) -> None:
    ds = load(make_instance())
    ds.SOPInstanceUID = bad
    result = validate_dataset(ds, None)
    assert result.reason == FailureReason.VALIDATION_FAILURE
    assert bad in result.message


def test_missing_patient_id_fails_but_empty_is_allowed() -> None:
    ds = load(make_instance())
    ds.PatientID = ""
    assert validate_dataset(ds, None).ok
    del ds.PatientID
    assert validate_dataset(ds, None).reason == FailureReason.VALIDATION_FAILURE


def test_equal_instance_uids_are_allowed() -> None:
    ds = load(make_instance(study="1.2.3", series="1.2.3", sop="1.2.3"))
    assert validate_dataset(ds, None).ok


def test_study_mismatch_with_url_fails_with_43265() -> None:
    ds = load(make_instance(study="1.2.3"))
    assert validate_dataset(ds, "1.2.3").ok
    assert validate_dataset(ds, "1.2.4").reason == FailureReason.MISMATCH_STUDY_INSTANCE_UID


def test_uid_grammar() -> None:
    assert is_valid_uid("1.2.840.10008.1.2.1")
    assert is_valid_uid("0.0")
    assert not is_valid_uid("1.02")
    assert not is_valid_uid("1.2/../3")


def test_path_uids_are_digits_and_dots_as_azure_validates_them() -> None:
    assert parse_path_uid("1.2.840.10008.1.2.1", "study") == "1.2.840.10008.1.2.1"
    assert parse_path_uid("1.02..3", "study") == "1.02..3"  # Azure's check is characters and length only
    for bad in ["1/2", "1" * 65, "", "1%2F2", "..%2f", "1.2-3.abc", "abc", "1.2.3.abc"]:
        with pytest.raises(Exception, match="invalid"):
            parse_path_uid(bad, "study")


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"])
def test_a_multi_valued_key_attribute_is_refused_with_43264(keyword: str) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance()))
    ds[keyword].value = ["1.2.3.999", "4.5.6"] if keyword.endswith("UID") else ["PIDA", "PIDB"]
    result = validate_dataset(ds, None)
    assert result.reason == FailureReason.VALIDATION_FAILURE
    assert "more than one value" in result.message and "PIDA" not in result.message


@pytest.mark.parametrize("value", [".", "..", "...", "1" * 65, "1.2/3", "a b", ""])
def test_path_uids_that_are_dot_segments_or_malformed_are_a_400(value: str) -> None:
    from dicomserver.errors import BadRequest

    with pytest.raises(BadRequest):
        parse_path_uid(value, "study instance UID")
