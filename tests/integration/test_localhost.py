"""The local Functions host (routes, streaming, queue and blob triggers, CLI) and ``make run``, against Azurite."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import psutil
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from scripts import devstack, localhost
from scripts.localhost import BlobDriver, FunctionLoadError, LocalHost, QueueDriver, build_host, queues
from tests.hostapp import BATCH, Calls, build

ROOT = Path(__file__).resolve().parents[2]
HOST_JSON = {
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:00",
            "batchSize": 8,
            "maxPollingInterval": "00:00:00.5",
        },
    }
}

HostFixture = tuple[LocalHost, Calls, dict[str, str]]


def _settings(stack_env: dict[str, str]) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "TEST_STORAGE": stack_env["DICOM_STORAGE"],
        "TEST_QUEUE": f"q{suffix}",
        "TEST_ASYNC_QUEUE": f"qa{suffix}",
        "TEST_BATCH_QUEUE": f"qb{suffix}",
        "TEST_CONTAINER": f"c{suffix}",
        "TEST_TEXT_CONTAINER": f"ct{suffix}",
    }


@pytest.fixture
def host(stack_env: dict[str, str]) -> Iterator[HostFixture]:
    """A host for the test app with its own queues and containers; drivers ready, not polling."""
    env = _settings(stack_env)
    calls = Calls()
    local = build_host(build(calls), HOST_JSON, env)
    for driver in local.drivers:
        driver.ensure()
    yield local, calls, env
    local.stop()


def request(local: LocalHost, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request through the host's ASGI app, in process."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=local.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def driver(local: LocalHost, kind: type, name: str) -> Any:
    (found,) = [d for d in local.drivers if isinstance(d, kind) and d.name == name]
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def queue(env: dict[str, str], name: str) -> QueueClient:
    return QueueClient.from_connection_string(env["TEST_STORAGE"], name, message_encode_policy=TextBase64EncodePolicy())


def raw_queue(env: dict[str, str], name: str) -> QueueClient:
    return QueueClient.from_connection_string(env["TEST_STORAGE"], name)


# -- HTTP routing ----------------------------------------------------------------------------------


def test_routes_honour_the_prefix_and_literals_win(host: HostFixture) -> None:
    local, _, _ = host
    assert request(local, "GET", "/api/items/42").json() == {"item": "42", "route": "param"}
    assert request(local, "GET", "/api/items/special").json() == {"route": "literal"}
    assert request(local, "GET", "/API/Items/special").json() == {"route": "literal"}  # literals ignore case
    assert request(local, "GET", "/api/items/42/").json()["item"] == "42"
    assert request(local, "GET", "/items/42").status_code == 404
    assert request(local, "GET", "/api/nothing/here").status_code == 404
    # Azure answers an unsupported method on a known route with 404, and does not map HEAD to GET.
    assert request(local, "POST", "/api/items/42").status_code == 404
    assert request(local, "HEAD", "/api/items/42").status_code == 404
    assert request(local, "DELETE", "/api/anymethod").json() == {"method": "DELETE"}


def test_route_templates_and_precedence(host: HostFixture) -> None:
    local, _, _ = host
    # Segment by segment: a literal second segment beats a parameter there.
    assert request(local, "GET", "/api/a/b/c").json() == {"route": "a/b/{y}", "y": "c"}
    assert request(local, "GET", "/api/a/z/c").json() == {"route": "a/{x}/c", "x": "z"}
    assert request(local, "GET", "/api/files/x/y/z.dcm").json() == {"route": "catch-all", "path": "x/y/z.dcm"}
    assert request(local, "GET", "/api/files").json() == {"route": "catch-all"}
    assert request(local, "GET", "/api/opt/bob").json() == {"route": "optional", "name": "bob"}
    assert request(local, "GET", "/api/opt").json() == {"route": "optional"}
    assert request(local, "GET", "/api/num/7").json() == {"route": "constrained", "id": "7"}
    assert request(local, "GET", "/api/doc/report.v2.pdf").json() == {
        "route": "complex",
        "name": "report.v2",
        "ext": "pdf",
    }


def test_route_prefix_defaults_to_api_and_can_be_empty(stack_env: dict[str, str]) -> None:
    env = _settings(stack_env)
    default = build_host(build(Calls(), triggers=False), {}, env)
    assert request(default, "GET", "/api/items/1").status_code == 200
    empty = build_host(build(Calls(), triggers=False), {"extensions": {"http": {"routePrefix": ""}}}, env)
    assert request(empty, "GET", "/items/1").json()["item"] == "1"
    assert request(empty, "GET", "/api/items/1").status_code == 404


def test_return_values_and_failures(host: HostFixture) -> None:
    local, _, _ = host
    response = request(local, "GET", "/api/sync/v")
    assert response.json()["value"] == "v"
    assert response.json()["thread"] != threading.current_thread().name  # sync functions run in a thread
    text = request(local, "GET", "/api/text")
    assert (text.text, text.headers["content-type"].split(";")[0]) == ("plain", "text/plain")
    failed = request(local, "GET", "/api/boom")
    assert (failed.status_code, failed.text) == (500, "Internal Server Error")


def test_request_body_size_limit(stack_env: dict[str, str]) -> None:
    env = {**_settings(stack_env), "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "1000"}
    local = build_host(build(Calls(), triggers=False), HOST_JSON, env)
    assert request(local, "POST", "/api/upload", content=b"x" * 1000).json()["size"] == 1000
    assert request(local, "POST", "/api/upload", content=b"x" * 1001).status_code == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams
        for _ in range(3):
            yield b"x" * 400

    assert request(local, "POST", "/api/upload", content=chunked()).status_code == 413


# -- HTTP over a real socket (uvicorn) -------------------------------------------------------------------


@pytest.fixture
def served(stack_env: dict[str, str]) -> Iterator[tuple[str, Calls, dict[str, str]]]:
    """The test app served by uvicorn in a thread, with its queue and blob triggers polling."""
    env = _settings(stack_env)
    calls = Calls()
    local = build_host(build(calls), HOST_JSON, env, blob_poll_interval=0.2)
    with local.serving(devstack.free_port()) as url:
        yield url, calls, env


def test_upload_streams_into_the_function(served: tuple[str, Calls, dict[str, str]]) -> None:
    url, calls, _ = served
    payload = bytes(range(256)) * 80_000  # 20 MB
    chunk = 1 << 20

    def body() -> Iterator[bytes]:
        yield payload[:chunk]
        # The function must see the first chunk before the client sends the rest: nothing is buffered.
        assert calls.first_chunk_received.wait(20), "the function did not receive the first chunk while streaming"
        for i in range(chunk, len(payload), chunk):
            yield payload[i : i + chunk]

    response = httpx.post(f"{url}/api/upload", content=body(), timeout=60)
    assert response.json() == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_download_streams_out_of_the_function(served: tuple[str, Calls, dict[str, str]]) -> None:
    url, calls, _ = served
    with httpx.stream("GET", f"{url}/api/gated-download", timeout=30) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first == b"first;"  # arrived while the function is still waiting to send more
        calls.client_read_first_chunk.set()
        assert b"".join(chunks) == b"second"
    big = httpx.get(f"{url}/api/download/3000000", timeout=30)
    assert big.headers["content-type"] == "application/octet-stream"
    assert big.content == b"x" * 3_000_000


def test_running_host_drives_queue_triggers_to_success_and_poison(
    served: tuple[str, Calls, dict[str, str]],
) -> None:
    _, calls, env = served
    queue(env, env["TEST_QUEUE"]).send_message("ok")
    queue(env, env["TEST_QUEUE"]).send_message("fail")
    poison = raw_queue(env, f"{env['TEST_QUEUE']}-poison")

    def poisoned() -> list[Any]:
        try:
            return list(poison.peek_messages())
        except Exception:  # created on demand
            return []

    wait_until(lambda: bool(poisoned()), what="the failing message to reach the poison queue")
    assert sorted(count for body, count in calls.messages if body == b"fail") == [1, 2, 3]
    assert [count for body, count in calls.messages if body == b"ok"] == [1]
    assert [m.content for m in poisoned()] == [base64.b64encode(b"fail").decode()]
    assert raw_queue(env, env["TEST_QUEUE"]).get_queue_properties().approximate_message_count == 0


def test_running_host_drives_blob_triggers(served: tuple[str, Calls, dict[str, str]]) -> None:
    _, calls, env = served
    service = BlobServiceClient.from_connection_string(env["TEST_STORAGE"])
    service.get_container_client(env["TEST_CONTAINER"]).upload_blob("x/1.dcm", b"1")
    wait_until(lambda: calls.blobs == ["x/1.dcm"], what="the blob trigger")


# -- queue triggers, one poll at a time ----------------------------------------------------------------


def test_queue_messages_are_base64_decoded_and_deleted(host: HostFixture) -> None:
    local, calls, env = host
    poller = driver(local, QueueDriver, "on_message")
    queue(env, env["TEST_QUEUE"]).send_message('{"study": "1.2.3"}')
    assert poller.poll_once() == 1
    assert calls.messages == [(b'{"study": "1.2.3"}', 1)]
    assert poller.poll_once() == 0  # deleted after success


def test_failing_message_is_retried_then_moved_to_poison(host: HostFixture) -> None:
    local, calls, env = host
    poller = driver(local, QueueDriver, "on_message")
    queue(env, env["TEST_QUEUE"]).send_message("fail")
    for _ in range(3):
        assert poller.poll_once() == 1
    assert [count for _, count in calls.messages] == [1, 2, 3]
    assert poller.poll_once() == 0
    (parked,) = raw_queue(env, f"{env['TEST_QUEUE']}-poison").receive_messages()
    assert parked.content == TextBase64EncodePolicy().encode("fail")  # the original content


def test_message_that_is_not_base64_goes_to_poison_uninvoked(host: HostFixture) -> None:
    local, calls, env = host
    raw_queue(env, env["TEST_QUEUE"]).send_message("not base64!")
    assert driver(local, QueueDriver, "on_message").poll_once() == 1
    assert calls.messages == []
    (parked,) = raw_queue(env, f"{env['TEST_QUEUE']}-poison").receive_messages()
    assert parked.content == "not base64!"


def test_message_dequeued_too_often_goes_to_poison_uninvoked(host: HostFixture) -> None:
    local, calls, env = host
    source = raw_queue(env, env["TEST_QUEUE"])
    source.send_message(base64.b64encode(b"crashed the host").decode())
    for _ in range(3):  # three earlier hosts died while running it
        (message,) = source.receive_messages(visibility_timeout=1)
        source.update_message(message, visibility_timeout=0)
    assert driver(local, QueueDriver, "on_message").poll_once() == 1
    assert calls.messages == []
    (parked,) = raw_queue(env, f"{env['TEST_QUEUE']}-poison").receive_messages()
    assert base64.b64decode(parked.content) == b"crashed the host"


def test_lease_is_renewed_while_the_function_runs(host: HostFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queues, "QUEUE_LEASE_SECONDS", 2)  # renewed every second; the function takes 4 s
    local, calls, env = host
    queue(env, env["TEST_QUEUE"]).send_message("slow")
    poller = threading.Thread(target=driver(local, QueueDriver, "on_message").poll_once)
    poller.start()
    time.sleep(3)  # past the first lease: without renewal another consumer would get the message now
    assert list(raw_queue(env, env["TEST_QUEUE"]).receive_messages(visibility_timeout=1)) == []
    poller.join(30)
    assert calls.messages == [(b"slow", 1)]
    assert raw_queue(env, env["TEST_QUEUE"]).get_queue_properties().approximate_message_count == 0


def test_async_queue_function(host: HostFixture) -> None:
    local, calls, env = host
    queue(env, env["TEST_ASYNC_QUEUE"]).send_message("async")
    assert driver(local, QueueDriver, "on_async_message").poll_once() == 1
    assert calls.async_messages == [b"async"]


def test_a_batch_runs_concurrently(host: HostFixture) -> None:
    local, calls, env = host
    for i in range(BATCH):
        queue(env, env["TEST_BATCH_QUEUE"]).send_message(f"m{i}")
    poller = driver(local, QueueDriver, "on_batch_message")
    handled = 0
    deadline = time.monotonic() + 30
    while handled < BATCH and time.monotonic() < deadline:  # Azurite may hand out fewer than asked for
        handled += poller.poll_once()
    assert sorted(calls.batch) == [f"m{i}".encode() for i in range(BATCH)]  # the barrier needed all at once


# -- blob triggers -----------------------------------------------------------------------------------


def test_blob_trigger_fires_once_per_blob_version(host: HostFixture) -> None:
    local, calls, env = host
    scanner = driver(local, BlobDriver, "on_blob")
    container = BlobServiceClient.from_connection_string(env["TEST_STORAGE"]).get_container_client(
        env["TEST_CONTAINER"]
    )
    container.upload_blob("a/b.dcm", b"1")
    assert scanner.poll_once() == 1
    assert scanner.poll_once() == 0  # receipt written
    container.upload_blob("a/b.dcm", b"2", overwrite=True)  # a new version triggers again
    assert scanner.poll_once() == 1
    assert calls.blobs == ["a/b.dcm", "a/b.dcm"]
    # A new host (nothing cached) finds the receipts in azure-webjobs-hosts.
    fresh = build_host(build(Calls()), HOST_JSON, env)
    assert driver(fresh, BlobDriver, "on_blob").poll_once() == 0
    fresh.stop()


def test_failing_blob_goes_to_poison_after_max_attempts(host: HostFixture) -> None:
    local, calls, env = host
    scanner = driver(local, BlobDriver, "on_blob")
    container = BlobServiceClient.from_connection_string(env["TEST_STORAGE"]).get_container_client(
        env["TEST_CONTAINER"]
    )
    container.upload_blob("fail.dcm", b"1")
    for _ in range(3):
        assert scanner.poll_once() == 1
    assert scanner.poll_once() == 0
    assert calls.blobs == ["fail.dcm"] * 3
    poison = raw_queue(env, "webjobs-blobtrigger-poison")
    messages = [json.loads(base64.b64decode(m.content)) for m in poison.receive_messages(max_messages=32)]
    assert {
        "FunctionId": "Host.Functions.on_blob",
        "ContainerName": env["TEST_CONTAINER"],
        "BlobName": "fail.dcm",
    }.items() <= next(m for m in messages if m["ContainerName"] == env["TEST_CONTAINER"]).items()


def test_blob_path_pattern_and_input_stream(host: HostFixture) -> None:
    local, calls, env = host
    scanner = driver(local, BlobDriver, "on_text")
    container = BlobServiceClient.from_connection_string(env["TEST_STORAGE"]).get_container_client(
        env["TEST_TEXT_CONTAINER"]
    )
    container.upload_blob("in/hello.txt", b"hello")
    container.upload_blob("in/skip.bin", b"no")
    container.upload_blob("out/skip.txt", b"no")
    assert scanner.poll_once() == 1
    assert calls.texts == [(f"{env['TEST_TEXT_CONTAINER']}/in/hello.txt", b"hello")]


# -- function discovery ---------------------------------------------------------------------------------


def test_unsupported_triggers_are_skipped_and_bad_signatures_refused(caplog: pytest.LogCaptureFixture) -> None:
    app = func.FunctionApp()

    @app.event_hub_message_trigger(arg_name="event", event_hub_name="hub", connection="HUB")
    def on_event(event: func.EventHubEvent) -> None:
        pass

    @app.route(route="hello")
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("hi")

    local = build_host(app, HOST_JSON, {})
    assert [r.name for r in local.routes] == ["hello"] and local.drivers == []
    assert "on_event skipped: eventHubTrigger triggers are not supported" in caplog.text


def test_a_timer_trigger_runs_on_its_schedule_with_its_setting_resolved() -> None:
    from scripts.localhost.timers import TimerDriver

    app = func.FunctionApp()
    ticks: list[bool] = []

    @app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=True)
    def tick(timer: func.TimerRequest) -> None:
        ticks.append(timer.past_due)

    local = build_host(app, HOST_JSON, {"TICK_SCHEDULE": "0 0 0 1 1 *"})
    (timer,) = local.drivers
    assert isinstance(timer, TimerDriver) and timer.describe() == "timer: 0 0 0 1 1 *"
    assert timer.poll_once() == 1 and ticks == [False]  # run_on_startup
    assert timer.poll_once() == 0  # next: January 1st
    assert 0.05 <= timer.next_delay(0, 1.0) <= 5.0

    bad = func.FunctionApp()

    @bad.route(route="bad")
    def mismatched(request: func.HttpRequest) -> func.HttpResponse:  # the binding is called "req"
        return func.HttpResponse("never")

    with pytest.raises(FunctionLoadError, match="mismatched"):
        build_host(bad, HOST_JSON, {})


# -- the command line -------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}):\n{log.read_text()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise AssertionError(f"did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def _start_cli_host(port: int, log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    """``python -m scripts.localhost`` serving tests.hostapp:cli_app on ``port``, logging to ``log``."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DICOM_PROVISION_RESOURCES": "false",
        "DICOM_AUTH_MODE": "none",
        **extra_env,
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scripts.localhost", "--app", "tests.hostapp:cli_app", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_and_exits_cleanly_on_signals(sig: int, tmp_path: Path) -> None:
    port = devstack.free_port()
    log = tmp_path / "host.log"
    proc = _start_cli_host(port, log)
    try:
        _wait_http(f"http://127.0.0.1:{port}/items/1", proc, log)  # the repository's host.json: routePrefix ""
        assert httpx.get(f"http://127.0.0.1:{port}/items/1").json() == {"item": "1", "route": "param"}
        proc.send_signal(sig)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        devstack.stop(proc)
    text = log.read_text()
    assert f"get_item                             GET      http://127.0.0.1:{port}/items/{{item}}" in text
    assert f"DICOMweb: http://127.0.0.1:{port}/v2" in text
    assert "Traceback" not in text


