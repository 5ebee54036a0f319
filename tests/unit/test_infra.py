"""Offline validation of infra/*.bicep with a Python Bicep parser: no drift between code and Bicep."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from dicomserver.settings import SETTING_NAMES, Settings
from dicomserver.stores.azure.index import INDEXING_POLICIES, PARTITION_KEY_PATH

INFRA = Path(__file__).resolve().parents[2] / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

ROLES_THE_CODE_NEEDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner (instances, metadata, imports, receipts)",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor (fhir-sync, poison)",
    "5a1fc7df-4bf1-4951-a576-89034ee01acd": "FHIR Data Contributor (ImagingStudy, Patient, Endpoint)",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher (telemetry with Entra auth)",
    "00000000-0000-0000-0000-000000000002": "Cosmos DB Built-in Data Contributor (the index)",
}
SECRET_PATTERNS = re.compile(
    r"listKeys|listConnectionStrings|AccountKey=|primaryMasterKey|SharedAccessKey|connectionString\(", re.I
)


@cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)  # type: ignore[no-any-return]


def app_settings() -> dict[str, Any]:
    resources = parsed(INFRA / "modules" / "functionapp.bicep")["resources"]
    settings: dict[str, Any] = resources["settings"]["config"]["properties"]
    return settings


def test_there_are_bicep_files_and_every_one_parses() -> None:
    assert INFRA / "main.bicep" in BICEP_FILES and len(BICEP_FILES) >= 8
    for path in BICEP_FILES:
        assert parsed(path)


def test_every_referenced_module_exists_and_main_only_composes() -> None:
    main = parsed(INFRA / "main.bicep")
    modules = main["modules"]
    assert set(modules) >= {"identity", "monitoring", "storage", "cosmos", "healthdata", "functionapp", "roles"}
    for module in modules.values():
        assert module["type"] == "local", "use local modules so the templates build offline"
        assert (INFRA / module["detail"]["path"]).exists(), module["detail"]["path"]
    assert not main.get("resources")


def test_every_parameter_is_described() -> None:
    for path in BICEP_FILES:
        for name, parameter in parsed(path)["parameters"].items():
            kinds = {d["type"] for d in parameter["decorators"]}
            assert "description" in kinds, f"{path.name}: parameter {name} has no @description"


def test_every_role_the_code_needs_is_assigned() -> None:
    text = "\n".join(p.read_text() for p in BICEP_FILES)
    for role_id, why in ROLES_THE_CODE_NEEDS.items():
        assert role_id in text, f"missing role assignment: {why}"
    roles = parsed(INFRA / "modules" / "roles.bicep")
    assignments = [r for r in roles["resources"].values() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert len(assignments) == 4
    cosmos = parsed(INFRA / "modules" / "cosmos.bicep")["resources"]
    assert any(r["type"].endswith("/sqlRoleAssignments") for r in cosmos.values())


def test_no_secret_reaches_outputs_or_app_settings() -> None:
    for path in BICEP_FILES:
        assert not SECRET_PATTERNS.search(path.read_text()), f"{path.name} handles keys or connection strings"
        for name, output in parsed(path).get("outputs", {}).items():
            assert not any(d["type"] == "secure" for d in output["decorators"]), f"{path.name}: secure output {name}"
    for name, value in app_settings().items():
        assert not re.search(r"key|secret|password|sas", name, re.I), name
        assert "AccountKey" not in json.dumps(value)


def test_storage_disallows_shared_keys_and_cosmos_disallows_local_auth() -> None:
    storage = parsed(INFRA / "modules" / "storage.bicep")["resources"]["account"]["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False
    cosmos = parsed(INFRA / "modules" / "cosmos.bicep")["resources"]["account"]["config"]["properties"]
    assert cosmos["disableLocalAuth"] is True
    assert {"name": "EnableServerless"} in cosmos["capabilities"]


def test_app_setting_names_are_the_settings_module_names() -> None:
    ours = {name for name in app_settings() if name.startswith(("DICOM_", "FHIR_"))}
    assert ours <= set(SETTING_NAMES), ours - set(SETTING_NAMES)
    required = {
        "DICOM_STORAGE__blobServiceUri",
        "DICOM_STORAGE__queueServiceUri",
        "DICOM_COSMOS_ENDPOINT",
        "DICOM_COSMOS_DATABASE",
        "DICOM_INSTANCE_CONTAINER",  # named by the ensure_indexed trigger binding
        "DICOM_IMPORT_CONTAINER",  # named by the import trigger binding
        "DICOM_FHIR_SYNC_QUEUE",  # named by the fhir-sync trigger binding
        "DICOM_AUTH_MODE",
        "DICOM_AUTH_TENANT_ID",
        "DICOM_AUTH_AUDIENCE",
        "FHIR_URL",
        "DICOM_PUBLIC_BASE_URL",
    }
    assert required <= set(app_settings()), required - set(app_settings())
    assert app_settings()["DICOM_AUTH_MODE"] == "entra"
    assert app_settings()["AzureWebJobsStorage__credential"] == "managedidentity"


def test_containers_queues_and_cosmos_paths_match_the_code() -> None:
    defaults = Settings()
    settings = app_settings()
    for name, value in (
        ("DICOM_INSTANCE_CONTAINER", defaults.instance_container),
        ("DICOM_METADATA_CONTAINER", defaults.metadata_container),
        ("DICOM_IMPORT_CONTAINER", defaults.import_container),
        ("DICOM_IMPORT_ERRORS_CONTAINER", defaults.import_errors_container),
        ("DICOM_FHIR_SYNC_QUEUE", defaults.fhir_sync_queue),
    ):
        assert settings[name] == value
    storage = parsed(INFRA / "modules" / "storage.bicep")["variables"]
    assert set(storage["containers"]["value"]) >= {
        defaults.instance_container,
        defaults.metadata_container,
        defaults.import_container,
        defaults.import_errors_container,
    }
    assert set(storage["queues"]["value"]) == {defaults.fhir_sync_queue, f"{defaults.fhir_sync_queue}-poison"}
    cosmos = parsed(INFRA / "modules" / "cosmos.bicep")["resources"]
    assert cosmos["database"]["config"]["name"] == defaults.cosmos_database
    declared = {
        r["config"]["properties"]["resource"]["id"]: r["config"]["properties"]["resource"]
        for r in cosmos.values()
        if r["type"].endswith("/containers")
    }
    assert set(declared) == set(INDEXING_POLICIES)
    for name, policy in INDEXING_POLICIES.items():
        assert declared[name]["partitionKey"]["paths"] == [PARTITION_KEY_PATH]
        assert declared[name]["indexingPolicy"] == policy


@pytest.mark.parametrize("path", BICEP_FILES, ids=[p.name for p in BICEP_FILES])
def test_role_assignment_names_are_deterministic_guids(path: Path) -> None:
    for resource in parsed(path).get("resources", {}).values():
        if resource["type"].endswith(("roleAssignments", "sqlRoleAssignments")):
            config = resource["config"]
            if "condition" in config:  # `= if (...) {...}` nests the body
                config = config["config"]
            assert "guid" in json.dumps(config["name"]), f"{path.name}: use guid(scope, principal, role)"


def test_deploy_script_is_valid_bash_and_names_both_blob_triggers() -> None:
    import subprocess

    script = INFRA / "deploy.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    import function_app  # noqa: F401  (the names below must be real functions)

    for function in ("ensure_indexed", "import_instances"):
        assert f"{function}:" in text
    assert "DICOM.Data.Owner" in text and "DICOM.Data.Reader" in text
    assert '"displayName": "DICOM Data Owner"' in text and '"displayName": "DICOM Data Reader"' in text
