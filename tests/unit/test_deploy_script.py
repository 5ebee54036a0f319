"""infra/deploy.sh, its azd hooks and azure.yaml, checked offline: shellcheck, --dry-run, and runs against
a fake ``az`` that answers like Azure (success, "already exists", 403, a missing blobs_extension key)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy.sh"
HOOKS = ROOT / "infra" / "hooks"
HOOK_SCRIPTS = sorted(HOOKS.glob("*.sh"))
AZURE_YAML = ROOT / "azure.yaml"
FHIR_DATA_CONTRIBUTOR = "5a1fc7df-4bf1-4951-a576-89034ee01acd"
FHIR_URL = "https://ws1-fhir.fhir.azurehealthcareapis.com"
FHIR_ID = "/subscriptions/s1/resourceGroups/fhir-rg/providers/Microsoft.HealthcareApis/workspaces/ws1/fhirservices/fhir"
HOST = "dicomsvc-dicom-abc-h5g.westeurope-01.azurewebsites.net"  # a Flex Consumption unique host name
TYPICAL = ["--resource-group", "rg-dicom", "--location", "westeurope", "--name-prefix", "dicomsvc"]

# Fails the test if run: the dry run and the argument checks must not reach Azure (nor curl).
REFUSING = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
exit 1
"""

# Answers like the az CLI; FAKE_* variables choose the failure to simulate.
FAKE_AZ = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$CALLS"
case "$*" in
  "account show"*) echo tenant-0001 ;;
  "account set"*|"group create"*|"rest --method PATCH"*|"functionapp deployment source config-zip"*) ;;
  "eventgrid system-topic event-subscription create"*)
    if [ "${FAKE_EVENTGRID:-ok}" = fail ]; then
      echo "ERROR: Webhook validation handshake failed for ${*#*--endpoint }" >&2
      exit 1
    fi ;;
  "resource list"*) echo "$FHIR_ID" ;;
  "ad app list"*) printf '%s' "${FAKE_APPS:-}" ;;
  "ad app create"*) echo app-0001 ;;
  "ad app show"*"--query id -o tsv") echo appobject-0001 ;;
  "ad app show"*) ;;
  "ad sp list"*) ;;
  "ad sp create"*) echo sp-0001 ;;
  "ad signed-in-user show"*) echo user-0001 ;;
  "identity list"*) echo principal-0001 ;;
  "deployment group create"*)
    if [ "${FAKE_DEPLOYMENT:-ok}" = forbidden ]; then
      echo "ERROR: (AuthorizationFailed) The client 'me@example.org' does not have authorization to perform" \
        "action 'Microsoft.Authorization/roleAssignments/write' over scope '/subscriptions/s1/resourceGroups/rg'" >&2
      exit 1
    fi
    if [ -n "${FAKE_NEW_OUTPUTS:-}" ]; then
      cat <<JSON
{"FUNCTION_APP_HOST_NAME": {"type": "String", "value": "unique-host.westeurope-01.azurewebsites.net"},
 "IDENTITY_PRINCIPAL_ID": {"type": "String", "value": "principal-from-output"},
 "EVENT_GRID_DEADLETTER_ENDPOINT": {"type": "String", "value": "/subscriptions/s1/dl/containers/eventgrid-deadletter"},
JSON
    else
      echo "{"
    fi
    cat <<JSON
"FUNCTION_APP_NAME": {"type": "String", "value": "dicomsvc-dicom-abc"},
 "EVENT_GRID_TOPIC_NAME": {"type": "String", "value": "dicomsvc-blobs-abc"},
 "DICOMWEB_BASE_URL": {"type": "String", "value": "https://${FAKE_HOST}/v2"},
 "FHIR_URL": {"type": "String", "value": "https://x-fhir.fhir.azurehealthcareapis.com"},
 "AZURE_CLIENT_ID": {"type": "String", "value": "client-0001"}}
