"""Configuration hardening: unsafe authentication settings are refused in Azure, and 500s tell no secrets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from azurefunctions.extensions.http.fastapi import Request, Response

from dicomserver import wiring
from dicomserver.auth import Action, JwtAuthenticator, NoAuthentication, build_authenticator
from dicomserver.errors import DependencyUnavailable, DicomServerError, NotFound
from dicomserver.settings import AZURE_INSTANCE_VARIABLES, Settings
from functions._http import INTERNAL_ERROR_MESSAGE, error_response, handle

#: What App Service sets on a Flex Consumption instance (values are examples).
IN_AZURE = {"WEBSITE_SITE_NAME": "dicomserver-func", "WEBSITE_INSTANCE_ID": "8f3e0c1d2a"}
ENTRA = {"DICOM_AUTH_MODE": "entra", "DICOM_AUTH_TENANT_ID": "tid"}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No platform or DICOM_AUTH_* variables, and no authenticator built from another test's environment."""
    for name in (*AZURE_INSTANCE_VARIABLES, "DICOM_AUTH_MODE", "DICOM_AUTH_AUDIENCE", "DICOM_AUTH_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    wiring.reset_authenticator_for_tests()
    yield monkeypatch
    wiring.reset_authenticator_for_tests()


def get(path: str = "/v2/studies") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []})


async def unreachable(svc: wiring.Services) -> Response:
    raise AssertionError("a misconfigured service must not run the handler")


def answer(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, object]]:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    response = asyncio.run(handle(get(), unreachable, Action.READ))
    return response.status_code, json.loads(bytes(response.body))


class TestAzureDetection:
    @pytest.mark.parametrize("name", AZURE_INSTANCE_VARIABLES)
    def test_either_platform_instance_variable_means_running_in_azure(self, name: str) -> None:
        assert Settings.from_env({name: "x"}).running_in_azure

    def test_a_local_environment_is_not_azure_even_with_the_core_tools_host_name(self) -> None:
        assert not Settings.from_env({}).running_in_azure
        assert not Settings.from_env({"WEBSITE_HOSTNAME": "localhost:7071", "WEBSITE_SITE_NAME": ""}).running_in_azure


class TestRefusedInAzure:
    def test_auth_mode_none_is_refused_in_azure(self) -> None:
        with pytest.raises(ValueError, match="DICOM_AUTH_MODE=none is refused when running in Azure"):
            build_authenticator(Settings.from_env({**IN_AZURE, "DICOM_AUTH_MODE": "none"}))

    def test_auth_mode_none_still_works_locally(self) -> None:
        assert isinstance(build_authenticator(Settings.from_env({"DICOM_AUTH_MODE": "none"})), NoAuthentication)

    def test_entra_without_an_audience_is_refused_in_azure(self) -> None:
        with pytest.raises(ValueError, match="DICOM_AUTH_AUDIENCE must be set"):
            build_authenticator(Settings.from_env({**IN_AZURE, **ENTRA}))

    def test_entra_with_an_audience_is_accepted_in_azure(self) -> None:
        settings = Settings.from_env({**IN_AZURE, **ENTRA, "DICOM_AUTH_AUDIENCE": "api://dicom,cid"})
        assert isinstance(build_authenticator(settings), JwtAuthenticator)
        assert settings.auth_audiences == ("api://dicom", "cid")

    def test_locally_the_audience_keeps_its_default(self) -> None:
        assert Settings.from_env(ENTRA).auth_audiences == ("api://dicomserver-local",)
        assert isinstance(build_authenticator(Settings.from_env(ENTRA)), JwtAuthenticator)


class TestGeneric500:
    def test_auth_mode_none_in_azure_answers_every_request_with_a_generic_500(
        self, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="dicomserver.wiring"):
            status, body = answer({**IN_AZURE, "DICOM_AUTH_MODE": "none"}, environment)
            assert answer({}, environment)[0] == 500  # not cached as built: still refused
        assert (status, body) == (500, {"status": 500, "message": INTERNAL_ERROR_MESSAGE})
        assert "DICOM_AUTH_MODE=none is refused" in caplog.text

    def test_entra_without_an_audience_in_azure_answers_a_generic_500(
        self, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="dicomserver.wiring"):
            status, body = answer({**IN_AZURE, **ENTRA}, environment)
        assert (status, body["message"]) == (500, INTERNAL_ERROR_MESSAGE)
        assert "DICOM_AUTH_AUDIENCE must be set" in caplog.text

    def test_a_missing_local_key_puts_its_path_in_the_log_not_in_the_body(
        self, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        key_dir = tmp_path / "secret-key-dir"
        with caplog.at_level(logging.ERROR, logger="dicomserver.wiring"):
            status, body = answer({"DICOM_AUTH_MODE": "local", "DICOM_AUTH_LOCAL_KEY_DIR": str(key_dir)}, environment)
        assert status == 500 and "secret-key-dir" not in json.dumps(body)
        assert str(key_dir / "jwks.json") in caplog.text

    def test_a_corrupt_local_key_is_a_generic_500_too(
        self, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        (tmp_path / "jwks.json").write_text('["not", "a", "jwks"]')
        with caplog.at_level(logging.ERROR, logger="dicomserver.wiring"):
            status, body = answer({"DICOM_AUTH_MODE": "local", "DICOM_AUTH_LOCAL_KEY_DIR": str(tmp_path)}, environment)
        assert (status, body["message"]) == (500, INTERNAL_ERROR_MESSAGE)
        assert "not a usable JWKS" in caplog.text

    def test_no_500_body_carries_the_exception_text(self) -> None:
        response = error_response(DicomServerError("open /home/site/keys/jwks.json: permission denied"))
        assert response.status_code == 500
        assert json.loads(bytes(response.body)) == {"status": 500, "message": INTERNAL_ERROR_MESSAGE}

    def test_client_errors_and_dependency_outages_keep_their_messages(self) -> None:
        assert json.loads(bytes(error_response(NotFound("The study was not found.")).body))["message"] == (
            "The study was not found."
        )
        outage = error_response(DependencyUnavailable("Cosmos DB is unavailable."))
        assert json.loads(bytes(outage.body))["message"] == "Cosmos DB is unavailable."
