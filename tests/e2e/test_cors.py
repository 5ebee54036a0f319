"""CORS for browser viewers: the local host answers as the Functions host and App Service do (localhost/cors.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.localhost.config import load_local_settings
from tests.dicomfiles import make_instance
from tests.e2e.conftest import local_host
from tests.stowhttp import stored

VIEWER = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def cors_url(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**stack_env, "DICOM_AUTH_MODE": "none", "DICOM_CORS_ORIGINS": f"{VIEWER}, http://localhost:3000"}
    with local_host(env, tmp_path_factory.mktemp("cors-host"), "--no-triggers") as url:
        yield url


def test_a_preflight_from_an_allowed_origin_gets_204_with_methods_and_headers(cors_url: str) -> None:
    response = httpx.options(
        f"{cors_url}/studies",
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "DELETE" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["vary"] == "Origin"


def test_responses_to_an_allowed_origin_carry_the_origin_and_vary(cors_url: str) -> None:
    (ds,) = stored(cors_url, [make_instance()], headers={"Origin": VIEWER})
    found = httpx.get(f"{cors_url}/studies", params={"StudyInstanceUID": ds.StudyInstanceUID},
                      headers={"Origin": VIEWER})
    assert found.status_code == 200
    assert found.headers["access-control-allow-origin"] == VIEWER
    assert "Origin" in found.headers["vary"]
    assert "etag" in found.headers["access-control-expose-headers"].lower()
    metadata = httpx.get(f"{cors_url}/studies/{ds.StudyInstanceUID}/metadata", headers={"Origin": VIEWER})
    assert metadata.headers["access-control-allow-origin"] == VIEWER  # streamed responses too
    missing = httpx.get(f"{cors_url}/studies/1.2.3/metadata", headers={"Origin": VIEWER})
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == VIEWER  # errors too


def test_other_origins_get_no_cors_headers(cors_url: str) -> None:
    preflight = httpx.options(
        f"{cors_url}/studies", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers
    plain = httpx.get(f"{cors_url}/studies", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_without_origins_configured_there_is_no_cors(base_url: str) -> None:
    preflight = httpx.options(f"{base_url}/studies", headers={"Origin": VIEWER, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers


def test_host_cors_of_local_settings_is_read_as_func_start_reads_it(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {}, "Host": {"CORS": VIEWER, "CORSCredentials": True}}))
    environ: dict[str, str] = {}
    load_local_settings(settings, environ)
    assert environ == {"DICOM_CORS_ORIGINS": VIEWER, "DICOM_CORS_CREDENTIALS": "true"}
    example = json.loads((Path(__file__).resolve().parents[2] / "local.settings.example.json").read_text())
    assert VIEWER in example["Host"]["CORS"]
