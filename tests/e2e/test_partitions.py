"""Data partitions over HTTP: two partitions holding the same UIDs never see each other.

A host with ``DICOM_DATA_PARTITIONS_ENABLED=true`` (its own containers, no triggers) and the
session's ``base_url`` host (partitions off) answer as Azure's DICOM service v2 does.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.dicomfiles import make_instance
from tests.e2e.conftest import local_host
from tests.stowhttp import stow

DICOM_ANY = {"Accept": "application/dicom; transfer-syntax=*"}
OCTETS = {"Accept": "application/octet-stream; transfer-syntax=*"}
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"


@pytest.fixture(scope="module")
def host(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host with data partitions on: ``.../v2``."""
    env = {
        **stack_env,
        "DICOM_AUTH_MODE": "none",
        "DICOM_DATA_PARTITIONS_ENABLED": "true",
        "DICOM_INSTANCE_CONTAINER": "partitioned-dicom",
        "DICOM_METADATA_CONTAINER": "partitioned-dicom-metadata",
        "DICOM_IMPORT_CONTAINER": "partitioned-dicom-import",
        "DICOM_IMPORT_ERRORS_CONTAINER": "partitioned-dicom-import-errors",
        "DICOM_FHIR_SYNC_QUEUE": "partitioned-fhir-sync",
    }
    with local_host(env, Path(tmp_path_factory.mktemp("partitioned-host")), "--no-triggers") as url:
        yield url


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Twins:
    """One study, series and instance stored under the same UIDs in two partitions, with different bytes."""

    def __init__(self, host: str) -> None:
        self.study, self.series, self.sop = generate_uid(), generate_uid(), generate_uid()
        self.a, self.b = _name("site-a"), _name("site-b.2")
        uids = {"study": self.study, "series": self.series, "sop": self.sop}
        self.bytes = {
            self.a: make_instance(**uids, patient_name="Alpha^Ann", rows=8, columns=8, ProtocolName="PROTO-A"),
            self.b: make_instance(**uids, patient_name="Beta^Bob", rows=4, columns=4, ProtocolName="PROTO-B"),
        }
        self.responses = {p: stow(f"{host}/partitions/{p}", [data]) for p, data in self.bytes.items()}

    def base(self, host: str, partition: str) -> str:
        return f"{host}/partitions/{partition}"

    def instance_url(self, host: str, partition: str) -> str:
        return f"{self.base(host, partition)}/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@pytest.fixture(scope="module")
def twins(host: str) -> Twins:
    return Twins(host)


def test_each_partition_stores_the_same_uids_and_returns_retrieve_urls_in_it(host: str, twins: Twins) -> None:
    for partition, response in twins.responses.items():
        assert response.status_code == 200, response.text
        referenced = response.json()[REFERENCED_SOP_SEQUENCE]["Value"]
        assert [r[RETRIEVE_URL]["Value"][0] for r in referenced] == [twins.instance_url(host, partition)]


def test_each_partition_retrieves_its_own_bytes(host: str, twins: Twins) -> None:
    for partition, data in twins.bytes.items():
        got = httpx.get(twins.instance_url(host, partition), headers=DICOM_ANY, timeout=30)
        assert got.status_code == 200, got.text
        assert got.content == data


