"""A local Azure Functions host: stands in for Core Tools (``func start``) where it cannot be installed.

``python -m scripts.localhost [--port 7071]`` imports ``function_app.app``,
discovers every function and its trigger from the app itself, and:

* serves each HTTP function at ``/{routePrefix}/{route}`` with uvicorn
  (``routePrefix`` from host.json; ``{name}``, ``{name?}``, ``{*rest}`` and
  ``{name:constraint}`` route templates; literal segments win over
  parameters), passing the real Starlette/FastAPI ``Request`` so bodies
  stream in and ``StreamingResponse`` streams out (HTTP-streams semantics);
* drives queue triggers against Azurite as the Functions host does: base64
  messages, ``dequeue_count``, a failed message becomes visible again after
  ``visibilityTimeout``, and after ``maxDequeueCount`` failed attempts it moves
  to ``<queue>-poison``; idle polling backs off up to ``maxPollingInterval``;
* drives blob triggers by polling the container (the Functions host's
  scan mode without Event Grid), with blob receipts in the
  ``azure-webjobs-hosts`` container so each blob version triggers once; after
  ``maxDequeueCount`` failures a blob goes to ``webjobs-blobtrigger-poison``.

``%SETTING%`` in queue names and blob paths resolves from the environment,
and ``local.settings.json`` ``Values`` are loaded like Core Tools does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import inspect
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("localhost")

_SETTING = re.compile(r"%([A-Za-z0-9_]+)%")


def _duration(text: str | None, default: float) -> float:
    """Seconds of a host.json ``hh:mm:ss`` duration."""
    if not text:
        return default
    parts = [float(p) for p in str(text).split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return parts[-3] * 3600 + parts[-2] * 60 + parts[-1]


def resolve_settings(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` with app settings, as binding expressions do."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(f"the app setting {name} used in a binding is not set")
        return environ[name]

    return _SETTING.sub(value, text)


@dataclass(frozen=True)
class HostConfig:
    """What the host reads from host.json."""

    route_prefix: str = "api"
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    max_polling_interval: float = 2.0

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> HostConfig:
        extensions = host_json.get("extensions", {})
        http = extensions.get("http", {})
        queues = extensions.get("queues", {})
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_duration(queues.get("visibilityTimeout"), 0.0),
            batch_size=int(queues.get("batchSize", 16)),
            max_polling_interval=_duration(queues.get("maxPollingInterval"), 2.0),
        )


def load_local_settings(path: Path, environ: dict[str, str] | os._Environ[str]) -> None:
    """Copy ``Values`` of local.settings.json into the environment without overriding it."""
    if not path.exists():
        return
    values = json.loads(path.read_text()).get("Values", {})
    for name, value in values.items():
        environ.setdefault(name, str(value))


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Route:
    """One HTTP function at one route template."""

    name: str
    template: str
    methods: frozenset[str] | None
    handler: Callable[..., Any]
    pattern: re.Pattern[str] = field(init=False)
    specificity: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        regex = ""
        literals = 0
        segments = [s for s in self.template.split("/") if s]
        for segment in segments:
            param = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(\?)?\}", segment)
            if param is None:
                regex += "/" + re.escape(segment)
                literals += 1
            elif param.group(1):  # {*rest}: catch-all
                regex += f"(?:/(?P<{param.group(2)}>.*))?"
            elif param.group(3):  # {name?}: optional
                regex += f"(?:/(?P<{param.group(2)}>[^/]+))?"
            else:
                regex += f"/(?P<{param.group(2)}>[^/]+)"
        self.pattern = re.compile(regex + "/?" if regex else "/?")
        self.specificity = (literals, len(segments))


class HttpApp:
    """ASGI application dispatching to the HTTP functions."""

    def __init__(self, routes: list[Route], extra: dict[str, Callable[..., Awaitable[Any]]] | None = None) -> None:
        self.routes = sorted(routes, key=lambda r: r.specificity, reverse=True)
        self.extra = extra or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.responses import PlainTextResponse

        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in self.extra:
            response = await self.extra[path](scope)
            await response(scope, receive, send)
            return
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.methods is not None and scope["method"] not in route.methods:
                allowed |= route.methods
                continue
            scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
            response = await self._invoke(route, scope, receive)
            await response(scope, receive, send)
            return
        if allowed:
            response = PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": ", ".join(allowed)})
        else:
            response = PlainTextResponse("Not Found", status_code=404)
        await response(scope, receive, send)

    async def _invoke(self, route: Route, scope: dict[str, Any], receive: Any) -> Any:
        from fastapi import Request
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import PlainTextResponse, Response

        request = Request(scope, receive)
        try:
            if inspect.iscoroutinefunction(route.handler):
                result = await route.handler(request)
            else:
                result = await run_in_threadpool(route.handler, request)
        except Exception:
            log.exception("function %s failed", route.name)
            return PlainTextResponse("Internal Server Error", status_code=500)
        if result is None:
            return Response(status_code=204)
        return result


# -- queue triggers ----------------------------------------------------------------------------


def _run(handler: Callable[..., Any], argument: Any) -> None:
    if inspect.iscoroutinefunction(handler):
        asyncio.run(handler(argument))
    else:
        handler(argument)


def _decode(content: bytes | str) -> bytes:
    raw = content.encode() if isinstance(content, str) else content
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw  # not base64: the real host would fail to bind it; pass it through


class QueueDriver:
    """Polls one queue and invokes its function with the Functions host's retry semantics."""

    def __init__(self, name: str, handler: Callable[..., Any], queue: str, connection: str, config: HostConfig):
        from azure.storage.queue import QueueClient

        self.name = name
        self.handler = handler
        self.queue_name = queue
        self.config = config
        self.queue = QueueClient.from_connection_string(connection, queue)
        self.poison = QueueClient.from_connection_string(connection, f"{queue}-poison")

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for q in (self.queue, self.poison):
            try:
                q.create_queue()
            except ResourceExistsError:
                pass

    def poll_once(self) -> int:
        """Process one batch; returns how many messages it handled."""
        from azure.functions.queue import QueueMessage  # the worker's class, with dequeue_count

        visibility = max(int(self.config.visibility_timeout), 30)  # lease while the function runs
        messages = list(
            self.queue.receive_messages(messages_per_page=self.config.batch_size, visibility_timeout=visibility)
        )
        for message in messages[: self.config.batch_size]:
            body = _decode(message.content)
            argument = QueueMessage(
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                pop_receipt=message.pop_receipt,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
            )
            try:
                _run(self.handler, argument)
            except Exception:
                log.exception(
                    "function %s failed on message %s (dequeue %s)", self.name, message.id, message.dequeue_count
                )
                if (message.dequeue_count or 0) >= self.config.max_dequeue_count:
                    self.poison.send_message(message.content)
                    self.queue.delete_message(message)
                    log.warning("message %s moved to %s-poison", message.id, self.queue_name)
                else:
                    self.queue.update_message(
                        message, pop_receipt=message.pop_receipt, visibility_timeout=int(self.config.visibility_timeout)
                    )
                continue
            self.queue.delete_message(message)
        return len(messages)


