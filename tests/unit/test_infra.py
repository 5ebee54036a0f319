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
from dicomserver.stores.azure.changefeed import CHANGEFEED_CONTAINER, CHANGEFEED_INDEXING_POLICY
from dicomserver.stores.azure.extended_tags import EXTENDED_QUERY_TAGS_CONTAINER
from dicomserver.stores.azure.index import INDEXING_POLICIES, PARTITION_KEY_PATH
from dicomserver.stores.azure.operations import OPERATIONS_CONTAINER
from dicomserver.stores.azure.partitions import PARTITIONS_CONTAINER

INFRA = Path(__file__).resolve().parents[2] / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

ROLES_THE_CODE_NEEDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner (instances, metadata, imports, receipts)",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor (fhir-sync, poison)",
    "5a1fc7df-4bf1-4951-a576-89034ee01acd": "FHIR Data Contributor (ImagingStudy, Patient, Endpoint)",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher (telemetry with Entra auth)",
    "00000000-0000-0000-0000-000000000002": "Cosmos DB Built-in Data Contributor (the index)",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender (DICOM events topic)",
}
SECRET_PATTERNS = re.compile(
    r"listKeys|listConnectionStrings|AccountKey=|primaryMasterKey|SharedAccessKey|connectionString\(", re.I
)


@cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)  # type: ignore[no-any-return]


def module(name: str) -> dict[str, Any]:
    return parsed(INFRA / "modules" / name)


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource or module, under its `= if (...)` and `= [for ...]` wrappers."""
    config: dict[str, Any] = entry["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def switch(on: Any, off: Any) -> dict[str, Any]:
    """How the parser shows `privateNetworking ? on : off`."""
    return {
        "operator": {
            "type": "conditional",
            "operands": {"condition": "privateNetworking", "true_value": on, "false_value": off},
        }
    }


def decorators(parameter: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in parameter["decorators"]}


def parameters_file() -> dict[str, Any]:
    values: dict[str, Any] = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    return {name: entry["value"] for name, entry in values.items()}


def azd_default(value: Any) -> Any:
    """The value of a main.parameters.json entry, with azd's `${VAR=default}` read as its default."""
    match = re.fullmatch(r"\$\{[A-Z_]+=(.*)\}", value) if isinstance(value, str) else None
    return json.loads(match.group(1)) if match and match.group(1) in ("true", "false") else value


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
    assert set(modules) >= {
        "identity",
        "monitoring",
        "storage",
        "cosmos",
        "healthdata",
        "functionapp",
        "roles",
        "eventgrid",
        "events",
        "network",
    }
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
        ("DICOM_OPERATIONS_QUEUE", defaults.operations_queue),
    ):
        assert settings[name] == value
    storage = parsed(INFRA / "modules" / "storage.bicep")["variables"]
    assert set(storage["containers"]["value"]) >= {
        defaults.instance_container,
        defaults.metadata_container,
        defaults.import_container,
        defaults.import_errors_container,
    }
    assert set(storage["queues"]["value"]) == {
        defaults.fhir_sync_queue,
        f"{defaults.fhir_sync_queue}-poison",
        defaults.events_queue,
        defaults.operations_queue,
        f"{defaults.operations_queue}-poison",
    }
    cosmos = parsed(INFRA / "modules" / "cosmos.bicep")["resources"]
    assert cosmos["database"]["config"]["name"] == defaults.cosmos_database
    declared = {
        r["config"]["properties"]["resource"]["id"]: r["config"]["properties"]["resource"]
        for r in cosmos.values()
        if r["type"].endswith("/containers")
    }
    # every container the code creates locally (ensure_schema) exists in Azure, as the code makes it
    assert set(declared) == set(INDEXING_POLICIES) | {
        CHANGEFEED_CONTAINER,
        OPERATIONS_CONTAINER,
        PARTITIONS_CONTAINER,
        EXTENDED_QUERY_TAGS_CONTAINER,
    }
    for name, policy in INDEXING_POLICIES.items():
        assert declared[name]["partitionKey"]["paths"] == [PARTITION_KEY_PATH]
        assert declared[name]["indexingPolicy"] == policy
    assert declared[CHANGEFEED_CONTAINER]["partitionKey"]["paths"] == [PARTITION_KEY_PATH]
    feed_policy = dict(declared[CHANGEFEED_CONTAINER]["indexingPolicy"])
    assert feed_policy.pop("automatic") is True
    assert feed_policy == CHANGEFEED_INDEXING_POLICY
    assert declared[OPERATIONS_CONTAINER]["partitionKey"]["paths"] == ["/id"]
    assert declared[EXTENDED_QUERY_TAGS_CONTAINER]["partitionKey"]["paths"] == ["/pk"]
    assert declared[PARTITIONS_CONTAINER]["partitionKey"]["paths"] == ["/id"]


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


