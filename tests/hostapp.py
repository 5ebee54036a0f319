"""A small FunctionApp that exercises the local host (built fresh per test: get_functions() runs once per app)."""

import hashlib

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response, StreamingResponse


class Calls:
    """What the test functions saw."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int]] = []
        self.blobs: list[str] = []


def build(calls: Calls) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{item}", methods=["GET"])
    async def get_item(req: Request) -> Response:
        return JSONResponse({"item": req.path_params["item"], "route": "param"})

    @app.route(route="items/special", methods=["GET"])
    async def get_special(req: Request) -> Response:
        return JSONResponse({"route": "literal"})

    @app.route(route="upload", methods=["POST"])
    async def upload(req: Request) -> Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in req.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    @app.route(route="download/{size}", methods=["GET"])
    async def download(req: Request) -> Response:
        size = int(req.path_params["size"])

        async def body():  # type: ignore[no-untyped-def]
            sent = 0
            while sent < size:
                n = min(65536, size - sent)
                yield b"x" * n
                sent += n

        return StreamingResponse(body(), media_type="application/octet-stream")

    @app.route(route="boom", methods=["GET"])
    async def boom(req: Request) -> Response:
        raise RuntimeError("deliberate")

    @app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="TEST_STORAGE")
    def on_message(msg: func.QueueMessage) -> None:
        calls.messages.append((msg.get_body(), msg.dequeue_count))
        if msg.get_body() == b"fail":
            raise RuntimeError("deliberate failure")

    @app.blob_trigger(arg_name="client", path="%TEST_CONTAINER%/{name}", connection="TEST_STORAGE")
    def on_blob(client: blob.BlobClient) -> None:
        calls.blobs.append(client.blob_name)

    return app
