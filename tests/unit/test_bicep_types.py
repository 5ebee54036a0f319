"""infra/**/*.bicep type-checks against Azure's published resource types (tests/bicep_types.py).

The mutation tests break a real resource or module of infra/ in a temporary copy and expect the
checker to name the resource and the property path.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from scripts import refresh_bicep_types
from tests.bicep_types import (
    DATA_DIR,
    DATA_FILE,
    INFRA,
    REFRESH,
    TypeData,
    Violation,
    bicep_files,
    body_span,
    check_file,
    load_type_data,
    mask,
    missing_type_data,
    resource_declarations,
    used_resource_types,
)

FILES = bicep_files()


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(INFRA).as_posix() for p in FILES])
def test_bicep_file_matches_azure_types(path: Path) -> None:
    violations = check_file(path)
    assert not violations, "\n".join(map(str, violations))


def test_type_data_covers_every_resource_type_used() -> None:
    used = used_resource_types()
    assert len(used) >= 10, sorted(used)
    missing = missing_type_data()
    assert not missing, "\n".join(missing)


def test_type_data_is_trimmed_and_names_its_source() -> None:
    data = json.loads(DATA_FILE.read_text())
    assert DATA_FILE.stat().st_size < 2_000_000
    assert re.fullmatch(r"[0-9a-f]{40}", data["source"]["commit"])
    readme = (DATA_DIR / "README.md").read_text()
    assert data["source"]["commit"] in readme and REFRESH in readme
    for node in data["types"]:
        assert node["$type"] != "ResourceFunctionType" and "description" not in node
        for prop in [*node.get("properties", {}).values(), *node.get("baseProperties", {}).values()]:
            assert set(prop) == {"flags", "type"}
    for name in data["resources"]:
        assert f"`{name}`" in readme


# mutations of a copy of infra/


@pytest.fixture
def infra(tmp_path: Path) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("*.sh", "*.json", "hooks"))
    return copy


def mutate(path: Path, declaration: str, old: str, new: str) -> None:
    """Replace old by new once, inside the body of `resource <symbol>` or `module <symbol>`."""
    text = path.read_text()
    _, skeleton = mask(text)
    match = re.search(rf"^(?:resource|module)\s+{declaration}\s+'", skeleton, re.M)
    assert match, f"{path.name}: no declaration {declaration} (update the mutation test)"
    start, end = body_span(skeleton, match.end())
    body = text[start:end]
    assert body.count(old) >= 1, f"{path.name}: {declaration} has no {old!r} any more (update the mutation test)"
    path.write_text(text[:start] + body.replace(old, new, 1) + text[end:])


def mutate_line(path: Path, declaration: str, pattern: str, new: str = "") -> None:
    """Replace the first line of the declaration's body matching pattern (a regex) by new."""
    text = path.read_text()
    _, skeleton = mask(text)
    match = re.search(rf"^(?:resource|module)\s+{declaration}\s+'", skeleton, re.M)
    assert match, f"{path.name}: no declaration {declaration} (update the mutation test)"
    start, end = body_span(skeleton, match.end())
    body, count = re.subn(pattern, new, text[start:end], count=1, flags=re.M)
    assert count, f"{path.name}: {declaration} has no line {pattern!r} (update the mutation test)"
    path.write_text(text[:start] + body + text[end:])


def reported(violations: list[Violation], subject: str, path: str, *words: str) -> Violation:
    for violation in violations:
        if violation.subject.startswith(subject) and violation.path == path and all(w in str(violation) for w in words):
            return violation
    pytest.fail(f"no violation for {subject} {path} {words}; got:\n" + "\n".join(map(str, violations)))


def test_unknown_property_is_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate(
        storage, "account", "allowSharedKeyAccess: false", "allowSharedKeyAccess: false\n    allowSharedKeyAcess: false"
    )
    violation = reported(check_file(storage), "resource account", "properties.allowSharedKeyAcess", "unknown property")
    assert "Microsoft.Storage/storageAccounts@" in str(violation) and "did you mean allowSharedKeyAccess" in str(
        violation
    )


def test_unknown_top_level_and_read_only_properties_are_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate(storage, "account", "properties: {", "zones: []\n  properties: {\n    primaryLocation: 'westeurope'")
    violations = check_file(storage)
    reported(violations, "resource account", "zones", "unknown property")
    reported(violations, "resource account", "properties.primaryLocation", "read-only")


def test_missing_required_property_is_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate_line(storage, "account", r"^  kind: .*\n")
    reported(check_file(storage), "resource account", "kind", "missing required property")
    cosmos = infra / "modules" / "cosmos.bicep"
    mutate_line(cosmos, "account", r"^\s*databaseAccountOfferType: .*\n")
    reported(check_file(cosmos), "resource account", "properties.databaseAccountOfferType", "missing required")