# -- "Deploy for real": ordering, limits, imports, dead letters, azd, private networking ---------------

FLEX_MEMORY_SIZES = [512, 2048, 4096]
FLEX_MAX_INSTANCES = (40, 1000)
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
#: every data service of the private option: (module, resource)
DATA_SERVICES = [
    ("storage.bicep", "account"),
    ("cosmos.bicep", "account"),
    ("healthdata.bicep", "workspace"),
    ("healthdata.bicep", "fhir"),
    ("events.bicep", "topic"),
]
#: private endpoint sub-resource (groupId) -> the network.bicep parameter naming the target, its DNS zones
PRIVATE_ENDPOINTS = {
    "blob": ("storageAccountId", {"privatelink.blob.core.windows.net"}),
    "queue": ("storageAccountId", {"privatelink.queue.core.windows.net"}),
    "Sql": ("cosmosAccountId", {"privatelink.documents.azure.com"}),
    "topic": ("eventsTopicId", {"privatelink.eventgrid.azure.net"}),
    "healthcareworkspace": (
        "healthWorkspaceId",
        {"privatelink.workspace.azurehealthcareapis.com", "privatelink.fhir.azurehealthcareapis.com"},
    ),
}


@pytest.mark.parametrize("path", BICEP_FILES, ids=[p.name for p in BICEP_FILES])
def test_api_versions_are_generally_available(path: Path) -> None:
    for name, resource in parsed(path).get("resources", {}).items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", resource["api_version"]), f"{path.name}: {name} uses a preview API"


def test_cosmos_role_assignment_waits_for_the_database_and_containers() -> None:
    resources = module("cosmos.bicep")["resources"]
    waits_for = set(body(resources["dataContributor"]).get("dependsOn", []))
    made = {name for name, r in resources.items() if r["type"].endswith(("/sqlDatabases", "/containers"))}
    assert len(made) == 8 and made <= waits_for, made - waits_for


@pytest.mark.parametrize("path", [INFRA / "main.bicep", INFRA / "modules" / "functionapp.bicep"], ids=["main", "app"])
def test_flex_memory_and_instance_limits_are_the_allowed_values(path: Path) -> None:
    parameters = parsed(path)["parameters"]
    memory, instances = decorators(parameters["instanceMemoryMB"]), decorators(parameters["maximumInstanceCount"])
    assert memory["allowed"] == FLEX_MEMORY_SIZES
    assert (instances["min_value"], instances["max_value"]) == FLEX_MAX_INSTANCES
    if path.name == "main.bicep":
        assert parameters["instanceMemoryMB"]["default"] in FLEX_MEMORY_SIZES
        assert FLEX_MAX_INSTANCES[0] <= parameters["maximumInstanceCount"]["default"] <= FLEX_MAX_INSTANCES[1]
        values = parameters_file()
        assert values["instanceMemoryMB"] in FLEX_MEMORY_SIZES
        assert FLEX_MAX_INSTANCES[0] <= values["maximumInstanceCount"] <= FLEX_MAX_INSTANCES[1]