JSON
    ;;
  "role assignment create"*)
    case "${FAKE_ROLE:-ok}" in
      exists) echo "ERROR: (RoleAssignmentExists) The role assignment already exists." >&2; exit 1 ;;
      forbidden)
        echo "ERROR: (AuthorizationFailed) The client 'me@example.org' does not have authorization to perform" \
          "action 'Microsoft.Authorization/roleAssignments/write' over scope '$FHIR_ID'" >&2
        exit 1 ;;
    esac ;;
  "rest --method POST"*)
    case "${FAKE_APP_ROLE:-ok}" in
      exists)
        echo 'ERROR: Bad Request({"error":{"code":"Request_BadRequest",' \
          '"message":"Permission being assigned already exists on the object"}})' >&2
        exit 1 ;;
      forbidden)
        echo 'ERROR: Forbidden({"error":{"code":"Authorization_RequestDenied",' \
          '"message":"Insufficient privileges to complete the operation."}})' >&2
        exit 1 ;;
    esac ;;
  "functionapp function list"*) printf 'dicomsvc-dicom-abc/ensure_indexed\ndicomsvc-dicom-abc/import_instances\n' ;;
  "functionapp keys list"*) printf '%s\n' "${FAKE_KEY-blobkey-0001}" ;;
  *) echo "fake az: unexpected command: $*" >&2; exit 99 ;;
esac
"""
FAKE_CURL = """#!/bin/sh
echo "curl $*" >> "$CALLS"
echo 401
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def refusing_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose az, azd and curl record their call and fail."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("az", "azd", "curl"):
        _executable(bin_dir / name, REFUSING)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}