def test_wrong_literal_types_are_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate(storage, "account", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: true")
    mutate(storage, "account", "allowSharedKeyAccess: false", "allowSharedKeyAccess: 'false'")
    violations = check_file(storage)
    reported(violations, "resource account", "properties.minimumTlsVersion", "expects string, got bool true")
    reported(violations, "resource account", "properties.allowSharedKeyAccess", "expects bool, got string 'false'")
    cosmos = infra / "modules" / "cosmos.bicep"
    mutate(cosmos, "account", "failoverPriority: 0", "failoverPriority: '0'")
    reported(check_file(cosmos), "resource account", "properties.locations[0].failoverPriority", "expects int")


def test_string_outside_the_listed_values_is_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate(storage, "account", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_9'")
    mutate(storage, "blobContainers", "publicAccess: 'None'", "publicAccess: 'Private'")
    violations = check_file(storage)
    reported(violations, "resource account", "properties.minimumTlsVersion", "'TLS1_9' is not one of", "'TLS1_2'")
    # a resource declared in a loop, and a closed enum
    reported(violations, "resource blobContainers", "properties.publicAccess", "'Private' is not one of", "'None'")


def test_discriminated_object_is_checked_by_its_discriminator(infra: Path) -> None:
    app = infra / "modules" / "functionapp.bicep"
    mutate(app, "settings", "DICOM_AUTH_MODE: 'entra'", "DICOM_AUTH_MODE: true")
    reported(check_file(app), "resource settings", "properties.DICOM_AUTH_MODE", "expects string, got bool true")
    mutate(app, "settings", "name: 'appsettings'", "name: 'appsetings'")
    reported(check_file(app), "resource settings", "name", "'appsetings' is not one of", "'appsettings'")


def test_module_parameters_and_outputs_are_checked(infra: Path) -> None:
    main = infra / "main.bicep"
    mutate(main, "identity", "location: location", "locaton: location")
    mutate(main, "functionapp", "identity.outputs.clientId", "identity.outputs.clientID")
    violations = check_file(main)
    reported(violations, "module identity", "params.locaton", "has no parameter locaton")
    reported(violations, "module identity", "params.location", "missing")
    reported(violations, "module functionapp", "", "identity.outputs.clientID", "no output clientID")


def test_module_parameter_kind_and_output_kind_are_checked(infra: Path) -> None:
    main = infra / "main.bicep"
    mutate(main, "identity", "location: location", "location: 42")
    reported(check_file(main), "module identity", "params.location", "expects string, got int 42")
    identity = infra / "modules" / "identity.bicep"
    identity.write_text(identity.read_text() + "\noutput broken int = identity.properties.clientId\n")
    reported(check_file(identity), "output broken", "", "expects int, got string")


def test_reads_of_resource_properties_are_checked(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    storage.write_text(storage.read_text() + "\noutput typo string = account.properties.primaryEndpoints.blobb\n")
    reported(check_file(storage), "output typo", "", "no readable property properties.primaryEndpoints.blobb")


def test_parent_must_be_of_the_parent_type(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    mutate(storage, "blobContainers", "parent: blobService", "parent: queueService")
    reported(check_file(storage), "resource blobContainers", "parent", "needs a parent of its parent type")


def test_unknown_type_or_api_version_is_reported_with_the_refresh_command(infra: Path) -> None:
    roles = infra / "modules" / "roles.bicep"
    text = roles.read_text()
    assert "'Microsoft.Storage/storageAccounts@" in text
    roles.write_text(
        re.sub(r"'Microsoft\.Storage/storageAccounts@[^']+'", "'Microsoft.Storage/storageAccounts@2099-01-01'", text)
    )
    violation = reported(check_file(roles), "resource account", "", "not in Azure's published types")  # existing
    assert REFRESH in str(violation)
    (message,) = [m for m in missing_type_data(infra) if "@2099-01-01" in m]
    assert message.startswith("Microsoft.Storage/storageAccounts@2099-01-01 (") and REFRESH in message
    assert "roles.bicep:" in message


def test_a_new_resource_type_without_data_fails_the_coverage_check(infra: Path) -> None:
    extra = infra / "modules" / "vault.bicep"
    extra.write_text(
        "param location string\n"
        "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {\n"
        "  name: 'kv'\n  location: location\n"
        "  resource secret 'secrets' = {\n    name: 's'\n  }\n"
        "}\n"
    )
    messages = [m for m in missing_type_data(infra) if "vault.bicep" in m]
    assert [m.split(" ")[0] for m in messages] == [
        "Microsoft.KeyVault/vaults/secrets@2023-07-01",
        "Microsoft.KeyVault/vaults@2023-07-01",
    ]
    assert all(REFRESH in m and "vault.bicep:" in m for m in messages)


def test_nested_child_resources_are_resolved_and_the_ones_pycep_drops_are_reported(infra: Path) -> None:
    storage = infra / "modules" / "storage.bicep"
    text = storage.read_text()
    nested = (
        "  // resource commented 'Microsoft.Fake/things@2020-01-01' = {}\n"
        "  resource files 'fileServices' = {\n    name: 'default'\n  }\n"
        "  resource tables 'tableServices@2023-05-01' = {\n    name: 'default'\n"
        "    resource audit 'tables' = {\n      name: 'audit'\n    }\n  }\n"
    )
    storage.write_text(text.replace("  properties: {", nested + "  properties: {", 1))
    declarations = {d.symbol: d for d in resource_declarations(storage)}
    assert declarations["account__files"].key == "Microsoft.Storage/storageAccounts/fileServices@2023-05-01"
    assert (
        declarations["account__tables__audit"].key
        == "Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01"
    )
    assert not any("Fake" in d.type for d in declarations.values())
    assert declarations["account__files"].nested and not declarations["account"].nested
    reported(check_file(storage, load_type_data()), "resource account__files", "", "was not seen by pycep")


def test_declarations_skip_comments_and_strings() -> None:
    text = (
        "/* resource a 'Fake.Rp/a@1' = { */\n"
        "var s = 'resource b \\'Fake.Rp/b@1\\' = {'\n"
        "var t = '${'}'} resource c 'Fake.Rp/c@1' = {'\n"
        "resource real 'Fake.Rp/real@2020-01-01' existing = if (true) {\n"
        "  name: '${'{'}'\n"
        "  resource kid 'kids' = [for i in range(0, 2): {\n    name: 'k${i}'\n  }]\n"
        "}\n"
        "resource after 'Fake.Rp/after@2021-01-01' = {\n  name: 'x'\n}\n"
    )
    found = [(d.symbol, d.key, d.existing, d.line) for d in resource_declarations(Path("x.bicep"), text)]
    assert found == [
        ("real", "Fake.Rp/real@2020-01-01", True, 4),
        ("real__kid", "Fake.Rp/real/kids@2020-01-01", False, 6),
        ("after", "Fake.Rp/after@2021-01-01", False, 10),
    ]


# the refresh script, on a small fake bicep-types-az


class FakeSource(refresh_bicep_types.Source):
    def __init__(self, files: dict[str, Any]) -> None:
        self.commit = "0" * 40
        self.located_by = ""
        self.content = files
        self._cache = {}

    def read(self, path: str) -> str | None:
        return json.dumps(self.content[path]) if path in self.content else None

    def files(self, under: str) -> list[str]:
        return sorted(self.content)


FAKE_TYPES = [
    {"$type": "StringType"},
    {"$type": "StringLiteralType", "value": "Fake.Rp/things"},
    {
        "$type": "ObjectType",
        "name": "Fake.Rp/things",
        "properties": {
            "name": {"type": {"$ref": "#/0"}, "flags": 9, "description": "The name"},
            "type": {"type": {"$ref": "#/1"}, "flags": 10, "description": "The type"},
            "properties": {"type": {"$ref": "#/3"}, "flags": 0, "description": "Properties"},
        },
    },
    {
        "$type": "ObjectType",
        "name": "Props",
        "properties": {"self": {"type": {"$ref": "#/3"}, "flags": 0}, "size": {"type": {"$ref": "#/5"}, "flags": 1}},
    },
    {"$type": "ResourceType", "name": "Fake.Rp/things@2020-01-01", "body": {"$ref": "#/2"}, "writableScopes": 8},
    {"$type": "IntegerType", "minValue": 1},
    {
        "$type": "ResourceFunctionType",
        "name": "listThings",
        "resourceType": "Fake.Rp/things",
        "output": {"$ref": "#/0"},
    },
    {"$type": "ObjectType", "name": "Unreachable", "properties": {}},
]


def test_refresh_locates_without_an_index_and_keeps_only_the_reachable_graph() -> None:
    source = FakeSource(
        {
            "generated/fake/fake.rp/2020-01-01/types.json": FAKE_TYPES,
            "generated/fake/fake.rp/2021-01-01/types.json": [],
        }
    )
    located = refresh_bicep_types.locate(source, ["fake.rp/things@2020-01-01", "Fake.Rp/others@2020-01-01"])
    assert located == {"fake.rp/things@2020-01-01": ("generated/fake/fake.rp/2020-01-01/types.json", 4)}
    data = refresh_bicep_types.trim(source, located)
    assert data == refresh_bicep_types.trim(source, located)  # deterministic
    assert "description" not in json.dumps(data)
    kinds = sorted(node["$type"] for node in data["types"])
    assert kinds == ["IntegerType", "ObjectType", "ObjectType", "ResourceType", "StringLiteralType", "StringType"]
    types = TypeData(data)
    body = types.node(types.resource("FAKE.RP/THINGS@2020-01-01")["body"])
    props = types.node(body["properties"]["properties"]["type"])
    assert types.node(props["properties"]["self"]["type"]) is props  # cycles survive the renumbering
    assert types.node(props["properties"]["size"]["type"]) == {"$type": "IntegerType", "minValue": 1}


def test_refresh_prefers_the_index() -> None:
    index = {"resources": {"Fake.Rp/things@2020-01-01": {"$ref": "fake/fake.rp/2020-01-01/types.json#/4"}}}
    source = FakeSource({"generated/index.json": index, "generated/fake/fake.rp/2020-01-01/types.json": FAKE_TYPES})
    located = refresh_bicep_types.locate(source, ["Fake.Rp/things@2020-01-01"])
    assert located == {"Fake.Rp/things@2020-01-01": ("generated/fake/fake.rp/2020-01-01/types.json", 4)}
    assert source.located_by == "generated/index.json"
