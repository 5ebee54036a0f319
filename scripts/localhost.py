"""A local Azure Functions host: stands in for Core Tools (``func start``) where it cannot be installed.

``python -m scripts.localhost [--port 7071] [--no-triggers]`` imports ``function_app.app``,
discovers every function and its trigger from the app itself (no list kept by hand), and:

* serves each HTTP function at ``/{routePrefix}/{route}`` with uvicorn (``routePrefix`` from
  host.json, ``api`` when absent).  Route templates as in ASP.NET: ``{name}``, ``{name?}``,
  ``{*rest}``, ``{name:constraint}`` (constraint not checked) and ``{a}.{b}`` segments; literals
  match case-insensitively and the most specific template wins (segment by segment, literal before
  parameter before catch-all).  A path that matches no route with the request's method is a 404,
  as in Azure (no 405, no implicit HEAD).  The function gets the real Starlette/FastAPI
  ``Request`` (bodies stream in, ``StreamingResponse`` streams out: HTTP-streams semantics), with
  route values in ``req.path_params``.  ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` (default 100 MB) is
  enforced with a 413, and a response that takes longer than Azure's 230 s to start is logged.
* drives queue triggers against Azurite with the Functions host's semantics: base64 messages
  (``extensions.queues.messageEncoding``), up to ``batchSize`` messages run concurrently, each
  leased while its function runs; success deletes it; failure makes it visible again after
  ``visibilityTimeout``; a failure at ``dequeue_count >= maxDequeueCount``, a message received
  with ``dequeue_count > maxDequeueCount`` or one that is not valid base64 moves to
  ``<queue>-poison`` (created on demand); idle polling backs off up to ``maxPollingInterval``.
* drives blob triggers by scanning the container (the host's polling mode; in Azure our blob
  triggers are fed by Event Grid), with blob receipts in ``azure-webjobs-hosts`` so each blob
  version triggers once; after ``maxDequeueCount`` failures a blob goes to
  ``webjobs-blobtrigger-poison``.

Triggers are found through :data:`TRIGGER_DRIVERS`, keyed by binding type; a function with a trigger
or binding the host does not know is skipped with a warning.  Sync functions run in a thread pool
(``PYTHON_THREADPOOL_THREAD_COUNT``), async ones on the server's event loop, as in the Python worker.
``%SETTING%`` in queue names and blob paths resolves from the environment, and
``local.settings.json`` ``Values`` are loaded like Core Tools does (without overriding variables
already set).  Tests build a host for their own app with :func:`build_host`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
#: A fixed logger name: under ``python -m`` this module's ``__name__`` is ``__main__``.
log = logging.getLogger("scripts.localhost")

#: The Functions host's default ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` (bytes).
DEFAULT_REQUEST_BODY_LIMIT = 104_857_600
#: Azure's front end drops a request whose response has not started within this many seconds.
RESPONSE_START_LIMIT = 230.0
#: How long a received message stays invisible while its function runs (renewed at half-time).
QUEUE_LEASE_SECONDS = 60
#: The host's shortest polling interval (QueuePollingIntervals.Minimum).
MIN_POLLING_INTERVAL = 0.1
RECEIPTS_CONTAINER = "azure-webjobs-hosts"
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
TRUE_VALUES = ("1", "true", "yes")

_SETTING = re.compile(r"%([A-Za-z0-9_.:-]+)%")


class FunctionLoadError(RuntimeError):
    """A function the real worker would refuse to load, so the local host refuses it too."""


class ConnectionMissing(RuntimeError):
    """The app setting named by a trigger's ``connection`` is not set."""


# -- configuration ----------------------------------------------------------------------------


def _duration(text: str | None, default: float) -> float:
    """Seconds of a host.json ``[d.]hh:mm:ss[.fff]`` duration."""
    if not text:
        return default
    value = str(text)
    days = 0.0
    if "." in value.split(":")[0]:
        head, _, value = value.partition(".")
        days = float(head)
    parts = [float(p) for p in value.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return days * 86400 + parts[-3] * 3600 + parts[-2] * 60 + parts[-1]


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
    """What the host reads from host.json (defaults are the Functions host's)."""

    route_prefix: str = "api"
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> HostConfig:
        extensions = host_json.get("extensions", {}) or {}
        http = extensions.get("http", {}) or {}
        queues = extensions.get("queues", {}) or {}
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_duration(queues.get("visibilityTimeout"), 0.0),
            batch_size=max(1, min(32, int(queues.get("batchSize", 16)))),
            max_polling_interval=max(MIN_POLLING_INTERVAL, _duration(queues.get("maxPollingInterval"), 60.0)),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )


def read_host_json(path: Path) -> dict[str, Any]:
    """host.json as a dict (empty when the file does not exist)."""
    return json.loads(path.read_text()) if path.exists() else {}


