"""Authentication end to end: a host in local mode, dicomweb-client carrying a token."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from dicomserver.settings import Settings
from scripts.token import mint
from tests.dicomfiles import make_instance, multipart_body


def token(key_dir: Path, roles: list[str]) -> str:
    return mint(Settings(auth_mode="local", auth_local_key_dir=str(key_dir)), roles)


def test_owner_token_stores_searches_retrieves_and_deletes(secure_base_url: str, auth_key_dir: Path) -> None:
    headers = {"Authorization": f"Bearer {token(auth_key_dir, ['DICOM.Data.Owner'])}"}
    client = DICOMwebClient(url=secure_base_url, headers=headers)
    study = generate_uid()
    ds = pydicom.dcmread(io.BytesIO(make_instance(study=study)))
    client.store_instances([ds])
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert client.retrieve_instance(study, ds.SeriesInstanceUID, ds.SOPInstanceUID).SOPInstanceUID == ds.SOPInstanceUID
    client.delete_study(study)


def test_reader_token_reads_but_cannot_store_or_delete(secure_base_url: str, auth_key_dir: Path) -> None:
    reader = {"Authorization": f"Bearer {token(auth_key_dir, ['DICOM.Data.Reader'])}"}
    client = DICOMwebClient(url=secure_base_url, headers=reader)
    client.search_for_studies()
    with pytest.raises(HTTPError) as stored:
        client.store_instances([pydicom.dcmread(io.BytesIO(make_instance()))])
    assert stored.value.response.status_code == 403
    deleted = httpx.delete(f"{secure_base_url}/studies/{generate_uid()}", headers=reader)
    assert deleted.status_code == 403


@pytest.mark.parametrize("header", [None, "Bearer not-a-jwt", "Basic abc"])
def test_every_resource_refuses_calls_without_a_valid_token(secure_base_url: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    uid = generate_uid()
    body, ctype = multipart_body([make_instance()])
    calls = [
        ("GET", "/studies"),
        ("GET", "/series"),
        ("GET", "/instances"),
        ("GET", f"/studies/{uid}/series/{uid}/instances/{uid}"),
        ("GET", f"/studies/{uid}/series/{uid}/instances/{uid}/metadata"),
        ("DELETE", f"/studies/{uid}"),
    ]
    for method, path in calls:
        response = httpx.request(method, secure_base_url + path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
    stow = httpx.post(f"{secure_base_url}/studies", content=body, headers={**headers, "Content-Type": ctype})
    assert stow.status_code == 401


def test_token_signed_by_another_key_is_refused(secure_base_url: str, tmp_path: Path) -> None:
    forged = token(tmp_path / "attacker", ["DICOM.Data.Owner"])
    response = httpx.get(f"{secure_base_url}/studies", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