@pytest.fixture
def fake_azure(tmp_path: Path) -> dict[str, str]:
    """An environment whose az answers like Azure and whose curl sees the app answer 401."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "az", FAKE_AZ)
    _executable(bin_dir / "curl", FAKE_CURL)
    _executable(bin_dir / "azd", REFUSING)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "FHIR_ID": FHIR_ID,
        "FAKE_HOST": HOST,
        "DEPLOY_SH_RETRY_DELAY": "0",
        "TMPDIR": str(tmp_path),
    }


def run(args: list[str], env: dict[str, str], script: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    azd_like = ("AZURE_", "FAKE_", "EXISTING_", "NAME_PREFIX", "API_CLIENT_ID", "FUNCTION_APP_", "EVENT_GRID_")
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith((*azd_like, "DICOMWEB_", "IDENTITY_", "DEPLOY_SH_"))
    }
    return subprocess.run(
        ["bash", str(script), *args], env={**clean, **env}, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


# ---------------------------------------------------------------------------------------------------------
# (1) shellcheck
# ---------------------------------------------------------------------------------------------------------
def test_shellcheck_finds_nothing() -> None:
    if shutil.which("shellcheck") is None:
        if shutil.which("apt-get") is None:
            pytest.skip("shellcheck is not installed and apt-get is not available to install it")
        pytest.fail("shellcheck is not installed: run `make shellcheck` (it installs it with apt-get)")
    scripts = [DEPLOY, *HOOK_SCRIPTS]
    result = subprocess.run(
        ["shellcheck", "-x", *(str(p.relative_to(ROOT)) for p in scripts)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def test_scripts_are_strict_bash() -> None:
    for script in (DEPLOY, *HOOK_SCRIPTS):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "\nset -euo pipefail\n" in text, script
        assert os.access(script, os.X_OK), f"{script} is not executable"
    code = [line for line in DEPLOY.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "/proc/" in line], "macOS has no /proc"


# ---------------------------------------------------------------------------------------------------------
# (2) --dry-run
# ---------------------------------------------------------------------------------------------------------
def test_dry_run_lists_every_command_without_calling_azure(refusing_path: dict[str, str]) -> None:
    result = run(["--dry-run", *TYPICAL, "--existing-fhir-url", FHIR_URL], refusing_path)
    assert result.returncode == 0, result.stderr
    assert calls(refusing_path) == [], "the dry run ran an external command"
    listed = commands(result.stdout)
    text = "\n".join(listed)
    # the app registration is found by its exact name, never by the prefix search of --display-name
    assert "az ad app list --filter \"displayName eq 'dicomsvc-dicomweb'\"" in text
    assert not [c for c in listed if c.startswith("az ad app list") and "--display-name" in c]
    # the existing FHIR service: resolved from its URL, then FHIR Data Contributor for the app's identity
    assert "az resource list --resource-type Microsoft.HealthcareApis/workspaces/fhirservices" in text
    fhir_grants = [c for c in listed if c.startswith("az role assignment create") and FHIR_DATA_CONTRIBUTOR in c]
    assert len(fhir_grants) == 1 and '--scope "<dry-run:fhirResourceId>"' in fhir_grants[0]
    assert any(c.startswith("az rest --method POST") and "appRoleAssignedTo" in c for c in listed)
    # the infrastructure, the code, the readiness checks and the webhook subscriptions
    deployment = [c for c in listed if c.startswith("az deployment group create")]
    assert len(deployment) == 1 and f"--template-file {ROOT}/infra/main.bicep" in deployment[0]
    assert "namePrefix=dicomsvc" in deployment[0] and f"existingFhirUrl={FHIR_URL}" in deployment[0]
    assert any(c.startswith("az functionapp deployment source config-zip") for c in listed)
    assert any(c.startswith("az functionapp keys list") and "systemKeys.blobs_extension" in c for c in listed)
    subscriptions = [c for c in listed if c.startswith("az eventgrid system-topic event-subscription create")]
    assert len(subscriptions) == 2
    for subscription, function in zip(subscriptions, ("ensure_indexed", "import_instances"), strict=True):
        assert (
            "https://<dry-run:FUNCTION_APP_HOST_NAME>/runtime/webhooks/blobs"
            f"?functionName=Host.Functions.{function}&code=<dry-run:blobs_extension-key>"
        ) in subscription
    assert "azurewebsites.net" not in result.stdout
    # dead letters go where eventgrid.bicep says, once main.bicep outputs it
    declared = "\noutput EVENT_GRID_DEADLETTER_ENDPOINT " in (ROOT / "infra" / "main.bicep").read_text()
    assert all(
        ('--deadletter-identity-endpoint "<dry-run:EVENT_GRID_DEADLETTER_ENDPOINT>"' in c) == declared
        for c in subscriptions
    )
    # the order matters: the app registration before the deployment, the code before the subscriptions
    order = [
        text.index(marker)
        for marker in (
            "az ad app list",
            "az deployment group create",
            FHIR_DATA_CONTRIBUTOR,
            "config-zip",
            "az functionapp keys list",
            "event-subscription create",
        )
    ]
    assert order == sorted(order)


def test_dry_run_without_existing_fhir_grants_no_fhir_role(refusing_path: dict[str, str]) -> None:
    result = run(["--dry-run", *TYPICAL], refusing_path)
    assert result.returncode == 0, result.stderr
    assert FHIR_DATA_CONTRIBUTOR not in result.stdout  # roles.bicep grants it on the FHIR service it creates
    assert "az resource list" not in result.stdout
    assert calls(refusing_path) == []


def test_dry_run_with_the_fhir_resource_id_looks_nothing_up(refusing_path: dict[str, str]) -> None:
    result = run(
        ["--dry-run", *TYPICAL, "--existing-fhir-url", FHIR_URL, "--existing-fhir-resource-id", FHIR_ID],
        refusing_path,
    )
    assert result.returncode == 0, result.stderr
    assert "az resource list" not in result.stdout
    assert f"--role {FHIR_DATA_CONTRIBUTOR} --scope {FHIR_ID}" in result.stdout


def test_dry_run_passes_the_optional_template_parameters(refusing_path: dict[str, str]) -> None:
    uploaders = ["11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-666666666666"]
    args = ["--private-networking", "--storage-sku", "Standard_ZRS"]
    for uploader in uploaders:
        args += ["--import-uploader", uploader]
    result = run(["--dry-run", *TYPICAL, *args], refusing_path)
    assert result.returncode == 0, result.stderr
    (deployment,) = [c for c in commands(result.stdout) if c.startswith("az deployment group create")]
    assert "privateNetworking=true storageSkuName=Standard_ZRS" in deployment
    assert f'\'importUploaderPrincipalIds=["{uploaders[0]}", "{uploaders[1]}"]\'' in deployment
    plain = run(["--dry-run", *TYPICAL], refusing_path)
    assert not re.search(r"privateNetworking|storageSkuName|importUploaderPrincipalIds", plain.stdout)


def test_dry_run_of_the_azd_hooks(refusing_path: dict[str, str]) -> None:
    azd_env = {
        **refusing_path,
        "AZURE_ENV_NAME": "Dev-Env1",
        "AZURE_RESOURCE_GROUP": "rg-dev",
        "AZURE_LOCATION": "westeurope",
        "EXISTING_FHIR_URL": FHIR_URL,
        "FUNCTION_APP_NAME": "devenv1-dicom-abc",
        "EVENT_GRID_TOPIC_NAME": "devenv1-blobs-abc",
        "DICOMWEB_BASE_URL": f"https://{HOST}/v2",
    }
    pre = run(["--dry-run"], azd_env, HOOKS / "preprovision.sh")
    assert pre.returncode == 0, pre.stderr
    assert "displayName eq 'devenv1-dicomweb'" in pre.stdout  # the prefix from the azd environment name
    assert "azd env set NAME_PREFIX devenv1" in pre.stdout
    assert 'azd env set API_CLIENT_ID "<dry-run:appId>"' in pre.stdout
    assert "az deployment" not in pre.stdout  # azd provisions main.bicep itself

    azd_env["API_CLIENT_ID"] = "app-0001"
    post_provision = run(["--dry-run"], azd_env, HOOKS / "postprovision.sh")
    assert post_provision.returncode == 0, post_provision.stderr
    assert FHIR_DATA_CONTRIBUTOR in post_provision.stdout and "appRoleAssignedTo" in post_provision.stdout

    post_deploy = run(["--dry-run"], azd_env, HOOKS / "postdeploy.sh")
    assert post_deploy.returncode == 0, post_deploy.stderr
    subscriptions = [c for c in commands(post_deploy.stdout) if "event-subscription create" in c]
    assert len(subscriptions) == 2 and all(f"https://{HOST}/runtime/webhooks/blobs" in c for c in subscriptions)
    assert calls(refusing_path) == []


# ---------------------------------------------------------------------------------------------------------
# (3) bad name prefixes are refused before any az command
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["DicomSvc", "dicom-svc", "dicom_svc", "dicomservice1", "ab", "1dicom"])
@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry-run"])
def test_bad_name_prefixes_are_refused_before_any_command(
    prefix: str, dry: bool, refusing_path: dict[str, str]
) -> None:
    args = ["--resource-group", "rg-dicom", "--location", "westeurope", "--name-prefix", prefix]
    result = run(["--dry-run", *args] if dry else args, refusing_path)
    assert result.returncode == 2
    assert f"invalid name prefix '{prefix}'" in result.stderr
    assert "lowercase letters a-z and digits 0-9, starting with a letter" in result.stderr
    assert "Nothing was created" in result.stderr
    assert calls(refusing_path) == [] and "+ az" not in result.stdout


def test_the_azd_hook_refuses_a_bad_prefix_too(refusing_path: dict[str, str]) -> None:
    result = run([], {**refusing_path, "NAME_PREFIX": "Dicom-Svc"}, HOOKS / "preprovision.sh")
    assert result.returncode == 2 and "invalid name prefix 'Dicom-Svc'" in result.stderr
    assert calls(refusing_path) == []


def test_name_prefix_limits_match_main_bicep() -> None:
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    decorators = re.search(r"((?:@\w+\([^)]*\)\s*)+)param namePrefix string", bicep)
    assert decorators, "main.bicep declares namePrefix"
    low = re.search(r"@minLength\((\d+)\)", decorators.group(1))
    high = re.search(r"@maxLength\((\d+)\)", decorators.group(1))
    script = DEPLOY.read_text()
    assert low and f"NAME_PREFIX_MIN={low.group(1)}\n" in script
    assert high and f"NAME_PREFIX_MAX={high.group(1)}\n" in script
    # every name main.bicep builds from the prefix stays valid at the longest prefix (suffix: 13 characters)
    longest = "a" * int(high.group(1))
    assert len(f"{longest}-dicom-{'x' * 13}-plan") <= 60 and len(f"{longest}-cosmos-{'x' * 13}") <= 44


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resource-group", "rg dicom"], "invalid resource group name"),
        (["--existing-fhir-url", "http://fhir.example.org"], "invalid --existing-fhir-url"),
        (
            ["--existing-fhir-url", FHIR_URL, "--existing-fhir-resource-id", "fhir"],
            "invalid --existing-fhir-resource-id",
        ),
        (["--cors-origin", "https://viewer.example.org/app"], "invalid --cors-origin"),
        (["--import-uploader", "alice@example.org"], "invalid --import-uploader"),
        (["--name-prefix"], "--name-prefix needs a value"),
        (["--bogus", "x"], "unknown argument: --bogus"),
    ],
)
def test_bad_arguments_are_refused_before_any_command(
    args: list[str], message: str, refusing_path: dict[str, str]
) -> None:
    result = run([*TYPICAL, *args], refusing_path)
    assert result.returncode == 2 and message in result.stderr
    assert calls(refusing_path) == []


# ---------------------------------------------------------------------------------------------------------
# Against a fake az: what a real run does with Azure's answers
# ---------------------------------------------------------------------------------------------------------
def test_a_full_run_against_a_fake_azure(fake_azure: dict[str, str]) -> None:
    result = run([*TYPICAL, "--existing-fhir-url", FHIR_URL], fake_azure)
    assert result.returncode == 0, result.stderr
    made = calls(fake_azure)
    assert "ad app list --filter displayName eq 'dicomsvc-dicomweb' --query [].appId -o tsv" in made
    grant = [c for c in made if c.startswith("role assignment create")]
    assert grant == [
        "role assignment create --assignee-object-id principal-0001 --assignee-principal-type ServicePrincipal "
        f"--role {FHIR_DATA_CONTRIBUTOR} --scope {FHIR_ID} --output none"
    ]
    subscriptions = [c for c in made if c.startswith("eventgrid system-topic event-subscription create")]
    assert len(subscriptions) == 2
    assert all(f"https://{HOST}/runtime/webhooks/blobs?functionName=Host.Functions." in c for c in subscriptions)
    assert all("code=blobkey-0001 " in c and "--deadletter" not in c for c in subscriptions)
    assert "blobkey-0001" not in result.stdout + result.stderr  # the key is never printed
    assert f"DICOMweb base URL: https://{HOST}/v2" in result.stdout


def test_the_deployment_outputs_of_main_bicep_are_used(fake_azure: dict[str, str]) -> None:
    result = run([*TYPICAL, "--existing-fhir-url", FHIR_URL], {**fake_azure, "FAKE_NEW_OUTPUTS": "1"})
    assert result.returncode == 0, result.stderr
    made = calls(fake_azure)
    assert not [c for c in made if c.startswith("identity list")]
    assert [c for c in made if c.startswith("role assignment create --assignee-object-id principal-from-output ")]
    subscriptions = [c for c in made if c.startswith("eventgrid system-topic event-subscription create")]
    assert len(subscriptions) == 2
    for subscription in subscriptions:
        assert "https://unique-host.westeurope-01.azurewebsites.net/runtime/webhooks/blobs?" in subscription
        assert (
            "--deadletter-identity systemassigned "
            "--deadletter-identity-endpoint /subscriptions/s1/dl/containers/eventgrid-deadletter"
        ) in subscription


def test_two_apps_with_the_exact_name_stop_the_run(fake_azure: dict[str, str]) -> None:
    result = run(TYPICAL, {**fake_azure, "FAKE_APPS": "app-a\napp-b\n"})
    assert result.returncode == 1 and "pass --app-id" in result.stderr
    assert not [c for c in calls(fake_azure) if c.startswith(("ad app create", "rest", "deployment"))]


def test_an_existing_role_assignment_is_fine(fake_azure: dict[str, str]) -> None:
    env = {**fake_azure, "FAKE_ROLE": "exists", "FAKE_APP_ROLE": "exists"}
    result = run([*TYPICAL, "--existing-fhir-url", FHIR_URL], env)
    assert result.returncode == 0, result.stderr
    assert "FHIR Data Contributor: already assigned" in result.stdout
    assert any(c.startswith("eventgrid") for c in calls(fake_azure))


def test_a_forbidden_role_assignment_stops_the_run_with_the_reason(fake_azure: dict[str, str]) -> None:
    result = run([*TYPICAL, "--existing-fhir-url", FHIR_URL], {**fake_azure, "FAKE_ROLE": "forbidden"})
    assert result.returncode == 1
    assert "cannot grant FHIR Data Contributor" in result.stderr and FHIR_ID in result.stderr
    assert "Owner or User Access Administrator" in result.stderr and "AuthorizationFailed" in result.stderr
    assert "already assigned" not in result.stdout
    assert not [c for c in calls(fake_azure) if c.startswith(("functionapp deployment", "eventgrid"))]


def test_a_deployment_refused_for_role_assignments_says_which_rights_are_missing(fake_azure: dict[str, str]) -> None:
    result = run(TYPICAL, {**fake_azure, "FAKE_DEPLOYMENT": "forbidden"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "role assignments of infra/modules/roles.bicep" in result.stderr
    assert "Owner or User Access Administrator" in result.stderr
    assert not [c for c in calls(fake_azure) if c.startswith(("functionapp", "eventgrid"))]


def test_a_forbidden_app_role_assignment_stops_the_run(fake_azure: dict[str, str]) -> None:
    result = run(TYPICAL, {**fake_azure, "FAKE_APP_ROLE": "forbidden"})
    assert result.returncode == 1
    assert "cannot grant the app role DICOM Data Owner" in result.stderr
    assert "Application Administrator" in result.stderr and "Authorization_RequestDenied" in result.stderr
    assert "already assigned" not in result.stdout


def test_a_missing_blobs_extension_key_makes_no_webhook(fake_azure: dict[str, str]) -> None:
    result = run(TYPICAL, {**fake_azure, "FAKE_KEY": ""})
    assert result.returncode == 1 and "no blobs_extension system key" in result.stderr
    made = calls(fake_azure)
    assert len([c for c in made if c.startswith("functionapp keys list")]) == 20  # bounded
    assert not [c for c in made if c.startswith("eventgrid")]


def test_a_refused_webhook_is_retried_a_bounded_number_of_times_without_showing_the_key(
    fake_azure: dict[str, str],
) -> None:
    result = run(TYPICAL, {**fake_azure, "FAKE_EVENTGRID": "fail"})
    assert result.returncode == 1 and "could not subscribe ensure_indexed" in result.stderr
    assert len([c for c in calls(fake_azure) if c.startswith("eventgrid")]) == 10  # bounded
    assert "code=<redacted>" in result.stderr and "blobkey-0001" not in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# (4) azure.yaml
# ---------------------------------------------------------------------------------------------------------
def load_azure_yaml() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(AZURE_YAML.read_text())
    return parsed


def test_azure_yaml_names_the_bicep_module_the_service_and_existing_hooks() -> None:
    config = load_azure_yaml()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", config["name"])
    assert "@" in config["metadata"]["template"]
    infra = config["infra"]
    assert infra["provider"] == "bicep"
    assert (ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()
    services = config["services"]
    assert list(services) == ["api"]
    assert services["api"]["project"] == "." and (ROOT / "function_app.py").is_file()
    assert services["api"]["language"] == "python" and services["api"]["host"] == "function"
    assert set(config["hooks"]) == {"preprovision", "postprovision", "postdeploy"}
    for name, hook in config["hooks"].items():
        posix = hook["posix"]
        assert posix["shell"] == "sh" and posix["continueOnError"] is False
        script = ROOT / posix["run"]
        assert script == HOOKS / f"{name}.sh" and script.is_file() and os.access(script, os.X_OK)
        assert f"--phase {name}" in script.read_text() and "../deploy.sh" in script.read_text()
        assert hook["windows"]["shell"] == "pwsh" and posix["run"] in hook["windows"]["run"]