def load_local_settings(path: Path, environ: MutableMapping[str, str]) -> None:
    """Copy ``Values`` of local.settings.json into the environment without overriding it (as Core Tools)."""
    if not path.exists():
        return
    values = json.loads(path.read_text()).get("Values", {}) or {}
    for name, value in values.items():
        environ.setdefault(name, "" if value is None else str(value))


def _request_body_limit(environ: Mapping[str, str]) -> int:
    raw = environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "")
    return int(raw) if raw.strip() else DEFAULT_REQUEST_BODY_LIMIT


def _thread_count(environ: Mapping[str, str]) -> int:
    raw = environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    return int(raw) if raw.strip() else min(32, (os.cpu_count() or 1) + 4)


# -- storage connections ------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConnection:
    """A trigger's storage account, from the app setting its ``connection`` names.

    As in the host: the setting itself (or ``AzureWebJobs<name>``) holds a connection string, or
    ``<name>__blobServiceUri`` / ``__queueServiceUri`` / ``__serviceUri`` / ``__accountName`` name
    the account for an identity-based connection (DefaultAzureCredential, ``<name>__clientId``).
    """

    setting: str
    connection_string: str | None = None
    blob_url: str | None = None
    queue_url: str | None = None
    client_id: str | None = None

    @classmethod
    def from_setting(cls, name: str | None, environ: Mapping[str, str]) -> StorageConnection:
        setting = name or "AzureWebJobsStorage"
        value = environ.get(setting) or environ.get(f"AzureWebJobs{setting}")
        if value:
            return cls(setting, connection_string=value)
        account = environ.get(f"{setting}__accountName")
        blob = environ.get(f"{setting}__blobServiceUri") or environ.get(f"{setting}__serviceUri")
        queue = environ.get(f"{setting}__queueServiceUri")
        if account:
            blob = blob or f"https://{account}.blob.core.windows.net"
            queue = queue or f"https://{account}.queue.core.windows.net"
        if blob or queue:
            return cls(setting, blob_url=blob, queue_url=queue, client_id=environ.get(f"{setting}__clientId"))
        raise ConnectionMissing(f"the app setting {setting} (a storage connection) is not set")

    def _credential(self) -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def queue(self, name: str) -> Any:
        """A QueueClient without encode/decode policies: the host handles base64 itself."""
        from azure.storage.queue import QueueClient

        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, name)
        if not self.queue_url:
            raise ConnectionMissing(f"{self.setting}__queueServiceUri is not set")
        return QueueClient(self.queue_url, name, credential=self._credential())

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string)
        if not self.blob_url:
            raise ConnectionMissing(f"{self.setting}__blobServiceUri is not set")
        return BlobServiceClient(self.blob_url, credential=self._credential())


def _is_status(exc: BaseException, *statuses: int) -> bool:
    return getattr(exc, "status_code", None) in statuses


# -- invocation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvocationContext:
    """What a function's ``context`` parameter gets (the fields of ``azure.functions.Context`` we can fill)."""

    function_name: str
    invocation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_directory: str = str(ROOT)
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = field(default_factory=threading.local)


class EventLoopRunner:
    """Runs async trigger functions on one event loop.

    While the server runs that is uvicorn's loop (the Python worker runs async functions on its
    main loop, next to the HTTP functions); otherwise a private loop in a daemon thread.
    """

    def __init__(self) -> None:
        self._attached: asyncio.AbstractEventLoop | None = None
        self._private: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._attached = loop

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._attached is not None:
            return self._attached
        with self._lock:
            if self._private is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="async-functions", daemon=True)
                thread.start()
                self._private = (loop, thread)
            return self._private[0]

    def run(self, function: Callable[..., Coroutine[Any, Any, Any]], kwargs: dict[str, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(function(**kwargs), self._loop()).result()

    def close(self) -> None:
        with self._lock:
            if self._private is None:
                return
            loop, thread = self._private
            self._private = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


@dataclass
class UserFunction:
    """One function of the app: its name, Python callable and how to pass it arguments."""

    name: str
    handler: Callable[..., Any]
    arg_name: str
    wants_context: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def annotation(self) -> Any:
        """The trigger parameter's type (resolved, also under ``from __future__ import annotations``)."""
        try:
            return typing.get_type_hints(self.handler).get(self.arg_name)
        except Exception:  # an annotation that does not resolve: use it as written
            parameter = inspect.signature(self.handler).parameters.get(self.arg_name)
            return None if parameter is None else parameter.annotation

    def kwargs(self, argument: Any) -> dict[str, Any]:
        kwargs = {self.arg_name: argument}
        if self.wants_context:
            kwargs["context"] = InvocationContext(self.name)
        return kwargs


def _user_function(function: Any) -> UserFunction:
    """Check a function's parameters against its bindings as the worker's indexing does."""
    name = function.get_function_name()
    handler = function.get_user_function()
    trigger = function.get_trigger()
    parameters = set(inspect.signature(handler).parameters)
    bindings = {b.name for b in function.get_bindings() if b.name != "$return"}
    undeclared = parameters - bindings - {"context"}
    if undeclared:
        raise FunctionLoadError(
            f"cannot load the {name} function: parameters {sorted(undeclared)} are declared in Python "
            "but not as bindings"
        )
    missing = bindings - parameters
    if missing:
        raise FunctionLoadError(f"cannot load the {name} function: bindings {sorted(missing)} have no parameter")
    return UserFunction(name, handler, trigger.name, wants_context="context" in parameters)


# -- HTTP -------------------------------------------------------------------------------------

_PARAM = re.compile(
    r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<constraint>(?::[^{}?]+)?)(?P<optional>\?)?(?:=[^{}]*)?\}"
)
# Rank of a segment kind, lower is more specific (ASP.NET Core RoutePrecedence.ComputeInbound).
_LITERAL, _COMPLEX, _CONSTRAINED, _PARAMETER, _CATCH_ALL = 1, 2, 3, 4, 5


def compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The regex matching a route template and its precedence key (compare: lower wins)."""
    regex = ""
    ranks: list[int] = []
    for segment in (s for s in template.split("/") if s):
        whole = _PARAM.fullmatch(segment)
        if whole is None and "{" not in segment:
            regex += "/" + re.escape(segment)
            ranks.append(_LITERAL)
        elif whole is None:  # literals and parameters mixed, {name}.{ext}: greedy = ASP.NET's right-to-left match
            pieces, position = "", 0
            for match in _PARAM.finditer(segment):
                pieces += re.escape(segment[position : match.start()]) + f"(?P<{match.group('name')}>[^/]+)"
                position = match.end()
            regex += "/" + pieces + re.escape(segment[position:])
            ranks.append(_COMPLEX)
        elif whole.group("star"):
            regex += f"(?:/(?P<{whole.group('name')}>.*))?"
            ranks.append(_CATCH_ALL)
        elif whole.group("optional"):
            regex += f"(?:/(?P<{whole.group('name')}>[^/]+))?"
            ranks.append(_PARAMETER)
        else:
            regex += f"/(?P<{whole.group('name')}>[^/]+)"
            ranks.append(_CONSTRAINED if whole.group("constraint") else _PARAMETER)
    return re.compile(regex + "/?" if regex else "/?", re.IGNORECASE), tuple(ranks)


@dataclass
class Route:
    """One HTTP function at one route template."""

    name: str
    template: str
    methods: frozenset[str] | None
    handler: Callable[..., Any]
    arg_name: str = "req"
    wants_context: bool = False
    pattern: re.Pattern[str] = field(init=False)
    precedence: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.pattern, self.precedence = compile_route(self.template)

    def kwargs(self, request: Any) -> dict[str, Any]:
        kwargs = {self.arg_name: request}
        if self.wants_context:
            kwargs["context"] = InvocationContext(self.name)
        return kwargs


class RequestBodyTooLarge(Exception):
    """The request body passed FUNCTIONS_REQUEST_BODY_SIZE_LIMIT."""


def _limited_receive(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> Callable[..., Any]:
    received = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestBodyTooLarge(f"request body over {limit} bytes")
        return message

    return wrapped


def to_response(result: Any) -> Any:
    """A Starlette response for what an HTTP function returned (the streams extension's return types)."""
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if hasattr(result, "model_dump"):  # pydantic
        return JSONResponse(result.model_dump(mode="json"))
    if isinstance(result, dict | list | int | float | bool):
        return JSONResponse(result)
    raise TypeError(f"unsupported HTTP function return type {type(result).__name__}")


class HttpApp:
    """ASGI application dispatching to the HTTP functions."""

    def __init__(
        self,
        routes: list[Route],
        extra: dict[str, Callable[..., Awaitable[Any]]] | None = None,
        *,
        body_limit: int = DEFAULT_REQUEST_BODY_LIMIT,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.routes = sorted(routes, key=lambda r: r.precedence)
        self.extra = extra or {}
        self.body_limit = body_limit
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        from starlette.responses import PlainTextResponse

        path = scope["path"]
        if path in self.extra:
            response = await self.extra[path](scope)
            await response(scope, receive, send)
            return
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None or (route.methods is not None and scope["method"] not in route.methods):
                continue
            scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
            await self._invoke(route, scope, receive, send)
            return
        # Azure answers a known route with an unsupported method with 404 as well (no 405).
        await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup is not None:
                        await self.on_startup()
                except Exception as exc:
                    log.exception("host startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _invoke(self, route: Route, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from fastapi import Request
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import PlainTextResponse

        started = time.monotonic()
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            log.warning("%s: request body of %s bytes refused (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT)", route.name, length)
            await PlainTextResponse("Request body too large", status_code=413)(scope, receive, send)
            return
        limited = _limited_receive(receive, self.body_limit)
        request = Request(scope, limited)
        try:
            if inspect.iscoroutinefunction(route.handler):
                result = await route.handler(**route.kwargs(request))
            else:
                result = await run_in_threadpool(route.handler, **route.kwargs(request))
            response = to_response(result)
        except RequestBodyTooLarge:
            log.warning("%s: request body over %d bytes refused", route.name, self.body_limit)
            response = PlainTextResponse("Request body too large", status_code=413)
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed)", route.name)
            response = PlainTextResponse("Internal Server Error", status_code=500)
        elapsed = time.monotonic() - started
        if elapsed > RESPONSE_START_LIMIT:
            log.warning(
                "%s took %.0f s to start its response; Azure would have dropped the request after %.0f s",
                route.name,
                elapsed,
                RESPONSE_START_LIMIT,
            )
        log.debug("%s %s -> Functions.%s (%.1f ms)", scope["method"], scope["path"], route.name, elapsed * 1000)
        try:
            await response(scope, limited, send)
        except Exception as exc:
            # The status line is out: let the server abort the connection so the client sees a broken body.
            log.error("function %s failed while streaming its response: %r", route.name, exc)
            raise


# -- trigger drivers ---------------------------------------------------------------------------

#: Trigger binding type (``queueTrigger``, ``blobTrigger``, ...) → driver class.
TRIGGER_DRIVERS: dict[str, type[TriggerDriver]] = {}


def trigger_driver(cls: type[TriggerDriver]) -> type[TriggerDriver]:
    """Class decorator: register a driver for its binding type."""
    TRIGGER_DRIVERS[cls.binding] = cls
    return cls


class TriggerDriver:
    """A source of invocations for one function; the host polls it from its own thread."""

    binding: ClassVar[str] = ""

    def __init__(self, host: LocalHost, function: UserFunction) -> None:
        self.host = host
        self.function = function
        self.name = function.name
        self.config = host.config

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        raise NotImplementedError

    def ensure(self) -> None:
        """Create what the trigger reads from (idempotent)."""

    def poll_once(self) -> int:
        """Invoke the function for what is pending now; returns how many invocations it made."""
        raise NotImplementedError

    def next_delay(self, handled: int, previous: float) -> float:
        """Seconds to wait before the next poll (randomized exponential back-off when idle)."""
        if handled:
            return 0.0
        grown = max(MIN_POLLING_INTERVAL, previous * 2)
        return min(self.config.max_polling_interval, grown * random.uniform(0.8, 1.2))

    def describe(self) -> str:
        raise NotImplementedError

    def run_all(self, calls: list[Callable[[], Any]]) -> list[BaseException | None]:
        """Run invocations concurrently in the host's pool; their exceptions (None for success), in order."""
        futures = [self.host.submit(call) for call in calls]
        concurrent.futures.wait(futures)
        return [f.exception() for f in futures]

    def invoke(self, argument: Any) -> None:
        """Call the user function once (runs in a pool thread)."""
        started = time.monotonic()
        try:
            self.host.call(self.function, self.function.kwargs(argument))
        except Exception:
            log.info("Executed 'Functions.%s' (Failed, %.0f ms)", self.name, (time.monotonic() - started) * 1000)
            raise
        log.info("Executed 'Functions.%s' (Succeeded, %.0f ms)", self.name, (time.monotonic() - started) * 1000)


@dataclass
class _Leased:
    """A received queue message, with the pop receipt of its current lease."""

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int
    inserted_on: Any
    expires_on: Any
    next_visible_on: Any


@trigger_driver
class QueueDriver(TriggerDriver):
    """Polls one queue and invokes its function with the Functions host's retry and poison semantics."""

    binding = "queueTrigger"

    def __init__(self, host: LocalHost, function: UserFunction, queue: str, connection: StorageConnection) -> None:
        super().__init__(host, function)
        self.queue_name = queue
        self.queue = connection.queue(queue)
        # No poison queue for a poison queue, or when the name would be too long (as in the host).
        poison_name = f"{queue}-poison"
        self.poison = None if queue.endswith("-poison") or len(poison_name) > 63 else connection.queue(poison_name)

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        queue = resolve_settings(str(trigger.queue_name), host.environ)
        return cls(host, function, queue, StorageConnection.from_setting(trigger.connection, host.environ))

    def describe(self) -> str:
        return f"queue: {self.queue_name}"

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def _decode(self, content: str | None) -> bytes | None:
        raw = (content or "").encode()
        if self.config.message_encoding == "none":
            return raw
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None

    def poll_once(self) -> int:
        """Receive one batch, run it concurrently, then complete each message; returns the batch size."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.functions.queue import QueueMessage  # the worker's class, with dequeue_count

        try:
            received = list(
                self.queue.receive_messages(
                    messages_per_page=self.config.batch_size,
                    max_messages=self.config.batch_size,
                    visibility_timeout=QUEUE_LEASE_SECONDS,
                )
            )
        except ResourceNotFoundError:
            log.debug("queue %s does not exist (yet)", self.queue_name)
            return 0
        pending: dict[concurrent.futures.Future[None], _Leased] = {}
        for message in received:
            leased = _Leased(
                message.id,
                message.pop_receipt,
                message.content or "",
                int(message.dequeue_count or 0),
                message.inserted_on,
                message.expires_on,
                message.next_visible_on,
            )
            body = self._decode(leased.content)
            if body is None:
                log.warning("message %s on %s is not valid base64: moved to poison", leased.id, self.queue_name)
                self._to_poison(leased)
                continue
            if leased.dequeue_count > self.config.max_dequeue_count:
                log.warning("message %s was dequeued %d times: moved to poison", leased.id, leased.dequeue_count)
                self._to_poison(leased)
                continue
            argument = QueueMessage(  # type: ignore[no-untyped-call]
                id=leased.id,
                body=body,
                dequeue_count=leased.dequeue_count,
                pop_receipt=leased.pop_receipt,
                insertion_time=leased.inserted_on,
                expiration_time=leased.expires_on,
                time_next_visible=leased.next_visible_on,
            )
            pending[self.host.submit(self.invoke, argument)] = leased
        self._complete(pending)
        return len(received)

    def _complete(self, pending: dict[concurrent.futures.Future[None], _Leased]) -> None:
        """Wait for the invocations, renewing their leases at half-time, and settle each message."""
        waiting = set(pending)
        renew_at = time.monotonic() + QUEUE_LEASE_SECONDS / 2
        while waiting:
            done, waiting = concurrent.futures.wait(
                waiting, timeout=max(0.0, renew_at - time.monotonic()), return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                leased, error = pending[future], future.exception()
                if error is None:
                    self._delete(leased)
                    continue
                log.error(
                    "function %s failed on message %s (dequeue count %d)",
                    self.name,
                    leased.id,
                    leased.dequeue_count,
                    exc_info=error,
                )
                if self.poison is None:
                    continue  # no poison queue: leave it invisible until its lease ends (as the host does)
                if leased.dequeue_count >= self.config.max_dequeue_count:
                    log.warning(
                        "message %s reached maxDequeueCount %d: moved to %s",
                        leased.id,
                        self.config.max_dequeue_count,
                        self.poison.queue_name,
                    )
                    self._to_poison(leased)
                else:
                    self._update(leased, int(self.config.visibility_timeout))
            if waiting and time.monotonic() >= renew_at:
                for future in waiting:
                    self._update(pending[future], QUEUE_LEASE_SECONDS)
                renew_at = time.monotonic() + QUEUE_LEASE_SECONDS / 2

    def _update(self, leased: _Leased, visibility_timeout: int) -> None:
        """Set a leased message's visibility timeout (renewal or release); keeps the new pop receipt."""
        from azure.core.exceptions import HttpResponseError

        try:
            updated = self.queue.update_message(
                leased.id, pop_receipt=leased.pop_receipt, visibility_timeout=visibility_timeout
            )
            leased.pop_receipt = updated.pop_receipt
        except HttpResponseError as exc:
            if not _is_status(exc, 400, 404, 409):
                raise
            log.debug("message %s: someone else holds it or it is gone (%s)", leased.id, exc.status_code)

    def _delete(self, leased: _Leased) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self.queue.delete_message(leased.id, pop_receipt=leased.pop_receipt)
        except HttpResponseError as exc:
            if not _is_status(exc, 400, 404, 409):
                raise
            log.debug("message %s could not be deleted (%s): its lease was lost", leased.id, exc.status_code)

    def _to_poison(self, leased: _Leased) -> None:
        """Copy the message's original content to ``<queue>-poison`` (created on demand) and delete it."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if self.poison is None:
            return
        try:
            self.poison.send_message(leased.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(leased.content)
        self._delete(leased)


def _blob_name_pattern(pattern: str) -> re.Pattern[str]:
    """Regex for the blob-name part of a blob trigger path (``{name}``, ``in/{name}.dcm``; ``{{`` escapes)."""
    if not pattern:
        return re.compile(r".+", re.DOTALL)
    regex, position = "", 0
    for match in re.finditer(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", pattern):
        regex += re.escape(pattern[position : match.start()])
        token = match.group(0)
        regex += re.escape(token[0]) if token in ("{{", "}}") else f"(?P<{match.group(1)}>.+)"
        position = match.end()
    return re.compile(regex + re.escape(pattern[position:]), re.DOTALL)


@trigger_driver
class BlobDriver(TriggerDriver):
    """Scans one container and invokes its function once per blob version (blob receipts)."""

    binding = "blobTrigger"

    def __init__(self, host: LocalHost, function: UserFunction, path: str, connection: StorageConnection) -> None:
        super().__init__(host, function)
        self.container_name, _, pattern = path.partition("/")
        self.names = _blob_name_pattern(pattern)
        self.service = connection.blob_service()
        self.container = self.service.get_container_client(self.container_name)
        self.receipts = self.service.get_container_client(RECEIPTS_CONTAINER)
        self.poison = connection.queue(BLOB_POISON_QUEUE)
        self.host_id = host.environ.get("AzureFunctionsWebHost__hostid") or "localhost"
        self.failures: dict[tuple[str, str], int] = {}
        self.receipted: set[tuple[str, str]] = set()  # (blob name, etag) known to have a receipt

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        path = resolve_settings(str(trigger.path), host.environ)
        return cls(host, function, path, StorageConnection.from_setting(trigger.connection, host.environ))

    def describe(self) -> str:
        return f"blob: {self.container_name}/"

    def ensure(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for container in (self.container, self.receipts):
            with contextlib.suppress(ResourceExistsError):
                container.create_container()

    def next_delay(self, handled: int, previous: float) -> float:
        # Each scan lists the whole container: after work, scan again a poll interval later (new
        # blobs batch up meanwhile); when idle, back off up to 10 intervals.
        if handled:
            return self.host.blob_poll_interval
        return min(max(previous * 2, self.host.blob_poll_interval), 10 * self.host.blob_poll_interval)

    def _receipt(self, blob_name: str, etag: str) -> Any:
        return self.receipts.get_blob_client(
            f"blobreceipts/{self.host_id}/Host.Functions.{self.name}/{etag.strip(chr(34))}/"
            f"{self.container_name}/{blob_name}"
        )

    def argument(self, blob: Any) -> Any:
        """What the function's trigger parameter gets, by its annotation (SDK types, bytes, str, InputStream)."""
        annotation = self.function.annotation()
        client = self.container.get_blob_client(blob.name)
        if getattr(annotation, "__module__", "").startswith("azurefunctions.extensions.bindings.blob"):
            kind = getattr(annotation, "__name__", "")
            if kind == "ContainerClient":
                return self.container
            if kind == "StorageStreamDownloader":
                return client.download_blob()
            return client  # BlobClient: the function streams the blob itself
        data = client.download_blob().readall()
        if annotation is bytes:
            return data
        if annotation is str:
            return data.decode()
        from azure.functions.blob import InputStream

        return InputStream(
            data=data,
            name=f"{self.container_name}/{blob.name}",
            uri=client.url,
            length=int(blob.size or 0),
            metadata=dict(blob.metadata or {}),
        )

    def poll_once(self) -> int:
        """Invoke the function for every blob version without a receipt, ``batchSize`` at a time."""
        batch: list[Any] = []
        invoked = 0
        for blob in self.container.list_blobs(include=["metadata"]):
            key = (blob.name, str(blob.etag))
            if key in self.receipted or not self.names.fullmatch(blob.name):
                continue
            if self._receipt(*key).exists():
                self.receipted.add(key)
                continue
            batch.append(blob)
            if len(batch) >= self.config.batch_size:
                invoked += self._run(batch)
                batch = []
                if self.host.stopping.is_set():
                    return invoked
        if batch:
            invoked += self._run(batch)
        return invoked

    def _run(self, blobs: list[Any]) -> int:
        errors = self.run_all([functools.partial(self._invoke_blob, blob) for blob in blobs])
        for blob, error in zip(blobs, errors, strict=True):
            key = (blob.name, str(blob.etag))
            if error is not None:
                self.failures[key] = self.failures.get(key, 0) + 1
                log.error(
                    "function %s failed on blob %s (attempt %d)",
                    self.name,
                    blob.name,
                    self.failures[key],
                    exc_info=error,
                )
                if self.failures[key] < self.config.max_dequeue_count:
                    continue  # retried on a later scan
                self._to_poison(blob)
            self.failures.pop(key, None)
            self._write_receipt(*key)
        return len(blobs)

    def _invoke_blob(self, blob: Any) -> None:
        self.invoke(self.argument(blob))

    def _write_receipt(self, blob_name: str, etag: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self._receipt(blob_name, etag).upload_blob(b"", overwrite=False)
        self.receipted.add((blob_name, etag))

    def _to_poison(self, blob: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self.container_name,
            "BlobName": blob.name,
            "ETag": str(blob.etag),
        }
        content = base64.b64encode(json.dumps(message).encode()).decode()
        try:
            self.poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(content)
        log.warning("blob %s/%s moved to %s", self.container_name, blob.name, BLOB_POISON_QUEUE)


# -- the host ---------------------------------------------------------------------------------


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that stops gracefully on SIGINT/SIGTERM and then returns (no re-raised signal, exit 0)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return Server(config)


class LocalHost:
    """HTTP routes and trigger drivers for one FunctionApp."""

    def __init__(self, app: Any, config: HostConfig, environ: Mapping[str, str], blob_poll_interval: float = 1.0):
        self.config = config
        self.environ = environ
        self.blob_poll_interval = blob_poll_interval
        self.routes: list[Route] = []
        self.drivers: list[TriggerDriver] = []
        self.extra_http: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.loop_runner = EventLoopRunner()
        self.pool = concurrent.futures.ThreadPoolExecutor(_thread_count(environ), thread_name_prefix="function")
        for function in app.get_functions():
            self._register(function)

    def _register(self, function: Any) -> None:
        trigger = function.get_trigger()
        kind = trigger.get_binding_name()
        user = _user_function(function)
        unsupported = [
            b.get_binding_name() for b in function.get_bindings() if b is not trigger and b.name != "$return"
        ]
        if unsupported:
            log.warning("function %s skipped: the local host does not support %s bindings", user.name, unsupported)
            return
        if kind == "httpTrigger":
            annotation = user.annotation()
            if annotation not in (None, inspect.Parameter.empty) and not str(
                getattr(annotation, "__module__", "")
            ).startswith(("azurefunctions.extensions.http", "fastapi", "starlette")):
                log.warning(
                    "function %s takes %r: in HTTP-streams mode Azure passes a FastAPI Request "
                    "(azurefunctions.extensions.http.fastapi.Request), and so does this host",
                    user.name,
                    annotation,
                )
            route = str(getattr(trigger, "route", None) or user.name).strip("/")
            prefix = self.config.route_prefix
            methods = getattr(trigger, "methods", None)
            self.routes.append(
                Route(
                    user.name,
                    f"/{prefix}/{route}" if prefix else f"/{route}",
                    frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None,
                    user.handler,
                    user.arg_name,
                    user.wants_context,
                )
            )
            return
        driver = TRIGGER_DRIVERS.get(kind)
        if driver is None:
            log.warning("function %s skipped: %s triggers are not supported by the local host", user.name, kind)
            return
        try:
            self.drivers.append(driver.create(self, user, trigger))
        except (ConnectionMissing, KeyError) as exc:
            log.warning("function %s skipped: %s", user.name, exc.args[0] if exc.args else exc)

    # invocation

    def submit(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self.pool.submit(function, *args)

    def call(self, function: UserFunction, kwargs: dict[str, Any]) -> Any:
        """Run a trigger-invoked function: async ones on the event loop, sync ones right here."""
        if function.is_async:
            return self.loop_runner.run(function.handler, kwargs)
        return function.handler(**kwargs)

    # HTTP

    def describe(self, base: str) -> list[str]:
        """One line per function, for the startup banner."""
        lines = []
        for route in sorted(self.routes, key=lambda r: (r.template, sorted(r.methods or ()))):
            methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
            lines.append(f"  {route.name:36} {methods:8} {base}{route.template}")
        for driver in self.drivers:
            lines.append(f"  {driver.name:36} {driver.describe()}")
        return lines

    def asgi(self, triggers: bool = False) -> HttpApp:
        """The ASGI app; with ``triggers`` its lifespan starts and stops the trigger drivers."""

        async def startup() -> None:
            self.loop_runner.attach(asyncio.get_running_loop())
            if triggers:
                self.start_drivers()

        async def shutdown() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.stop)
            self.loop_runner.attach(None)

        return HttpApp(
            self.routes,
            self.extra_http,
            body_limit=_request_body_limit(self.environ),
            on_startup=startup,
            on_shutdown=shutdown,
        )

    def server(self, host: str = "127.0.0.1", port: int = 7071, triggers: bool = True) -> Any:
        """A uvicorn server for this host (HTTP/1.1); SIGINT/SIGTERM stop it gracefully."""
        import uvicorn

        config = uvicorn.Config(
            self.asgi(triggers),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        return _quiet_server(config)

    @contextlib.contextmanager
    def serving(self, port: int, triggers: bool = True, timeout: float = 30) -> Iterator[str]:
        """Run the server in a thread for the ``with`` block; yields its base URL (tests)."""
        server = self.server("127.0.0.1", port, triggers)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the local host did not start on port {port}")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout)

    # triggers

    def start_drivers(self) -> None:
        """Start one polling thread per trigger driver."""
        self.stopping.clear()
        for driver in self.drivers:
            thread = threading.Thread(target=self._loop, args=(driver,), name=f"trigger:{driver.name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, driver: TriggerDriver) -> None:
        delay = MIN_POLLING_INTERVAL
        ready = False
        while not self.stopping.is_set():
            try:
                if not ready:
                    driver.ensure()
                    ready = True
                handled = driver.poll_once()
                delay = driver.next_delay(handled, delay)
            except Exception:
                log.exception("trigger %s: polling failed; retrying", driver.name)
                delay = self.config.max_polling_interval
            if delay:
                self.stopping.wait(delay)

    def stop(self, timeout: float = 30) -> None:
        """Stop polling and let running invocations finish (up to ``timeout`` seconds)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]
        if self.threads:
            log.warning("%d trigger(s) still running at shutdown", len(self.threads))
        self.pool.shutdown(wait=not self.threads, cancel_futures=True)
        self.loop_runner.close()


def build_host(
    app: Any, host_json: Mapping[str, Any], environ: Mapping[str, str], blob_poll_interval: float = 1.0
) -> LocalHost:
    """A :class:`LocalHost` for ``app`` (``app.get_functions()`` is consumed: one host per app object)."""
    return LocalHost(app, HostConfig.from_host_json(host_json), environ, blob_poll_interval)


def provision_resources(environ: Mapping[str, str]) -> None:
    """``DICOM_PROVISION_RESOURCES=true``: let the service create its containers, queues and database first."""
    if environ.get("DICOM_PROVISION_RESOURCES", "").lower() not in TRUE_VALUES:
        return
    try:
        wiring = importlib.import_module("dicomserver.wiring")
    except ModuleNotFoundError as exc:
        if exc.name not in ("dicomserver", "dicomserver.wiring"):
            raise
        log.info("no dicomserver.wiring: nothing provisioned")
        return
    provision = getattr(wiring, "provision", None)
    if provision is None:
        log.info("dicomserver.wiring.provision() does not exist: nothing provisioned")
        return
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


def load_app(spec: str) -> Any:
    """``module:attribute`` → the FunctionApp (the attribute may also be a function returning one)."""
    module_name, _, attribute = spec.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or "app")
    return value() if callable(value) and not hasattr(value, "get_functions") else value


def _bound_socket(host: str, port: int) -> socket.socket:
    """Claim the port before the app loads (a clear error if it is taken); uvicorn starts listening when ready."""
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on connections of sockets whose
    # proto says TCP; with proto 0 every response written in two parts waited ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"cannot listen on {host}:{port}: {exc.strerror} (is another host or `make run` running?)"
        ) from None
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Azure Functions host for function_app.app")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUNCTIONS_HTTP_PORT", "7071")))
    parser.add_argument("--no-triggers", action="store_true", help="serve HTTP only")
    parser.add_argument("--blob-poll-interval", type=float, default=1.0, help="seconds between blob scans")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sys.path.insert(0, str(ROOT))
    load_local_settings(ROOT / "local.settings.json", os.environ)
    workers = worker_process_count(os.environ)
    sock = _bound_socket(args.host, args.port)
    provision_resources(os.environ)
    worker, children = _fork_workers(workers)
    host = build_host(load_app(args.app), read_host_json(ROOT / "host.json"), os.environ, args.blob_poll_interval)
    _serve_local_jwks(host)
    base = f"http://{args.host}:{args.port}"
    if worker == 0:
        print("Functions:", *host.describe(base), sep="\n", flush=True)
        print(f"DICOMweb: {base}/v2 ({workers} worker process{'es' if workers > 1 else ''})", flush=True)
    try:
        # Triggers run in the first worker only, as one host instance's listeners would.
        host.server(args.host, args.port, triggers=not args.no_triggers and worker == 0).run(sockets=[sock])
    finally:
        if worker:
            os._exit(0)
        _stop_workers(children)
    return 0


def worker_process_count(environ: Mapping[str, str]) -> int:
    """``FUNCTIONS_WORKER_PROCESS_COUNT`` as the Functions host reads it: 1 (default) to 10."""
    text = environ.get("FUNCTIONS_WORKER_PROCESS_COUNT", "").strip()
    try:
        count = int(text) if text else 1
    except ValueError:
        raise SystemExit(f"FUNCTIONS_WORKER_PROCESS_COUNT must be an integer, got {text!r}") from None
    return max(1, min(count, 10))


def _fork_workers(count: int) -> tuple[int, list[int]]:
    """Fork ``count - 1`` more workers sharing the listening socket; returns (this worker's number, children).

    The kernel spreads connections over the processes accepting on the socket, as the
    Functions host spreads invocations over its language workers; each worker loads the
    app and builds its own clients.
    """
    children: list[int] = []
    for number in range(1, count):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return number, []
        children.append(pid)
    return 0, children


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker if the first worker dies (never an orphan on the port)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_workers(children: list[int], timeout: float = 15) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in children:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