def test_import_uploaders_get_blob_data_contributor_on_the_import_container_only() -> None:
    storage = module("storage.bicep")
    container = storage["resources"]["importContainer"]
    assert container["existing"] and storage["variables"]["importContainerName"]["value"] == Settings().import_container
    uploaders = storage["resources"]["importUploaders"]
    assert uploaders["config"]["loop_type"]["detail"]["array_name"] == "importUploaderPrincipalIds"
    assignment = body(uploaders)
    assert assignment["scope"] == "importContainer"
    assert storage["variables"]["storageBlobDataContributor"]["value"] == STORAGE_BLOB_DATA_CONTRIBUTOR
    assert "storageBlobDataContributor" in json.dumps(assignment["properties"]["roleDefinitionId"])
    main = parsed(INFRA / "main.bicep")
    assert main["parameters"]["importUploaderPrincipalIds"]["default"] == []
    assert body(main["modules"]["storage"])["params"]["importUploaderPrincipalIds"] == "importUploaderPrincipalIds"
    assert {"IMPORT_CONTAINER_URL", "IMPORT_UPLOADER_PRINCIPAL_IDS"} <= set(main["outputs"])


def test_event_grid_dead_letters_with_the_topic_identity() -> None:
    eventgrid = module("eventgrid.bicep")
    resources = eventgrid["resources"]
    topic = body(resources["topic"])
    assert resources["topic"]["type"] == "Microsoft.EventGrid/systemTopics"
    assert topic["identity"] == {"type": "SystemAssigned"}
    assert eventgrid["variables"]["deadLetterContainerName"]["value"] == "eventgrid-deadletter"
    assert body(resources["deadLetterContainer"])["name"] == "deadLetterContainerName"
    role = body(resources["topicWritesDeadLetters"])
    assert role["scope"] == "deadLetterContainer"  # the dead-letter container only
    assert eventgrid["variables"]["storageBlobDataContributor"]["value"] == STORAGE_BLOB_DATA_CONTRIBUTOR
    principal = json.dumps(role["properties"]["principalId"])
    assert '"topic"' in principal and '"identity"' in principal and '"principalId"' in principal
    account = body(resources["deadLetterAccount"])["properties"]
    assert account["allowSharedKeyAccess"] is False
    # Event Grid writes as a trusted service: a firewall (Deny + AzureServices), never a disabled endpoint
    assert account["networkAcls"] == {"defaultAction": switch("Deny", "Allow"), "bypass": "AzureServices"}
    outputs = parsed(INFRA / "main.bicep")["outputs"]
    assert {
        "EVENT_GRID_TOPIC_NAME",
        "EVENT_GRID_DEADLETTER_STORAGE_ACCOUNT_ID",
        "EVENT_GRID_DEADLETTER_CONTAINER",
        "EVENT_GRID_DEADLETTER_ENDPOINT",
    } <= set(outputs)


def test_azd_tags_on_every_resource_and_azd_outputs() -> None:
    main = parsed(INFRA / "main.bicep")
    assert "environmentName" in main["parameters"] and parameters_file()["environmentName"] == "${AZURE_ENV_NAME}"
    all_tags = main["variables"]["allTags"]["value"]["function"]
    assert all_tags["type"] == "union" and all_tags["parameters"]["arg_2"] == {"'azd-env-name'": "environmentName"}
    for name, entry in main["modules"].items():
        declared = parsed(INFRA / entry["detail"]["path"])["parameters"]
        if name != "roles":  # role assignments take no tags
            assert "tags" in declared, f"module {name} takes no tags"
            assert body(entry)["params"]["tags"] == "allTags", f"module {name} does not get the azd tags"
    for path in BICEP_FILES:
        for name, resource in parsed(path).get("resources", {}).items():
            config = body(resource)
            if not resource["existing"] and "location" in config:
                assert "tags" in config, f"{path.name}: {name} is not tagged"
    app_tags = body(module("functionapp.bicep")["resources"]["app"])["tags"]["function"]
    assert app_tags["parameters"] == {"arg_1": "tags", "arg_2": {"'azd-service-name'": "api"}}
    assert {
        "AZURE_LOCATION",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "FUNCTION_APP_NAME",
        "FUNCTION_APP_HOST_NAME",
        "DICOMWEB_BASE_URL",
    } <= set(main["outputs"])


