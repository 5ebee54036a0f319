"""The ASGI app serving the HTTP functions (the Functions host's HTTP-streams mode).

Each HTTP function gets the real Starlette/FastAPI ``Request`` (bodies stream in,
``StreamingResponse`` streams out), with route values in ``req.path_params``.  A path that matches
no route with the request's method is a 404, as in Azure (no 405, no implicit HEAD).
``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` is enforced with a 413, and a response that takes longer
than Azure's 230 s to start is logged.  Sync functions run in Starlette's thread pool, async ones
on the server's event loop.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .config import DEFAULT_REQUEST_BODY_LIMIT
from .cors import CorsPolicy, answer_preflight, is_preflight, with_cors_headers
from .routes import Route

#: One logger for the whole host, named as before the split (``python -m`` runs as ``__main__``).
log = logging.getLogger("scripts.localhost")

#: Azure's front end drops a request whose response has not started within this many seconds.
RESPONSE_START_LIMIT = 230.0


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
        cors: CorsPolicy | None = None,
    ) -> None:
        self.routes = sorted(routes, key=lambda r: r.precedence)
        self.cors = cors
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

        if self.cors is not None:
            if is_preflight(scope):
                await answer_preflight(self.cors, scope, send)
                return
            send = with_cors_headers(self.cors, scope, send)
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
