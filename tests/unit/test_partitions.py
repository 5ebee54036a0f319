"""Data partitions without services: names, the path rules, the catalog's round trips and the twin routes."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from dicomserver.auth import Action
from dicomserver.errors import BadRequest
from dicomserver.identifiers import DEFAULT_PARTITION
from dicomserver.partitions import (
    FEATURE_DISABLED,
    MISSING_PARTITION,
    PartitionCatalog,
    get_partitions,
    partition_of_path,
    prepare_partition,
    validate_partition_name,
)
from dicomserver.stores import Partition
from dicomserver.stores.model import QueryPage, SearchQuery
from functions._http import (
    PARTITION_FUNCTION_SUFFIX,
    creates_partition,
    partitioned_route,
    request_partition,
    split_partition,
)
from scripts.localhost.routes import Route
from tests.unit.test_adapters import http_functions

# -- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Microsoft.Default", "a", "x" * 64, "myPartition-1", "1.2.840.10008", "A_b-c.D"])
def test_valid_partition_names_pass(name: str) -> None:
    assert validate_partition_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a/b", "caf\u00e9", "a$b", "a%2Fb", "a:b", "\u0661"])
def test_invalid_partition_name_is_a_400_quoting_it(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_partition_name(name)
    assert caught.value.status == 400
    assert f"'{name}'" in caught.value.message and "is invalid" in caught.value.message


def test_a_very_long_invalid_name_is_shortened_in_the_message() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_partition_name("y" * 5000)
    assert len(caught.value.message) < 300


# -- enabled / disabled path rules -----------------------------------------------------------------


def test_enabled_without_a_partition_is_azures_400() -> None:
    with pytest.raises(BadRequest) as caught:
        partition_of_path(None, enabled=True)
    assert caught.value.message == MISSING_PARTITION == "PartitionName value is missing in the route segment."


def test_disabled_with_a_partition_is_azures_400() -> None:
    with pytest.raises(BadRequest) as caught:
        partition_of_path("p1", enabled=False)
    assert caught.value.message == FEATURE_DISABLED == "Data partitions feature is disabled."


def test_disabled_without_a_partition_is_the_default_partition() -> None:
    assert partition_of_path(None, enabled=False) == DEFAULT_PARTITION


def test_enabled_with_a_partition_is_that_partition_and_the_default_is_addressable() -> None:
    assert partition_of_path("p1", enabled=True) == "p1"
    assert partition_of_path(DEFAULT_PARTITION, enabled=True) == DEFAULT_PARTITION
    with pytest.raises(BadRequest):
        partition_of_path("bad name", enabled=True)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/partitions/p1/studies/1.2", ("p1", "/v2/studies/1.2")),
        ("/v2/partitions/studies/studies", ("studies", "/v2/studies")),  # a partition may be named "studies"
        ("/v2/Partitions/p1/instances", ("p1", "/v2/instances")),  # route literals are case-insensitive
        ("/v2/studies/1.2", (None, "/v2/studies/1.2")),
        ("/v2/partitions", (None, "/v2/partitions")),
        ("/v2/changefeed", (None, "/v2/changefeed")),
    ],
)
def test_split_partition(path: str, expected: tuple[str | None, str]) -> None:
    assert split_partition(path) == expected


@pytest.mark.parametrize(
    ("path", "action", "creates"),
    [
        ("/v2/studies", Action.WRITE, True),
        ("/v2/studies/1.2", Action.WRITE, True),
        ("/v2/studies/$bulkUpdate", Action.WRITE, False),
        ("/v2/studies/1.2", Action.READ, False),
        ("/v2/studies/1.2", Action.DELETE, False),
        ("/v2/studies/1.2/series/3", Action.WRITE, False),
    ],
)
def test_only_stores_create_their_partition(path: str, action: Action, creates: bool) -> None:
    assert creates_partition(path, action) is creates


# -- the catalog: one round trip per process and partition ------------------------------------------


@dataclass
class MemoryPartitionStore:
    """A :class:`~dicomserver.stores.PartitionStore` in memory that counts its calls."""

    stored: dict[str, Partition] = field(default_factory=dict)
    reads: int = 0
    writes: int = 0

    def ensure_schema(self) -> None:
        pass

    def get_partition(self, name: str) -> Partition | None:
        self.reads += 1
        return self.stored.get(name)

    def add_partition(self, name: str) -> Partition:
        found = self.get_partition(name)
        if found is not None:
            return found
        self.writes += 1
        key = 1 if name == DEFAULT_PARTITION else len([n for n in self.stored if n != DEFAULT_PARTITION]) + 2
        self.stored[name] = Partition(key, name, f"2024-01-0{key}T00:00:00.000000Z")
        return self.stored[name]

    def list_partitions(self) -> list[Partition]:
        self.reads += 1
        return sorted(self.stored.values(), key=lambda p: p.key)


def test_a_store_records_its_partition_once_per_process() -> None:
    store = MemoryPartitionStore()
    catalog = PartitionCatalog(store)
    for _ in range(3):
        asyncio.run(prepare_partition(catalog, "p1", creates=True))
    assert (store.writes, store.reads) == (1, 1)
    asyncio.run(prepare_partition(catalog, "p1", creates=False))  # a read after the store: no round trip
    assert (store.writes, store.reads) == (1, 1)
    other = PartitionCatalog(store)  # another process: one read, no write
    asyncio.run(prepare_partition(other, "p1", creates=True))
    assert (store.writes, store.reads) == (1, 2)


def test_a_read_in_a_partition_that_does_not_exist_is_a_400() -> None:
    store = MemoryPartitionStore()
    catalog = PartitionCatalog(store)
    with pytest.raises(BadRequest) as caught:
        asyncio.run(prepare_partition(catalog, "nowhere", creates=False))
    assert caught.value.message == "Specified PartitionName 'nowhere' does not exist."
    with pytest.raises(BadRequest):  # not remembered as missing: another process may create it
        asyncio.run(prepare_partition(catalog, "nowhere", creates=False))
    assert store.reads == 2 and store.writes == 0


def test_the_default_partition_always_exists_without_a_round_trip() -> None:
    store = MemoryPartitionStore()
    asyncio.run(prepare_partition(PartitionCatalog(store), DEFAULT_PARTITION, creates=False))
    assert (store.reads, store.writes) == (0, 0)


def test_get_partitions_lists_azures_fields_with_the_default_first() -> None:
    store = MemoryPartitionStore()
    catalog = PartitionCatalog(store)
    asyncio.run(prepare_partition(catalog, "p1", creates=True))
    listed = asyncio.run(get_partitions(catalog=catalog, enabled=True))
    assert [p["partitionName"] for p in listed] == [DEFAULT_PARTITION, "p1"]
    assert listed[0]["partitionKey"] == 1 and listed[1]["partitionKey"] == 2
    assert all(set(p) == {"partitionKey", "partitionName", "createdDate"} for p in listed)
    with pytest.raises(BadRequest) as caught:
        asyncio.run(get_partitions(catalog=catalog, enabled=False))
    assert caught.value.message == FEATURE_DISABLED


# -- QIDO in one partition --------------------------------------------------------------------------


class _RecordingIndex:
    searches_any_attribute = True

    def __init__(self) -> None:
        self.queries: list[SearchQuery] = []

    def search(self, query: SearchQuery) -> QueryPage:
        self.queries.append(query)
        return QueryPage(items=[])



def test_every_search_and_count_runs_in_the_partition_of_the_request() -> None:
    from dicomserver import qido

    index: Any = _RecordingIndex()
    params = [("PatientID", "PAT-1")]
    asyncio.run(qido.search_for_studies(index=index, params=params, partition="p1"))
    in_study = [("Modality", "CT")]
    asyncio.run(qido.search_for_series(index=index, params=in_study, study_instance_uid="1.2.3", partition="p1"))
    asyncio.run(qido.search_for_instances_count(index=index, params=params, partition="p1"))
    asyncio.run(qido.search_for_studies(index=index, params=params))
    assert [q.partition for q in index.queries] == ["p1", "p1", "p1", DEFAULT_PARTITION]


# -- the adapter: which requests the rules apply to -------------------------------------------------


def _services(enabled: bool, store: MemoryPartitionStore) -> Any:
    settings = SimpleNamespace(data_partitions_enabled=enabled)
    return SimpleNamespace(settings=settings, partitions=PartitionCatalog(store))


def test_request_partition_applies_the_rules_to_dicomweb_resources_only() -> None:
    store = MemoryPartitionStore()
    on, off = _services(True, store), _services(False, store)
    assert asyncio.run(request_partition("/v2/partitions/p1/studies", on, Action.WRITE)) == ("p1", "/v2/studies")
    assert asyncio.run(request_partition("/v2/partitions/p1/series", on, Action.READ)) == ("p1", "/v2/series")
    assert asyncio.run(request_partition("/v2/changefeed", on, Action.READ)) == (DEFAULT_PARTITION, "/v2/changefeed")
    assert asyncio.run(request_partition("/v2/partitions", off, Action.READ)) == (DEFAULT_PARTITION, "/v2/partitions")
    assert asyncio.run(request_partition("/v2/studies/1.2", off, Action.READ)) == (DEFAULT_PARTITION, "/v2/studies/1.2")
    for path, svc, message in [
        ("/v2/studies", on, MISSING_PARTITION),
        ("/v2/instances/count", on, MISSING_PARTITION),
        ("/v2/partitions/p1/studies", off, FEATURE_DISABLED),
        ("/v2/partitions/no-such/studies", on, "Specified PartitionName 'no-such' does not exist."),
    ]:
        with pytest.raises(BadRequest) as caught:
            asyncio.run(request_partition(path, svc, Action.READ))
        assert caught.value.message == message, path
    assert store.writes == 1  # only the store into p1 wrote


# -- registration: every DICOMweb function twice, no conflicting routes -------------------------------


def _http_functions() -> dict[str, tuple[frozenset[str], str, Any]]:
    """``function_app.app``'s HTTP functions (built once per process, shared with test_adapters.py)."""
    return {name: (frozenset(m), route, user) for name, (m, route, user) in http_functions().items()}