def test_private_networking_is_one_switch_and_off_by_default() -> None:
    main = parsed(INFRA / "main.bicep")
    parameter = main["parameters"]["privateNetworking"]
    assert parameter["type"] == "bool" and parameter["default"] is False
    assert azd_default(parameters_file()["privateNetworking"]) is False
    networky = {n for n in main["parameters"] if re.search(r"private|vnet|subnet|network", n, re.I)}
    assert networky == {"privateNetworking"}, "one parameter turns the private deployment on"
    modules = main["modules"]
    assert modules["network"]["config"]["condition"] == "privateNetworking"
    for name in ("storage", "cosmos", "healthdata", "eventgrid", "events"):
        assert body(modules[name])["params"]["privateNetworking"] == "privateNetworking", name
        declared = parsed(INFRA / modules[name]["detail"]["path"])["parameters"]["privateNetworking"]
        assert declared.get("default") is None, f"{name}: the switch comes from main.bicep only"
    subnet = body(modules["functionapp"])["params"]["virtualNetworkSubnetId"]
    assert subnet["operator"]["operands"]["condition"] == "privateNetworking"
    assert subnet["operator"]["operands"]["false_value"] == ""  # default: no VNet integration
    assert "network" in json.dumps(subnet["operator"]["operands"]["true_value"])


def test_private_networking_closes_every_data_service() -> None:
    for file, name in DATA_SERVICES:
        properties = body(module(file)["resources"][name])["properties"]
        assert properties["publicNetworkAccess"] == switch("Disabled", "Enabled"), f"{file}: {name}"
    storage = body(module("storage.bicep")["resources"]["account"])["properties"]
    assert storage["networkAcls"]["defaultAction"] == switch("Deny", "Allow")
    assert storage["allowSharedKeyAccess"] is False


