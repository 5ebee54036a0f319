"""DicomWebUrl: request paths parsed once (UIDs validated), RetrieveURL and BulkDataURI built once."""

from __future__ import annotations

import pytest

from dicomserver.errors import BadRequest
from dicomserver.identifiers import DEFAULT_PARTITION, InstanceKey, SeriesKey, StudyKey
from dicomserver.urls import DicomWebUrl

BASE = "https://dicom.example.org/v2"
KEY = InstanceKey(DEFAULT_PARTITION, "1.2.3", "1.2.3.4", "1.2.3.4.5")


def test_parse_every_level_and_the_sub_resource() -> None:
    url = DicomWebUrl.parse("/v2/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1,3/rendered", BASE + "/")
    assert (url.study, url.series, url.instance, url.tail) == ("1.2.3", "1.2.3.4", "1.2.3.4.5", "frames/1,3/rendered")
    assert url.instance_key == KEY
    assert url.series_key == SeriesKey(DEFAULT_PARTITION, "1.2.3", "1.2.3.4")
    assert url.study_key == StudyKey(DEFAULT_PARTITION, "1.2.3")
    assert url.frame_list == "1,3"
    assert url.base == BASE


def test_parse_search_paths() -> None:
    assert DicomWebUrl.parse("/v2/studies").study is None
    in_study = DicomWebUrl.parse("/v2/studies/1.2/series")
    assert (in_study.study, in_study.series, in_study.tail) == ("1.2", None, "series")


def test_bulkdata_path_is_percent_decoded() -> None:
    url = DicomWebUrl.parse("/v2/studies/1/series/2/instances/3/bulkdata/00091002%2F1/7FE00010")
    assert url.bulkdata_path == "00091002/1/7FE00010"


@pytest.mark.parametrize("bad", ["1.2.x", "..", "1" * 65])
def test_invalid_path_uids_are_400(bad: str) -> None:
    with pytest.raises(BadRequest, match="invalid"):
        DicomWebUrl.parse(f"/v2/studies/{bad}/metadata")


def test_missing_levels_are_400_not_key_errors() -> None:
    study_only = DicomWebUrl.parse("/v2/studies/1.2")
    with pytest.raises(BadRequest):
        _ = study_only.instance_key
    with pytest.raises(BadRequest):
        _ = study_only.frame_list
    with pytest.raises(BadRequest):
        _ = study_only.bulkdata_path


def test_retrieve_urls() -> None:
    assert DicomWebUrl.of_instance(BASE, KEY).url == f"{BASE}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    assert DicomWebUrl.of_series(BASE, KEY.series).url == f"{BASE}/studies/1.2.3/series/1.2.3.4"
    assert DicomWebUrl.of_study(BASE, "1.2.3").url == f"{BASE}/studies/1.2.3"
    assert DicomWebUrl.of_study(BASE + "/", KEY.study).url == f"{BASE}/studies/1.2.3"


def test_bulkdata_uri() -> None:
    url = DicomWebUrl.of_instance(BASE, KEY)
    assert url.bulkdata_uri("7FE00010") == f"{url.url}/bulkdata/7FE00010"
    with pytest.raises(BadRequest):
        DicomWebUrl.of_study(BASE, "1.2.3").bulkdata_uri("7FE00010")


def test_a_partition_other_than_the_default_is_in_the_url() -> None:
    key = InstanceKey("tenant-a", "1", "2", "3")
    assert DicomWebUrl.of_instance(BASE, key).url == f"{BASE}/partitions/tenant-a/studies/1/series/2/instances/3"


def test_parsed_and_built_urls_round_trip() -> None:
    built = DicomWebUrl.of_instance(BASE, KEY)
    assert DicomWebUrl.parse(built.url, BASE) == built


def test_a_trailing_count_is_the_count_of_a_search_not_a_uid() -> None:
    assert DicomWebUrl.parse("/v2/studies/count").study is None
    in_series = DicomWebUrl.parse("/v2/studies/1.2/series/3.4/instances/count")
    assert (in_series.study, in_series.series, in_series.tail) == ("1.2", "3.4", "instances/count")
    with pytest.raises(BadRequest):
        DicomWebUrl.parse("/v2/studies/count/series")  # only as the last segment
