"""Loading the app and invoking its functions, as the Python worker does.

:func:`load_app` imports the ``FunctionApp`` (``function_app:app`` by default);
:func:`_user_function` checks each function's parameters against its bindings like the worker's
indexing (refusing it with :class:`FunctionLoadError` when they disagree) and wraps it in a
:class:`UserFunction`, which builds its keyword arguments, including the optional ``context``
(:class:`InvocationContext`).  Async trigger functions run on one event loop
(:class:`EventLoopRunner`): the server's while it runs, as the worker runs them on its main loop.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import threading
import typing
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .config import ROOT


class FunctionLoadError(RuntimeError):
    """A function the real worker would refuse to load, so the local host refuses it too."""


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


def load_app(spec: str) -> Any:
    """``module:attribute`` → the FunctionApp (the attribute may also be a function returning one)."""
    module_name, _, attribute = spec.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or "app")
    return value() if callable(value) and not hasattr(value, "get_functions") else value