# -- blob triggers -----------------------------------------------------------------------------

RECEIPTS_CONTAINER = "azure-webjobs-hosts"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"


class BlobDriver:
    """Scans one container and invokes its function once per blob version (blob receipts)."""

    def __init__(self, name: str, handler: Callable[..., Any], path: str, connection: str, config: HostConfig):
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueClient

        self.name = name
        self.handler = handler
        self.container_name, _, self.pattern = path.partition("/")
        self.config = config
        self.service = BlobServiceClient.from_connection_string(connection)
        self.container = self.service.get_container_client(self.container_name)
        self.receipts = self.service.get_container_client(RECEIPTS_CONTAINER)
        self.poison = QueueClient.from_connection_string(connection, BLOB_POISON_QUEUE)
        self.failures: dict[str, int] = {}
        self.parameter = next(iter(inspect.signature(handler).parameters.values()), None)

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for container in (self.container, self.receipts):
            try:
                container.create_container()
            except ResourceExistsError:
                pass
        try:
            self.poison.create_queue()
        except ResourceExistsError:
            pass

    def _receipt(self, blob_name: str, etag: str) -> Any:
        return self.receipts.get_blob_client(f"blobreceipts/local/{self.name}/{etag.strip(chr(34))}/{blob_name}")

    def _argument(self, blob_name: str, size: int) -> Any:
        annotation = getattr(self.parameter, "annotation", None)
        client = self.container.get_blob_client(blob_name)
        if annotation is not None and getattr(annotation, "__module__", "").startswith(
            "azurefunctions.extensions.bindings.blob"
        ):
            return client  # SDK-type binding: the function gets a BlobClient
        from azure.functions.blob import InputStream

        data = client.download_blob().readall()
        return InputStream(data=data, name=f"{self.container_name}/{blob_name}", uri=client.url, length=size)

    def poll_once(self) -> int:
        """Invoke the function for each blob without a receipt; returns how many were invoked."""
        from azure.core.exceptions import ResourceExistsError

        invoked = 0
        for blob in self.container.list_blobs():
            receipt = self._receipt(blob.name, str(blob.etag))
            if receipt.exists():
                continue
            invoked += 1
            key = f"{blob.name}|{blob.etag}"
            try:
                _run(self.handler, self._argument(blob.name, int(blob.size or 0)))
            except Exception:
                self.failures[key] = self.failures.get(key, 0) + 1
                log.exception("function %s failed on blob %s (attempt %d)", self.name, blob.name, self.failures[key])
                if self.failures[key] < self.config.max_dequeue_count:
                    continue
                message = {"FunctionId": self.name, "ContainerName": self.container_name, "BlobName": blob.name}
                self.poison.send_message(base64.b64encode(json.dumps(message).encode()).decode())
                log.warning("blob %s moved to %s", blob.name, BLOB_POISON_QUEUE)
            self.failures.pop(key, None)
            try:
                receipt.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
        return invoked


# -- the host ---------------------------------------------------------------------------------


