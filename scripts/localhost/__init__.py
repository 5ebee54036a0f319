"""A local Azure Functions host: stands in for Core Tools (``func start``) where it cannot be installed.

``python -m scripts.localhost [--port 7071] [--no-triggers]`` imports ``function_app.app``,
discovers every function and its trigger from the app itself (no list kept by hand), and:

* serves each HTTP function at ``/{routePrefix}/{route}`` with uvicorn (``routePrefix`` from
  host.json, ``api`` when absent), in HTTP-streams mode, with ASP.NET route templates and
  precedence (:mod:`.routes`, :mod:`.asgi`);
* drives queue triggers against Azurite with the Functions host's semantics: base64 messages,
  ``batchSize`` concurrent invocations, leases, ``visibilityTimeout`` retries and
  ``<queue>-poison`` after ``maxDequeueCount`` (:mod:`.queues`);
* drives blob triggers by scanning the container (the host's polling mode; in Azure our blob
  triggers are fed by Event Grid), with blob receipts in ``azure-webjobs-hosts`` so each blob
  version triggers once, and ``webjobs-blobtrigger-poison`` after ``maxDequeueCount`` failures
  (:mod:`.blobs`).

Modules, by the part of the Functions host each stands in for:

* :mod:`.config`: host.json (:class:`HostConfig`), local.settings.json, ``%SETTING%`` resolution;
* :mod:`.storage`: a trigger's ``connection`` setting → storage clients (:class:`StorageConnection`);
* :mod:`.functions`: loading the app and invoking functions, as the Python worker does;
* :mod:`.routes`: route templates and their precedence; :mod:`.asgi`: the HTTP front end;
* :mod:`.triggers`: the trigger-driver registry (:data:`TRIGGER_DRIVERS`) and base class;
  :mod:`.queues`, :mod:`.blobs`: the queue and blob trigger listeners;
* :mod:`.host`: :class:`LocalHost`, one host instance for an app (:func:`build_host` for tests);
* :mod:`.workers`: the listening socket and ``FUNCTIONS_WORKER_PROCESS_COUNT`` pre-forked workers;
  ``__main__``: the command line.

This package re-exports the names other code uses; settings the code reads at call time (such as
``QUEUE_LEASE_SECONDS``) are patched in the module that owns them (``scripts.localhost.queues``).
"""

from __future__ import annotations

from .asgi import RESPONSE_START_LIMIT, HttpApp, RequestBodyTooLarge, to_response
from .blobs import BLOB_POISON_QUEUE, RECEIPTS_CONTAINER, BlobDriver
from .config import (
    DEFAULT_REQUEST_BODY_LIMIT,
    MIN_POLLING_INTERVAL,
    ROOT,
    TRUE_VALUES,
    HostConfig,
    load_local_settings,
    read_host_json,
    resolve_settings,
)
from .functions import EventLoopRunner, FunctionLoadError, InvocationContext, UserFunction, load_app
from .host import LocalHost, build_host, provision_resources
from .queues import QUEUE_LEASE_SECONDS, QueueDriver
from .routes import Route, compile_route
from .storage import ConnectionMissing, StorageConnection
from .triggers import TRIGGER_DRIVERS, TriggerDriver, trigger_driver
from .workers import _bound_socket, worker_process_count

__all__ = [
    "BLOB_POISON_QUEUE",
    "DEFAULT_REQUEST_BODY_LIMIT",
    "MIN_POLLING_INTERVAL",
    "QUEUE_LEASE_SECONDS",
    "RECEIPTS_CONTAINER",
    "RESPONSE_START_LIMIT",
    "ROOT",
    "TRIGGER_DRIVERS",
    "TRUE_VALUES",
    "BlobDriver",
    "ConnectionMissing",
    "EventLoopRunner",
    "FunctionLoadError",
    "HostConfig",
    "HttpApp",
    "InvocationContext",
    "LocalHost",
    "QueueDriver",
    "RequestBodyTooLarge",
    "Route",
    "StorageConnection",
    "TriggerDriver",
    "UserFunction",
    "_bound_socket",
    "build_host",
    "compile_route",
    "load_app",
    "load_local_settings",
    "provision_resources",
    "read_host_json",
    "resolve_settings",
    "to_response",
    "trigger_driver",
    "worker_process_count",
]