def test_private_networking_gives_every_data_service_a_private_endpoint() -> None:
    network = module("network.bicep")
    variables = network["variables"]
    health = variables["healthEndpoints"]["value"]["operator"]["operands"]
    assert health["true_value"] == []  # only without an existing FHIR service (its workspace is not ours)
    endpoints = variables["storageEndpoints"]["value"] + health["false_value"]
    assert variables["endpoints"]["value"]["function"]["parameters"] == {
        "arg_1": "storageEndpoints",
        "arg_2": "healthEndpoints",
    }

    def zone(name: str) -> str:
        return name.replace("${environment().suffixes.storage}", "core.windows.net")

    declared = {e["groupId"]: (e["target"], {zone(z) for z in e["zones"]}) for e in endpoints}
    assert declared == PRIVATE_ENDPOINTS
    assert {zone(z) for z in variables["zoneNames"]["value"]} == set().union(*(z for _, z in declared.values()))
    resources = network["resources"]
    for name, kind in (
        ("privateEndpoints", "Microsoft.Network/privateEndpoints"),
        ("zoneGroups", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"),
    ):
        assert resources[name]["type"] == kind
        assert resources[name]["config"]["loop_type"]["detail"]["array_name"] == "endpoints"
    connection = body(resources["privateEndpoints"])["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert "target" in json.dumps(connection["privateLinkServiceId"])
    assert "groupId" in json.dumps(connection["groupIds"])
    assert resources["zoneLinks"]["type"] == "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
    # main.bicep hands over the data services it created
    params = body(parsed(INFRA / "main.bicep")["modules"]["network"])["params"]
    for parameter, source in (
        ("storageAccountId", "storage"),
        ("cosmosAccountId", "cosmos"),
        ("eventsTopicId", "events"),
    ):
        assert json.dumps(params[parameter]).count(f'"{source}"') == 1, parameter
    assert '"healthdata"' in json.dumps(params["healthWorkspaceId"])


def test_private_networking_integrates_the_flex_app_with_a_delegated_subnet() -> None:
    subnets = body(module("network.bicep")["resources"]["vnet"])["properties"]["subnets"]
    delegated = [
        s
        for s in subnets
        if any(
            d["properties"]["serviceName"] == "Microsoft.App/environments"
            for d in s["properties"].get("delegations", [])
        )
    ]
    assert len(delegated) == 1 and len(subnets) == 2, "an app subnet (Flex Consumption delegation) and a PE subnet"
    site = body(module("functionapp.bicep")["resources"]["app"])["properties"]
    assert "virtualNetworkSubnetId" in site and "vnetRouteAllEnabled" in site
    assert module("functionapp.bicep")["parameters"]["virtualNetworkSubnetId"]["default"] == ""


# -- DICOM events: the Event Grid custom topic the app publishes DicomImageCreated/Updated/Deleted to -------

EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"


def test_events_topic_takes_entra_tokens_only_in_the_event_grid_schema() -> None:
    events = module("events.bicep")
    topic = events["resources"]["topic"]
    assert topic["type"] == "Microsoft.EventGrid/topics" and not topic["existing"]
    properties = body(topic)["properties"]
    assert properties["disableLocalAuth"] is True
    assert properties["inputSchema"] == "EventGridSchema"
    assert properties["publicNetworkAccess"] == switch("Disabled", "Enabled")
    assert body(topic)["tags"] == "tags"


def test_app_identity_is_event_grid_data_sender_on_the_topic() -> None:
    events = module("events.bicep")
    assert events["variables"]["eventGridDataSender"]["value"] == EVENTGRID_DATA_SENDER
    role = body(events["resources"]["appSendsEvents"])
    assert role["scope"] == "topic"  # the topic only, not the resource group
    assert "eventGridDataSender" in json.dumps(role["properties"]["roleDefinitionId"])
    assert role["properties"]["principalId"] == "principalId"
    assert role["properties"]["principalType"] == "ServicePrincipal"
    params = body(parsed(INFRA / "main.bicep")["modules"]["events"])["params"]
    assert '"identity"' in json.dumps(params["principalId"])  # the function app's user-assigned identity


def test_app_settings_carry_the_topic_endpoint_and_the_events_queue() -> None:
    settings = app_settings()
    assert settings["DICOM_EVENTS_TOPIC_ENDPOINT"] == "eventsTopicEndpoint"
    assert settings["DICOM_EVENTS_QUEUE"] == Settings().events_queue
    params = body(parsed(INFRA / "main.bicep")["modules"]["functionapp"])["params"]
    endpoint = json.dumps(params["eventsTopicEndpoint"])
    assert '"events"' in endpoint and '"endpoint"' in endpoint
    assert "topic" in json.dumps(module("events.bicep")["outputs"]["endpoint"])
    assert Settings().events_queue in module("storage.bicep")["variables"]["queues"]["value"]


def test_events_subscribers_get_a_dead_letter_container_written_by_the_topic_identity() -> None:
    eventgrid = module("eventgrid.bicep")
    assert eventgrid["variables"]["eventsDeadLetterContainerName"]["value"] == "dicom-events-deadletter"
    container = body(eventgrid["resources"]["eventsDeadLetterContainer"])
    assert container["name"] == "eventsDeadLetterContainerName" and container["parent"] == "deadLetterBlobs"
    events = module("events.bicep")
    resources = events["resources"]
    assert body(resources["topic"])["identity"] == {"type": "SystemAssigned"}
    assert resources["deadLetterContainer"]["existing"]
    role = body(resources["topicWritesDeadLetters"])
    assert role["scope"] == "deadLetterContainer"  # that container only
    assert events["variables"]["storageBlobDataContributor"]["value"] == STORAGE_BLOB_DATA_CONTRIBUTOR
    principal = json.dumps(role["properties"]["principalId"])
    assert '"topic"' in principal and '"identity"' in principal
    params = body(parsed(INFRA / "main.bicep")["modules"]["events"])["params"]
    assert "eventsDeadLetterContainerName" in json.dumps(params["deadLetterContainerName"])
    assert "deadLetterAccountName" in json.dumps(params["deadLetterAccountName"])


def test_main_outputs_what_an_events_subscriber_needs() -> None:
    outputs = parsed(INFRA / "main.bicep")["outputs"]
    assert {
        "DICOM_EVENTS_TOPIC_ID",
        "DICOM_EVENTS_TOPIC_NAME",
        "DICOM_EVENTS_TOPIC_ENDPOINT",
        "DICOM_EVENTS_DEADLETTER_ENDPOINT",
    } <= set(outputs)
    assert set(module("events.bicep")["outputs"]) >= {"id", "name", "endpoint", "deadLetterEndpoint"}


# -- Telemetry and audit: Application Insights with the app identity, DicomAuditLogs over AppTraces -----------


def accessor(*names: str) -> dict[str, Any]:
    """How the parser shows `a.b.c`."""
    rest: Any = names[1] if len(names) == 2 else accessor(*names[1:])
    return {"operator": {"type": "property_accessor", "operands": {"operand_1": names[0], "operand_2": rest}}}


def test_the_app_exports_telemetry_with_its_identity_to_the_monitoring_module() -> None:
    settings = app_settings()
    # dicomserver/telemetry.py is on when the connection string is set; the exporter authenticates as AZURE_CLIENT_ID
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "appInsightsConnectionString"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert {"APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_CLIENT_ID"} <= set(SETTING_NAMES)
    params = parsed(INFRA / "main.bicep")["modules"]["functionapp"]["config"]["params"]
    assert params["appInsightsConnectionString"] == accessor("monitoring", "outputs", "connectionString")
    app_insights = module("monitoring.bicep")["resources"]["appInsights"]["config"]["properties"]
    assert app_insights["DisableLocalAuth"] is True  # hence the identity and Monitoring Metrics Publisher
    # local-only destinations are not deployed
    assert not {"DICOM_TELEMETRY_CONSOLE", "DICOM_TELEMETRY_FILE", "DICOM_AUDIT_FILE"} & set(settings)


def test_dicom_audit_logs_is_a_workspace_function_over_the_audit_logger() -> None:
    from dataclasses import fields

    from dicomserver.audit import LOGGER_NAME, AuditRecord

    resources = module("monitoring.bicep")["resources"]
    saved = resources["auditLogs"]
    assert saved["type"] == "Microsoft.OperationalInsights/workspaces/savedSearches"
    config = saved["config"]
    assert config["parent"] == "logs" and resources["logs"]["type"] == "Microsoft.OperationalInsights/workspaces"
    assert config["name"] == config["properties"]["functionAlias"] == "DicomAuditLogs"
    query = config["properties"]["query"]
    assert query.lstrip().startswith("AppTraces")
    assert f'tostring(Properties.logger_name) == "{LOGGER_NAME}"' in query
    for field in fields(AuditRecord):  # every field of a record becomes a column
        assert f"Audit.{field.name})" in query, field.name
    outputs = parsed(INFRA / "main.bicep")["outputs"]
    assert outputs["DICOM_AUDIT_FUNCTION"]["value"] == accessor("monitoring", "outputs", "auditFunctionName")
    assert outputs["LOG_ANALYTICS_WORKSPACE_ID"]["value"] == accessor("monitoring", "outputs", "workspaceCustomerId")
