"""A small FunctionApp that exercises the local host (built fresh per test: get_functions() runs once per app).

Trigger names come from app settings, so each test gets its own queues and containers:
``TEST_STORAGE`` (connection string), ``TEST_QUEUE``, ``TEST_ASYNC_QUEUE``, ``TEST_BATCH_QUEUE``,
``TEST_CONTAINER`` and ``TEST_TEXT_CONTAINER``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response, StreamingResponse

BATCH = 4


class Calls:
    """What the test functions saw, and events the tests use to gate streaming."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int]] = []
        self.async_messages: list[bytes] = []
        self.batch: list[bytes] = []
        self.blobs: list[str] = []
        self.texts: list[tuple[str, bytes]] = []
        self.barrier = threading.Barrier(BATCH, timeout=20)
        self.first_chunk_received = threading.Event()
        self.client_read_first_chunk = threading.Event()


def build(calls: Calls, triggers: bool = True) -> func.FunctionApp:
    """The test app; ``triggers=False`` leaves out the queue and blob functions (HTTP only)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{item}", methods=["GET"])
    async def get_item(req: Request) -> Response:
        return JSONResponse({"item": req.path_params["item"], "route": "param"})

    @app.route(route="items/special", methods=["GET"])
    async def get_special(req: Request) -> Response:
        return JSONResponse({"route": "literal"})

    @app.route(route="a/{x}/c", methods=["GET"])
    async def a_param_c(req: Request) -> Response:
        return JSONResponse({"route": "a/{x}/c", **req.path_params})

    @app.route(route="a/b/{y}", methods=["GET"])
    async def a_b_param(req: Request) -> Response:
        return JSONResponse({"route": "a/b/{y}", **req.path_params})

    @app.route(route="files/{*path}", methods=["GET"])
    async def files(req: Request) -> Response:
        return JSONResponse({"route": "catch-all", **req.path_params})

    @app.route(route="opt/{name?}", methods=["GET"])
    async def optional(req: Request) -> Response:
        return JSONResponse({"route": "optional", **req.path_params})

    @app.route(route="num/{id:int}", methods=["GET"])
    async def constrained(req: Request) -> Response:
        return JSONResponse({"route": "constrained", **req.path_params})

    @app.route(route="doc/{name}.{ext}", methods=["GET"])
    async def complex_segment(req: Request) -> Response:
        return JSONResponse({"route": "complex", **req.path_params})

    @app.route(route="anymethod")
    async def any_method(req: Request) -> Response:
        return JSONResponse({"method": req.method})

    @app.route(route="sync/{value}", methods=["GET"])
    def sync_function(req: Request) -> dict[str, str]:
        return {"value": req.path_params["value"], "thread": threading.current_thread().name}

    @app.route(route="text", methods=["GET"])
    async def text(req: Request) -> str:
        return "plain"

    @app.route(route="upload", methods=["POST"])
    async def upload(req: Request) -> Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in req.stream():
            digest.update(chunk)
            size += len(chunk)
            calls.first_chunk_received.set()
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    @app.route(route="download/{size}", methods=["GET"])
    async def download(req: Request) -> Response:
        size = int(req.path_params["size"])

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                n = min(65536, size - sent)
                yield b"x" * n
                sent += n

        return StreamingResponse(body(), media_type="application/octet-stream")

    @app.route(route="gated-download", methods=["GET"])
    async def gated_download(req: Request) -> Response:
        """Sends its second chunk only after the client has read the first: proves the response streams."""

        async def body() -> AsyncIterator[bytes]:
            yield b"first;"
            if not await asyncio.to_thread(calls.client_read_first_chunk.wait, 20):
                raise RuntimeError("the client never saw the first chunk")
            yield b"second"

        return StreamingResponse(body(), media_type="application/octet-stream")

    @app.route(route="boom", methods=["GET"])
    async def boom(req: Request) -> Response:
        raise RuntimeError("deliberate")

    if not triggers:
        return app

    @app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="TEST_STORAGE")
    def on_message(msg: func.QueueMessage) -> None:
        calls.messages.append((msg.get_body(), msg.dequeue_count))
        if msg.get_body() == b"fail":
            raise RuntimeError("deliberate failure")
        if msg.get_body() == b"slow":
            time.sleep(4)

    @app.queue_trigger(arg_name="msg", queue_name="%TEST_ASYNC_QUEUE%", connection="TEST_STORAGE")
    async def on_async_message(msg: func.QueueMessage) -> None:
        await asyncio.sleep(0)
        calls.async_messages.append(msg.get_body())

    @app.queue_trigger(arg_name="msg", queue_name="%TEST_BATCH_QUEUE%", connection="TEST_STORAGE")
    def on_batch_message(msg: func.QueueMessage) -> None:
        calls.barrier.wait()  # passes only when BATCH invocations run at once
        calls.batch.append(msg.get_body())

    @app.blob_trigger(arg_name="client", path="%TEST_CONTAINER%/{name}", connection="TEST_STORAGE")
    def on_blob(client: blob.BlobClient) -> None:
        calls.blobs.append(client.blob_name)
        if client.blob_name.startswith("fail"):
            raise RuntimeError("deliberate blob failure")

    @app.blob_trigger(arg_name="stream", path="%TEST_TEXT_CONTAINER%/in/{name}.txt", connection="TEST_STORAGE")
    def on_text(stream: func.InputStream) -> None:
        calls.texts.append((str(stream.name), stream.read()))

    return app


def cli_app() -> func.FunctionApp:
    """The HTTP functions, for ``python -m scripts.localhost --app tests.hostapp:cli_app``."""
    return build(Calls(), triggers=False)
