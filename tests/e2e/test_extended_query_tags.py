"""Extended query tags over HTTP through the local host: declare, the queue-driven reindex, then search."""

from __future__ import annotations

import io
import time

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.dicomfiles import make_instance


def test_search_on_an_extended_tag_after_its_reindex(base_url: str) -> None:
    client = DICOMwebClient(url=base_url)
    study = generate_uid()
    name = f"Eqt^X{study[-6:]}"
    datasets = [pydicom.dcmread(io.BytesIO(make_instance(study=study, OperatorsName=name))) for _ in range(2)]
    assert len(client.store_instances(datasets).ReferencedSOPSequence) == 2
    fuzzy = {"OperatorsName": f"x{study[-6:-2]}"}  # the prefix of a name word: only a declared PN tag matches it
    assert client.search_for_studies(search_filters=fuzzy, fuzzymatching=True) == []

    with httpx.Client(base_url=base_url, timeout=30) as http:
        added = http.post("/extendedquerytags", json=[{"path": "OperatorsName", "level": "Study"}])
        assert added.status_code == 202, added.text
        reference = added.json()
        assert reference["href"].endswith(f"/operations/{reference['id']}")
        try:
            deadline = time.monotonic() + 120
            while (polled := http.get(f"/operations/{reference['id']}")).status_code == 202:
                assert time.monotonic() < deadline, polled.text
                time.sleep(0.5)
            assert polled.status_code == 200 and polled.json()["status"] == "succeeded", polled.text
            tag = http.get("/extendedquerytags/00081070").json()
            assert (tag["status"], tag["queryStatus"], tag["vr"], tag["level"]) == ("Ready", "Enabled", "PN", "Study")

            (found,) = client.search_for_studies(search_filters=fuzzy, fuzzymatching=True)
            assert found["0020000D"]["Value"] == [study]
            assert found["00081070"]["Value"][0]["Alphabetic"] == name
            response = http.get("/instances", params={"OperatorsName": name})
            assert response.status_code == 200 and len(response.json()) == 2
            assert "erroneous-dicom-attributes" not in response.headers
            assert http.patch("/extendedquerytags/OperatorsName", json={"queryStatus": "Disabled"}).status_code == 200
            disabled = http.get("/studies", params={"OperatorsName": name})
            assert disabled.status_code == 400 and "disabled" in disabled.json()["message"]
            assert http.post("/extendedquerytags", json=[{"path": "StudyDate", "level": "Study"}]).status_code == 409
        finally:
            assert http.delete("/extendedquerytags/OperatorsName").status_code == 204
        assert http.get("/extendedquerytags/00081070").status_code == 404
