"""The Cosmos DB stand-in keeps its data in a snapshot file across restarts (scripts/cosmos_server.js)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosAccessConditionFailedError

from scripts import devstack

COMPOSITE_INDEX = [{"path": "/type", "order": "ascending"}, {"path": "/sortKey", "order": "ascending"}]
ORDERED = "SELECT * FROM c WHERE c.type = 'instance' ORDER BY c.type ASC, c.sortKey ASC"


@contextmanager
def stand_in(port: int, log_dir: Path, data_file: Path | None) -> Iterator[subprocess.Popen[bytes]]:
    proc = devstack.start_cosmos(port, log_dir, data_file)
    try:
        yield proc
    finally:
        devstack.stop(proc, devstack.COSMOS_TIMEOUT)


@contextmanager
def index_container(port: int, create: bool = False) -> Iterator[ContainerProxy]:
    with CosmosClient(
        f"http://127.0.0.1:{port}/", devstack.COSMOS_EMULATOR_KEY, enable_endpoint_discovery=False
    ) as client:
        if create:
            db = client.create_database("db")
            yield db.create_container(
                "index", partition_key=PartitionKey("/pk"), indexing_policy={"compositeIndexes": [COMPOSITE_INDEX]}
            )
        else:
            yield client.get_database_client("db").get_container_client("index")


def instance(i: int) -> dict[str, Any]:
    # sortKey runs against creation order, so ORDER BY has to sort
    return {"id": f"doc{i:02d}", "pk": f"study{i % 5}", "type": "instance", "sortKey": f"{99 - i:04d}", "n": i}


def all_documents(container: ContainerProxy) -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for doc in container.query_items("SELECT * FROM c", enable_cross_partition_query=True)}


def test_documents_come_back_unchanged_after_a_restart_and_stay_writable(tmp_path: Path) -> None:
    data_file = tmp_path / "cosmos" / "index.json"
    port = devstack.free_port()
    with stand_in(port, tmp_path, data_file), index_container(port, create=True) as container:
        created = {doc["id"]: doc for doc in (container.create_item(instance(i)) for i in range(50))}
    assert devstack.cosmos_load_status(data_file) is not None
    assert data_file.exists()
    assert not data_file.with_name("index.json.dirty").exists()

    with stand_in(port, tmp_path, data_file), index_container(port) as container:
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert (status["result"], status["documents"]) == ("loaded", 50)
        definition = container.read()
        assert definition["partitionKey"]["paths"] == ["/pk"]
        assert definition["indexingPolicy"]["compositeIndexes"] == [COMPOSITE_INDEX]
        # every document exactly as stored: _rid, _self, _etag and _ts included
        assert all_documents(container) == created

        old = created["doc03"]
        replaced = container.replace_item(
            "doc03", {**instance(3), "n": 1000}, etag=old["_etag"], match_condition=MatchConditions.IfNotModified
        )
        assert replaced["n"] == 1000
        assert replaced["_etag"] != old["_etag"]
        assert replaced["_rid"] == old["_rid"]
        with pytest.raises(CosmosAccessConditionFailedError):  # the etag it had before the replace
            container.replace_item(
                "doc03", instance(3), etag=old["_etag"], match_condition=MatchConditions.IfNotModified
            )
        with pytest.raises(CosmosAccessConditionFailedError):
            container.replace_item(
                "doc04", instance(4), etag='"not-the-etag"', match_condition=MatchConditions.IfNotModified
            )

        patched = container.patch_item("doc07", "study2", patch_operations=[{"op": "incr", "path": "/n", "value": 5}])
        assert patched["n"] == 12

        # new documents get new _rids (the resource-id counter was restored with the documents)
        fresh = container.create_item(instance(50))
        assert fresh["_rid"] not in {doc["_rid"] for doc in created.values()}
        container.delete_item("doc10", "study0")

        expected = sorted(set(created) - {"doc10"} | {"doc50"}, key=lambda name: 99 - int(name[3:]))
        pages = container.query_items(ORDERED, enable_cross_partition_query=True, max_item_count=7).by_page()
        first = [doc["id"] for doc in next(pages)]
        token = pages.continuation_token
        assert len(first) == 7
        assert token
        # resume from the continuation token with a new query
        rest = [
            doc["id"]
            for page in container.query_items(ORDERED, enable_cross_partition_query=True, max_item_count=7).by_page(
                token
            )
            for doc in page
        ]
        assert first + rest == expected

    # and what changed after the restart is in the next one too
    with stand_in(port, tmp_path, data_file), index_container(port) as container:
        again = all_documents(container)
        assert again["doc03"] == replaced
        assert again["doc07"] == patched
        assert again["doc50"] == fresh
        assert "doc10" not in again


def test_a_corrupt_snapshot_is_set_aside_and_the_stand_in_starts_empty(tmp_path: Path) -> None:
    data_file = tmp_path / "cosmos" / "index.json"
    data_file.parent.mkdir()
    data_file.write_text('{"format": "cosmosdb-server-snapshot", "version": 1, "databases": {"items": [')
    port = devstack.free_port()
    with stand_in(port, tmp_path, data_file):
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert (status["result"], status["documents"]) == ("corrupt", 0)
        kept = list(data_file.parent.glob("index.json.corrupt-*"))
        assert [str(path) for path in kept] == [status["corruptMovedTo"]]
        assert kept[0].read_text().endswith('"items": [')
        assert not data_file.exists()
        with CosmosClient(
            f"http://127.0.0.1:{port}/", devstack.COSMOS_EMULATOR_KEY, enable_endpoint_discovery=False
        ) as client:
            assert list(client.list_databases()) == []
    assert "is unusable" in (tmp_path / "cosmos.log").read_text()


def test_a_missing_snapshot_starts_empty(tmp_path: Path) -> None:
    data_file = tmp_path / "index.json"
    with stand_in(devstack.free_port(), tmp_path, data_file):
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert (status["result"], status["documents"]) == ("missing", 0)
    # stopped without any change: an empty snapshot, so the next start counts as loaded
    assert json.loads(data_file.read_text())["databases"]["items"] == []


def test_without_a_data_file_nothing_is_written(tmp_path: Path) -> None:
    port = devstack.free_port()
    with stand_in(port, tmp_path, None), index_container(port, create=True) as container:
        container.create_item(instance(1))
    assert [path.name for path in tmp_path.rglob("*")] == ["cosmos.log"]
    assert "cosmos_server:" not in (tmp_path / "cosmos.log").read_text()


def saved_documents(data_file: Path) -> int:
    if not data_file.exists():
        return 0
    databases = json.loads(data_file.read_text())["databases"]["items"]
    return sum(len(coll["documents"]["items"]) for db in databases for coll in db["collections"]["items"])


def test_a_killed_stand_in_keeps_its_periodic_snapshot_and_reports_it_as_unclean(tmp_path: Path) -> None:
    data_file = tmp_path / "index.json"
    port = devstack.free_port()
    node = shutil.which("node")
    assert node is not None
    with open(tmp_path / "cosmos.log", "ab") as log:
        proc = subprocess.Popen(
            [node, "scripts/cosmos_server.js", "--port", str(port), "--data", str(data_file), "--save-interval", "0.2"],
            cwd=devstack.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        devstack.wait_for_port("127.0.0.1", port, 30, proc)
        with index_container(port, create=True) as container:
            for i in range(5):
                container.create_item(instance(i))
        assert data_file.with_name("index.json.dirty").exists()
        deadline = time.monotonic() + 10
        while saved_documents(data_file) != 5:
            assert time.monotonic() < deadline, "no periodic snapshot with the five documents"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        devstack.stop(proc)

    with stand_in(port, tmp_path, data_file), index_container(port) as container:
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert (status["result"], status["documents"]) == ("loaded-unclean", 5)
        assert len(all_documents(container)) == 5
    # a clean stop ends the doubt
    assert not data_file.with_name("index.json.dirty").exists()
    with stand_in(port, tmp_path, data_file):
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert status["result"] == "loaded"


def _rid(*parts: bytes) -> str:
    return base64.b64encode(b"".join(parts)).decode()


def write_snapshot(data_file: Path, count: int) -> None:
    """A snapshot of ``count`` documents of about 5 KB in the format cosmos_server.js writes."""
    db_rid, coll_rid = b"\x80\x00\x01\x00", b"\x80\x00\x01\x00\x80\x00\x00\x01"
    database = {"id": "db", "_rid": _rid(db_rid), "_self": f"dbs/{_rid(db_rid)}", "_etag": "e0", "_ts": 1}
    collection = {
        "id": "index",
        "partitionKey": {"paths": ["/pk"], "kind": "Hash", "version": 2},
        "indexingPolicy": {"indexingMode": "consistent", "compositeIndexes": [COMPOSITE_INDEX]},
        "geospatialConfig": {},
        "_rid": _rid(coll_rid),
        "_self": f"dbs/{_rid(db_rid)}/colls/{_rid(coll_rid)}",
        "_etag": "e1",
        "_ts": 1,
    }
    attrs = {f"0011{i:04X}": {"vr": "LO", "Value": [f"value {i} " + "x" * 40]} for i in range(60)}
    with open(data_file, "w") as out:
        out.write('{"format":"cosmosdb-server-snapshot","version":1,"savedAt":"","reason":"test","databases":')
        out.write(f'{{"ridCount":1,"items":[{{"resource":{json.dumps(database)},"collections":{{"ridCount":1,')
        out.write(f'"items":[{{"resource":{json.dumps(collection)},')
        out.write('"userDefinedFunctions":{"ridCount":0,"items":[]},')
        out.write(f'"documents":{{"ridCount":{count},"items":[')
        for i in range(1, count + 1):
            rid = _rid(coll_rid, struct.pack("<i", i), b"\x00" * 4)
            doc = {
                "id": f"instance|{i}",
                "pk": f"study{i % 100}",
                "type": "instance",
                "sortKey": f"{i:020d}",
                "attrs": attrs,
                "_rid": rid,
                "_self": f"{collection['_self']}/docs/{rid}/",
                "_etag": f"etag{i}",
                "_ts": 1_700_000_000,
            }
            out.write(("," if i > 1 else "") + json.dumps(doc) + "\n")
        out.write("]}}]}}]}}\n")


def test_ten_thousand_documents_load_and_are_queryable(tmp_path: Path) -> None:
    data_file = tmp_path / "index.json"
    write_snapshot(data_file, 10_000)
    port = devstack.free_port()
    started = time.monotonic()
    with stand_in(port, tmp_path, data_file), index_container(port) as container:
        ready = time.monotonic() - started
        status = devstack.cosmos_load_status(data_file)
        assert status is not None
        assert (status["result"], status["documents"]) == ("loaded", 10_000)
        ids = {
            doc["id"]
            for doc in container.query_items(
                "SELECT c.id FROM c", enable_cross_partition_query=True, max_item_count=1000
            )
        }
        assert len(ids) == 10_000
        container.upsert_item({"id": "one more", "pk": "study1", "type": "instance", "sortKey": "z"})
        stopping = time.monotonic()
    stopped = time.monotonic() - stopping
    saved = [line for line in (tmp_path / "cosmos.log").read_text().splitlines() if "saved" in line]
    print(
        f"\n{data_file.stat().st_size / 1e6:.1f} MB, 10,000 documents: loaded in {status['seconds']:.2f} s "
        f"(port open {ready:.2f} s after start); stop with snapshot {stopped:.2f} s; {saved[-1]}"
    )
