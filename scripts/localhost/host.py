"""One host instance for a FunctionApp: its HTTP routes and trigger drivers, served by uvicorn.

:class:`LocalHost` discovers every function and its trigger from the app itself (no list kept by
hand): each HTTP function becomes a :class:`~scripts.localhost.routes.Route` at
``/{routePrefix}/{route}``, other triggers get their driver from
:data:`~scripts.localhost.triggers.TRIGGER_DRIVERS`; a function with a trigger or binding the host
does not know is skipped with a warning.  Sync trigger functions run in a thread pool
(``PYTHON_THREADPOOL_THREAD_COUNT``), async ones on the server's event loop, as in the Python
worker.  Tests build a host for their own app with :func:`build_host`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from . import blobs, queues, timers  # noqa: F401  (importing them registers their trigger drivers)
from .asgi import HttpApp
from .config import MIN_POLLING_INTERVAL, TRUE_VALUES, HostConfig, _request_body_limit, _thread_count
from .cors import CorsPolicy
from .functions import EventLoopRunner, UserFunction, _user_function
from .routes import Route
from .storage import ConnectionMissing
from .triggers import TRIGGER_DRIVERS, TriggerDriver

#: One logger for the whole host, named as before the split (``python -m`` runs as ``__main__``).
log = logging.getLogger("scripts.localhost")


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
            cors=CorsPolicy.from_environ(self.environ),
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