def test_worker_processes_share_the_port_and_stop_with_the_host(tmp_path: Path) -> None:
    import psutil

    port = devstack.free_port()
    log = tmp_path / "host.log"
    proc = _start_cli_host(port, log, FUNCTIONS_WORKER_PROCESS_COUNT="3")
    try:
        _wait_http(f"http://127.0.0.1:{port}/items/1", proc, log)
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2, log.read_text()
        with ThreadPoolExecutor(8) as pool:  # new connections each: the kernel spreads them over the workers
            answers = list(pool.map(lambda i: httpx.get(f"http://127.0.0.1:{port}/items/{i}").json(), range(40)))
        assert answers == [{"item": str(i), "route": "param"} for i in range(40)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        devstack.stop(proc)
    assert "(3 worker processes)" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_cli_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scripts.localhost", "--app", "tests.hostapp:cli_app", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "DICOM_PROVISION_RESOURCES": "false"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_emulator_on_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(devstack.StackError, match=f"port {port} is already in use"):
            devstack.start_azurite(tmp_path, port, devstack.free_port())
        with pytest.raises(devstack.StackError, match=f"port {port} is already in use"):
            devstack.start_cosmos(port)


def test_make_run_starts_and_stops_everything_twice(tmp_path: Path) -> None:
    """``python -m scripts.run`` on free ports: serves, stops on SIGINT then SIGTERM, leaves no process behind."""
    ports = {
        name: str(devstack.free_port())
        for name in ("AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "COSMOS_PORT", "FHIR_PORT", "FUNCTIONS_HTTP_PORT")
    }
    env = {
        **os.environ,
        **ports,
        "LOCAL_DATA_DIR": str(tmp_path / "local"),
        "DICOM_AUTH_MODE": "none",
        "PYTHONUNBUFFERED": "1",
    }
    url = f"http://127.0.0.1:{ports['FUNCTIONS_HTTP_PORT']}/v2"
    for sig in (signal.SIGINT, signal.SIGTERM):
        log = tmp_path / f"run-{sig}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scripts.run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_http(f"{url}/studies", proc, log, timeout=120)
            wait_until(lambda log=log: f"DICOMweb base URL: {url}" in log.read_text(), what="the base URL line")
            assert httpx.get(f"{url}/studies").status_code in (200, 204)
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) >= 4  # azurite, cosmos stand-in, FHIR server, local host
            proc.send_signal(sig)
            assert proc.wait(60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running: {alive}"
        for port in ports.values():
            assert not devstack.port_in_use(int(port)), f"port {port} still in use"


def test_connections_on_the_claimed_port_have_nagle_off() -> None:
    """The port claimed before the app loads must give TCP_NODELAY connections, as uvicorn's own do.

    Without it every response written in two parts (headers, then body) waited for a delayed ACK.
    """
    sock = localhost._bound_socket("127.0.0.1", devstack.free_port())
    port = sock.getsockname()[1]
    accepted: list[int] = []

    async def main() -> None:
        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if accepted:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert accepted and accepted[0] != 0