def test_each_partition_searches_only_its_own_data(host: str, twins: Twins) -> None:
    for partition, other, name in ((twins.a, twins.b, "Alpha^Ann"), (twins.b, twins.a, "Beta^Bob")):
        base = twins.base(host, partition)
        studies = httpx.get(f"{base}/studies", params={"StudyInstanceUID": twins.study}, timeout=30)
        assert studies.status_code == 200, studies.text
        assert [s["00100010"]["Value"][0]["Alphabetic"] for s in studies.json()] == [name]
        other_name = "Beta^Bob" if name == "Alpha^Ann" else "Alpha^Ann"
        assert httpx.get(f"{base}/studies", params={"PatientName": other_name}).status_code == 204
        # any-attribute search (not a core key), each level, and the counts
        own = "PROTO-A" if partition == twins.a else "PROTO-B"
        theirs = "PROTO-B" if own == "PROTO-A" else "PROTO-A"
        assert len(httpx.get(f"{base}/studies", params={"ProtocolName": own}).json()) == 1
        assert httpx.get(f"{base}/studies", params={"ProtocolName": theirs}).status_code == 204
        assert len(httpx.get(f"{base}/series", params={"SeriesInstanceUID": twins.series}).json()) == 1
        instances = httpx.get(f"{base}/studies/{twins.study}/instances").json()
        assert [i["00080018"]["Value"] for i in instances] == [[twins.sop]]
        assert httpx.get(f"{base}/studies/count", params={"StudyInstanceUID": twins.study}).json() == {"count": 1}
        assert httpx.get(f"{base}/instances/count", params={"ProtocolName": theirs}).json() == {"count": 0}
        assert other != partition


def test_search_results_retrieve_urls_are_in_the_partition(host: str, twins: Twins) -> None:
    base = twins.base(host, twins.a)
    studies = httpx.get(f"{base}/studies", params={"StudyInstanceUID": twins.study}, timeout=30)
    assert studies.json()[0][RETRIEVE_URL]["Value"] == [f"{base}/studies/{twins.study}"]


def test_store_in_a_study_answers_the_study_retrieve_url_in_the_partition(host: str) -> None:
    partition, data = _name("in-study"), make_instance()
    study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
    response = stow(f"{host}/partitions/{partition}", [data], study=study)
    assert response.status_code == 200, response.text
    assert response.json()[RETRIEVE_URL]["Value"] == [f"{host}/partitions/{partition}/studies/{study}"]


def test_each_partition_has_its_own_metadata_and_frames(host: str, twins: Twins) -> None:
    for partition, data in twins.bytes.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        metadata = httpx.get(f"{twins.base(host, partition)}/studies/{twins.study}/metadata", timeout=30)
        assert metadata.status_code == 200, metadata.text
        [attrs] = metadata.json()
        assert attrs["00100010"]["Value"][0]["Alphabetic"] == str(ds.PatientName)
        for uri in _bulkdata_uris(attrs):
            assert uri.startswith(f"{twins.base(host, partition)}/studies/{twins.study}/"), uri
        frame = httpx.get(f"{twins.instance_url(host, partition)}/frames/1", headers=OCTETS, timeout=30)
        assert frame.status_code == 200, frame.text
        assert frame.content == ds.PixelData


