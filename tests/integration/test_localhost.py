"""The local Functions host: routes, streaming, queue and blob trigger semantics, against Azurite."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from scripts.localhost import BlobDriver, LocalHost, QueueDriver, build_host
from tests.hostapp import Calls, build

HOST_JSON = {
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:00", "batchSize": 8},
    }
}


@pytest.fixture
def host(stack_env: dict[str, str]) -> Iterator[tuple[LocalHost, Calls, dict[str, str]]]:
    suffix = uuid.uuid4().hex[:8]
    env = {"TEST_STORAGE": stack_env["DICOM_STORAGE"], "TEST_QUEUE": f"q{suffix}", "TEST_CONTAINER": f"c{suffix}"}
    calls = Calls()
    local = build_host(build(calls), HOST_JSON, env)
    for driver in local.drivers:
        driver.ensure()
    yield local, calls, env


def request(local: LocalHost, method: str, path: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=local.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_routes_honour_the_prefix_and_literals_win(host: tuple[LocalHost, Calls, dict[str, str]]) -> None:
    local, _, _ = host
    assert request(local, "GET", "/api/items/42").json() == {"item": "42", "route": "param"}
    assert request(local, "GET", "/api/items/special").json() == {"route": "literal"}
    assert request(local, "GET", "/items/42").status_code == 404
    assert request(local, "POST", "/api/items/42").status_code == 405
    assert request(local, "GET", "/api/boom").status_code == 500


def test_bodies_stream_both_ways(host: tuple[LocalHost, Calls, dict[str, str]]) -> None:
    local, _, _ = host
    payload = bytes(range(256)) * 80_000  # 20 MB

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 1 << 20):
            yield payload[i : i + (1 << 20)]

    async def upload() -> httpx.Response:
        async def body():  # type: ignore[no-untyped-def]
            for chunk in chunks():
                yield chunk

        transport = httpx.ASGITransport(app=local.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/api/upload", content=body())

    assert asyncio.run(upload()).json() == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert len(request(local, "GET", "/api/download/3000000").content) == 3_000_000


def _queue(env: dict[str, str]) -> QueueClient:
    return QueueClient.from_connection_string(
        env["TEST_STORAGE"], env["TEST_QUEUE"], message_encode_policy=TextBase64EncodePolicy()
    )


def test_queue_messages_are_base64_decoded_and_deleted(host: tuple[LocalHost, Calls, dict[str, str]]) -> None:
    local, calls, env = host
    (driver,) = [d for d in local.drivers if isinstance(d, QueueDriver)]
    _queue(env).send_message('{"study": "1.2.3"}')
    assert driver.poll_once() == 1
    assert calls.messages == [(b'{"study": "1.2.3"}', 1)]
    assert driver.poll_once() == 0  # deleted after success


def test_failing_message_is_retried_then_moved_to_poison(host: tuple[LocalHost, Calls, dict[str, str]]) -> None:
    local, calls, env = host
    (driver,) = [d for d in local.drivers if isinstance(d, QueueDriver)]
    _queue(env).send_message("fail")
    for _ in range(3):
        assert driver.poll_once() == 1
    assert [count for _, count in calls.messages] == [1, 2, 3]
    assert driver.poll_once() == 0
    poison = QueueClient.from_connection_string(env["TEST_STORAGE"], f"{env['TEST_QUEUE']}-poison")
    (parked,) = poison.receive_messages()
    assert parked.content == TextBase64EncodePolicy().encode("fail")  # the original content


def test_blob_trigger_fires_once_per_blob_version(host: tuple[LocalHost, Calls, dict[str, str]]) -> None:
    local, calls, env = host
    (driver,) = [d for d in local.drivers if isinstance(d, BlobDriver)]
    container = BlobServiceClient.from_connection_string(env["TEST_STORAGE"]).get_container_client(
        env["TEST_CONTAINER"]
    )
    container.upload_blob("a/b.dcm", b"1")
    assert driver.poll_once() == 1
    assert driver.poll_once() == 0  # receipt written
    container.upload_blob("a/b.dcm", b"2", overwrite=True)  # a new version triggers again
    assert driver.poll_once() == 1
    assert calls.blobs == ["a/b.dcm", "a/b.dcm"]
