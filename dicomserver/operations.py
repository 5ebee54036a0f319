"""Long-running operations (Azure v2): start, run step by step, and ``GET /v2/operations/{id}``.

An operation (the reindex of new extended query tags, a bulk update) is a document in the
:class:`~dicomserver.stores.OperationStore` and a chain of queue messages, one per step. A step
loads the operation, lets its type's handler do a bounded amount of work from the saved
``checkpoint``, saves the result at the etag it read and then queues the next step:

* a worker that dies during a step leaves its message to be delivered again, and the step runs
  again from the last saved checkpoint (handlers are idempotent);
* a worker that dies after the save but before queuing the next step also fails its message,
  which is delivered again and runs the next step;
* two deliveries of one message both run the step but only one save wins; the other stops.

Handlers register with :func:`operation_handler` (``extended_query_tags`` for ``reindex``,
``bulk_update`` for ``update``) and are looked up by the operation's type.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, DependencyUnavailable, DicomServerError, NotFound
from .identifiers import DEFAULT_PARTITION
from .stores import Operation, OperationStatus, OperationStore

if TYPE_CHECKING:
    from .wiring import Services

log = logging.getLogger(__name__)

#: One step of an operation: returns the operation advanced (status, percent, checkpoint, results).
StepHandler = Callable[[Operation, "Services"], Operation]

_HANDLERS: dict[str, StepHandler] = {}
_OPERATION_ID = re.compile(r"^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def operation_handler(type_: str) -> Callable[[StepHandler], StepHandler]:
    """Register the step handler of operations of ``type_``."""

    def register(handler: StepHandler) -> StepHandler:
        _HANDLERS[type_] = handler
        return handler

    return register


def now() -> str:
    """A timestamp as operations carry them (UTC, ISO 8601 with ``Z``)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def start_operation(
    operations: OperationStore,
    type_: str,
    resources: list[str],
    checkpoint: dict[str, Any],
    partition: str = DEFAULT_PARTITION,
) -> Operation:
    """Create an operation and queue its first step."""
    stamp = now()
    created = operations.create(
        Operation(
            id=uuid.uuid4().hex,
            type=type_,
            status=OperationStatus.NOT_STARTED,
            created=stamp,
            updated=stamp,
            resources=resources,
            checkpoint=checkpoint,
            partition=partition,
        )
    )
    operations.schedule(created.id)
    return created


def operation_reference(operation: Operation, base_url: str) -> dict[str, str]:
    """What a request that started an operation answers with (202): its id and where to poll."""
    return {"id": operation.id, "href": f"{base_url.rstrip('/')}/operations/{operation.id}"}


def operation_json(operation: Operation, base_url: str) -> dict[str, Any]:
    """The operation as ``GET /v2/operations/{id}`` returns it."""
    body: dict[str, Any] = {
        "operationId": operation.id,
        "type": operation.type,
        "createdTime": operation.created,
        "lastUpdatedTime": operation.updated,
        "status": operation.status.value,
        "percentComplete": operation.percent_complete,
        "resources": [f"{base_url.rstrip('/')}/{r}" for r in operation.resources],
    }
    if operation.results is not None:
        body["results"] = operation.results
    return body


def get_operation(operations: OperationStore, operation_id: str, base_url: str) -> tuple[int, dict[str, Any]]:
    """``GET /v2/operations/{id}``: 200 when done, 202 while it runs; 400 bad id, 404 unknown."""
    if not _OPERATION_ID.match(operation_id):
        raise BadRequest(f"The operation id {operation_id!r} is not a valid operation id (32 hexadecimal digits).")
    operation = operations.get(operation_id.replace("-", "").lower())
    if operation is None:
        raise NotFound(f"The operation {operation_id} does not exist.")
    return (200 if operation.status.done else 202), operation_json(operation, base_url)


def run_step(operations: OperationStore, operation_id: str, services: Services) -> Operation | None:
    """Run one step of an operation (the queue trigger); returns the operation as saved, or None.

    Raises
    ------
    DependencyUnavailable
        When storage fails: the message is delivered again and the step repeated.
    """
    from . import bulk_update, extended_query_tags  # noqa: F401  (importing them registers their handlers)

    operation = operations.get(operation_id)
    if operation is None:
        log.warning("operation %s does not exist: step dropped", operation_id)
        return None
    if operation.status.done:
        return operation
    handler = _HANDLERS.get(operation.type)
    if handler is None:
        advanced = replace(
            operation, status=OperationStatus.FAILED, results={"errors": [f"Unknown operation type {operation.type}."]}
        )
    else:
        running = replace(operation, status=OperationStatus.RUNNING)
        try:
            advanced = handler(running, services)
        except DependencyUnavailable:
            raise
        except DicomServerError as exc:
            log.warning("operation %s failed: %s", operation.id, exc.message)
            advanced = _failed(running, exc.message)
        except Exception as exc:  # a bug must not leave the operation running forever
            log.exception("operation %s failed", operation.id)
            advanced = _failed(running, f"Internal error: {type(exc).__name__}.")
    advanced = replace(advanced, updated=now(), etag=operation.etag)
    if advanced.status.done and advanced.status is OperationStatus.SUCCEEDED:
        advanced.percent_complete = 100
    saved = operations.save(advanced)
    if saved is None:
        log.info("operation %s advanced by another worker: this step stops", operation.id)
        return None
    if not saved.status.done:
        operations.schedule(saved.id)
    return saved


def _failed(operation: Operation, message: str) -> Operation:
    results = dict(operation.results or {})
    results["errors"] = [*results.get("errors", []), message]
    return replace(operation, status=OperationStatus.FAILED, results=results)