def test_partitioned_route_prefixes_dicomweb_resources_only() -> None:
    assert partitioned_route("v2/studies/{study}") == "v2/partitions/{partition}/studies/{study}"
    assert partitioned_route("v2/series") == "v2/partitions/{partition}/series"
    assert partitioned_route("v2/instances/count") == "v2/partitions/{partition}/instances/count"
    for stays in ("v2/changefeed", "v2/operations/{operationId}", "v2/partitions", "v2/extendedquerytags"):
        assert partitioned_route(stays) is None


def test_every_dicomweb_function_has_a_partitioned_twin_and_nothing_else_does() -> None:
    functions = _http_functions()
    originals = {n: f for n, f in functions.items() if not n.endswith(PARTITION_FUNCTION_SUFFIX)}
    twins = {n.removesuffix(PARTITION_FUNCTION_SUFFIX): f for n, f in functions.items() if n not in originals}
    expected = {n for n, (_, route, _) in originals.items() if partitioned_route(route) is not None}
    assert set(twins) == expected and len(expected) >= 30
    for name, (methods, route, user) in twins.items():
        original_methods, original_route, original_user = originals[name]
        assert methods == original_methods
        assert route == partitioned_route(original_route)
        assert user.action is original_user.action
        assert user.__name__ == name + PARTITION_FUNCTION_SUFFIX
        assert user.__wrapped__ is original_user
    assert "get_partitions" in originals and originals["get_partitions"][1] == "v2/partitions"