def _bulkdata_uris(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [value["BulkDataURI"]] if isinstance(value.get("BulkDataURI"), str) else []
        return found + [u for v in value.values() for u in _bulkdata_uris(v)]
    if isinstance(value, list):
        return [u for v in value for u in _bulkdata_uris(v)]
    return []


def test_storing_twice_in_one_partition_is_45070_while_another_partition_accepts(host: str) -> None:
    a, b = _name("dup-a"), _name("dup-b")
    data = make_instance()
    assert stow(f"{host}/partitions/{a}", [data]).status_code == 200
    again = stow(f"{host}/partitions/{a}", [data])
    assert again.status_code == 409, again.text
    assert [f[FAILURE_REASON]["Value"] for f in again.json()[FAILED_SOP_SEQUENCE]["Value"]] == [[45070]]
    assert stow(f"{host}/partitions/{b}", [data]).status_code == 200


def test_deleting_in_one_partition_leaves_the_other_intact(host: str) -> None:
    fresh = Twins(host)
    assert all(r.status_code == 200 for r in fresh.responses.values())
    deleted = httpx.delete(f"{fresh.base(host, fresh.a)}/studies/{fresh.study}", timeout=30)
    assert deleted.status_code in (200, 202, 204), deleted.text
    assert httpx.get(fresh.instance_url(host, fresh.a), headers=DICOM_ANY).status_code == 404
    kept = httpx.get(fresh.instance_url(host, fresh.b), headers=DICOM_ANY, timeout=30)
    assert kept.status_code == 200 and kept.content == fresh.bytes[fresh.b]
    assert (
        httpx.get(f"{fresh.base(host, fresh.b)}/studies", params={"StudyInstanceUID": fresh.study}).status_code == 200
    )


def test_get_partitions_lists_every_partition_with_its_key_and_created_date(host: str, twins: Twins) -> None:
    response = httpx.get(f"{host}/partitions")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    listed = {p["partitionName"]: p for p in response.json()}
    assert {twins.a, twins.b, "Microsoft.Default"} <= set(listed)
    assert listed["Microsoft.Default"]["partitionKey"] == 1
    for name in (twins.a, twins.b):
        assert isinstance(listed[name]["partitionKey"], int) and listed[name]["partitionKey"] > 1
        assert listed[name]["createdDate"].startswith("20")
    assert listed[twins.a]["partitionKey"] != listed[twins.b]["partitionKey"]


def test_with_partitions_on_the_unpartitioned_paths_are_400(host: str, twins: Twins) -> None:
    for method, path in (
        ("GET", "/studies"),
        ("GET", f"/studies/{twins.study}"),
        ("GET", "/instances/count"),
        ("DELETE", f"/studies/{twins.study}"),
    ):
        response = httpx.request(method, f"{host}{path}")
        assert response.status_code == 400, (method, path)
        assert response.json()["message"] == "PartitionName value is missing in the route segment."
    posted = stow(host, [make_instance()])
    assert posted.status_code == 400 and "PartitionName value is missing" in posted.json()["message"]
    # the other APIs stay at the base path
    assert httpx.get(f"{host}/changefeed").status_code == 200


def test_the_default_partition_is_addressable_when_partitions_are_on(host: str) -> None:
    data = make_instance()
    ds = pydicom.dcmread(io.BytesIO(data))
    base = f"{host}/partitions/Microsoft.Default"
    assert stow(base, [data]).status_code == 200
    assert len(httpx.get(f"{base}/studies", params={"StudyInstanceUID": ds.StudyInstanceUID}).json()) == 1


def test_invalid_and_unknown_partitions_are_400(host: str) -> None:
    for bad in ("bad$name", "a%20b", "x" * 65):
        response = httpx.get(f"{host}/partitions/{bad}/studies")
        assert response.status_code == 400, bad
        assert "The specified PartitionName" in response.json()["message"]
    bad_store = stow(f"{host}/partitions/bad$name", [make_instance()])
    assert bad_store.status_code == 400
    unknown = _name("never-stored")
    response = httpx.get(f"{host}/partitions/{unknown}/studies")
    assert response.status_code == 400
    assert response.json()["message"] == f"Specified PartitionName '{unknown}' does not exist."
    assert unknown not in {p["partitionName"] for p in httpx.get(f"{host}/partitions").json()}


def test_with_partitions_off_the_partitioned_paths_are_400(base_url: str) -> None:
    for method, path in (
        ("GET", "/partitions"),
        ("GET", "/partitions/p1/studies"),
        ("DELETE", "/partitions/p1/studies/1.2"),
    ):
        response = httpx.request(method, f"{base_url}{path}")
        assert response.status_code == 400, path
        assert response.json()["message"] == "Data partitions feature is disabled."
    posted = stow(f"{base_url}/partitions/p1", [make_instance()])
    assert posted.status_code == 400 and json.loads(posted.text)["message"] == "Data partitions feature is disabled."


def test_dicomweb_client_works_with_a_partition_base_url(host: str) -> None:
    partition = _name("client")
    client = DICOMwebClient(url=f"{host}/partitions/{partition}")
    ds = pydicom.dcmread(io.BytesIO(make_instance(patient_name="Client^Carl")))
    stored = client.store_instances([ds])
    urls = [r.RetrieveURL for r in stored.ReferencedSOPSequence]
    assert urls == [
        f"{host}/partitions/{partition}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    ]
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert len(found) == 1
    got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert str(got.PatientName) == "Client^Carl" and got.PixelData == ds.PixelData
    metadata = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert [m["00080018"]["Value"] for m in metadata] == [[ds.SOPInstanceUID]]
    client.delete_study(ds.StudyInstanceUID)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID}) == []
