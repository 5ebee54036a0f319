"""Storage round trips per request: the cost unit of this design.

Every HTTP round trip the Azure SDKs make to Blob Storage, Cosmos DB or a
Storage Queue goes through :class:`~dicomserver.stores.azure.counting.CountingTransport`,
which adds it to the :class:`Operations` of the current context (with the
Cosmos request charge from ``x-ms-request-charge``).  A request handler opens
a fresh counter with :func:`counting`; worker threads started with
``asyncio.to_thread`` inherit the context, so their calls are counted too.
The HTTP layer logs the counts and returns them in the ``x-dicom-storage-ops``
response header (``blob=1;index=3;queue=0;ru=7.00``); ``make bench`` sums
them per instance and the tests assert ceilings on the hot paths.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["HEADER", "Operations", "counting", "current", "record", "start"]

#: Response header carrying the counts of one request.
HEADER = "x-dicom-storage-ops"

#: The kinds of storage round trips counted.
KINDS = ("blob", "index", "queue")


@dataclass(slots=True)
class Operations:
    """Round trips made so far in one context (thread-safe)."""

    blob: int = 0
    index: int = 0
    queue: int = 0
    request_charge: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, request_charge: float = 0.0) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)
            self.request_charge += request_charge

    @property
    def total(self) -> int:
        return self.blob + self.index + self.queue

    def header_value(self) -> str:
        """``blob=1;index=3;queue=0;ru=7.00``."""
        return f"blob={self.blob};index={self.index};queue={self.queue};ru={self.request_charge:.2f}"

    @staticmethod
    def parse(value: str) -> Operations:
        """The inverse of :meth:`header_value` (unknown fields ignored)."""
        ops = Operations()
        for item in value.split(";"):
            name, _, number = item.strip().partition("=")
            if name in KINDS:
                setattr(ops, name, int(number))
            elif name == "ru":
                ops.request_charge = float(number)
        return ops


_current: ContextVar[Operations | None] = ContextVar("storage_operations", default=None)


def current() -> Operations | None:
    """The counter of the current context, if one is open."""
    return _current.get()


def record(kind: str, request_charge: float = 0.0) -> None:
    """Count one round trip of ``kind`` (``blob``, ``index`` or ``queue``) in the current context."""
    ops = _current.get()
    if ops is not None:
        ops.add(kind, request_charge)


def start() -> Operations:
    """Open a fresh counter for the rest of the current context (one per request task).

    Unlike :func:`counting` it is not reset on exit, so a streamed response
    body, iterated after the handler returned, is still counted.
    """
    ops = Operations()
    _current.set(ops)
    return ops


@contextmanager
def counting() -> Iterator[Operations]:
    """Open a fresh counter for the ``with`` block (nested blocks count separately)."""
    ops = Operations()
    token = _current.set(ops)
    try:
        yield ops
    finally:
        _current.reset(token)