def test_function_names_are_valid_for_the_functions_host() -> None:
    # unique: building the app's function list refuses duplicates (FunctionApp.validate_function_names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,127}", n) for n in _http_functions())


def test_no_two_functions_answer_the_same_route_shape_and_method() -> None:
    """ASP.NET routing (the Functions host) refuses two templates that differ only in parameter names."""
    seen: dict[tuple[str, str], str] = {}
    for name, (methods, route, _) in _http_functions().items():
        shape = re.sub(r"\{[^}]*\}", "{}", route.lower())
        for method in methods:
            assert (shape, method) not in seen, f"{name} and {seen[(shape, method)]} share {method} {route}"
            seen[(shape, method)] = name


def _dispatch(method: str, path: str) -> str:
    """The function the local host (ASP.NET's ranking) picks for a request."""
    routes = sorted(
        (Route(name, "/" + route, methods, user) for name, (methods, route, user) in _http_functions().items()),
        key=lambda r: r.precedence,
    )
    for route in routes:
        if route.pattern.fullmatch(path) and (route.methods is None or method in route.methods):
            return route.name
    return "404"


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v2/partitions/p1/studies", "store_instances_in_partition"),
        ("POST", "/v2/partitions/p1/studies/1.2", "store_instances_in_study_in_partition"),
        ("GET", "/v2/partitions/p1/studies", "search_for_studies_in_partition"),
        ("GET", "/v2/partitions/studies/studies", "search_for_studies_in_partition"),
        ("GET", "/v2/partitions/p1/studies/count", "search_for_studies_count_in_partition"),
        ("GET", "/v2/partitions/p1/studies/1.2", "retrieve_study_in_partition"),
        ("GET", "/v2/partitions/p1/studies/1/series/2/instances/3/frames/1", "retrieve_frames_in_partition"),
        ("GET", "/v2/partitions/p1/studies/1/series/2/instances/3/bulkdata/7FE00010", "retrieve_bulkdata_in_partition"),
        ("DELETE", "/v2/partitions/p1/studies/1.2", "delete_study_in_partition"),
        ("GET", "/v2/partitions", "get_partitions"),
        ("GET", "/v2/studies/1.2", "retrieve_study"),
        ("GET", "/v2/studies/count", "search_for_studies_count"),
        ("GET", "/v2/changefeed", "read_change_feed"),
        ("GET", "/v2/partitions/p1/changefeed", "404"),  # the change feed stays at the base (Azure)
    ],
)
def test_the_local_host_routes_both_forms(method: str, path: str, name: str) -> None:
    assert _dispatch(method, path) == name