class LocalHost:
    """HTTP routes and trigger drivers for one FunctionApp."""

    def __init__(self, app: Any, config: HostConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.routes: list[Route] = []
        self.drivers: list[QueueDriver | BlobDriver] = []
        self.extra_http: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        for function in app.get_functions():
            self._register(function, environ)

    def _register(self, function: Any, environ: Mapping[str, str]) -> None:
        name = function.get_function_name()
        trigger = function.get_trigger()
        kind = trigger.get_binding_name()
        handler = function.get_user_function()
        if kind == "httpTrigger":
            route = str(getattr(trigger, "route", None) or name).strip("/")
            prefix = self.config.route_prefix
            template = f"/{prefix}/{route}" if prefix else f"/{route}"
            methods = getattr(trigger, "methods", None)
            method_names = frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None
            self.routes.append(Route(name, template, method_names, handler))
            return
        connection_name = getattr(trigger, "connection", None) or "AzureWebJobsStorage"
        connection = environ.get(connection_name, "")
        if kind in ("queueTrigger", "blobTrigger") and not connection.startswith("DefaultEndpointsProtocol"):
            log.warning("function %s skipped: setting %s holds no connection string", name, connection_name)
            return
        if kind == "queueTrigger":
            queue = resolve_settings(str(trigger.queue_name), environ)
            self.drivers.append(QueueDriver(name, handler, queue, connection, self.config))
        elif kind == "blobTrigger":
            path = resolve_settings(str(trigger.path), environ)
            self.drivers.append(BlobDriver(name, handler, path, connection, self.config))
        else:
            log.warning("function %s skipped: %s triggers are not supported by the local host", name, kind)

    def describe(self, base: str) -> list[str]:
        lines = []
        for route in sorted(self.routes, key=lambda r: r.pattern.pattern):
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            lines.append(f"  {route.name:36} {methods:8} {base}{route.template}")
        for driver in self.drivers:
            where = (
                f"queue: {driver.queue_name}" if isinstance(driver, QueueDriver) else f"blob: {driver.container_name}/"
            )
            lines.append(f"  {driver.name:36} {where}")
        return lines

    def asgi(self) -> HttpApp:
        return HttpApp(self.routes, self.extra_http)

    def start_drivers(self, blob_interval: float = 1.0) -> None:
        for driver in self.drivers:
            driver.ensure()
            thread = threading.Thread(target=self._loop, args=(driver, blob_interval), name=driver.name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, driver: QueueDriver | BlobDriver, blob_interval: float) -> None:
        idle = 0.1
        while not self.stopping.is_set():
            try:
                handled = driver.poll_once()
            except Exception:
                log.exception("trigger driver %s failed; retrying", driver.name)
                handled = 0
                idle = self.config.max_polling_interval
            if isinstance(driver, BlobDriver):
                self.stopping.wait(blob_interval)
            elif handled:
                idle = 0.1
            else:
                self.stopping.wait(idle)
                idle = min(idle * 2, self.config.max_polling_interval)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)


def build_host(app: Any, host_json: Mapping[str, Any], environ: Mapping[str, str]) -> LocalHost:
    """A :class:`LocalHost` for ``app`` (tests build one for a test app)."""
    return LocalHost(app, HostConfig.from_host_json(host_json), environ)


def _provision() -> None:
    """Create the service's containers, queues and database first (DICOM_PROVISION_RESOURCES)."""
    if os.environ.get("DICOM_PROVISION_RESOURCES", "").lower() not in ("1", "true", "yes"):
        return
    from dicomserver.wiring import provision

    provision()


def _serve_local_jwks(host: LocalHost) -> None:
    """In DICOM_AUTH_MODE=local, publish the local signing key's JWKS like a tenant does."""
    if os.environ.get("DICOM_AUTH_MODE", "").lower() != "local":
        return
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    from dicomserver.auth import local_jwks_path
    from dicomserver.settings import Settings

    path = local_jwks_path(Settings.from_env())

    async def jwks(scope: dict[str, Any]) -> Response:
        if not path.exists():
            return PlainTextResponse("no local signing key yet: run `make token`", status_code=404)
        return JSONResponse(json.loads(path.read_text()))

    host.extra_http["/.well-known/jwks.json"] = jwks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Azure Functions host for function_app.app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUNCTIONS_HTTP_PORT", "7071")))
    parser.add_argument("--no-triggers", action="store_true", help="serve HTTP only")
    parser.add_argument("--blob-poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sys.path.insert(0, str(ROOT))
    load_local_settings(ROOT / "local.settings.json", os.environ)
    _provision()
    import uvicorn

    import function_app

    host = build_host(function_app.app, json.loads((ROOT / "host.json").read_text()), os.environ)
    _serve_local_jwks(host)
    base = f"http://{args.host}:{args.port}"
    print("Functions:", *host.describe(base), sep="\n", flush=True)
    if not args.no_triggers:
        host.start_drivers(args.blob_poll_interval)
    config = uvicorn.Config(host.asgi(), host=args.host, port=args.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"DICOMweb: {base}/v2", flush=True)
    try:
        server.run()
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
